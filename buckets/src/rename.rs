//! Renaming a key without copying data: the new key gets the old key's entry (the same
//! manifest), and the old key goes. Keys of one index shard change in one transaction; keys
//! of two shards by an intent recorded first, so that a crash leaves the rename either not
//! done or completed by the next [`Buckets::finish_renames`]. See docs/mount.md.
//!
//! Across shards, with `id` fresh:
//! 1. source shard: `r<from>` → intent `{id, to, entry, inline}`, guarded on `from`'s entry;
//! 2. target shard: `to`'s entry and inline data are `from`'s, and `m<to>` → `{id, from}`,
//!    guarded on `to`'s entry as read; what `to` named before becomes garbage;
//! 3. source shard: `from` removed (only if it is still the entry renamed; its stripes are
//!    `to`'s now: no garbage) with the intent;
//! 4. target shard: `m<to>` removed.
//!
//! While an intent exists, a link of `from` (a PUT or DELETE through S3) keeps the intent's
//! stripes out of its garbage. Recovery finds each intent: when `m<to>` holds its id, step 2
//! was done, so steps 3 and 4 are; otherwise the rename is rolled back (the intent goes). A
//! `m<to>` whose intent is gone is removed.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tidepool_proto::osd::ObjectOp;

use crate::index::{guard, shard_is_open};
use crate::records::{self, keys, BucketInfo, Entry};
use crate::{random_id, BucketError, Buckets};

/// A rename across shards in progress, kept in the source shard under `r<from>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameIntent {
    /// Unique per rename.
    pub id: String,
    /// The new key.
    pub to: String,
    /// The entry renamed, as stored under `from`.
    pub entry: ByteBuf,
    /// Its inline data.
    pub inline: Option<ByteBuf>,
}

/// The target's side of a rename across shards, under `m<to>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedIn {
    /// The rename's id.
    pub id: String,
    /// The old key.
    pub from: String,
}

/// A rename of every key under a prefix, under way: kept in the bucket's shard 0 under
/// `t<from prefix>` from before the first key moves until the last has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeRename {
    /// The new prefix.
    pub to: String,
}

fn is_tree(key: &[u8]) -> bool {
    key.first() == Some(&b't')
}

fn is_intent(key: &[u8]) -> bool {
    key.first() == Some(&b'r')
}

fn is_moved(key: &[u8]) -> bool {
    key.first() == Some(&b'm')
}

impl Buckets {
    /// Renames `from` to `to` in `bucket`, replacing `to` if it exists (its stripes become
    /// garbage), copying no data. `NoSuchKey` when `from` does not exist.
    pub async fn rename(&self, bucket: &str, from: &str, to: &str) -> Result<(), BucketError> {
        if from == to {
            return self.head(bucket, from).await.map(|_| ());
        }
        let info = self.lookup(bucket, true).await?;
        if info.object_lock.is_some() {
            // A rename removes the source's version and replaces the target's for good.
            return Err(BucketError::NotSupported(
                "renames in a bucket with object lock".into(),
            ));
        }
        for _ in 0..self.config().link_attempts_max {
            let done = if info.shard_of(from) == info.shard_of(to) {
                self.rename_in_shard(&info, from, to).await?
            } else {
                self.rename_across(&info, from, to).await?
            };
            if done {
                return Ok(());
            }
        }
        Err(BucketError::Conflict)
    }

    /// One attempt at a rename within one shard; `false` when a concurrent change won.
    async fn rename_in_shard(
        &self,
        info: &BucketInfo,
        from: &str,
        to: &str,
    ) -> Result<bool, BucketError> {
        let object = info.shard_object(info.shard_of(from));
        let wanted = [
            keys::entry(from),
            keys::inline(from),
            keys::entry(to),
            keys::rename(from),
        ];
        let mut found = self.shard_get(&object, wanted.to_vec()).await?;
        let from_raw = found
            .remove(&keys::entry(from))
            .ok_or(BucketError::NoSuchKey)?;
        if found.contains_key(&keys::rename(from)) {
            // A rename of it across shards is under way: finish it first.
            self.finish_renames_in(info, info.shard_of(from)).await?;
            return Ok(false);
        }
        let entry: Entry = records::decode(&from_raw)?;
        let inline = found.remove(&keys::inline(from));
        let to_raw = found.remove(&keys::entry(to));
        let target: Option<Entry> = to_raw.as_deref().map(records::decode).transpose()?;
        for locked in std::iter::once(&entry).chain(&target) {
            crate::lock::check_replace(&locked.meta)?;
        }
        let mut ops = vec![
            shard_is_open(),
            guard(keys::entry(from), &Some(from_raw.clone())),
            guard(keys::entry(to), &to_raw),
            guard(keys::rename(from), &None),
        ];
        let mut removes = vec![ByteBuf::from(keys::entry(from))];
        let mut sets = vec![(ByteBuf::from(keys::entry(to)), ByteBuf::from(from_raw))];
        match inline {
            Some(data) => {
                removes.push(ByteBuf::from(keys::inline(from)));
                sets.push((ByteBuf::from(keys::inline(to)), ByteBuf::from(data)));
            }
            None if target.as_ref().is_some_and(|t| t.inline) => {
                removes.push(ByteBuf::from(keys::inline(to)));
            }
            None => {}
        }
        if let Some(garbage) = self.garbage_of(target.as_ref(), &entry) {
            sets.push(garbage);
        }
        ops.push(ObjectOp::OmapRemove(removes));
        ops.push(ObjectOp::OmapSet(sets));
        self.joins(info, to, &entry).await?;
        if !self.try_index_op(&object, ops).await? {
            return Ok(false);
        }
        self.left(info, to, target.as_ref(), entry.links.as_deref())
            .await?;
        self.left(info, from, Some(&entry), None).await?;
        Ok(true)
    }

    /// One attempt at a rename across shards; `false` when a concurrent change won before
    /// the intent was recorded.
    async fn rename_across(
        &self,
        info: &BucketInfo,
        from: &str,
        to: &str,
    ) -> Result<bool, BucketError> {
        let source = info.shard_object(info.shard_of(from));
        let mut found = self
            .shard_get(
                &source,
                vec![keys::entry(from), keys::inline(from), keys::rename(from)],
            )
            .await?;
        let from_raw = found
            .remove(&keys::entry(from))
            .ok_or(BucketError::NoSuchKey)?;
        if found.contains_key(&keys::rename(from)) {
            self.finish_renames_in(info, info.shard_of(from)).await?;
            return Ok(false);
        }
        let intent = RenameIntent {
            id: random_id(),
            to: to.to_owned(),
            entry: ByteBuf::from(from_raw.clone()),
            inline: found.remove(&keys::inline(from)).map(ByteBuf::from),
        };
        let intent_raw = records::encode(&intent);
        let entry: Entry = records::decode(&intent.entry)?;
        self.joins(info, to, &entry).await?;
        // 1. The intent.
        let ops = vec![
            shard_is_open(),
            guard(keys::entry(from), &Some(from_raw)),
            guard(keys::rename(from), &None),
            ObjectOp::OmapSet(vec![(
                ByteBuf::from(keys::rename(from)),
                ByteBuf::from(intent_raw.clone()),
            )]),
        ];
        if !self.try_index_op(&source, ops).await? {
            return Ok(false);
        }
        // 2. The target, replacing whatever it holds.
        let moved = records::encode(&MovedIn {
            id: intent.id.clone(),
            from: from.to_owned(),
        });
        let mut linked = false;
        for _ in 0..self.config().link_attempts_max {
            if self.move_in(info, &intent, &moved).await? {
                linked = true;
                break;
            }
        }
        if !linked {
            // Not done: roll back.
            self.drop_intent(info, from, &intent_raw).await?;
            return Err(BucketError::Conflict);
        }
        // 3. and 4.
        self.complete_rename(info, from, &intent, &intent_raw)
            .await?;
        self.left(info, from, Some(&entry), None).await?;
        Ok(true)
    }

    /// Step 2: `intent`'s entry linked as its target, with the `m` record; `false` when the
    /// target changed between the read and the write.
    async fn move_in(
        &self,
        info: &BucketInfo,
        intent: &RenameIntent,
        moved: &[u8],
    ) -> Result<bool, BucketError> {
        let to = &intent.to;
        let target_object = info.shard_object(info.shard_of(to));
        let mut found = self
            .shard_get(&target_object, vec![keys::entry(to), keys::moved(to)])
            .await?;
        if found.get(&keys::moved(to)).map(Vec::as_slice) == Some(moved) {
            return Ok(true);
        }
        let entry: Entry = records::decode(&intent.entry)?;
        let to_raw = found.remove(&keys::entry(to));
        let target: Option<Entry> = to_raw.as_deref().map(records::decode).transpose()?;
        let mut sets = vec![
            (
                ByteBuf::from(keys::entry(to)),
                ByteBuf::from(intent.entry.to_vec()),
            ),
            (
                ByteBuf::from(keys::moved(to)),
                ByteBuf::from(moved.to_vec()),
            ),
        ];
        let mut removes = Vec::new();
        match &intent.inline {
            Some(data) => sets.push((ByteBuf::from(keys::inline(to)), data.clone())),
            None if target.as_ref().is_some_and(|t| t.inline) => {
                removes.push(ByteBuf::from(keys::inline(to)));
            }
            None => {}
        }
        if let Some(garbage) = self.garbage_of(target.as_ref(), &entry) {
            sets.push(garbage);
        }
        let mut ops = vec![shard_is_open(), guard(keys::entry(to), &to_raw)];
        if !removes.is_empty() {
            ops.push(ObjectOp::OmapRemove(removes));
        }
        ops.push(ObjectOp::OmapSet(sets));
        if !self.try_index_op(&target_object, ops).await? {
            return Ok(false);
        }
        self.left(info, to, target.as_ref(), entry.links.as_deref())
            .await?;
        Ok(true)
    }

    /// Steps 3 and 4 of the rename of `from` that `intent` records (stored as `intent_raw`).
    async fn complete_rename(
        &self,
        info: &BucketInfo,
        from: &str,
        intent: &RenameIntent,
        intent_raw: &[u8],
    ) -> Result<(), BucketError> {
        let source = info.shard_object(info.shard_of(from));
        let from_raw = Some(intent.entry.to_vec());
        // 3. `from` goes if it is still the entry renamed (its stripes are `to`'s now).
        let mut removes = vec![ByteBuf::from(keys::rename(from))];
        let mut ops = vec![guard(keys::rename(from), &Some(intent_raw.to_vec()))];
        let current = self
            .shard_get(&source, vec![keys::entry(from)])
            .await?
            .remove(&keys::entry(from));
        if current == from_raw {
            ops.push(guard(keys::entry(from), &from_raw));
            removes.push(ByteBuf::from(keys::entry(from)));
            if intent.inline.is_some() {
                removes.push(ByteBuf::from(keys::inline(from)));
            }
        }
        ops.push(ObjectOp::OmapRemove(removes));
        if !self.try_index_op(&source, ops).await? {
            // `from` changed meanwhile, or another recovery finished it: look again.
            let left = self
                .shard_get(&source, vec![keys::rename(from)])
                .await?
                .remove(&keys::rename(from));
            if left.as_deref() == Some(intent_raw) {
                return Box::pin(self.complete_rename(info, from, intent, intent_raw)).await;
            }
        }
        // 4. The target's record.
        let target = info.shard_object(info.shard_of(&intent.to));
        let moved = records::encode(&MovedIn {
            id: intent.id.clone(),
            from: from.to_owned(),
        });
        let ops = vec![
            guard(keys::moved(&intent.to), &Some(moved)),
            ObjectOp::OmapRemove(vec![ByteBuf::from(keys::moved(&intent.to))]),
        ];
        self.try_index_op(&target, ops).await?;
        Ok(())
    }

    /// Removes the intent of a rename that did not reach its target.
    async fn drop_intent(
        &self,
        info: &BucketInfo,
        from: &str,
        intent_raw: &[u8],
    ) -> Result<(), BucketError> {
        let ops = vec![
            guard(keys::rename(from), &Some(intent_raw.to_vec())),
            ObjectOp::OmapRemove(vec![ByteBuf::from(keys::rename(from))]),
        ];
        self.try_index_op(&info.shard_object(info.shard_of(from)), ops)
            .await
            .map(|_| ())
    }

    /// Renames every key under `from` (a prefix such as `dir/`) to under `to`, each as
    /// [`Buckets::rename`] does, after recording the whole rename in shard 0: a crash leaves
    /// it for the next [`Buckets::finish_renames`] to complete. `Conflict` when a rename of
    /// the same prefix is under way.
    pub async fn rename_prefix(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
    ) -> Result<(), BucketError> {
        let info = self.lookup(bucket, true).await?;
        if info.object_lock.is_some() {
            return Err(BucketError::NotSupported(
                "renames in a bucket with object lock".into(),
            ));
        }
        let raw = records::encode(&TreeRename { to: to.to_owned() });
        let ops = vec![
            shard_is_open(),
            guard(keys::tree(from), &None),
            ObjectOp::OmapSet(vec![(
                ByteBuf::from(keys::tree(from)),
                ByteBuf::from(raw.clone()),
            )]),
        ];
        if !self.try_index_op(&info.shard_object(0), ops).await? {
            return Err(BucketError::Conflict);
        }
        self.move_tree(&info, from, to, &raw).await
    }

    /// Moves every key under `from` to under `to`, then removes the tree intent `raw`.
    async fn move_tree(
        &self,
        info: &BucketInfo,
        from: &str,
        to: &str,
        raw: &[u8],
    ) -> Result<(), BucketError> {
        // One pass in key order, then passes from the start for keys that came meanwhile.
        let mut after: Option<String> = None;
        let mut passes = 0;
        loop {
            let query = crate::ListQuery {
                prefix: from.to_owned(),
                delimiter: None,
                after: after.clone(),
                limit: 1000,
            };
            let page = self.list(&info.name, &query).await?;
            let Some((last, _)) = page.entries.last() else {
                if after.take().is_some() {
                    passes += 1;
                    if passes > self.config().link_attempts_max {
                        return Err(BucketError::Conflict);
                    }
                    continue;
                }
                let ops = vec![
                    guard(keys::tree(from), &Some(raw.to_vec())),
                    ObjectOp::OmapRemove(vec![ByteBuf::from(keys::tree(from))]),
                ];
                self.try_index_op(&info.shard_object(0), ops).await?;
                return Ok(());
            };
            after = Some(last.clone());
            for (key, _) in &page.entries {
                let new = format!("{to}{}", &key[from.len()..]);
                match self.rename(&info.name, key, &new).await {
                    Ok(()) | Err(BucketError::NoSuchKey) => {}
                    Err(other) => return Err(other),
                }
            }
        }
    }

    /// Completes or rolls back every rename across shards of `bucket` that a crash left
    /// half done (see the module's steps), then completes every rename of a prefix. Returns
    /// how many it found.
    pub async fn finish_renames(&self, bucket: &str) -> Result<usize, BucketError> {
        let info = self.lookup(bucket, false).await?;
        let mut found = 0;
        for shard in 0..info.shards {
            found += self.finish_renames_in(&info, shard).await?;
        }
        let trees = self
            .shard_scan(&info.shard_object(0), b"t", is_tree)
            .await?;
        for (key, raw) in &trees {
            let from = String::from_utf8_lossy(&key[1..]).into_owned();
            let tree: TreeRename = records::decode(raw)?;
            tracing::info!(%from, to = %tree.to, "completing a directory rename a crash interrupted");
            self.move_tree(&info, &from, &tree.to, raw).await?;
        }
        Ok(found + trees.len())
    }

    async fn finish_renames_in(&self, info: &BucketInfo, shard: u32) -> Result<usize, BucketError> {
        let object = info.shard_object(shard);
        let intents = self.shard_scan(&object, b"r", is_intent).await?;
        for (key, raw) in &intents {
            let from = String::from_utf8_lossy(&key[1..]).into_owned();
            let intent: RenameIntent = records::decode(raw)?;
            let moved = records::encode(&MovedIn {
                id: intent.id.clone(),
                from: from.clone(),
            });
            let target = info.shard_object(info.shard_of(&intent.to));
            let there = self
                .shard_get(&target, vec![keys::moved(&intent.to)])
                .await?
                .remove(&keys::moved(&intent.to));
            if there.as_deref() == Some(moved.as_slice()) {
                tracing::info!(%from, to = %intent.to, "completing a rename a crash interrupted");
                self.complete_rename(info, &from, &intent, raw).await?;
            } else {
                tracing::info!(%from, to = %intent.to, "rolling back a rename a crash interrupted");
                self.drop_intent(info, &from, raw).await?;
            }
        }
        // Target records whose rename is over.
        let moves = self.shard_scan(&object, b"m", is_moved).await?;
        for (key, raw) in &moves {
            let to = String::from_utf8_lossy(&key[1..]).into_owned();
            let moved: MovedIn = records::decode(raw)?;
            let source = info.shard_object(info.shard_of(&moved.from));
            let intent = self
                .shard_get(&source, vec![keys::rename(&moved.from)])
                .await?
                .remove(&keys::rename(&moved.from))
                .map(|raw| records::decode::<RenameIntent>(raw.as_slice()))
                .transpose()?;
            if intent.is_none_or(|i| i.id != moved.id) {
                let ops = vec![
                    guard(keys::moved(&to), &Some(raw.clone())),
                    ObjectOp::OmapRemove(vec![ByteBuf::from(keys::moved(&to))]),
                ];
                self.try_index_op(&object, ops).await?;
            }
        }
        Ok(intents.len())
    }

    /// The garbage record for replacing `old` with `new` (none when nothing goes; a linked
    /// entry's stripes go with its group).
    fn garbage_of(&self, old: Option<&Entry>, new: &Entry) -> Option<(ByteBuf, ByteBuf)> {
        let old = old.filter(|o| o.links.is_none())?;
        self.garbage_record(crate::manifest::unreferenced(&old.segments, &new.segments))
    }
}
