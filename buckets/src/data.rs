//! Object data: a request body written into fresh stripes (several in flight), and stripes
//! read back as a stream for a range.

use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, Stream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use tidepool_client::ObjectError;
use tidepool_proto::osd::{ObjectOp, OpError, OpOutput};
use tidepool_proto::Payload;

use crate::records::{BucketInfo, Entry, Segment};
use crate::{random_id, BucketError, Buckets};

/// Bytes of an object, in order, as they arrive from the stripes.
pub type DataStream = Pin<Box<dyn Stream<Item = Result<Bytes, BucketError>> + Send>>;

/// How [`Buckets::write_data`] may store data.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Whether small data may stay in memory to be linked inline (objects may; multipart
    /// parts may not).
    pub inline_allowed: bool,
    /// The size the caller expects (`Content-Length`), to size buffers; not trusted.
    pub size_hint: Option<u64>,
    /// The data pool of the stripes (`None`: the default; see
    /// [`Buckets::storage_class_pool`]).
    pub pool: Option<String>,
}

/// Data written and not yet linked into an index.
#[derive(Debug)]
pub struct Written {
    /// The stripes, or `None` when the data is small enough to be inline.
    pub segment: Option<Segment>,
    /// The data itself when inline.
    pub inline: Option<Bytes>,
    /// Bytes.
    pub size: u64,
    /// Hex MD5 of the bytes.
    pub md5_hex: String,
    /// The raw MD5.
    pub md5: [u8; 16],
}

impl Buckets {
    /// Writes `body` as new data of `bucket`: into stripes under a fresh data id, or kept in
    /// memory for an inline object when it ends before `inline_bytes_max` (and
    /// `options.inline_allowed`). Nothing is linked: the caller links it, or hands it back with
    /// [`Buckets::discard`].
    pub async fn write_data<S, E>(
        &self,
        bucket: &BucketInfo,
        body: S,
        options: WriteOptions,
    ) -> Result<Written, BucketError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let config = self.config();
        let stripe_bytes = config.stripe_bytes;
        let segment = Segment {
            prefix: self.data_prefix(bucket),
            offset: 0,
            size: 0,
            stripe_bytes,
            pool: options.pool.clone(),
        };
        let mut md5 = Md5::new();
        let mut buffer: Vec<u8> = Vec::new();
        let mut size = 0u64;
        let mut next_stripe = 0u64;
        let mut in_flight = FuturesUnordered::new();
        let mut body = std::pin::pin!(body);
        let failed = loop {
            let chunk = match body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => break Some(BucketError::Body(error.to_string())),
                None => break None,
            };
            md5.update(&chunk);
            size += chunk.len() as u64;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                if buffer.capacity() == 0 {
                    // A whole stripe, or what the caller expects is left when that is less.
                    let left = options.size_hint.map_or(stripe_bytes, |hint| {
                        hint.saturating_sub(next_stripe * stripe_bytes).max(1)
                    });
                    buffer.reserve_exact(left.min(stripe_bytes) as usize);
                }
                let room = stripe_bytes as usize - buffer.len();
                let (now, later) = rest.split_at(room.min(rest.len()));
                buffer.extend_from_slice(now);
                rest = later;
                if buffer.len() as u64 == stripe_bytes {
                    let name = segment.stripe(next_stripe);
                    next_stripe += 1;
                    let data = std::mem::take(&mut buffer);
                    in_flight.push(self.write_stripe(&segment, name, data));
                }
            }
            let mut error = None;
            while in_flight.len() >= config.stripes_in_flight.max(1) {
                if let Some(Err(e)) = in_flight.next().await {
                    error = Some(e);
                }
            }
            if error.is_some() {
                break error;
            }
        };
        let failed = match failed {
            Some(error) => Some(error),
            None if next_stripe == 0
                && options.inline_allowed
                && size < config.inline_bytes_max =>
            {
                let digest: [u8; 16] = md5.finalize().into();
                return Ok(Written {
                    segment: None,
                    inline: Some(Bytes::from(buffer)),
                    size,
                    md5_hex: hex(&digest),
                    md5: digest,
                });
            }
            None => {
                if !buffer.is_empty() {
                    let name = segment.stripe(next_stripe);
                    next_stripe += 1;
                    let data = std::mem::take(&mut buffer);
                    in_flight.push(self.write_stripe(&segment, name, data));
                }
                let mut error = None;
                while let Some(result) = in_flight.next().await {
                    if let Err(e) = result {
                        error = Some(e);
                    }
                }
                error
            }
        };
        if let Some(error) = failed {
            // Let every write that was sent finish before its stripe is removed.
            while in_flight.next().await.is_some() {}
            drop(in_flight);
            let written = Segment {
                size: next_stripe * stripe_bytes,
                ..segment
            };
            self.remove_segments(std::slice::from_ref(&written)).await;
            return Err(error);
        }
        drop(in_flight);
        let segment = Segment { size, ..segment };
        let digest: [u8; 16] = md5.finalize().into();
        Ok(Written {
            segment: (size > 0).then_some(segment),
            inline: (size == 0).then(Bytes::new),
            size,
            md5_hex: hex(&digest),
            md5: digest,
        })
    }

    async fn write_stripe(
        &self,
        segment: &Segment,
        name: String,
        data: Vec<u8>,
    ) -> Result<(), BucketError> {
        self.put_stripe(segment.pool.clone(), name, data).await
    }

    /// A fresh data id's prefix in `bucket`, for stripes written one by one
    /// ([`Buckets::put_stripe`]).
    pub fn data_prefix(&self, bucket: &BucketInfo) -> String {
        format!("{}.{}", bucket.id, random_id())
    }

    /// Writes (or overwrites) the stripe `name` of data pool `pool` (`None`: the default)
    /// whole. Nothing names it until an entry links it.
    pub async fn put_stripe(
        &self,
        pool: Option<String>,
        name: String,
        data: impl Into<Payload>,
    ) -> Result<(), BucketError> {
        self.data_op(&pool, &name, vec![ObjectOp::WriteFull(data.into())])
            .await?;
        Ok(())
    }

    /// Removes data that was written and will not be linked.
    pub async fn discard(&self, written: Written) {
        if let Some(segment) = written.segment {
            self.remove_segments(std::slice::from_ref(&segment)).await;
        }
    }

    /// Removes the stripes of `segments` (written, never linked); stripes already gone are
    /// fine.
    pub async fn remove_segments(&self, segments: &[Segment]) {
        for segment in segments {
            for n in segment.stripe_range() {
                match self
                    .data_op(&segment.pool, &segment.stripe(n), vec![ObjectOp::Remove])
                    .await
                {
                    Ok(_) | Err(ObjectError::Op(OpError::NotFound)) => {}
                    Err(error) => {
                        tracing::warn!(stripe = %segment.stripe(n), %error, "removing a stripe failed");
                    }
                }
            }
        }
    }

    /// The bytes `range` of the object `entry` (whose inline data, if any, is `inline`), as a
    /// stream that reads a few stripes ahead.
    pub fn read_data(&self, entry: &Entry, inline: Option<Bytes>, range: Range<u64>) -> DataStream {
        if entry.inline || entry.segments.is_empty() {
            let data = inline.unwrap_or_default();
            let end = (range.end as usize).min(data.len());
            let start = (range.start as usize).min(end);
            let slice = data.slice(start..end);
            return Box::pin(futures::stream::iter(
                (!slice.is_empty()).then_some(Ok(slice)),
            ));
        }
        self.read_segments(&entry.segments, range)
    }

    /// The bytes `range` of the object `segments` describe (none past their end), as a
    /// stream that reads a few stripes ahead.
    pub fn read_segments(&self, segments: &[Segment], range: Range<u64>) -> DataStream {
        let pieces = crate::manifest::pieces(segments, range);
        let this = self.clone();
        let ahead = self.config().stripes_in_flight.max(1);
        Box::pin(
            futures::stream::iter(pieces)
                .map(move |(pool, name, offset, len)| {
                    let this = this.clone();
                    async move { this.read_piece(pool, name, offset, len).await }
                })
                .buffered(ahead)
                .map_ok(|chunks| futures::stream::iter(chunks.into_iter().map(Ok)))
                .try_flatten(),
        )
    }

    /// `len` bytes at `offset` of the stripe `name` (`None`: a hole, zeros), in the pieces
    /// they arrived in (no copy).
    async fn read_piece(
        &self,
        pool: Option<String>,
        name: Option<String>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<Bytes>, BucketError> {
        let Some(name) = name else {
            return Ok(zeros(len));
        };
        let (_, outputs) = self
            .data_op(&pool, &name, vec![ObjectOp::Read { offset, len }])
            .await
            .map_err(|e| match e {
                ObjectError::Op(OpError::NotFound) => {
                    BucketError::Corrupt(format!("stripe {name} of a linked object is missing"))
                }
                other => other.into(),
            })?;
        match outputs.into_iter().next() {
            Some(OpOutput::Data(data)) if data.len() as u64 == len => Ok(data.into_chunks()),
            Some(OpOutput::Data(data)) => Err(BucketError::Corrupt(format!(
                "stripe {name} holds {} bytes at {offset}, not {len}",
                data.len()
            ))),
            _ => Err(BucketError::Corrupt(format!(
                "a read of {name} returned no data"
            ))),
        }
    }
}

/// `len` zero bytes, in pieces of at most 1 MiB that share one static buffer.
fn zeros(len: u64) -> Vec<Bytes> {
    static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
    let mut out = Vec::new();
    let mut left = len as usize;
    while left > 0 {
        let n = left.min(ZEROS.len());
        out.push(Bytes::from_static(&ZEROS[..n]));
        left -= n;
    }
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
