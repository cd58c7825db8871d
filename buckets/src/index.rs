//! Bucket indexes: looking up, linking and unlinking entries with guarded shard transactions,
//! and listing by merging the shards in key order.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;

use bytes::Bytes;
use serde_bytes::ByteBuf;
use tidepool_client::ObjectError;
use tidepool_proto::osd::{ObjectOp, OpError, OpOutput};

use crate::records::{self, keys, BucketInfo, Entry, Garbage, Segment, Versioning};
use crate::{omap_output, random_id, BucketError, Buckets};

/// A condition on the entry a write replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PutCondition {
    /// Replace whatever is there.
    #[default]
    Always,
    /// Only when no object has the key (`If-None-Match: *`).
    Absent,
    /// Only when the object's ETag is this (`If-Match`; `*`: any object).
    Matches(String),
    /// Only when the entry is exactly this one (what a write that reuses its stripes needs).
    Exactly(Box<Entry>),
}

impl PutCondition {
    pub(crate) fn check(&self, old: Option<&Entry>) -> Result<(), BucketError> {
        let holds = match self {
            PutCondition::Always => true,
            PutCondition::Absent => old.is_none(),
            PutCondition::Matches(etag) => {
                old.is_some_and(|old| etag == "*" || etag.trim_matches('"') == old.etag)
            }
            // The version id is the index's to give: a caller that rewrites what it read
            // names the same object whatever id the index gave it.
            PutCondition::Exactly(entry) => old.is_some_and(|old| {
                Entry {
                    version_id: old.version_id.clone(),
                    ..entry.as_ref().clone()
                } == *old
            }),
        };
        if holds {
            Ok(())
        } else {
            Err(BucketError::PreconditionFailed)
        }
    }
}

/// What a link does besides replacing the key's entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct LinkExtras {
    /// A multipart upload record that must still exist, and goes.
    pub upload: Option<(Vec<u8>, Vec<u8>)>,
    /// More stripes to unlink (parts left out of a completed upload).
    pub garbage: Vec<Segment>,
    /// Stripes another entry names: never garbage, even when the replaced entry named them.
    pub referenced: Vec<Segment>,
}

/// What a link did.
#[derive(Clone, Debug, Default)]
pub(crate) struct Linked {
    /// The key's current object before (kept as an older version in a versioned bucket).
    pub old: Option<Entry>,
    /// The version the link made (`None`: the `null` version, or no versioning).
    pub version_id: Option<String>,
    /// Whether that version is a delete marker.
    pub delete_marker: bool,
}

/// What a delete did, as S3 answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The version made (a delete marker) or removed (`None`: none, or the `null` one).
    pub version_id: Option<String>,
    /// Whether that version is a delete marker.
    pub delete_marker: bool,
}

/// A listing request.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Only keys that begin with this.
    pub prefix: String,
    /// Group keys that contain this after the prefix into common prefixes.
    pub delimiter: Option<String>,
    /// Only keys after this one (a marker, start-after or continuation).
    pub after: Option<String>,
    /// At most this many keys and common prefixes together.
    pub limit: usize,
}

/// A page of a listing.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// Keys and their entries, in order.
    pub entries: Vec<(String, Entry)>,
    /// Common prefixes, in order.
    pub prefixes: Vec<String>,
    /// Whether more keys follow.
    pub truncated: bool,
    /// The last key or common prefix of the page (where the next page starts after).
    pub last: Option<String>,
}

/// What a listing found, in key order.
#[derive(Clone, Debug)]
pub(crate) enum Listed {
    /// A common prefix.
    Prefix(String),
    /// A key, with its entry's record (if it has a current object) and whether it has a
    /// version head.
    Key {
        key: String,
        entry: Option<Vec<u8>>,
        versioned: bool,
    },
}

/// A page of [`Listed`] items.
#[derive(Clone, Debug, Default)]
pub(crate) struct RawPage {
    pub items: Vec<Listed>,
    pub truncated: bool,
}

/// One shard's position in a merged listing of one namespace.
struct Cursor {
    object: String,
    namespace: u8,
    scope: Vec<u8>,
    buffered: VecDeque<(String, Vec<u8>)>,
    start_after: Vec<u8>,
    done: bool,
}

/// The greatest byte string below every string that begins with `prefix` (UTF-8 never holds
/// 0xFF, so `prefix` with its last byte lowered and 0xFF after sorts just before it).
pub(crate) fn just_before(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    match out.pop() {
        Some(0) | None => {}
        Some(last) => {
            out.push(last - 1);
            out.extend_from_slice(&[0xff; 4]);
        }
    }
    out
}

/// The least byte string after every string that begins with `prefix`.
fn just_after_all(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(&[0xff; 4]);
    out
}

/// The guard that an index shard takes links.
pub(crate) fn shard_is_open() -> ObjectOp {
    ObjectOp::CompareXattr(
        records::STATE_XATTR.into(),
        Some(ByteBuf::from(records::STATE_OPEN)),
    )
}

/// The guard that a shard's versioning is `mode`.
pub(crate) fn versioning_is(mode: Versioning) -> ObjectOp {
    ObjectOp::CompareXattr(
        records::VERSIONING_XATTR.into(),
        mode.xattr().map(ByteBuf::from),
    )
}

/// The guard that omap `key` holds `value` (`None`: is absent).
pub(crate) fn guard(key: Vec<u8>, value: &Option<Vec<u8>>) -> ObjectOp {
    ObjectOp::CompareOmap(ByteBuf::from(key), value.clone().map(ByteBuf::from))
}

/// Caches bucket infos by name; a stale one is noticed when its shards are gone.
#[derive(Debug, Default)]
pub(crate) struct BucketCache(Mutex<HashMap<String, BucketInfo>>);

impl Buckets {
    /// The bucket `name`, from the cache when `fresh` is false.
    pub async fn lookup(&self, name: &str, fresh: bool) -> Result<BucketInfo, BucketError> {
        if !fresh {
            if let Some(info) = self.inner.cache.0.lock().expect("cache").get(name) {
                return Ok(info.clone());
            }
        }
        let found = self.bucket(name).await;
        let mut cache = self.inner.cache.0.lock().expect("cache");
        match &found {
            Ok(info) => {
                cache.insert(name.to_owned(), info.clone());
            }
            Err(_) => {
                cache.remove(name);
            }
        }
        found
    }

    /// Runs `f` on bucket `name`, once more with a fresh lookup if the cached bucket is gone.
    /// A bucket of the same name created since by another owner is not the one the caller
    /// meant (nor may be allowed to use): that is `NoSuchBucket`.
    pub(crate) async fn on_bucket<T, F, Fut>(&self, name: &str, f: F) -> Result<T, BucketError>
    where
        F: Fn(BucketInfo) -> Fut,
        Fut: Future<Output = Result<T, BucketError>>,
    {
        let info = self.lookup(name, false).await?;
        let owner = info.owner.clone();
        match f(info).await {
            Err(BucketError::NoSuchBucket) => {
                let fresh = self.lookup(name, true).await?;
                if fresh.owner != owner {
                    return Err(BucketError::NoSuchBucket);
                }
                f(fresh).await
            }
            other => other,
        }
    }

    /// Forgets the cached bucket `name`.
    pub(crate) fn forget(&self, name: &str) {
        self.inner.cache.0.lock().expect("cache").remove(name);
    }

    /// Reads omap `keys` of shard `object`; shard gone means the bucket is.
    pub(crate) async fn shard_get(
        &self,
        object: &str,
        keys: Vec<Vec<u8>>,
    ) -> Result<HashMap<Vec<u8>, Vec<u8>>, BucketError> {
        let ops = vec![ObjectOp::OmapGet(
            keys.into_iter().map(ByteBuf::from).collect(),
        )];
        match self.index_op(object, ops).await {
            Ok((_, outputs)) => Ok(omap_output(outputs)?.into_iter().collect()),
            Err(ObjectError::Op(OpError::NotFound)) => Err(BucketError::NoSuchBucket),
            Err(other) => Err(other.into()),
        }
    }

    /// The entry of `key` in `bucket`, without its data.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Entry, BucketError> {
        self.on_bucket(bucket, |info| async move {
            let object = info.shard_object(info.shard_of(key));
            let found = self.shard_get(&object, vec![keys::entry(key)]).await?;
            let raw = found.get(&keys::entry(key)).ok_or(BucketError::NoSuchKey)?;
            records::decode(raw)
        })
        .await
    }

    /// The entry of `key` in `bucket` and its inline data.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(Entry, Option<Bytes>), BucketError> {
        self.on_bucket(bucket, |info| async move {
            let object = info.shard_object(info.shard_of(key));
            let mut found = self
                .shard_get(&object, vec![keys::entry(key), keys::inline(key)])
                .await?;
            let raw = found.get(&keys::entry(key)).ok_or(BucketError::NoSuchKey)?;
            let entry: Entry = records::decode(raw)?;
            let inline = found.remove(&keys::inline(key)).map(Bytes::from);
            if entry.inline && inline.as_ref().map(|d| d.len() as u64) != Some(entry.size) {
                return Err(BucketError::Corrupt(format!(
                    "the inline data of {key:?} is missing or of the wrong size"
                )));
            }
            Ok((entry, inline))
        })
        .await
    }

    /// Links `written` data as `key` of `bucket` with `meta`, when `condition` holds; the
    /// replaced object's stripes become garbage. Returns the new entry.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        written: crate::Written,
        meta: crate::ObjectMeta,
        condition: &PutCondition,
    ) -> Result<Entry, BucketError> {
        let entry = Entry {
            size: written.size,
            etag: written.md5_hex.clone(),
            modified_ms: crate::now_ms(),
            meta,
            segments: written.segment.iter().cloned().collect(),
            inline: written.inline.is_some() && written.size > 0,
            part_sizes: Vec::new(),
            links: None,
            version_id: None,
        };
        let inline = written.inline.clone().filter(|d| !d.is_empty());
        let linked = self
            .link(
                bucket,
                key,
                Some((entry.clone(), inline)),
                condition,
                LinkExtras::default(),
            )
            .await;
        match linked {
            Ok(linked) => Ok(Entry {
                version_id: linked.version_id,
                ..entry
            }),
            // The entry may name these stripes now: they stay (unreferenced, they are only
            // space) rather than risk an entry that names removed stripes.
            Err(error) if error.in_doubt() => {
                tracing::warn!(%bucket, %key, %error, "the link is in doubt; keeping its stripes");
                Err(error)
            }
            Err(error) => {
                self.discard(written).await;
                Err(error)
            }
        }
    }

    /// Links `entry` (with its inline data) as `key` of `bucket` when `condition` holds: its
    /// stripes are already written. What the replaced entry named and `entry` does not
    /// becomes garbage. An entry of a link group goes to every name of the group (see
    /// [`Buckets::hard_link`]). Returns the replaced entry.
    pub async fn put_entry(
        &self,
        bucket: &str,
        key: &str,
        entry: Entry,
        inline: Option<Bytes>,
        condition: &PutCondition,
    ) -> Result<Option<Entry>, BucketError> {
        if entry.links.is_some() {
            return self.put_linked(bucket, key, entry, inline, condition).await;
        }
        self.link(
            bucket,
            key,
            Some((entry, inline)),
            condition,
            LinkExtras::default(),
        )
        .await
        .map(|linked| linked.old)
    }

    /// Removes `key` from `bucket` (no error when it is absent, as S3 does); its stripes
    /// become garbage. In a versioned bucket it makes a delete marker instead.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<Deleted, BucketError> {
        self.link(
            bucket,
            key,
            None,
            &PutCondition::Always,
            LinkExtras::default(),
        )
        .await
        .map(|linked| Deleted {
            version_id: linked.version_id,
            delete_marker: linked.delete_marker,
        })
    }

    /// Replaces `key`'s entry with `new` (or removes it) in one guarded shard transaction,
    /// retried while concurrent changes win. In a bucket that has had versioning the replaced
    /// entry is kept as a version (see `versions.rs`).
    pub(crate) async fn link(
        &self,
        bucket: &str,
        key: &str,
        new: Option<(Entry, Option<Bytes>)>,
        condition: &PutCondition,
        extras: LinkExtras,
    ) -> Result<Linked, BucketError> {
        let new = &new;
        let extras = &extras;
        self.on_bucket(bucket, |info| async move {
            let object = info.shard_object(info.shard_of(key));
            let mut mode = info.versioning;
            let entry_key = keys::entry(key);
            // A plain write of a new key needs no read first: assume absence, and read only
            // when the guard says otherwise.
            // Nor does a write that knows the exact entry it replaces (records encode the
            // same way every time).
            let mut known: Option<Option<Vec<u8>>> = match condition {
                _ if new.is_none() || extras.upload.is_some() => None,
                PutCondition::Always | PutCondition::Absent => Some(None),
                PutCondition::Exactly(entry) => Some(Some(records::encode(entry.as_ref()))),
                PutCondition::Matches(_) => None,
            };
            for _ in 0..self.config().link_attempts_max {
                if mode != Versioning::Off {
                    let attempt = self
                        .link_version(&object, key, new, condition, extras, mode)
                        .await?;
                    match attempt {
                        Some(linked) => return Ok(linked),
                        None => {
                            mode = self.shard_versioning(&object).await?;
                            continue;
                        }
                    }
                }
                let (old_raw, intent_raw) = match known.take() {
                    Some(assumed) => (assumed, None),
                    None => {
                        let mut wanted = vec![entry_key.clone(), keys::rename(key)];
                        if let Some((upload_key, _)) = &extras.upload {
                            wanted.push(upload_key.clone());
                        }
                        let mut found = self.shard_get(&object, wanted).await?;
                        if let Some((upload_key, upload_raw)) = &extras.upload {
                            if found.get(upload_key) != Some(upload_raw) {
                                return Err(BucketError::NoSuchUpload);
                            }
                        }
                        (found.remove(&entry_key), found.remove(&keys::rename(key)))
                    }
                };
                // A rename of this key to another shard is under way: the stripes it moves
                // are the target's, never garbage.
                let mut extras = extras.clone();
                if let Some(raw) = &intent_raw {
                    let intent: crate::RenameIntent = records::decode(raw)?;
                    let moved: Entry = records::decode(&intent.entry)?;
                    extras.referenced.extend(moved.segments);
                }
                let extras = &extras;
                let old: Option<Entry> = old_raw.as_deref().map(records::decode).transpose()?;
                if new.is_none() && old.is_none() && extras.upload.is_none() {
                    return Ok(Linked::default());
                }
                condition.check(old.as_ref())?;
                let mut ops = self.link_ops(key, &old_raw, old.as_ref(), new, extras);
                ops.insert(
                    1,
                    ObjectOp::CompareOmap(
                        ByteBuf::from(keys::rename(key)),
                        intent_raw.map(ByteBuf::from),
                    ),
                );
                match self.index_op(&object, ops).await {
                    Ok(_) => {
                        let links = new.as_ref().and_then(|(e, _)| e.links.as_deref());
                        self.left(&info, key, old.as_ref(), links).await?;
                        return Ok(Linked {
                            old,
                            ..Linked::default()
                        });
                    }
                    Err(ObjectError::Op(OpError::GuardFailed(_))) => {
                        // Closing, or versioning changed since the bucket was cached.
                        mode = self.shard_versioning(&object).await?;
                    }
                    Err(ObjectError::Op(OpError::NotFound)) => {
                        return Err(BucketError::NoSuchBucket)
                    }
                    Err(other) => return Err(other.into()),
                }
            }
            Err(BucketError::Conflict)
        })
        .await
    }

    fn link_ops(
        &self,
        key: &str,
        old_raw: &Option<Vec<u8>>,
        old: Option<&Entry>,
        new: &Option<(Entry, Option<Bytes>)>,
        extras: &LinkExtras,
    ) -> Vec<ObjectOp> {
        let entry_key = keys::entry(key);
        let mut ops = vec![
            shard_is_open(),
            versioning_is(Versioning::Off),
            guard(entry_key.clone(), old_raw),
        ];
        if let Some((upload_key, upload_raw)) = &extras.upload {
            ops.push(ObjectOp::CompareOmap(
                ByteBuf::from(upload_key.clone()),
                Some(ByteBuf::from(upload_raw.clone())),
            ));
            ops.push(ObjectOp::OmapRemove(vec![ByteBuf::from(
                upload_key.clone(),
            )]));
        }
        let mut sets = Vec::new();
        let mut removes = Vec::new();
        match new {
            Some((entry, inline)) => {
                sets.push((
                    ByteBuf::from(entry_key),
                    ByteBuf::from(records::encode(entry)),
                ));
                match inline {
                    Some(data) => sets.push((
                        ByteBuf::from(keys::inline(key)),
                        ByteBuf::from(data.to_vec()),
                    )),
                    None if old.is_some_and(|o| o.inline) => {
                        removes.push(ByteBuf::from(keys::inline(key)));
                    }
                    None => {}
                }
            }
            None => {
                removes.push(ByteBuf::from(entry_key));
                if old.is_some_and(|o| o.inline) {
                    removes.push(ByteBuf::from(keys::inline(key)));
                }
            }
        }
        // What the replaced entry named and the new one (or another entry) no longer does:
        // a splice of the mount keeps most of its stripes.
        let mut still: Vec<Segment> = new
            .as_ref()
            .map(|(entry, _)| entry.segments.clone())
            .unwrap_or_default();
        still.extend(extras.referenced.iter().cloned());
        // A linked entry's stripes go with its group.
        let mut garbage: Vec<Segment> = old
            .filter(|o| o.links.is_none())
            .map(|o| crate::manifest::unreferenced(&o.segments, &still))
            .unwrap_or_default();
        garbage.extend(extras.garbage.iter().cloned());
        sets.extend(self.garbage_record(garbage));
        if !removes.is_empty() {
            ops.push(ObjectOp::OmapRemove(removes));
        }
        if !sets.is_empty() {
            ops.push(ObjectOp::OmapSet(sets));
        }
        ops
    }

    /// The record that makes `segments` garbage once the delay is over (none when empty).
    pub(crate) fn garbage_record(&self, segments: Vec<Segment>) -> Option<(ByteBuf, ByteBuf)> {
        if segments.is_empty() {
            return None;
        }
        let due = crate::now_ms() + self.config().gc_delay.as_millis() as u64;
        Some((
            ByteBuf::from(keys::garbage(due, &random_id())),
            ByteBuf::from(records::encode(&Garbage { segments })),
        ))
    }

    /// Runs `ops` on index shard `object`: `false` when a guard failed.
    pub(crate) async fn try_index_op(
        &self,
        object: &str,
        ops: Vec<ObjectOp>,
    ) -> Result<bool, BucketError> {
        match self.index_op(object, ops).await {
            Ok(_) => Ok(true),
            Err(ObjectError::Op(OpError::GuardFailed(_))) => Ok(false),
            Err(ObjectError::Op(OpError::NotFound)) => Err(BucketError::NoSuchBucket),
            Err(other) => Err(other.into()),
        }
    }

    /// The versioning state of shard `object`, which takes links; `Conflict` when it is
    /// closing (its bucket is being deleted).
    pub(crate) async fn shard_versioning(&self, object: &str) -> Result<Versioning, BucketError> {
        let xattrs = match self.index_op(object, vec![ObjectOp::GetXattrs]).await {
            Ok((_, outputs)) => outputs.into_iter().find_map(|o| match o {
                OpOutput::Xattrs(x) => Some(x),
                _ => None,
            }),
            Err(ObjectError::Op(OpError::NotFound)) => return Err(BucketError::NoSuchBucket),
            Err(other) => return Err(other.into()),
        }
        .unwrap_or_default();
        if xattrs.get(records::STATE_XATTR).map(|v| v.as_slice()) != Some(records::STATE_OPEN) {
            return Err(BucketError::Conflict);
        }
        Ok(Versioning::from_xattr(
            xattrs.get(records::VERSIONING_XATTR).map(|v| v.as_slice()),
        ))
    }

    /// Up to `limit` omap entries of shard `object` after `start_after`.
    pub(crate) async fn shard_page(
        &self,
        object: &str,
        start_after: &[u8],
        limit: u32,
    ) -> Result<crate::OmapEntries, BucketError> {
        let ops = vec![ObjectOp::OmapList {
            start_after: Some(ByteBuf::from(start_after.to_vec())),
            limit,
        }];
        match self.index_op(object, ops).await {
            Ok((_, outputs)) => omap_output(outputs),
            Err(ObjectError::Op(OpError::NotFound)) => Err(BucketError::NoSuchBucket),
            Err(other) => Err(other.into()),
        }
    }

    /// Lists `bucket` as `query` asks, merging its shards in key order.
    pub async fn list(&self, bucket: &str, query: &ListQuery) -> Result<ListPage, BucketError> {
        self.on_bucket(
            bucket,
            |info| async move { self.list_in(&info, query).await },
        )
        .await
    }

    async fn list_in(&self, info: &BucketInfo, query: &ListQuery) -> Result<ListPage, BucketError> {
        let raw = self.list_raw(info, query, b"o").await?;
        let mut page = ListPage {
            truncated: raw.truncated,
            ..ListPage::default()
        };
        for item in raw.items {
            match item {
                Listed::Prefix(prefix) => {
                    page.last = Some(prefix.clone());
                    page.prefixes.push(prefix);
                }
                Listed::Key { key, entry, .. } => {
                    let raw = entry.ok_or_else(|| {
                        BucketError::Corrupt(format!("{key:?} listed without its entry"))
                    })?;
                    page.last = Some(key.clone());
                    page.entries.push((key, records::decode(&raw)?));
                }
            }
        }
        Ok(page)
    }

    /// Lists the keys that have a record in any of `namespaces` (`o`: entries, `h`: version
    /// heads) as `query` asks, merging the shards (and namespaces) in key order.
    pub(crate) async fn list_raw(
        &self,
        info: &BucketInfo,
        query: &ListQuery,
        namespaces: &[u8],
    ) -> Result<RawPage, BucketError> {
        let page_size = (query.limit / info.shards.max(1) as usize + 16).min(1000) as u32;
        let mut cursors: Vec<Cursor> = Vec::new();
        for &namespace in namespaces {
            let scope = keys::prefixed(namespace, query.prefix.as_bytes());
            let mut start = just_before(&scope);
            if let Some(after) = &query.after {
                let mut after_key = keys::prefixed(namespace, after.as_bytes());
                if let Some(delimiter) = &query.delimiter {
                    // A marker that is a common prefix skips everything under it.
                    if after.starts_with(&query.prefix)
                        && after[query.prefix.len()..].ends_with(delimiter.as_str())
                    {
                        after_key = just_after_all(&after_key);
                    }
                }
                start = start.max(after_key);
            }
            for shard in 0..info.shards {
                cursors.push(Cursor {
                    object: info.shard_object(shard),
                    namespace,
                    scope: scope.clone(),
                    buffered: VecDeque::new(),
                    start_after: start.clone(),
                    done: false,
                });
            }
        }
        let mut page = RawPage::default();
        let mut count = 0;
        let mut skip_prefix: Option<String> = None;
        loop {
            // Top up every cursor, dropping keys inside a common prefix already returned.
            for cursor in &mut cursors {
                loop {
                    if let Some(skip) = &skip_prefix {
                        while cursor
                            .buffered
                            .front()
                            .is_some_and(|(k, _)| k.starts_with(skip.as_str()))
                        {
                            cursor.buffered.pop_front();
                        }
                        if cursor.buffered.is_empty() {
                            let past =
                                just_after_all(&keys::prefixed(cursor.namespace, skip.as_bytes()));
                            cursor.start_after = cursor.start_after.clone().max(past);
                        }
                    }
                    if !cursor.buffered.is_empty() || cursor.done {
                        break;
                    }
                    let fetched = self
                        .shard_page(&cursor.object, &cursor.start_after, page_size)
                        .await?;
                    cursor.done = fetched.len() < page_size as usize;
                    if let Some((last, _)) = fetched.last() {
                        cursor.start_after = last.clone();
                    }
                    for (full, raw) in fetched {
                        if !full.starts_with(&cursor.scope) {
                            cursor.done = true;
                            break;
                        }
                        let key = String::from_utf8(full[1..].to_vec()).map_err(|_| {
                            BucketError::Corrupt("an index key is not UTF-8".into())
                        })?;
                        cursor.buffered.push_back((key, raw));
                    }
                }
            }
            let Some(key) = cursors
                .iter()
                .filter_map(|c| c.buffered.front().map(|(k, _)| k))
                .min()
                .cloned()
            else {
                return Ok(page);
            };
            if count >= query.limit {
                page.truncated = true;
                return Ok(page);
            }
            // The key from every namespace that has it: its entry, and whether it has versions.
            let mut entry = None;
            let mut versioned = false;
            for cursor in &mut cursors {
                if cursor.buffered.front().is_some_and(|(k, _)| *k == key) {
                    let (_, raw) = cursor.buffered.pop_front().expect("a head");
                    match cursor.namespace {
                        b'o' => entry = Some(raw),
                        _ => versioned = true,
                    }
                }
            }
            count += 1;
            let grouped = query
                .delimiter
                .as_deref()
                .filter(|d| !d.is_empty())
                .and_then(|d| {
                    key[query.prefix.len()..]
                        .find(d)
                        .map(|at| key[..query.prefix.len() + at + d.len()].to_owned())
                });
            match grouped {
                Some(common) => {
                    skip_prefix = Some(common.clone());
                    page.items.push(Listed::Prefix(common));
                }
                None => page.items.push(Listed::Key {
                    key,
                    entry,
                    versioned,
                }),
            }
        }
    }

    /// The garbage records of shard `shard` due at or before `due_ms`.
    pub(crate) async fn shard_garbage(
        &self,
        info: &BucketInfo,
        shard: u32,
        due_ms: u64,
    ) -> Result<Vec<(Vec<u8>, Garbage)>, BucketError> {
        let due = |key: &[u8]| {
            key.first() == Some(&b'g') && keys::garbage_due(key).is_some_and(|d| d <= due_ms)
        };
        let found = self
            .shard_scan(&info.shard_object(shard), b"g", due)
            .await?;
        found
            .into_iter()
            .map(|(key, raw)| Ok((key, records::decode(&raw)?)))
            .collect()
    }

    /// The omap entries of shard `object` after `start_after`, in key order, for as long as
    /// `wanted` holds of their keys.
    pub(crate) async fn shard_scan(
        &self,
        object: &str,
        start_after: &[u8],
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Result<crate::OmapEntries, BucketError> {
        const PAGE: u32 = 256;
        let mut out = Vec::new();
        let mut start_after = start_after.to_vec();
        loop {
            let fetched = self.shard_page(object, &start_after, PAGE).await?;
            let full = fetched.len() == PAGE as usize;
            for (key, raw) in fetched {
                if !wanted(&key) {
                    return Ok(out);
                }
                start_after.clone_from(&key);
                out.push((key, raw));
            }
            if !full {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_bracket_a_prefix() {
        let scope = keys::entry("photos/");
        let before = just_before(&scope);
        let after = just_after_all(&scope);
        for key in ["photos/", "photos/a", "photos/\u{10ffff}"] {
            let full = keys::entry(key);
            assert!(before < full && full < after, "{key}");
        }
        for key in ["photos", "photos.", "photot", "p"] {
            let full = keys::entry(key);
            assert!(full < before || full > after, "{key}");
        }
        assert!(just_before(&keys::entry("")) > keys::inline("\u{10ffff}"));
    }

    #[test]
    fn conditions() {
        let entry = Entry {
            size: 1,
            etag: "abc".into(),
            modified_ms: 0,
            meta: Default::default(),
            segments: Vec::new(),
            inline: true,
            part_sizes: Vec::new(),
            links: None,
            version_id: None,
        };
        assert!(PutCondition::Always.check(None).is_ok());
        assert!(PutCondition::Absent.check(None).is_ok());
        assert!(PutCondition::Absent.check(Some(&entry)).is_err());
        assert!(PutCondition::Matches("\"abc\"".into())
            .check(Some(&entry))
            .is_ok());
        assert!(PutCondition::Matches("abd".into())
            .check(Some(&entry))
            .is_err());
        assert!(PutCondition::Matches("*".into()).check(None).is_err());
    }
}
