//! Hard links: several keys that name one inode. Each name has a whole entry of its own (the
//! same manifest), so every S3 client reads the same bytes under either key; the entries say
//! which link group they belong to, and the group record `l<id>` (in the index shard of `id`)
//! keeps the names, the open files that hold the inode after their key went, and every
//! segment a member ever named.
//!
//! Stripes of a linked entry are never garbage when the entry is replaced or removed: they
//! become garbage only when the group ends (no names, no holders). So the order of steps
//! across shards always errs towards keeping stripes:
//! - a name joins the group before its entry says so; it leaves after its entry changed;
//! - segments join the group before an entry names them.
//!
//! A crash between two steps leaves a name the group still counts (its stripes are kept,
//! never lost). See docs/buckets.md.

use bytes::Bytes;
use serde_bytes::ByteBuf;
use tidepool_proto::osd::ObjectOp;

use crate::index::{guard, shard_is_open, LinkExtras};
use crate::records::{self, keys, BucketInfo, Entry, LinkGroup};
use crate::{random_id, BucketError, Buckets, PutCondition};

impl Buckets {
    /// Link group `id` of `bucket` (`None`: no such group).
    pub async fn link_group(
        &self,
        bucket: &str,
        id: &str,
    ) -> Result<Option<LinkGroup>, BucketError> {
        let info = self.lookup(bucket, false).await?;
        Ok(self.read_group(&info, id).await?.map(|(group, _)| group))
    }

    async fn read_group(
        &self,
        info: &BucketInfo,
        id: &str,
    ) -> Result<Option<(LinkGroup, Vec<u8>)>, BucketError> {
        let object = info.shard_object(info.shard_of(id));
        let raw = self
            .shard_get(&object, vec![keys::links(id)])
            .await?
            .remove(&keys::links(id));
        raw.map(|raw| Ok((records::decode(&raw)?, raw))).transpose()
    }

    /// Changes group `id` with `change` in one guarded transaction (retried while concurrent
    /// changes win). A group nothing keeps any more goes, and its stripes become garbage.
    /// Returns the group as changed (`None`: there is no such group, or it ended).
    async fn change_group(
        &self,
        info: &BucketInfo,
        id: &str,
        change: impl Fn(&mut LinkGroup),
    ) -> Result<Option<LinkGroup>, BucketError> {
        let object = info.shard_object(info.shard_of(id));
        for _ in 0..self.config().link_attempts_max {
            let Some((mut group, raw)) = self.read_group(info, id).await? else {
                return Ok(None);
            };
            change(&mut group);
            let mut ops = vec![shard_is_open(), guard(keys::links(id), &Some(raw))];
            if group.alive() {
                ops.push(ObjectOp::OmapSet(vec![(
                    ByteBuf::from(keys::links(id)),
                    ByteBuf::from(records::encode(&group)),
                )]));
            } else {
                ops.push(ObjectOp::OmapRemove(vec![ByteBuf::from(keys::links(id))]));
                if let Some(garbage) = self.garbage_record(group.segments.clone()) {
                    ops.push(ObjectOp::OmapSet(vec![garbage]));
                }
            }
            if self.try_index_op(&object, ops).await? {
                return Ok(group.alive().then_some(group));
            }
        }
        Err(BucketError::Conflict)
    }

    /// Called once `key` of `info` no longer has entry `old` but one of group `now`: when
    /// `old` was a member of another group, `key` leaves it.
    pub(crate) async fn left(
        &self,
        info: &BucketInfo,
        key: &str,
        old: Option<&Entry>,
        now: Option<&str>,
    ) -> Result<(), BucketError> {
        match old.and_then(|o| o.links.as_deref()) {
            Some(id) if Some(id) != now => {
                self.change_group(info, id, |g| {
                    g.names.remove(key);
                })
                .await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Called before entry `entry` (of a group, maybe) is linked as `key`: `key` joins.
    pub(crate) async fn joins(
        &self,
        info: &BucketInfo,
        key: &str,
        entry: &Entry,
    ) -> Result<(), BucketError> {
        if let Some(id) = &entry.links {
            self.change_group(info, id, |g| {
                g.names.insert(key.to_owned());
                g.keep(&entry.segments);
            })
            .await?;
        }
        Ok(())
    }

    /// Puts `key`'s entry (as read: `entry`, with its inline data) in a link group, changed
    /// by `change` as it joins: its own group, or a new one. Returns the entry as it is now
    /// linked, and the group's id.
    async fn group_up(
        &self,
        bucket: &str,
        key: &str,
        (entry, inline): (Entry, Option<Bytes>),
        change: impl Fn(&mut LinkGroup),
    ) -> Result<(Entry, String), BucketError> {
        let info = self.lookup(bucket, false).await?;
        if let Some(id) = &entry.links {
            if self.change_group(&info, id, &change).await?.is_some() {
                return Ok((entry.clone(), id.clone()));
            }
        }
        let id = random_id();
        let mut group = LinkGroup {
            names: [key.to_owned()].into(),
            ..LinkGroup::default()
        };
        group.keep(&entry.segments);
        change(&mut group);
        let object = info.shard_object(info.shard_of(&id));
        let ops = vec![
            shard_is_open(),
            guard(keys::links(&id), &None),
            ObjectOp::OmapSet(vec![(
                ByteBuf::from(keys::links(&id)),
                ByteBuf::from(records::encode(&group)),
            )]),
        ];
        if !self.try_index_op(&object, ops).await? {
            return Err(BucketError::Conflict);
        }
        let linked = Entry {
            links: Some(id.clone()),
            ..entry.clone()
        };
        let done = self
            .link(
                bucket,
                key,
                Some((linked.clone(), inline)),
                &PutCondition::Exactly(Box::new(entry)),
                LinkExtras::default(),
            )
            .await;
        if let Err(error) = done {
            // No entry names the group: it goes, and its stripes with the entry that has them.
            let ops = vec![ObjectOp::OmapRemove(vec![ByteBuf::from(keys::links(&id))])];
            self.try_index_op(&object, ops).await?;
            return Err(error);
        }
        Ok((linked, id))
    }

    /// Makes `to` another name of `from`'s object (a hard link): both keys then hold the same
    /// entry, and a change through [`Buckets::put_entry`] of either reaches both. Returns the
    /// new entry. `NoSuchKey` when `from` is absent; `PreconditionFailed` when `to` exists.
    pub async fn hard_link(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
    ) -> Result<Entry, BucketError> {
        // A version keeps its stripes for as long as it exists, which a group's count of
        // names does not know: no groups where versions are kept.
        if self.lookup(bucket, true).await?.versioning != crate::Versioning::Off {
            return Err(BucketError::NotSupported(
                "hard links in a bucket with versioning".into(),
            ));
        }
        let (entry, inline) = self.get(bucket, from).await?;
        let (entry, id) = self
            .group_up(bucket, from, (entry, inline.clone()), |g| {
                g.names.insert(to.to_owned());
            })
            .await?;
        let put = self
            .link(
                bucket,
                to,
                Some((entry.clone(), inline)),
                &PutCondition::Absent,
                LinkExtras::default(),
            )
            .await;
        match put {
            Ok(_) => Ok(entry),
            Err(error) => {
                let info = self.lookup(bucket, false).await?;
                self.change_group(&info, &id, |g| {
                    g.names.remove(to);
                })
                .await?;
                Err(error)
            }
        }
    }

    /// Keeps the stripes of `key`'s entry `entry` for `holder` (an open file whose key is
    /// about to go) until [`Buckets::release`]. Returns the group that keeps them.
    pub async fn hold(&self, bucket: &str, key: &str, holder: &str) -> Result<String, BucketError> {
        let found = self.get(bucket, key).await?;
        let (_, id) = self
            .group_up(bucket, key, found, |g| {
                g.holders.insert(holder.to_owned());
            })
            .await?;
        Ok(id)
    }

    /// Ends `holder`'s hold on group `id`.
    pub async fn release(&self, bucket: &str, id: &str, holder: &str) -> Result<(), BucketError> {
        let info = self.lookup(bucket, false).await?;
        self.change_group(&info, id, |g| {
            g.holders.remove(holder);
        })
        .await
        .map(|_| ())
    }

    /// [`Buckets::put_entry`] of an entry of a link group: its segments join the group, then
    /// `key` gets it, then every other name of the group that still belongs.
    pub(crate) async fn put_linked(
        &self,
        bucket: &str,
        key: &str,
        mut entry: Entry,
        inline: Option<Bytes>,
        condition: &PutCondition,
    ) -> Result<Option<Entry>, BucketError> {
        let info = self.lookup(bucket, false).await?;
        let id = entry.links.clone().unwrap_or_default();
        let group = self
            .change_group(&info, &id, |g| {
                g.names.insert(key.to_owned());
                g.keep(&entry.segments);
            })
            .await?;
        if group.is_none() {
            entry.links = None;
        }
        let old = self
            .link(
                bucket,
                key,
                Some((entry.clone(), inline.clone())),
                condition,
                LinkExtras::default(),
            )
            .await?
            .old;
        for name in group.iter().flat_map(|g| g.names.iter()) {
            if name == key {
                continue;
            }
            let other = match self.head(bucket, name).await {
                Ok(other) if other.links == entry.links => other,
                Ok(_) | Err(BucketError::NoSuchKey) => continue,
                Err(error) => return Err(error),
            };
            let relinked = self
                .link(
                    bucket,
                    name,
                    Some((entry.clone(), inline.clone())),
                    &PutCondition::Exactly(Box::new(other)),
                    LinkExtras::default(),
                )
                .await;
            match relinked {
                // Changed meanwhile: it is that change's now.
                Ok(_) | Err(BucketError::PreconditionFailed) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(old)
    }
}
