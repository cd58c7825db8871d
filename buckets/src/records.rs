//! What the bucket layer stores: the records of the directory, the index shards and multipart
//! uploads, their omap keys, and their versioned encoding.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::BucketError;

/// Format version written first in every record.
const FORMAT: u8 = 1;

/// Encodes a record: the format version, then the record with named fields (so fields can be
/// added with defaults later).
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(&(FORMAT, record)).expect("records encode")
}

/// Decodes a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BucketError> {
    let (format, record): (u8, T) = rmp_serde::from_slice(bytes)
        .map_err(|e| BucketError::Corrupt(format!("a record does not decode: {e}")))?;
    if format != FORMAT {
        return Err(BucketError::Corrupt(format!(
            "record format {format} is not {FORMAT}"
        )));
    }
    Ok(record)
}

/// A bucket, as the directory holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    /// The bucket's name.
    pub name: String,
    /// Unique per creation: a bucket deleted and created again gets a new one.
    pub id: String,
    /// The user who created it.
    pub owner: String,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// How many index shards it has.
    pub shards: u32,
    /// Its versioning state (each shard holds it too, in xattr [`VERSIONING_XATTR`]).
    /// Written only once set, so a bucket's record encodes as it did before versioning
    /// existed (guards compare records byte for byte).
    #[serde(default, skip_serializing_if = "Versioning::is_off")]
    pub versioning: Versioning,
    /// Its tags (S3 bucket tagging).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Its CORS rules, in order (none: browsers from other origins are refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors: Vec<CorsRule>,
    /// Its object lock, once enabled (its versioning is then `Enabled` for good).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<crate::ObjectLock>,
    /// The location its creator named (`None`: the default, `us-east-1` in S3's terms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Its ACL (`None`: its owner's alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<crate::Acl>,
    /// Its policy, as the owner sent it (checked when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Its public access block, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access_block: Option<crate::PublicAccessBlock>,
    /// Its object ownership, if set (`None`: as `ObjectWriter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<crate::Ownership>,
    /// Its lifecycle rules, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycle: Vec<crate::LifecycleRule>,
}

/// One CORS rule of a bucket, as S3's `CORSRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    /// Its id, if given.
    pub id: Option<String>,
    /// Origins it allows (each may hold one `*`).
    pub allowed_origins: Vec<String>,
    /// Methods it allows (`GET`, `PUT`, `POST`, `DELETE`, `HEAD`).
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for (each may hold one `*`).
    pub allowed_headers: Vec<String>,
    /// Response headers the browser may show the page.
    pub expose_headers: Vec<String>,
    /// How long a browser may cache the preflight's answer.
    pub max_age_seconds: Option<i32>,
}

/// A bucket's versioning state, as S3 has it: never enabled, enabled, or suspended (a
/// bucket once versioned never goes back to unversioned).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    /// Never enabled: a write replaces the key's one object.
    #[default]
    Off,
    /// Every write makes a new version; a delete makes a delete marker.
    Enabled,
    /// Writes and deletes make or replace the `null` version; other versions stay.
    Suspended,
}

impl Versioning {
    /// Whether versioning was never set.
    pub fn is_off(&self) -> bool {
        *self == Versioning::Off
    }

    /// The shard xattr's value (none for `Off`).
    pub fn xattr(self) -> Option<&'static [u8]> {
        match self {
            Versioning::Off => None,
            Versioning::Enabled => Some(b"Enabled"),
            Versioning::Suspended => Some(b"Suspended"),
        }
    }

    /// The state a shard xattr's value names (anything unknown reads as `Enabled`, which
    /// keeps every version).
    pub fn from_xattr(value: Option<&[u8]>) -> Versioning {
        match value {
            None => Versioning::Off,
            Some(b"Suspended") => Versioning::Suspended,
            Some(_) => Versioning::Enabled,
        }
    }
}

/// The shard xattr that holds the bucket's [`Versioning`]; every link is guarded on it.
pub const VERSIONING_XATTR: &str = "versioning";

/// `h<key>`: the sequence number of a key's latest version (an object or a delete marker), in
/// buckets that have had versioning. Every change of the key's versions is guarded on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The latest version's sequence number.
    pub seq: u64,
}

/// `v<key>\0<version>`: a version that is not the current object: an older object, or a
/// delete marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The version id (`None`: the `null` version).
    pub id: Option<String>,
    /// Its sequence number: versions of a key are ordered by it, newest highest.
    pub seq: u64,
    /// The object (`None`: a delete marker).
    pub entry: Option<Entry>,
    /// When it was made (milliseconds since the Unix epoch).
    pub modified_ms: u64,
    /// The object's data, when it was inline.
    #[serde(default)]
    pub inline: Option<serde_bytes::ByteBuf>,
}

/// The version id of sequence number `seq`: newer versions have smaller ids, so a key's
/// versions list newest first.
pub fn version_id(seq: u64) -> String {
    format!("{:016x}", u64::MAX - seq)
}

/// The sequence number of version id `id` (`None`: not one this store makes).
pub fn version_seq(id: &str) -> Option<u64> {
    if id.len() != 16 {
        return None;
    }
    u64::from_str_radix(id, 16)
        .ok()
        .map(|inverted| u64::MAX - inverted)
}

impl BucketInfo {
    /// A new bucket `name` of `owner` with `shards` index shards and nothing else set.
    pub fn new(name: &str, owner: &str, shards: u32) -> BucketInfo {
        BucketInfo {
            name: name.to_owned(),
            id: crate::random_id(),
            owner: owner.to_owned(),
            created_ms: crate::now_ms(),
            shards,
            versioning: Versioning::Off,
            tags: BTreeMap::new(),
            cors: Vec::new(),
            object_lock: None,
            location: None,
            acl: None,
            policy: None,
            public_access_block: None,
            ownership: None,
            lifecycle: Vec::new(),
        }
    }

    /// The index object of shard `shard`.
    pub fn shard_object(&self, shard: u32) -> String {
        format!("index.{}.{shard}", self.id)
    }

    /// The shard that indexes `key`.
    pub fn shard_of(&self, key: &str) -> u32 {
        (tidepool_placement::hash::fnv1a64(key.as_bytes()) % u64::from(self.shards.max(1))) as u32
    }
}

/// Consecutive bytes of an object: bytes `offset..offset + size` of one data id's stream,
/// whose stripe `n` is the data-pool object `<prefix>.<n>` holding bytes
/// `n × stripe_bytes..(n + 1) × stripe_bytes` (the last may be short). A segment with an
/// empty prefix is a hole: zeros, stored nowhere. See `manifest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// `<bucket id>.<data id>` (empty: a hole).
    pub prefix: String,
    /// Where in the data id's stream the segment begins.
    #[serde(default)]
    pub offset: u64,
    /// Bytes in the segment.
    pub size: u64,
    /// Bytes per stripe.
    pub stripe_bytes: u64,
    /// The data pool of its stripes (`None`: the layer's default data pool).
    #[serde(default)]
    pub pool: Option<String>,
}

impl Segment {
    /// A hole of `size` bytes: zeros, stored nowhere.
    pub fn hole(size: u64) -> Segment {
        Segment {
            prefix: String::new(),
            offset: 0,
            size,
            stripe_bytes: 0,
            pool: None,
        }
    }

    /// Whether it is a hole.
    pub fn is_hole(&self) -> bool {
        self.prefix.is_empty()
    }

    /// The numbers of the stripes that hold its bytes (none for a hole).
    pub fn stripe_range(&self) -> std::ops::Range<u64> {
        if self.is_hole() || self.size == 0 {
            return 0..0;
        }
        let stripe_bytes = self.stripe_bytes.max(1);
        self.offset / stripe_bytes..(self.offset + self.size).div_ceil(stripe_bytes)
    }

    /// How many stripes hold it.
    pub fn stripes(&self) -> u64 {
        let range = self.stripe_range();
        range.end - range.start
    }

    /// The name of stripe `n`.
    pub fn stripe(&self, n: u64) -> String {
        format!("{}.{n}", self.prefix)
    }
}

/// The standard content headers kept with an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentHeaders {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Expires`, as sent.
    pub expires: Option<String>,
}

/// What the caller says about an object besides its data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Content headers.
    pub headers: ContentHeaders,
    /// User metadata (`x-amz-meta-*`), names in lower case.
    pub metadata: BTreeMap<String, String>,
    /// Checksums by algorithm (`CRC32`, `CRC32C`, `SHA1`, `SHA256`, `CRC64NVME`), base64.
    pub checksums: BTreeMap<String, String>,
    /// The S3 storage class it was written with (`None`: `STANDARD`).
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Its tags (S3 object tagging).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Its retention (object lock), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::Retention>,
    /// Whether it is under a legal hold (object lock).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legal_hold: bool,
    /// Its ACL (`None`: the bucket owner's alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<crate::Acl>,
    /// How a multipart object's checksums were made from its parts' (`COMPOSITE` or
    /// `FULL_OBJECT`; `None`: a whole object's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
}

/// An object's index entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Bytes.
    pub size: u64,
    /// The ETag without quotes: hex MD5, or MD5-of-MD5s with `-N` for multipart.
    pub etag: String,
    /// Last modification (milliseconds since the Unix epoch).
    pub modified_ms: u64,
    /// Headers, metadata and checksums.
    pub meta: ObjectMeta,
    /// Where the data is, in order; empty when the data is inline (or empty).
    pub segments: Vec<Segment>,
    /// Whether the data lives in the shard beside the entry.
    pub inline: bool,
    /// Sizes of the parts of a multipart object (empty otherwise).
    #[serde(default)]
    pub part_sizes: Vec<u64>,
    /// The link group whose other names share this entry's inode (hard links), if any.
    #[serde(default)]
    pub links: Option<String>,
    /// The version id (`None`: the `null` version, or a bucket without versioning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The key it will create.
    pub key: String,
    /// Its id.
    pub id: String,
    /// When it began (milliseconds since the Unix epoch).
    pub initiated_ms: u64,
    /// The object's headers and metadata; the checksum algorithm, if any, under `checksums`
    /// with an empty value.
    pub meta: ObjectMeta,
}

/// One uploaded part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Its number (1..=10,000).
    pub number: u32,
    /// Hex MD5 of its bytes.
    pub etag: String,
    /// Bytes.
    pub size: u64,
    /// When it was uploaded (milliseconds since the Unix epoch).
    pub modified_ms: u64,
    /// Where its bytes are (`None`: an empty part).
    pub segment: Option<Segment>,
    /// Checksums sent with it.
    pub checksums: BTreeMap<String, String>,
}

/// Keys that name one inode (hard links), and what keeps its stripes: kept under `l<id>` in
/// the index shard of `id`. See docs/buckets.md.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkGroup {
    /// The keys whose entries say they belong.
    pub names: BTreeSet<String>,
    /// Open files whose keys are gone (`host:pid:n`): they still read the stripes.
    pub holders: BTreeSet<String>,
    /// Every segment a member's entry has named: garbage when the group ends.
    pub segments: Vec<Segment>,
}

impl LinkGroup {
    /// Whether anything still needs its stripes.
    pub fn alive(&self) -> bool {
        !self.names.is_empty() || !self.holders.is_empty()
    }

    /// Adds `segments` to what the group keeps (each once).
    pub fn keep(&mut self, segments: &[Segment]) {
        for segment in segments {
            if !segment.is_hole() && !self.segments.contains(segment) {
                self.segments.push(segment.clone());
            }
        }
    }
}

/// Stripes unlinked from the index, to be removed once due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Garbage {
    /// The segments whose stripes go.
    pub segments: Vec<Segment>,
}

/// The omap namespaces of an index shard (first byte of the key).
pub mod keys {
    /// `o<key>`: an object's entry.
    pub fn entry(key: &str) -> Vec<u8> {
        prefixed(b'o', key.as_bytes())
    }

    /// `h<key>`: a key's [`Head`](super::Head).
    pub fn head(key: &str) -> Vec<u8> {
        prefixed(b'h', key.as_bytes())
    }

    /// `v<key>\0`: what every version record of `key` begins with.
    pub fn versions(key: &str) -> Vec<u8> {
        let mut out = prefixed(b'v', key.as_bytes());
        out.push(0);
        out
    }

    /// `v<key>\0<version id of seq>`: a [`Version`](super::Version) of `key`.
    pub fn version(key: &str, seq: u64) -> Vec<u8> {
        let mut out = versions(key);
        out.extend_from_slice(super::version_id(seq).as_bytes());
        out
    }

    /// `r<key>`: a rename of `key` to a key of another shard, under way.
    pub fn rename(key: &str) -> Vec<u8> {
        prefixed(b'r', key.as_bytes())
    }

    /// `m<key>`: the target's record of a rename to `key` from another shard.
    pub fn moved(key: &str) -> Vec<u8> {
        prefixed(b'm', key.as_bytes())
    }

    /// `t<prefix>`: a rename of every key under `prefix`, under way (in shard 0).
    pub fn tree(prefix: &str) -> Vec<u8> {
        prefixed(b't', prefix.as_bytes())
    }

    /// `l<id>`: a link group.
    pub fn links(id: &str) -> Vec<u8> {
        prefixed(b'l', id.as_bytes())
    }

    /// `d<key>`: an object's inline data.
    pub fn inline(key: &str) -> Vec<u8> {
        prefixed(b'd', key.as_bytes())
    }

    /// `u<key>\0<id>`: a multipart upload.
    pub fn upload(key: &str, id: &str) -> Vec<u8> {
        let mut out = prefixed(b'u', key.as_bytes());
        out.push(0);
        out.extend_from_slice(id.as_bytes());
        out
    }

    /// `g<due, 16 hex digits><id>`: garbage due at `due_ms`.
    pub fn garbage(due_ms: u64, id: &str) -> Vec<u8> {
        prefixed(b'g', format!("{due_ms:016x}{id}").as_bytes())
    }

    /// When a garbage key is due.
    pub fn garbage_due(key: &[u8]) -> Option<u64> {
        let hex = std::str::from_utf8(key.get(1..17)?).ok()?;
        u64::from_str_radix(hex, 16).ok()
    }

    /// `namespace` followed by `rest`.
    pub fn prefixed(namespace: u8, rest: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(rest.len() + 1);
        out.push(namespace);
        out.extend_from_slice(rest);
        out
    }

    /// The key of a part in `upload.<id>`: its number, big-endian, so parts list in order.
    pub fn part(number: u32) -> Vec<u8> {
        number.to_be_bytes().to_vec()
    }
}

/// The directory object.
pub const DIRECTORY: &str = "buckets";
/// The index pool object whose omap maps S3 storage classes to data pools.
pub const STORAGE_CLASSES: &str = "storage_classes";

/// The object holding the parts of upload `id`.
pub fn upload_object(id: &str) -> String {
    format!("upload.{id}")
}

/// The shard xattr that says whether links may land.
pub const STATE_XATTR: &str = "state";

/// The value of [`STATE_XATTR`] while the bucket takes writes.
pub const STATE_OPEN: &[u8] = b"open";

/// The value of [`STATE_XATTR`] while the bucket is being deleted.
pub const STATE_CLOSING: &[u8] = b"closing";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_other_formats() {
        let info = BucketInfo {
            name: "b".into(),
            id: "0123".into(),
            owner: "alice".into(),
            created_ms: 7,
            shards: 8,
            versioning: Versioning::Suspended,
            tags: BTreeMap::from([("team".into(), "data".into())]),
            cors: vec![CorsRule {
                allowed_origins: vec!["https://*.example.com".into()],
                allowed_methods: vec!["GET".into()],
                ..CorsRule::default()
            }],
            object_lock: Some(crate::ObjectLock {
                default: Some(crate::DefaultRetention {
                    mode: crate::LockMode::Governance,
                    days: Some(3),
                    years: None,
                }),
            }),
            location: Some("eu-west-1".into()),
            ..BucketInfo::new("b", "alice", 8)
        };
        let bytes = encode(&info);
        assert_eq!(decode::<BucketInfo>(&bytes).expect("decodes"), info);
        let other = rmp_serde::to_vec_named(&(2u8, &info)).expect("encodes");
        assert!(matches!(
            decode::<BucketInfo>(&other),
            Err(BucketError::Corrupt(_))
        ));
        assert!(decode::<BucketInfo>(b"\xff\x00").is_err());
    }

    #[test]
    fn keys_keep_namespaces_apart_and_in_order() {
        assert!(keys::entry("a") < keys::entry("b"));
        assert!(keys::inline("zzz") < keys::garbage(5, "x"));
        assert!(keys::garbage(u64::MAX, "x") < keys::entry(""));
        assert!(keys::entry("\u{10ffff}") < keys::upload("", "id"));
        assert_eq!(keys::garbage_due(&keys::garbage(1234, "id")), Some(1234));
        assert!(keys::part(2) < keys::part(10));
    }

    #[test]
    fn versions_list_newest_first_and_ids_round_trip() {
        let (older, newer) = (1_700_000_000_000_000u64, 1_700_000_000_000_001u64);
        assert!(keys::version("k", newer) < keys::version("k", older));
        assert!(version_id(newer) < version_id(older));
        assert_eq!(version_seq(&version_id(older)), Some(older));
        assert_eq!(version_seq("null"), None);
        assert_eq!(version_seq("not-an-id-at-all"), None);
        // A key's versions stay together, apart from a longer key's.
        assert!(keys::version("k", 0) < keys::versions("k\u{1}"));
        assert!(keys::version("k", u64::MAX).starts_with(&keys::versions("k")));
        // Emptiness is checked past `h`: heads and versions count, garbage does not.
        assert!(keys::garbage(u64::MAX, "x") < b"h".to_vec());
        assert!(keys::head("") > b"h".to_vec() || keys::head("a") > b"h".to_vec());
        assert!(keys::versions("") > b"h".to_vec());
    }

    #[test]
    fn records_from_before_versioning_read_as_unversioned() {
        #[derive(Serialize)]
        struct OldInfo {
            name: String,
            id: String,
            owner: String,
            created_ms: u64,
            shards: u32,
        }
        let old = OldInfo {
            name: "b".into(),
            id: "i".into(),
            owner: "o".into(),
            created_ms: 1,
            shards: 4,
        };
        let info: BucketInfo = decode(&encode(&old)).expect("decodes");
        assert_eq!(info.versioning, Versioning::Off);
        // Written again, it is the same bytes: guards on the old record still hold.
        assert_eq!(encode(&info), encode(&old));
        for mode in [Versioning::Off, Versioning::Enabled, Versioning::Suspended] {
            assert_eq!(Versioning::from_xattr(mode.xattr()), mode);
        }
    }

    #[test]
    fn shards_spread_keys() {
        let info = BucketInfo {
            name: "b".into(),
            id: "i".into(),
            owner: "o".into(),
            created_ms: 0,
            shards: 8,
            versioning: Versioning::Off,
            tags: BTreeMap::new(),
            cors: Vec::new(),
            ..BucketInfo::new("b", "o", 8)
        };
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[info.shard_of(&format!("key-{i}")) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
