//! Buckets and objects over the cluster, for the S3 gateway and the FUSE mount: a bucket
//! directory, bucket indexes sharded over omap objects, object data striped into 4 MiB
//! objects described by a manifest, multipart uploads whose parts become the manifest, and a
//! garbage collector for unlinked stripes. See docs/buckets.md.

pub mod acl;
pub mod classes;
mod data;
pub mod gc;
mod index;
pub mod lifecycle;
mod links;
pub mod lock;
pub mod manifest;
mod multipart;
pub mod records;
mod rename;
mod versions;

use std::sync::Arc;
use std::time::Duration;

use serde_bytes::ByteBuf;
use tidepool_client::{ObjectClient, ObjectError};
use tidepool_proto::osd::{ObjectOp, OpError, OpOutput};

pub use acl::{Acl, Grant, Grantee, Ownership, Permission, PublicAccessBlock};
pub use data::{hex, DataStream, WriteOptions, Written};
pub use index::{Deleted, ListPage, ListQuery, PutCondition};
pub use lifecycle::{LifecycleProgress, LifecycleRule, LifecycleStatus};
pub use lock::{DefaultRetention, LockError, LockMode, ObjectLock, Retention};
pub use multipart::{CompletedPart, ObjectChecksums};
pub use records::{
    BucketInfo, ContentHeaders, CorsRule, Entry, LinkGroup, ObjectMeta, Part, Segment, Upload,
    Versioning,
};
pub use rename::{MovedIn, RenameIntent, TreeRename};
pub use versions::{shown, ListedVersion, VersionPage, VersionQuery, NULL_VERSION};

/// Why a bucket operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// No bucket of that name.
    #[error("no such bucket")]
    NoSuchBucket,
    /// The bucket exists and belongs to the caller.
    #[error("the bucket exists and is yours")]
    BucketOwned,
    /// The bucket exists and belongs to someone else.
    #[error("the bucket exists")]
    BucketExists,
    /// The bucket holds objects or uploads.
    #[error("the bucket is not empty")]
    BucketNotEmpty,
    /// No object of that key.
    #[error("no such key")]
    NoSuchKey,
    /// No version of that id.
    #[error("no such version")]
    NoSuchVersion,
    /// The version asked for is a delete marker (its id).
    #[error("the version is a delete marker")]
    DeleteMarker(Option<String>),
    /// No multipart upload of that id.
    #[error("no such upload")]
    NoSuchUpload,
    /// A write names a storage class that maps to no data pool.
    #[error("no storage class {0}")]
    InvalidStorageClass(String),
    /// A conditional write's condition is false.
    #[error("a precondition failed")]
    PreconditionFailed,
    /// A part of a completion list was not uploaded or its ETag differs.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// A completion list is not in ascending part order.
    #[error("parts are not in ascending order")]
    InvalidPartOrder,
    /// A part other than the last is smaller than the minimum.
    #[error("part {0} is smaller than the minimum part size")]
    EntityTooSmall(u32),
    /// The request is not acceptable (a bad name, a bad argument).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Object lock forbids it (retention or legal hold).
    #[error("object lock: {0}")]
    Locked(String),
    /// The bucket's state does not allow it (object lock needs versioning, and keeps it).
    #[error("the bucket's state does not allow it: {0}")]
    InvalidBucketState(String),
    /// The bucket does not offer this.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// Concurrent changes of one key kept winning; the caller may retry.
    #[error("the key changed concurrently too many times")]
    Conflict,
    /// A checksum the request names does not match what was computed.
    #[error("bad digest: {0}")]
    BadDigest(String),
    /// The request body failed while it was read.
    #[error("reading the request body: {0}")]
    Body(String),
    /// A stored record does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The cluster did not serve the operation.
    #[error(transparent)]
    Cluster(#[from] ObjectError),
}

impl BucketError {
    /// Whether the change may have been made although it failed (see
    /// [`ObjectError::in_doubt`]): the data it links must then stay.
    pub fn in_doubt(&self) -> bool {
        matches!(self, BucketError::Cluster(error) if error.in_doubt())
    }
}

/// What a new bucket is created with besides its name and owner.
#[derive(Clone, Debug, Default)]
pub struct CreateBucket {
    /// Object lock (and so versioning) from the start.
    pub object_lock: bool,
    /// The location (region) the creator named, answered by `GetBucketLocation`.
    pub location: Option<String>,
    /// Its ACL (`None`: the owner's alone).
    pub acl: Option<Acl>,
    /// Its object ownership, if set.
    pub ownership: Option<Ownership>,
}

/// How the bucket layer lays out its data.
#[derive(Clone, Debug)]
pub struct BucketsConfig {
    /// The pool of the directory, index shards and uploads.
    pub index_pool: String,
    /// The pool of the stripes.
    pub data_pool: String,
    /// Index shards of a new bucket.
    pub shards: u32,
    /// Bytes per stripe.
    pub stripe_bytes: u64,
    /// Objects smaller than this are kept in the index shard beside their entry.
    pub inline_bytes_max: u64,
    /// Stripe writes in flight per upload, and stripe reads ahead per download.
    pub stripes_in_flight: usize,
    /// How long unlinked stripes stay before the collector removes them.
    pub gc_delay: Duration,
    /// How many times a guarded index change is tried before [`BucketError::Conflict`].
    pub link_attempts_max: u32,
    /// How long a lifecycle rule's day lasts (a day; shorter to try rules out, as Ceph's
    /// `rgw_lc_debug_interval`).
    pub lifecycle_day: Duration,
}

impl Default for BucketsConfig {
    fn default() -> BucketsConfig {
        BucketsConfig {
            index_pool: "buckets.index".into(),
            data_pool: "buckets.data".into(),
            shards: 8,
            stripe_bytes: 4 << 20,
            inline_bytes_max: 64 << 10,
            stripes_in_flight: 4,
            gc_delay: Duration::from_secs(120),
            link_attempts_max: 32,
            lifecycle_day: Duration::from_secs(86_400),
        }
    }
}

/// The bucket layer: cheap to clone, shared by every request of a gateway or mount.
#[derive(Clone, Debug)]
pub struct Buckets {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Arc<ObjectClient>,
    config: BucketsConfig,
    cache: index::BucketCache,
    classes: classes::ClassCache,
}

impl Buckets {
    /// The bucket layer over `client`.
    pub fn new(client: Arc<ObjectClient>, config: BucketsConfig) -> Buckets {
        Buckets {
            inner: Arc::new(Inner {
                client,
                config,
                cache: index::BucketCache::default(),
                classes: classes::ClassCache::default(),
            }),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &BucketsConfig {
        &self.inner.config
    }

    async fn index_op(
        &self,
        object: &str,
        ops: Vec<ObjectOp>,
    ) -> Result<(u64, Vec<OpOutput>), ObjectError> {
        self.op(&self.inner.config.index_pool, object, ops).await
    }

    /// An operation on a stripe of data pool `pool` (`None`: the default data pool).
    async fn data_op(
        &self,
        pool: &Option<String>,
        object: &str,
        ops: Vec<ObjectOp>,
    ) -> Result<(u64, Vec<OpOutput>), ObjectError> {
        let pool = pool.as_deref().unwrap_or(&self.inner.config.data_pool);
        self.op(pool, object, ops).await
    }

    async fn op(
        &self,
        pool: &str,
        object: &str,
        ops: Vec<ObjectOp>,
    ) -> Result<(u64, Vec<OpOutput>), ObjectError> {
        self.inner.client.execute(pool, object, ops).await
    }

    /// Every omap value of index object `object`, in key order (none when it does not exist).
    async fn omap_values(&self, object: &str) -> Result<Vec<Vec<u8>>, BucketError> {
        const PAGE: u32 = 1000;
        let mut values = Vec::new();
        let mut start_after: Option<ByteBuf> = None;
        loop {
            let ops = vec![ObjectOp::OmapList {
                start_after: start_after.take(),
                limit: PAGE,
            }];
            let page = match self.index_op(object, ops).await {
                Ok((_, outputs)) => omap_output(outputs)?,
                Err(ObjectError::Op(OpError::NotFound)) => Vec::new(),
                Err(other) => return Err(other.into()),
            };
            let done = page.len() < PAGE as usize;
            start_after = page.last().map(|(k, _)| ByteBuf::from(k.clone()));
            values.extend(page.into_iter().map(|(_, v)| v));
            if done {
                return Ok(values);
            }
        }
    }

    /// Every bucket, in name order.
    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>, BucketError> {
        self.omap_values(records::DIRECTORY)
            .await?
            .iter()
            .map(|raw| records::decode(raw))
            .collect()
    }

    /// The bucket `name`.
    pub async fn bucket(&self, name: &str) -> Result<BucketInfo, BucketError> {
        let raw = self.directory_entry(name).await?;
        raw.map(|raw| records::decode(&raw))
            .unwrap_or(Err(BucketError::NoSuchBucket))
    }

    async fn directory_entry(&self, name: &str) -> Result<Option<Vec<u8>>, BucketError> {
        match self
            .index_op(
                records::DIRECTORY,
                vec![ObjectOp::OmapGet(vec![ByteBuf::from(name.as_bytes())])],
            )
            .await
        {
            Ok((_, outputs)) => Ok(omap_output(outputs)?.into_iter().next().map(|(_, v)| v)),
            Err(ObjectError::Op(OpError::NotFound)) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Creates bucket `name` owned by `owner` as `options` ask: its index shards first, then
    /// its directory entry, guarded so that two creators cannot both succeed.
    pub async fn create_bucket(
        &self,
        name: &str,
        owner: &str,
        options: &CreateBucket,
    ) -> Result<BucketInfo, BucketError> {
        let object_lock = options.object_lock;
        check_bucket_name(name)?;
        if let Some(raw) = self.directory_entry(name).await? {
            let existing: BucketInfo = records::decode(&raw)?;
            return Err(if existing.owner == owner {
                BucketError::BucketOwned
            } else {
                BucketError::BucketExists
            });
        }
        let info = BucketInfo {
            versioning: if object_lock {
                records::Versioning::Enabled
            } else {
                records::Versioning::Off
            },
            object_lock: object_lock.then(ObjectLock::default),
            location: options.location.clone(),
            acl: options.acl.clone(),
            ownership: options.ownership,
            ..BucketInfo::new(name, owner, self.inner.config.shards)
        };
        for shard in 0..info.shards {
            let mut ops = vec![
                ObjectOp::Create { exclusive: true },
                ObjectOp::SetXattr(records::STATE_XATTR.into(), records::STATE_OPEN.to_vec()),
            ];
            if let Some(value) = info.versioning.xattr() {
                ops.push(ObjectOp::SetXattr(
                    records::VERSIONING_XATTR.into(),
                    value.to_vec(),
                ));
            }
            self.index_op(&info.shard_object(shard), ops).await?;
        }
        let key = ByteBuf::from(name.as_bytes());
        let linked = self
            .index_op(
                records::DIRECTORY,
                vec![
                    ObjectOp::CompareOmap(key.clone(), None),
                    ObjectOp::OmapSet(vec![(key, ByteBuf::from(records::encode(&info)))]),
                ],
            )
            .await;
        match linked {
            Ok(_) => Ok(info),
            Err(ObjectError::Op(OpError::GuardFailed(_))) => {
                self.remove_shards(&info).await;
                let existing = self.bucket(name).await?;
                Err(if existing.owner == owner {
                    BucketError::BucketOwned
                } else {
                    BucketError::BucketExists
                })
            }
            Err(other) => {
                self.remove_shards(&info).await;
                Err(other.into())
            }
        }
    }

    async fn remove_shards(&self, info: &BucketInfo) {
        for shard in 0..info.shards {
            let _ = self
                .index_op(&info.shard_object(shard), vec![ObjectOp::Remove])
                .await;
        }
    }

    /// Sets bucket `name`'s tags (S3 bucket tagging; empty: none).
    pub async fn set_bucket_tags(
        &self,
        name: &str,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<(), BucketError> {
        self.change_bucket(name, |i| {
            i.tags.clone_from(&tags);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Sets bucket `name`'s CORS rules (empty: none).
    pub async fn set_bucket_cors(
        &self,
        name: &str,
        rules: Vec<CorsRule>,
    ) -> Result<(), BucketError> {
        self.change_bucket(name, |i| {
            i.cors.clone_from(&rules);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Changes bucket `name`'s record with `change` (its ACL, policy, public access block or
    /// ownership: what the gateway checks and S3 keeps in the bucket).
    pub async fn change_bucket(
        &self,
        name: &str,
        change: impl Fn(&mut BucketInfo) -> Result<(), BucketError>,
    ) -> Result<BucketInfo, BucketError> {
        let info = self.lookup(name, true).await?;
        self.update_directory(&info, change).await
    }

    /// Sets bucket `name`'s object lock configuration, enabling object lock on a bucket
    /// whose versioning is enabled (`InvalidBucketState` otherwise).
    pub async fn set_object_lock(&self, name: &str, lock: ObjectLock) -> Result<(), BucketError> {
        self.change_bucket(name, |i| {
            if i.versioning != records::Versioning::Enabled {
                return Err(BucketError::InvalidBucketState(
                    "object lock needs versioning enabled".into(),
                ));
            }
            i.object_lock = Some(lock.clone());
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Changes bucket `info`'s directory entry with `change`, guarded on what it was; the
    /// cache learns the new one.
    pub(crate) async fn update_directory(
        &self,
        info: &BucketInfo,
        change: impl Fn(&mut BucketInfo) -> Result<(), BucketError>,
    ) -> Result<BucketInfo, BucketError> {
        let mut info = info.clone();
        for _ in 0..self.config().link_attempts_max {
            let mut new = info.clone();
            change(&mut new)?;
            let key = ByteBuf::from(info.name.as_bytes());
            let ops = vec![
                ObjectOp::CompareOmap(key.clone(), Some(ByteBuf::from(records::encode(&info)))),
                ObjectOp::OmapSet(vec![(key, ByteBuf::from(records::encode(&new)))]),
            ];
            if self.try_index_op(records::DIRECTORY, ops).await? {
                self.forget(&new.name);
                return Ok(new);
            }
            let fresh = self.bucket(&info.name).await?;
            if fresh.id != info.id {
                return Err(BucketError::NoSuchBucket);
            }
            info = fresh;
        }
        Err(BucketError::Conflict)
    }

    async fn set_state(&self, info: &BucketInfo, state: &[u8]) -> Result<(), BucketError> {
        for shard in 0..info.shards {
            self.index_op(
                &info.shard_object(shard),
                vec![ObjectOp::SetXattr(
                    records::STATE_XATTR.into(),
                    state.to_vec(),
                )],
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes bucket `name` when it holds no objects and no uploads. Shards are closed first,
    /// so no write can land while emptiness is checked.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), BucketError> {
        let info = self.bucket(name).await?;
        self.set_state(&info, records::STATE_CLOSING).await?;
        let mut garbage = Vec::new();
        for shard in 0..info.shards {
            let page = self
                .index_op(
                    &info.shard_object(shard),
                    vec![ObjectOp::OmapList {
                        start_after: Some(ByteBuf::from(b"h".to_vec())),
                        limit: 1,
                    }],
                )
                .await;
            let page = match page {
                Ok((_, outputs)) => omap_output(outputs)?,
                Err(ObjectError::Op(OpError::NotFound)) => Vec::new(),
                Err(other) => {
                    self.set_state(&info, records::STATE_OPEN).await?;
                    return Err(other.into());
                }
            };
            if !page.is_empty() {
                self.set_state(&info, records::STATE_OPEN).await?;
                return Err(BucketError::BucketNotEmpty);
            }
            garbage.extend(self.shard_garbage(&info, shard, u64::MAX).await?);
        }
        let key = ByteBuf::from(name.as_bytes());
        self.index_op(
            records::DIRECTORY,
            vec![
                ObjectOp::CompareOmap(key.clone(), Some(ByteBuf::from(records::encode(&info)))),
                ObjectOp::OmapRemove(vec![key]),
            ],
        )
        .await
        .map_err(|e| match e {
            ObjectError::Op(OpError::GuardFailed(_)) => BucketError::NoSuchBucket,
            other => other.into(),
        })?;
        self.forget(name);
        // Garbage still waiting in the shards goes now: nothing can read it any more.
        for (_, record) in garbage {
            self.remove_segments(&record.segments).await;
        }
        self.remove_shards(&info).await;
        Ok(())
    }
}

/// Omap keys and values, in key order.
type OmapEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// The omap entries of a transaction whose one output is an omap answer.
fn omap_output(outputs: Vec<OpOutput>) -> Result<OmapEntries, BucketError> {
    match outputs.into_iter().find(|o| matches!(o, OpOutput::Omap(_))) {
        Some(OpOutput::Omap(entries)) => Ok(entries
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect()),
        _ => Err(BucketError::Corrupt(
            "an omap read returned no entries".into(),
        )),
    }
}

/// Checks a bucket name against S3's rules: 3–63 characters of lower-case letters, digits,
/// dots and hyphens, beginning and ending with a letter or digit, not shaped like an IP
/// address.
pub fn check_bucket_name(name: &str) -> Result<(), BucketError> {
    let bytes = name.as_bytes();
    let valid_chars = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-');
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ip_like = name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok());
    if !(3..=63).contains(&bytes.len())
        || !valid_chars
        || !edge(bytes.first())
        || !edge(bytes.last())
        || name.contains("..")
        || ip_like
    {
        return Err(BucketError::Invalid(format!(
            "{name:?} is not a valid bucket name"
        )));
    }
    Ok(())
}

/// Checks an object key: 1 to 1,024 bytes of UTF-8 (as S3 allows).
pub fn check_key(key: &str) -> Result<(), BucketError> {
    if key.is_empty() || key.len() > 1024 {
        return Err(BucketError::Invalid(
            "object keys are 1 to 1,024 bytes".into(),
        ));
    }
    Ok(())
}

/// 128 random bits as 32 hex digits.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the kernel's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "my-bucket.1", "a23", &"a".repeat(63)] {
            assert!(check_bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a..b",
            "a_b",
            "192.168.1.1",
            &"a".repeat(64),
        ] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_bounded() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(1024)).is_ok());
        assert!(check_key(&"k".repeat(1025)).is_err());
        assert_eq!(random_id().len(), 32);
        assert_ne!(random_id(), random_id());
    }
}
