//! Multipart uploads: the upload record in the index shard, parts recorded in their own
//! object, and completion that links a manifest made of the parts' segments (no data copy).

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use serde_bytes::ByteBuf;
use tidepool_client::ObjectError;
use tidepool_proto::osd::{ObjectOp, OpError};

use crate::index::{LinkExtras, PutCondition};
use crate::records::{self, keys, upload_object, Entry, ObjectMeta, Part, Upload};
use crate::{now_ms, omap_output, random_id, BucketError, Buckets, Written};

/// The smallest part S3 accepts before the last one.
pub const PART_BYTES_MIN: u64 = 5 << 20;

/// The highest part number.
pub const PART_NUMBER_MAX: u32 = 10_000;

/// A part named in a completion request.
#[derive(Clone, Debug)]
pub struct CompletedPart {
    /// Its number.
    pub number: u32,
    /// The ETag the client holds for it.
    pub etag: String,
}

/// What a completion makes of the upload's parts' checksums: the object's, by algorithm.
pub type ObjectChecksums<'a> =
    dyn Fn(&Upload, &[&Part]) -> Result<BTreeMap<String, String>, BucketError> + Send + Sync + 'a;

impl Buckets {
    /// Starts a multipart upload of `key`; returns its id.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
    ) -> Result<Upload, BucketError> {
        crate::check_key(key)?;
        let info = self.lookup(bucket, false).await?;
        let upload = Upload {
            key: key.to_owned(),
            id: random_id(),
            initiated_ms: now_ms(),
            meta,
        };
        let object = info.shard_object(info.shard_of(key));
        let ops = vec![
            ObjectOp::CompareXattr(
                records::STATE_XATTR.into(),
                Some(ByteBuf::from(records::STATE_OPEN)),
            ),
            ObjectOp::OmapSet(vec![(
                ByteBuf::from(keys::upload(key, &upload.id)),
                ByteBuf::from(records::encode(&upload)),
            )]),
        ];
        match self.index_op(&object, ops).await {
            Ok(_) => Ok(upload),
            Err(ObjectError::Op(OpError::NotFound)) => Err(BucketError::NoSuchBucket),
            Err(ObjectError::Op(OpError::GuardFailed(_))) => Err(BucketError::Conflict),
            Err(other) => Err(other.into()),
        }
    }

    /// The upload `id` of `key` and its raw record.
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> Result<(Upload, Vec<u8>), BucketError> {
        let info = self.lookup(bucket, false).await?;
        let object = info.shard_object(info.shard_of(key));
        let upload_key = keys::upload(key, id);
        let ops = vec![ObjectOp::OmapGet(vec![ByteBuf::from(upload_key)])];
        let found = match self.index_op(&object, ops).await {
            Ok((_, outputs)) => omap_output(outputs)?,
            Err(ObjectError::Op(OpError::NotFound)) => return Err(BucketError::NoSuchBucket),
            Err(other) => return Err(other.into()),
        };
        let raw = found
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .ok_or(BucketError::NoSuchUpload)?;
        Ok((records::decode(&raw)?, raw))
    }

    /// Records `written` as part `number` of `upload` (as [`Buckets::upload`] found it); a
    /// part uploaded before under the same number becomes garbage.
    pub async fn put_part(
        &self,
        upload: &Upload,
        number: u32,
        written: Written,
        checksums: BTreeMap<String, String>,
    ) -> Result<Part, BucketError> {
        if !(1..=PART_NUMBER_MAX).contains(&number) {
            self.discard(written).await;
            return Err(BucketError::Invalid(format!(
                "part numbers are 1 to {PART_NUMBER_MAX}"
            )));
        }
        let id = &upload.id;
        let part = Part {
            number,
            etag: written.md5_hex.clone(),
            size: written.size,
            modified_ms: now_ms(),
            segment: written.segment.clone(),
            checksums,
        };
        let part_key = ByteBuf::from(keys::part(number));
        let ops = vec![
            ObjectOp::OmapGet(vec![part_key.clone()]),
            ObjectOp::OmapSet(vec![(part_key, ByteBuf::from(records::encode(&part)))]),
        ];
        let replaced = match self.index_op(&upload_object(id), ops).await {
            Ok((_, outputs)) => omap_output(outputs).unwrap_or_default(),
            // A first part: the parts object does not exist yet, so the read finds nothing.
            Err(ObjectError::Op(OpError::NotFound)) => {
                let ops = vec![ObjectOp::OmapSet(vec![(
                    ByteBuf::from(keys::part(number)),
                    ByteBuf::from(records::encode(&part)),
                )])];
                self.index_op(&upload_object(id), ops).await?;
                Vec::new()
            }
            Err(other) => {
                // A part record that may name these stripes keeps them.
                if !other.in_doubt() {
                    self.discard(written).await;
                }
                return Err(other.into());
            }
        };
        for (_, raw) in replaced {
            if let Ok(old) = records::decode::<Part>(&raw) {
                if let Some(segment) = old.segment {
                    self.remove_segments(std::slice::from_ref(&segment)).await;
                }
            }
        }
        Ok(part)
    }

    /// Every part of upload `id`, in number order.
    pub async fn parts(&self, id: &str) -> Result<Vec<Part>, BucketError> {
        self.omap_values(&upload_object(id))
            .await?
            .iter()
            .map(|raw| records::decode(raw))
            .collect()
    }

    /// The object a completion of `chosen` parts made when it is still `key`'s current
    /// object: a completion repeated after a lost answer (SDKs retry them) succeeds again, as
    /// in S3. The ETag of a multipart object is a digest of its parts' ETags, so the entry is
    /// known by it. `NoSuchUpload` otherwise.
    async fn completed(
        &self,
        bucket: &str,
        key: &str,
        chosen: &[CompletedPart],
    ) -> Result<Entry, BucketError> {
        let mut md5s = Md5::new();
        for part in chosen {
            let digest =
                decode_hex(part.etag.trim_matches('"')).map_err(|_| BucketError::NoSuchUpload)?;
            md5s.update(digest);
        }
        let etag = format!("{}-{}", crate::data::hex(&md5s.finalize()), chosen.len());
        match self.head(bucket, key).await {
            Ok(entry) if !chosen.is_empty() && entry.etag == etag => Ok(entry),
            Ok(_) | Err(BucketError::NoSuchKey) => Err(BucketError::NoSuchUpload),
            Err(other) => Err(other),
        }
    }

    /// Completes upload `id` with `chosen` parts: links the object whose manifest lists their
    /// segments, and unlinks the parts left out.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        chosen: &[CompletedPart],
        condition: &PutCondition,
        checksums: &ObjectChecksums<'_>,
    ) -> Result<Entry, BucketError> {
        let (upload, raw) = match self.upload(bucket, key, id).await {
            Err(BucketError::NoSuchUpload) => return self.completed(bucket, key, chosen).await,
            found => found?,
        };
        let parts: BTreeMap<u32, Part> = self
            .parts(id)
            .await?
            .into_iter()
            .map(|p| (p.number, p))
            .collect();
        if chosen.is_empty() {
            return Err(BucketError::Invalid(
                "a completion names at least one part".into(),
            ));
        }
        if chosen.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(BucketError::InvalidPartOrder);
        }
        let mut md5s = Md5::new();
        let mut segments = Vec::new();
        let mut part_sizes = Vec::new();
        let mut size = 0u64;
        for (i, wanted) in chosen.iter().enumerate() {
            let part = parts.get(&wanted.number).ok_or_else(|| {
                BucketError::InvalidPart(format!("part {} was not uploaded", wanted.number))
            })?;
            if wanted.etag.trim_matches('"') != part.etag {
                return Err(BucketError::InvalidPart(format!(
                    "part {}'s ETag is not {}",
                    wanted.number, wanted.etag
                )));
            }
            if i + 1 < chosen.len() && part.size < PART_BYTES_MIN {
                return Err(BucketError::EntityTooSmall(part.number));
            }
            md5s.update(decode_hex(&part.etag)?);
            segments.extend(part.segment.clone());
            part_sizes.push(part.size);
            size += part.size;
        }
        let used: Vec<u32> = chosen.iter().map(|c| c.number).collect();
        let garbage = parts
            .values()
            .filter(|p| !used.contains(&p.number))
            .filter_map(|p| p.segment.clone())
            .collect();
        // The object's checksums are made from its parts' (checked when they arrived).
        let used_parts: Vec<&Part> = chosen.iter().filter_map(|c| parts.get(&c.number)).collect();
        let mut meta = upload.meta.clone();
        meta.checksums = checksums(&upload, &used_parts)?;
        let entry = Entry {
            size,
            etag: format!("{}-{}", crate::data::hex(&md5s.finalize()), chosen.len()),
            modified_ms: now_ms(),
            meta,
            segments,
            inline: false,
            part_sizes,
            links: None,
            version_id: None,
        };
        let extras = LinkExtras {
            upload: Some((keys::upload(key, id), raw)),
            garbage,
            referenced: Vec::new(),
        };
        let linked = self
            .link(bucket, key, Some((entry.clone(), None)), condition, extras)
            .await?;
        let _ = self
            .index_op(&upload_object(id), vec![ObjectOp::Remove])
            .await;
        Ok(Entry {
            version_id: linked.version_id,
            ..entry
        })
    }

    /// Abandons upload `id`: its record goes and its parts become garbage.
    pub async fn abort_upload(&self, bucket: &str, key: &str, id: &str) -> Result<(), BucketError> {
        let (_, raw) = self.upload(bucket, key, id).await?;
        let info = self.lookup(bucket, false).await?;
        let garbage: Vec<_> = self
            .parts(id)
            .await?
            .into_iter()
            .filter_map(|p| p.segment)
            .collect();
        let object = info.shard_object(info.shard_of(key));
        let upload_key = ByteBuf::from(keys::upload(key, id));
        let mut ops = vec![
            ObjectOp::CompareOmap(upload_key.clone(), Some(ByteBuf::from(raw))),
            ObjectOp::OmapRemove(vec![upload_key]),
        ];
        if !garbage.is_empty() {
            let due = now_ms() + self.config().gc_delay.as_millis() as u64;
            ops.push(ObjectOp::OmapSet(vec![(
                ByteBuf::from(keys::garbage(due, &random_id())),
                ByteBuf::from(records::encode(&records::Garbage { segments: garbage })),
            )]));
        }
        match self.index_op(&object, ops).await {
            Ok(_) => {}
            Err(ObjectError::Op(OpError::GuardFailed(_))) => return Err(BucketError::NoSuchUpload),
            Err(other) => return Err(other.into()),
        }
        let _ = self
            .index_op(&upload_object(id), vec![ObjectOp::Remove])
            .await;
        Ok(())
    }

    /// The uploads in progress in `bucket` whose keys begin with `prefix`, ordered by key and
    /// then initiation.
    pub async fn uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<Upload>, BucketError> {
        let info = self.lookup(bucket, false).await?;
        let scope = keys::prefixed(b'u', prefix.as_bytes());
        let start = crate::index::just_before(&scope);
        let mut uploads = Vec::new();
        for shard in 0..info.shards {
            let found = self
                .shard_scan(&info.shard_object(shard), &start, |key| {
                    key.starts_with(&scope)
                })
                .await?;
            for (_, raw) in found {
                uploads.push(records::decode::<Upload>(&raw)?);
            }
        }
        uploads
            .sort_by(|a, b| (&a.key, a.initiated_ms, &a.id).cmp(&(&b.key, b.initiated_ms, &b.id)));
        Ok(uploads)
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>, BucketError> {
    if !text.len().is_multiple_of(2) {
        return Err(BucketError::Corrupt(format!("{text:?} is not hex")));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| BucketError::Corrupt(format!("{text:?} is not hex")))
        })
        .collect()
}
