//! The garbage collector: removes the stripes of due `Garbage` records, then the records.

use serde_bytes::ByteBuf;
use tidepool_proto::osd::ObjectOp;

use crate::{now_ms, BucketError, Buckets};

/// What one collection pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcPass {
    /// Garbage records handled.
    pub records: u64,
    /// Stripes removed (or found already gone).
    pub stripes: u64,
}

impl Buckets {
    /// One pass over every shard of every bucket: each garbage record that is due loses its
    /// stripes, then the record itself. Safe to run from several gateways at once.
    pub async fn collect_garbage(&self) -> Result<GcPass, BucketError> {
        self.collect_garbage_due_by(now_ms()).await
    }

    /// A pass over the garbage due at or before `due_ms` (`u64::MAX`: all of it, as
    /// `tidepool gc --include-all` asks).
    pub async fn collect_garbage_due_by(&self, due_ms: u64) -> Result<GcPass, BucketError> {
        let mut pass = GcPass::default();
        let now = due_ms;
        for info in self.list_buckets().await? {
            for shard in 0..info.shards {
                let due = match self.shard_garbage(&info, shard, now).await {
                    Ok(due) => due,
                    // Deleted meanwhile: its garbage went with it.
                    Err(BucketError::NoSuchBucket) => break,
                    Err(other) => return Err(other),
                };
                for (key, garbage) in due {
                    self.remove_segments(&garbage.segments).await;
                    pass.stripes += garbage.segments.iter().map(|s| s.stripes()).sum::<u64>();
                    self.index_op(
                        &info.shard_object(shard),
                        vec![ObjectOp::OmapRemove(vec![ByteBuf::from(key)])],
                    )
                    .await?;
                    pass.records += 1;
                }
            }
        }
        Ok(pass)
    }
}
