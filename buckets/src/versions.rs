//! Versioning: S3's object versions and delete markers over the index shards.
//!
//! A key's current object stays `o<key>` (so reads, listings and the mount see what they saw
//! before); the versions that are not current, and delete markers, are `v<key>\0<version id>`
//! records in the same shard; `h<key>` holds the sequence number of the key's latest version.
//! Every change of a key's versions is one transaction of its shard, guarded on `o<key>`,
//! `h<key>` and the shard's versioning xattr, so concurrent writers each make exactly one
//! version, in the order the shard committed them. See docs/buckets.md.

use std::collections::HashMap;

use bytes::Bytes;
use serde_bytes::ByteBuf;
use tidepool_client::ObjectError;
use tidepool_proto::osd::{ObjectOp, OpError};

use crate::index::{guard, just_before, shard_is_open, versioning_is, LinkExtras, Linked, Listed};
use crate::records::{
    self, keys, version_id, version_seq, BucketInfo, Entry, Head, Version, Versioning,
};
use crate::{BucketError, Buckets, Deleted, ListQuery, PutCondition};

/// The id S3 gives the version written without versioning.
pub const NULL_VERSION: &str = "null";

/// One version of a key, as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedVersion {
    /// The key.
    pub key: String,
    /// Its id (`None`: the `null` version).
    pub version_id: Option<String>,
    /// Whether it is the key's latest version.
    pub is_latest: bool,
    /// The object (`None`: a delete marker).
    pub entry: Option<Entry>,
    /// When it was made (milliseconds since the Unix epoch).
    pub modified_ms: u64,
}

/// A listing of versions (`ListObjectVersions`).
#[derive(Clone, Debug, Default)]
pub struct VersionQuery {
    /// Prefix, delimiter and limit as for objects; `after` is the key marker.
    pub list: ListQuery,
    /// With `list.after`: start after this version of that key (`None`: after the whole key).
    pub version_after: Option<String>,
}

/// A page of versions.
#[derive(Clone, Debug, Default)]
pub struct VersionPage {
    /// Versions, by key, newest first within a key.
    pub versions: Vec<ListedVersion>,
    /// Common prefixes.
    pub prefixes: Vec<String>,
    /// Whether more follow.
    pub truncated: bool,
    /// Where the next page starts: after this key's version.
    pub next: Option<(String, Option<String>)>,
}

/// The sequence number of the current object `entry` of a key whose head is `head`.
fn current_seq(entry: &Entry, head: Option<Head>) -> u64 {
    entry
        .version_id
        .as_deref()
        .and_then(version_seq)
        // The current object is the latest version: the head's (a `null` version written
        // before the bucket had versioning has no head: its time orders it).
        .or(head.map(|h| h.seq))
        .unwrap_or(entry.modified_ms.saturating_mul(1000))
}

/// A version id as S3 shows it.
pub fn shown(id: &Option<String>) -> &str {
    id.as_deref().unwrap_or(NULL_VERSION)
}

/// Microseconds since the Unix epoch: new versions' sequence numbers start from the clock.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A key's current object and head, as read at one moment.
struct Snapshot {
    current: Option<Entry>,
    current_raw: Option<Vec<u8>>,
    inline: Option<Bytes>,
    head_raw: Option<Vec<u8>>,
}

/// What a version lookup found.
enum Target {
    /// The key's current object.
    Current,
    /// A record `v<key>…` and its encoding.
    Record(Vec<u8>, Vec<u8>, Version),
}

impl Buckets {
    /// Sets bucket `name`'s versioning to `Enabled` or `Suspended`: every shard first (links
    /// are guarded on it), then the directory (what `versioning` answers).
    pub async fn set_versioning(&self, name: &str, mode: Versioning) -> Result<(), BucketError> {
        if mode == Versioning::Off {
            return Err(BucketError::Invalid(
                "versioning can be enabled or suspended, not turned off".into(),
            ));
        }
        let info = self.lookup(name, true).await?;
        let allowed = |info: &BucketInfo| {
            if info.object_lock.is_some() && mode != Versioning::Enabled {
                return Err(BucketError::InvalidBucketState(
                    "versioning cannot be suspended on a bucket with object lock".into(),
                ));
            }
            Ok(())
        };
        allowed(&info)?;
        self.set_shard_versioning(&info, mode).await?;
        let changed = self
            .update_directory(&info, |i| {
                allowed(i)?;
                i.versioning = mode;
                Ok(())
            })
            .await;
        if let Err(BucketError::InvalidBucketState(_)) = &changed {
            // Object lock was enabled meanwhile: its shards stay `Enabled`.
            self.set_shard_versioning(&info, Versioning::Enabled)
                .await?;
        }
        changed.map(|_| ())
    }

    async fn set_shard_versioning(
        &self,
        info: &BucketInfo,
        mode: Versioning,
    ) -> Result<(), BucketError> {
        let value = mode.xattr().expect("enabled or suspended").to_vec();
        for shard in 0..info.shards {
            let ops = vec![
                shard_is_open(),
                ObjectOp::SetXattr(records::VERSIONING_XATTR.into(), value.clone()),
            ];
            match self.index_op(&info.shard_object(shard), ops).await {
                Ok(_) => {}
                Err(ObjectError::Op(OpError::GuardFailed(_))) => return Err(BucketError::Conflict),
                Err(ObjectError::Op(OpError::NotFound)) => return Err(BucketError::NoSuchBucket),
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }

    /// One attempt to link `new` (or a delete marker) as `key`'s latest version in shard
    /// `object` of versioning `mode`; `None` when a guard failed.
    pub(crate) async fn link_version(
        &self,
        object: &str,
        key: &str,
        new: &Option<(Entry, Option<Bytes>)>,
        condition: &PutCondition,
        extras: &LinkExtras,
        mode: Versioning,
    ) -> Result<Option<Linked>, BucketError> {
        let entry_key = keys::entry(key);
        let head_key = keys::head(key);
        let mut wanted = vec![entry_key.clone(), keys::inline(key), head_key.clone()];
        if let Some((upload_key, _)) = &extras.upload {
            wanted.push(upload_key.clone());
        }
        let mut found = self.shard_get(object, wanted).await?;
        if let Some((upload_key, upload_raw)) = &extras.upload {
            if found.get(upload_key) != Some(upload_raw) {
                return Err(BucketError::NoSuchUpload);
            }
        }
        let old_raw = found.remove(&entry_key);
        let old_inline = found.remove(&keys::inline(key));
        let head_raw = found.remove(&head_key);
        let old: Option<Entry> = old_raw.as_deref().map(records::decode).transpose()?;
        let head: Option<Head> = head_raw.as_deref().map(records::decode).transpose()?;
        condition.check(old.as_ref())?;
        let old_seq = old.as_ref().map(|o| current_seq(o, head));
        let seq = now_us()
            .max(head.map_or(0, |h| h.seq + 1))
            .max(old_seq.map_or(0, |s| s + 1));
        let id = (mode == Versioning::Enabled).then(|| version_id(seq));

        let mut ops = vec![
            shard_is_open(),
            versioning_is(mode),
            guard(entry_key.clone(), &old_raw),
            guard(head_key.clone(), &head_raw),
        ];
        let mut sets: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut removes: Vec<Vec<u8>> = Vec::new();
        if let Some((upload_key, upload_raw)) = &extras.upload {
            ops.push(guard(upload_key.clone(), &Some(upload_raw.clone())));
            removes.push(upload_key.clone());
        }
        let mut still: Vec<_> = new
            .as_ref()
            .map(|(e, _)| e.segments.clone())
            .unwrap_or_default();
        still.extend(extras.referenced.iter().cloned());
        let mut garbage = extras.garbage.clone();
        // The current object becomes an older version, unless it is the `null` version a
        // write under `Suspended` replaces.
        if let (Some(old), Some(old_seq)) = (&old, old_seq) {
            if mode == Versioning::Suspended && old.version_id.is_none() {
                crate::lock::check_replace(&old.meta)?;
                if old.links.is_none() {
                    garbage.extend(crate::manifest::unreferenced(&old.segments, &still));
                }
            } else {
                let version = Version {
                    id: old.version_id.clone(),
                    seq: old_seq,
                    entry: Some(old.clone()),
                    modified_ms: old.modified_ms,
                    inline: old_inline.clone().filter(|_| old.inline).map(ByteBuf::from),
                };
                sets.push((keys::version(key, old_seq), records::encode(&version)));
            }
        }
        // Under `Suspended` an older `null` version goes too: there is one `null` version.
        if mode == Versioning::Suspended {
            for (record_key, raw, version) in self.versions_of(object, key).await? {
                if version.id.is_none() {
                    if let Some(entry) = &version.entry {
                        crate::lock::check_replace(&entry.meta)?;
                    }
                    ops.push(guard(record_key.clone(), &Some(raw)));
                    removes.push(record_key);
                    if let Some(entry) = version.entry.filter(|e| e.links.is_none()) {
                        garbage.extend(crate::manifest::unreferenced(&entry.segments, &still));
                    }
                }
            }
        }
        let had_inline = old.as_ref().is_some_and(|o| o.inline);
        match new {
            Some((entry, inline)) => {
                let entry = Entry {
                    version_id: id.clone(),
                    ..entry.clone()
                };
                sets.push((entry_key, records::encode(&entry)));
                match inline {
                    Some(data) => sets.push((keys::inline(key), data.to_vec())),
                    None if had_inline => removes.push(keys::inline(key)),
                    None => {}
                }
            }
            None => {
                let marker = Version {
                    id: id.clone(),
                    seq,
                    entry: None,
                    modified_ms: crate::now_ms(),
                    inline: None,
                };
                sets.push((keys::version(key, seq), records::encode(&marker)));
                if old.is_some() {
                    removes.push(entry_key);
                }
                if had_inline {
                    removes.push(keys::inline(key));
                }
            }
        }
        sets.push((head_key, records::encode(&Head { seq })));
        ops.extend(omap_changes(removes, sets, self.garbage_record(garbage)));
        if !self.try_index_op(object, ops).await? {
            return Ok(None);
        }
        Ok(Some(Linked {
            old,
            version_id: id,
            delete_marker: new.is_none(),
        }))
    }

    /// The version records of `key` in shard `object`, newest first.
    async fn versions_of(
        &self,
        object: &str,
        key: &str,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>, Version)>, BucketError> {
        let scope = keys::versions(key);
        let found = self
            .shard_scan(object, &just_before(&scope), |k| k.starts_with(&scope))
            .await?;
        found
            .into_iter()
            .map(|(k, raw)| {
                let version = records::decode(&raw)?;
                Ok((k, raw, version))
            })
            .collect()
    }

    /// Version `version` of `key` in `bucket` (`"null"`: the `null` version) and its inline
    /// data. A delete marker is `MethodNotAllowed`, as S3 answers a GET of one.
    pub async fn get_version(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<(Entry, Option<Bytes>), BucketError> {
        let wanted = parse_version(version)?;
        self.on_bucket(bucket, |info| async move {
            let object = info.shard_object(info.shard_of(key));
            let (snapshot, target) = self.locate(&object, key, wanted).await?;
            match target.ok_or(BucketError::NoSuchVersion)? {
                Target::Current => Ok((snapshot.current.expect("current"), snapshot.inline)),
                Target::Record(_, _, version) => match version.entry {
                    Some(entry) => Ok((entry, version.inline.map(|d| Bytes::from(d.into_vec())))),
                    None => Err(BucketError::DeleteMarker(version.id)),
                },
            }
        })
        .await
    }

    /// The current object of `key` in shard `object`, its inline data and the key's head,
    /// and the records of `more` keys, all read at once.
    async fn snapshot(
        &self,
        object: &str,
        key: &str,
        more: Vec<Vec<u8>>,
    ) -> Result<(Snapshot, HashMap<Vec<u8>, Vec<u8>>), BucketError> {
        let mut wanted = vec![keys::entry(key), keys::inline(key), keys::head(key)];
        wanted.extend(more);
        let mut found = self.shard_get(object, wanted).await?;
        let current_raw = found.remove(&keys::entry(key));
        let current: Option<Entry> = current_raw.as_deref().map(records::decode).transpose()?;
        let inline = found
            .remove(&keys::inline(key))
            .map(Bytes::from)
            .filter(|_| current.as_ref().is_some_and(|e| e.inline));
        let head_raw = found.remove(&keys::head(key));
        let snapshot = Snapshot {
            current,
            current_raw,
            inline,
            head_raw,
        };
        Ok((snapshot, found))
    }

    /// The key's state and where version `wanted` (`None`: the `null` one) of it is, as of
    /// one moment (`None`: it does not exist).
    async fn locate(
        &self,
        object: &str,
        key: &str,
        wanted: Option<u64>,
    ) -> Result<(Snapshot, Option<Target>), BucketError> {
        for _ in 0..self.config().link_attempts_max {
            let record_key = wanted.map(|seq| keys::version(key, seq));
            let (snapshot, mut found) = self
                .snapshot(object, key, record_key.iter().cloned().collect())
                .await?;
            let current_id = snapshot.current.as_ref().map(|c| &c.version_id);
            if current_id.is_some_and(|id| id.as_deref().and_then(version_seq) == wanted) {
                return Ok((snapshot, Some(Target::Current)));
            }
            if let Some(record_key) = record_key {
                let target = match found.remove(&record_key) {
                    Some(raw) => {
                        let version = records::decode(&raw)?;
                        Some(Target::Record(record_key, raw, version))
                    }
                    None => None,
                };
                return Ok((snapshot, target));
            }
            // The `null` version among the older ones: a scan, after the read above.
            let null = self
                .versions_of(object, key)
                .await?
                .into_iter()
                .find(|(_, _, v)| v.id.is_none());
            if let Some((record_key, raw, version)) = null {
                return Ok((snapshot, Some(Target::Record(record_key, raw, version))));
            }
            // Absent, unless the key changed between the reads (a version moved from the
            // current entry to the records changes both).
            let (again, _) = self.snapshot(object, key, Vec::new()).await?;
            if again.current_raw == snapshot.current_raw && again.head_raw == snapshot.head_raw {
                return Ok((snapshot, None));
            }
        }
        Err(BucketError::Conflict)
    }

    /// Changes the metadata of `key`'s current object, or of its version `version`, in place
    /// with `change` (no new version: S3's tagging of an object). Returns the version id
    /// changed.
    pub async fn change_meta(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        change: impl Fn(&mut crate::ObjectMeta) -> Result<(), BucketError>,
    ) -> Result<Option<String>, BucketError> {
        let wanted = version.map(parse_version).transpose()?;
        let change = &change;
        self.on_bucket(bucket, |info| async move {
            let object = info.shard_object(info.shard_of(key));
            for _ in 0..self.config().link_attempts_max {
                let (snapshot, target) = match wanted {
                    Some(wanted) => self.locate(&object, key, wanted).await?,
                    None => {
                        let (snapshot, _) = self.snapshot(&object, key, Vec::new()).await?;
                        let target = snapshot.current.is_some().then_some(Target::Current);
                        (snapshot, target)
                    }
                };
                let (record_key, raw, encoded, id) = match target {
                    None if wanted.is_none() => return Err(BucketError::NoSuchKey),
                    None => return Err(BucketError::NoSuchVersion),
                    Some(Target::Current) => {
                        let mut entry = snapshot.current.expect("current");
                        change(&mut entry.meta)?;
                        let id = entry.version_id.clone();
                        let raw = snapshot.current_raw.expect("read");
                        (keys::entry(key), raw, records::encode(&entry), id)
                    }
                    Some(Target::Record(record_key, raw, mut version)) => {
                        let Some(entry) = version.entry.as_mut() else {
                            return Err(BucketError::DeleteMarker(version.id));
                        };
                        change(&mut entry.meta)?;
                        let id = version.id.clone();
                        (record_key, raw, records::encode(&version), id)
                    }
                };
                let ops = vec![
                    shard_is_open(),
                    guard(record_key.clone(), &Some(raw)),
                    ObjectOp::OmapSet(vec![(ByteBuf::from(record_key), ByteBuf::from(encoded))]),
                ];
                if self.try_index_op(&object, ops).await? {
                    return Ok(id);
                }
            }
            Err(BucketError::Conflict)
        })
        .await
    }

    /// Removes version `version` of `key` for good (`"null"`: the `null` version); its
    /// stripes become garbage. When it was the latest, the next newest becomes the latest
    /// (the current object, unless it is a delete marker). A version that does not exist is
    /// no error, as in S3. A version under object lock stays (`Locked`); `bypass` lets a
    /// governance-mode retention yield.
    pub async fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        bypass: bool,
    ) -> Result<Deleted, BucketError> {
        let wanted = parse_version(version)?;
        self.on_bucket(bucket, |info| async move {
            let object = info.shard_object(info.shard_of(key));
            for _ in 0..self.config().link_attempts_max {
                let (snapshot, target) = self.locate(&object, key, wanted).await?;
                let Some(target) = target else {
                    return Ok(Deleted {
                        version_id: wanted.map(version_id),
                        delete_marker: false,
                    });
                };
                let Snapshot {
                    current,
                    current_raw,
                    head_raw,
                    ..
                } = snapshot;
                let mut ops = vec![
                    shard_is_open(),
                    guard(keys::entry(key), &current_raw),
                    guard(keys::head(key), &head_raw),
                ];
                let mut removes = Vec::new();
                let mut sets = Vec::new();
                let locked = match &target {
                    Target::Current => current.as_ref(),
                    Target::Record(_, _, version) => version.entry.as_ref(),
                };
                if let Some(entry) = locked {
                    crate::lock::check_delete(&entry.meta, crate::now_ms(), bypass)?;
                }
                let (gone, was_latest, delete_marker) = match &target {
                    Target::Current => {
                        removes.push(keys::entry(key));
                        removes.push(keys::inline(key));
                        (current.clone(), true, false)
                    }
                    Target::Record(record_key, raw, version) => {
                        ops.push(guard(record_key.clone(), &Some(raw.clone())));
                        removes.push(record_key.clone());
                        let head: Option<Head> =
                            head_raw.as_deref().map(records::decode).transpose()?;
                        let latest =
                            current.is_none() && head.is_some_and(|h| h.seq == version.seq);
                        (version.entry.clone(), latest, version.entry.is_none())
                    }
                };
                if was_latest {
                    // The next newest version becomes the latest.
                    let rest: Vec<_> = self
                        .versions_of(&object, key)
                        .await?
                        .into_iter()
                        .filter(|(k, _, _)| !removes.contains(k))
                        .collect();
                    match rest.first() {
                        Some((record_key, raw, version)) => {
                            if let Some(entry) = &version.entry {
                                ops.push(guard(record_key.clone(), &Some(raw.clone())));
                                removes.push(record_key.clone());
                                sets.push((
                                    keys::entry(key),
                                    records::encode(&Entry {
                                        version_id: version.id.clone(),
                                        ..entry.clone()
                                    }),
                                ));
                                if let Some(data) = &version.inline {
                                    sets.push((keys::inline(key), data.to_vec()));
                                }
                            }
                            sets.push((
                                keys::head(key),
                                records::encode(&Head { seq: version.seq }),
                            ));
                        }
                        None => removes.push(keys::head(key)),
                    }
                }
                let garbage = gone
                    .filter(|e| e.links.is_none())
                    .map(|e| e.segments)
                    .unwrap_or_default();
                ops.extend(omap_changes(removes, sets, self.garbage_record(garbage)));
                if self.try_index_op(&object, ops).await? {
                    return Ok(Deleted {
                        version_id: wanted.map(version_id),
                        delete_marker,
                    });
                }
            }
            Err(BucketError::Conflict)
        })
        .await
    }

    /// Lists the versions of `bucket`'s keys as `query` asks: keys in order, each key's
    /// versions newest first, common prefixes counted as one each.
    pub async fn list_versions(
        &self,
        bucket: &str,
        query: &VersionQuery,
    ) -> Result<VersionPage, BucketError> {
        self.on_bucket(bucket, |info| async move {
            let limit = query.list.limit;
            let mut page = VersionPage::default();
            // The rest of the key the last page stopped in.
            let mut first: Option<(String, String)> = None;
            if let (Some(key), Some(after)) = (&query.list.after, &query.version_after) {
                first = Some((key.clone(), after.clone()));
            }
            let keys_page = self.list_raw(&info, &query.list, b"ho").await?;
            let mut items: Vec<Listed> = Vec::new();
            if let Some((key, _)) = &first {
                if key.starts_with(&query.list.prefix) {
                    items.push(Listed::Key {
                        key: key.clone(),
                        entry: None,
                        versioned: true,
                    });
                }
            }
            items.extend(keys_page.items);
            for item in items {
                match item {
                    Listed::Prefix(prefix) => {
                        if page.versions.len() + page.prefixes.len() >= limit {
                            page.truncated = true;
                            return Ok(page);
                        }
                        page.next = Some((prefix.clone(), None));
                        page.prefixes.push(prefix);
                    }
                    Listed::Key {
                        key,
                        entry,
                        versioned,
                    } => {
                        let object = info.shard_object(info.shard_of(&key));
                        let mut versions = Vec::new();
                        let current = match entry {
                            Some(raw) => Some(records::decode::<Entry>(&raw)?),
                            None if versioned => {
                                self.snapshot(&object, &key, Vec::new()).await?.0.current
                            }
                            None => None,
                        };
                        if let Some(entry) = current {
                            versions.push(ListedVersion {
                                key: key.clone(),
                                version_id: entry.version_id.clone(),
                                is_latest: true,
                                modified_ms: entry.modified_ms,
                                entry: Some(entry),
                            });
                        }
                        if versioned {
                            for (_, _, version) in self.versions_of(&object, &key).await? {
                                versions.push(ListedVersion {
                                    key: key.clone(),
                                    version_id: version.id,
                                    is_latest: versions.is_empty(),
                                    entry: version.entry,
                                    modified_ms: version.modified_ms,
                                });
                            }
                        }
                        if let Some((first_key, after)) = &first {
                            if *first_key == key {
                                match versions
                                    .iter()
                                    .position(|v| shown(&v.version_id) == after.as_str())
                                {
                                    Some(at) => {
                                        versions.drain(..=at);
                                    }
                                    None => versions.clear(),
                                }
                            }
                        }
                        for version in versions {
                            if page.versions.len() + page.prefixes.len() >= limit {
                                page.truncated = true;
                                return Ok(page);
                            }
                            page.next =
                                Some((key.clone(), Some(shown(&version.version_id).into())));
                            page.versions.push(version);
                        }
                    }
                }
            }
            page.truncated = keys_page.truncated;
            Ok(page)
        })
        .await
    }
}

/// The omap changes of a transaction: `removes` first, then `sets` and the garbage record (a
/// key removed and set again, as a promoted version's entry is, ends set).
fn omap_changes(
    removes: Vec<Vec<u8>>,
    sets: Vec<(Vec<u8>, Vec<u8>)>,
    garbage: Option<(ByteBuf, ByteBuf)>,
) -> Vec<ObjectOp> {
    let mut ops = Vec::new();
    if !removes.is_empty() {
        ops.push(ObjectOp::OmapRemove(
            removes.into_iter().map(ByteBuf::from).collect(),
        ));
    }
    let sets: Vec<(ByteBuf, ByteBuf)> = sets
        .into_iter()
        .map(|(k, v)| (ByteBuf::from(k), ByteBuf::from(v)))
        .chain(garbage)
        .collect();
    if !sets.is_empty() {
        ops.push(ObjectOp::OmapSet(sets));
    }
    ops
}

/// The sequence number a version id names (`None`: the `null` version); a malformed id is
/// `Invalid`, as S3 refuses it.
fn parse_version(version: &str) -> Result<Option<u64>, BucketError> {
    if version == NULL_VERSION {
        return Ok(None);
    }
    version_seq(version)
        .map(Some)
        .ok_or_else(|| BucketError::Invalid("invalid version id specified".into()))
}
