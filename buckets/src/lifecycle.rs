//! Lifecycle rules, as S3 has them: expire current objects after some days or from a date,
//! expire older versions some days after they stopped being current (keeping the newest N),
//! remove delete markers left alone, and abort multipart uploads left incomplete. A pass
//! walks a bucket and applies its enabled rules; every removal is the guarded transaction a
//! client's delete would be, conditional on the exact entry the pass judged, so a write that
//! lands meanwhile is never removed, and object lock is obeyed. Each pass records its
//! progress in the cluster (`tidepool lifecycle status`). See docs/buckets.md, "Lifecycle".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tidepool_proto::osd::ObjectOp;

use crate::records::{self, Entry};
use crate::{BucketError, Buckets, ListQuery, PutCondition, VersionQuery};

/// The object that holds each bucket's last lifecycle pass (omap: bucket name → progress).
pub const PROGRESS_OBJECT: &str = "buckets.lifecycle";

/// One lifecycle rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRule {
    /// Its id, if given.
    pub id: Option<String>,
    /// Whether it applies (`Status: Enabled`).
    pub enabled: bool,
    /// Only keys that begin with this.
    pub prefix: String,
    /// Only objects with all these tags.
    pub tags: BTreeMap<String, String>,
    /// Only objects larger than this many bytes.
    pub size_greater_than: Option<u64>,
    /// Only objects smaller than this many bytes.
    pub size_less_than: Option<u64>,
    /// Current objects expire this many days after they were written.
    pub expiration_days: Option<u32>,
    /// Current objects expire from this time (milliseconds since the Unix epoch).
    pub expiration_date_ms: Option<u64>,
    /// A delete marker that is a key's only version is removed.
    pub expired_object_delete_marker: bool,
    /// Older versions expire this many days after they stopped being current.
    pub noncurrent_days: Option<u32>,
    /// ... keeping this many of the newest older versions.
    pub newer_noncurrent_versions: Option<u32>,
    /// Incomplete multipart uploads are aborted this many days after they began.
    pub abort_incomplete_days: Option<u32>,
}

impl LifecycleRule {
    /// Whether it covers `key` (for an object: its tags and size too).
    pub fn covers(&self, key: &str, object: Option<&Entry>) -> bool {
        if !self.enabled || !key.starts_with(&self.prefix) {
            return false;
        }
        let Some(entry) = object else {
            return self.tags.is_empty()
                && self.size_greater_than.is_none()
                && self.size_less_than.is_none();
        };
        self.tags
            .iter()
            .all(|(k, v)| entry.meta.tags.get(k) == Some(v))
            && self.size_greater_than.is_none_or(|n| entry.size > n)
            && self.size_less_than.is_none_or(|n| entry.size < n)
    }

    /// Whether a current object written at `modified_ms` has expired at `now_ms`.
    pub fn current_expired(&self, modified_ms: u64, now_ms: u64, day_ms: u64) -> bool {
        let by_days = self
            .expiration_days
            .is_some_and(|d| modified_ms.saturating_add(u64::from(d) * day_ms) <= now_ms);
        let by_date = self.expiration_date_ms.is_some_and(|at| at <= now_ms);
        by_days || by_date
    }

    /// Whether an older version, noncurrent since `since_ms` and with `newer` older versions
    /// newer than itself, has expired at `now_ms`.
    pub fn noncurrent_expired(&self, since_ms: u64, newer: u32, now_ms: u64, day_ms: u64) -> bool {
        let Some(days) = self.noncurrent_days else {
            return false;
        };
        since_ms.saturating_add(u64::from(days) * day_ms) <= now_ms
            && self
                .newer_noncurrent_versions
                .is_none_or(|keep| newer >= keep)
    }

    /// Whether an upload begun at `initiated_ms` is to be aborted at `now_ms`.
    pub fn upload_expired(&self, initiated_ms: u64, now_ms: u64, day_ms: u64) -> bool {
        self.abort_incomplete_days
            .is_some_and(|d| initiated_ms.saturating_add(u64::from(d) * day_ms) <= now_ms)
    }

    /// Why it cannot be kept, if it says nothing to do or contradicts itself (S3's
    /// `InvalidArgument` and `MalformedXML`).
    pub fn check(&self) -> Result<(), String> {
        let acts = self.expiration_days.is_some()
            || self.expiration_date_ms.is_some()
            || self.expired_object_delete_marker
            || self.noncurrent_days.is_some()
            || self.abort_incomplete_days.is_some();
        if !acts {
            return Err("a rule names at least one action".into());
        }
        if self.expiration_days.is_some() && self.expiration_date_ms.is_some() {
            return Err("an expiration names days or a date, not both".into());
        }
        if self.expiration_days == Some(0)
            || self.noncurrent_days == Some(0)
            || self.abort_incomplete_days == Some(0)
        {
            return Err("'Days' for Expiration action must be a positive integer".into());
        }
        if self.abort_incomplete_days.is_some()
            && (!self.tags.is_empty()
                || self.size_greater_than.is_some()
                || self.size_less_than.is_some())
        {
            return Err("AbortIncompleteMultipartUpload cannot be specified with tags".into());
        }
        Ok(())
    }
}

/// What a pass over one bucket did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleProgress {
    /// When it began (milliseconds since the Unix epoch).
    pub started_ms: u64,
    /// When it ended (`None`: under way, or it stopped).
    pub finished_ms: Option<u64>,
    /// Versions and objects looked at.
    pub examined: u64,
    /// Current objects expired (removed, or hidden by a delete marker).
    pub expired: u64,
    /// Older versions removed.
    pub noncurrent_removed: u64,
    /// Lone delete markers removed.
    pub markers_removed: u64,
    /// Incomplete uploads aborted.
    pub uploads_aborted: u64,
    /// Expired versions kept because object lock holds them.
    pub locked: u64,
    /// Why the pass stopped, if it failed.
    pub error: Option<String>,
}

/// A bucket's lifecycle record: its last pass (or the one under way) and what its finished
/// passes did in all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleStatus {
    /// The last pass.
    pub last: LifecycleProgress,
    /// Passes finished.
    pub passes: u64,
    /// Their counts added up (`started_ms`: the first pass's).
    pub totals: LifecycleProgress,
}

impl LifecycleProgress {
    fn add(&mut self, pass: &LifecycleProgress) {
        if self.started_ms == 0 {
            self.started_ms = pass.started_ms;
        }
        self.finished_ms = pass.finished_ms;
        self.examined += pass.examined;
        self.expired += pass.expired;
        self.noncurrent_removed += pass.noncurrent_removed;
        self.markers_removed += pass.markers_removed;
        self.uploads_aborted += pass.uploads_aborted;
        self.locked += pass.locked;
        self.error.clone_from(&pass.error);
    }
}

/// What the pass knows about the key whose versions it is walking.
#[derive(Default)]
struct KeyWalk {
    key: String,
    /// When the version after this one (newer) was made: the time this one stopped being
    /// current.
    newer_made_ms: u64,
    /// Older versions seen so far.
    noncurrent: u32,
    /// Versions seen so far.
    versions: u32,
    /// The key's latest version, when it is a delete marker.
    latest_marker: Option<Option<String>>,
}

impl Buckets {
    /// Runs one lifecycle pass over every bucket that has rules; their progress records.
    pub async fn run_lifecycle(&self) -> Result<Vec<(String, LifecycleProgress)>, BucketError> {
        let mut done = Vec::new();
        for info in self.list_buckets().await? {
            if info.lifecycle.iter().any(|r| r.enabled) {
                let progress = self.lifecycle_pass(&info.name).await;
                done.push((info.name, progress));
            }
        }
        Ok(done)
    }

    /// One pass over bucket `name`, with its progress recorded as it goes.
    pub async fn lifecycle_pass(&self, name: &str) -> LifecycleProgress {
        let mut progress = LifecycleProgress {
            started_ms: crate::now_ms(),
            ..Default::default()
        };
        self.record_progress(name, &progress).await;
        if let Err(error) = self.walk(name, &mut progress).await {
            tracing::warn!(bucket = %name, %error, "a lifecycle pass stopped");
            progress.error = Some(error.to_string());
        }
        progress.finished_ms = Some(crate::now_ms());
        self.record_progress(name, &progress).await;
        progress
    }

    /// Records `progress` as bucket `name`'s last pass (and, once it finished, adds it to
    /// the totals), guarded so that gateways passing at once do not lose each other's counts.
    async fn record_progress(&self, name: &str, progress: &LifecycleProgress) {
        let key = name.as_bytes().to_vec();
        for _ in 0..self.config().link_attempts_max {
            let old_raw = match self.shard_get(PROGRESS_OBJECT, vec![key.clone()]).await {
                Ok(mut found) => found.remove(&key),
                Err(BucketError::NoSuchBucket) => None,
                Err(error) => {
                    tracing::warn!(bucket = %name, %error, "the lifecycle progress was not read");
                    return;
                }
            };
            let mut status: LifecycleStatus = match old_raw.as_deref().map(records::decode) {
                Some(Ok(status)) => status,
                _ => LifecycleStatus::default(),
            };
            if progress.finished_ms.is_some() {
                status.passes += 1;
                status.totals.add(progress);
            }
            status.last = progress.clone();
            let ops = vec![
                ObjectOp::Create { exclusive: false },
                ObjectOp::CompareOmap(ByteBuf::from(key.clone()), old_raw.map(ByteBuf::from)),
                ObjectOp::OmapSet(vec![(
                    ByteBuf::from(key.clone()),
                    ByteBuf::from(records::encode(&status)),
                )]),
            ];
            match self.try_index_op(PROGRESS_OBJECT, ops).await {
                Ok(true) => return,
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(bucket = %name, %error, "the lifecycle progress was not recorded");
                    return;
                }
            }
        }
    }

    /// Each bucket's lifecycle status, by name.
    pub async fn lifecycle_status(&self) -> Result<BTreeMap<String, LifecycleStatus>, BucketError> {
        let found = self
            .shard_scan(PROGRESS_OBJECT, &[], |_| true)
            .await
            .or_else(|error| match error {
                BucketError::Cluster(tidepool_client::ObjectError::Op(
                    tidepool_proto::osd::OpError::NotFound,
                )) => Ok(Vec::new()),
                other => Err(other),
            })?;
        found
            .into_iter()
            .map(|(k, raw)| {
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    records::decode(&raw)?,
                ))
            })
            .collect()
    }

    async fn walk(&self, name: &str, progress: &mut LifecycleProgress) -> Result<(), BucketError> {
        let info = self.lookup(name, true).await?;
        let rules: Vec<LifecycleRule> = info
            .lifecycle
            .iter()
            .filter(|r| r.enabled)
            .cloned()
            .collect();
        let day_ms = self.config().lifecycle_day.as_millis().max(1) as u64;
        let now = crate::now_ms();
        if info.versioning == crate::Versioning::Off {
            let mut after = None;
            loop {
                let query = ListQuery {
                    after: after.clone(),
                    limit: 1000,
                    ..ListQuery::default()
                };
                let page = self.list(name, &query).await?;
                for (key, entry) in &page.entries {
                    progress.examined += 1;
                    let due = rules.iter().any(|r| {
                        r.covers(key, Some(entry))
                            && r.current_expired(entry.modified_ms, now, day_ms)
                    });
                    if due {
                        self.expire_current(name, key, entry, progress).await?;
                    }
                }
                if !page.truncated {
                    break;
                }
                after = page.last;
            }
        } else {
            self.walk_versions(name, &rules, now, day_ms, progress)
                .await?;
        }
        for upload in self.uploads(name, "").await? {
            let due = rules.iter().any(|r| {
                r.covers(&upload.key, None) && r.upload_expired(upload.initiated_ms, now, day_ms)
            });
            if due {
                match self.abort_upload(name, &upload.key, &upload.id).await {
                    Ok(()) => progress.uploads_aborted += 1,
                    Err(BucketError::NoSuchUpload) => {}
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(())
    }

    async fn walk_versions(
        &self,
        name: &str,
        rules: &[LifecycleRule],
        now: u64,
        day_ms: u64,
        progress: &mut LifecycleProgress,
    ) -> Result<(), BucketError> {
        let mut next: Option<(String, Option<String>)> = None;
        let mut walk = KeyWalk::default();
        loop {
            let (after, version_after) = match next.take() {
                Some((key, version)) => (Some(key), version),
                None => (None, None),
            };
            let query = VersionQuery {
                list: ListQuery {
                    after,
                    limit: 1000,
                    ..ListQuery::default()
                },
                version_after,
            };
            let page = self.list_versions(name, &query).await?;
            for version in page.versions {
                progress.examined += 1;
                if version.key != walk.key {
                    self.end_of_key(name, &walk, rules, progress).await?;
                    walk = KeyWalk {
                        key: version.key.clone(),
                        ..KeyWalk::default()
                    };
                }
                walk.versions += 1;
                if version.is_latest {
                    match &version.entry {
                        Some(entry) => {
                            let due = rules.iter().any(|r| {
                                r.covers(&version.key, Some(entry))
                                    && r.current_expired(entry.modified_ms, now, day_ms)
                            });
                            if due {
                                self.expire_current(name, &version.key, entry, progress)
                                    .await?;
                            }
                        }
                        None => walk.latest_marker = Some(version.version_id.clone()),
                    }
                } else if let Some(entry) = &version.entry {
                    let due = rules.iter().any(|r| {
                        r.covers(&version.key, Some(entry))
                            && r.noncurrent_expired(
                                walk.newer_made_ms,
                                walk.noncurrent,
                                now,
                                day_ms,
                            )
                    });
                    walk.noncurrent += 1;
                    if due {
                        let id = crate::shown(&version.version_id).to_owned();
                        match self.delete_version(name, &version.key, &id, false).await {
                            Ok(_) => progress.noncurrent_removed += 1,
                            Err(BucketError::Locked(_)) => progress.locked += 1,
                            Err(other) => return Err(other),
                        }
                    }
                }
                walk.newer_made_ms = version.modified_ms;
            }
            if !page.truncated {
                break;
            }
            next = page.next;
        }
        self.end_of_key(name, &walk, rules, progress).await
    }

    /// At the end of a key's versions: a delete marker that is its only version goes, when
    /// a rule says so.
    async fn end_of_key(
        &self,
        name: &str,
        walk: &KeyWalk,
        rules: &[LifecycleRule],
        progress: &mut LifecycleProgress,
    ) -> Result<(), BucketError> {
        let Some(marker) = &walk.latest_marker else {
            return Ok(());
        };
        let lone = walk.versions == 1;
        if lone
            && rules
                .iter()
                .any(|r| r.expired_object_delete_marker && r.covers(&walk.key, None))
        {
            let id = crate::shown(marker).to_owned();
            self.delete_version(name, &walk.key, &id, false).await?;
            progress.markers_removed += 1;
        }
        Ok(())
    }

    /// Expires `key`'s current object `entry`: removed (or hidden by a delete marker under
    /// versioning), only if it is still exactly that entry.
    async fn expire_current(
        &self,
        name: &str,
        key: &str,
        entry: &Entry,
        progress: &mut LifecycleProgress,
    ) -> Result<(), BucketError> {
        let condition = PutCondition::Exactly(Box::new(entry.clone()));
        match self
            .link(
                name,
                key,
                None,
                &condition,
                crate::index::LinkExtras::default(),
            )
            .await
        {
            Ok(_) => progress.expired += 1,
            // Written again since it was listed: not expired after all.
            Err(BucketError::PreconditionFailed | BucketError::NoSuchKey) => {}
            Err(BucketError::Locked(_)) => progress.locked += 1,
            Err(other) => return Err(other),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 1000;

    fn entry(size: u64, tags: &[(&str, &str)]) -> Entry {
        Entry {
            size,
            etag: String::new(),
            modified_ms: 0,
            meta: crate::ObjectMeta {
                tags: tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
            segments: Vec::new(),
            inline: false,
            part_sizes: Vec::new(),
            links: None,
            version_id: None,
        }
    }

    #[test]
    fn rules_cover_prefixes_tags_and_sizes() {
        let rule = LifecycleRule {
            enabled: true,
            prefix: "logs/".into(),
            tags: BTreeMap::from([("tier".into(), "cold".into())]),
            size_greater_than: Some(10),
            expiration_days: Some(1),
            ..Default::default()
        };
        assert!(rule.covers("logs/a", Some(&entry(11, &[("tier", "cold")]))));
        assert!(!rule.covers("logs/a", Some(&entry(10, &[("tier", "cold")]))));
        assert!(!rule.covers("logs/a", Some(&entry(11, &[("tier", "hot")]))));
        assert!(!rule.covers("data/a", Some(&entry(11, &[("tier", "cold")]))));
        assert!(!rule.covers("logs/a", None));
        let disabled = LifecycleRule {
            enabled: false,
            ..rule
        };
        assert!(!disabled.covers("logs/a", Some(&entry(11, &[("tier", "cold")]))));
    }

    #[test]
    fn ages_count_whole_days_from_the_right_time() {
        let rule = LifecycleRule {
            enabled: true,
            expiration_days: Some(2),
            noncurrent_days: Some(1),
            newer_noncurrent_versions: Some(2),
            abort_incomplete_days: Some(3),
            ..Default::default()
        };
        assert!(!rule.current_expired(100, 100 + 2 * DAY - 1, DAY));
        assert!(rule.current_expired(100, 100 + 2 * DAY, DAY));
        // Noncurrent versions: the two newest stay whatever their age.
        assert!(!rule.noncurrent_expired(0, 0, 10 * DAY, DAY));
        assert!(!rule.noncurrent_expired(0, 1, 10 * DAY, DAY));
        assert!(rule.noncurrent_expired(0, 2, 10 * DAY, DAY));
        assert!(!rule.noncurrent_expired(10 * DAY, 2, 10 * DAY + DAY - 1, DAY));
        assert!(rule.upload_expired(0, 3 * DAY, DAY));
        assert!(!rule.upload_expired(1, 3 * DAY, DAY));
        let dated = LifecycleRule {
            enabled: true,
            expiration_date_ms: Some(5 * DAY),
            ..Default::default()
        };
        assert!(!dated.current_expired(u64::MAX - 1, 5 * DAY - 1, DAY));
        assert!(dated.current_expired(u64::MAX - 1, 5 * DAY, DAY));
    }

    #[test]
    fn rules_that_do_nothing_or_contradict_are_refused() {
        assert!(LifecycleRule::default().check().is_err());
        let both = LifecycleRule {
            expiration_days: Some(1),
            expiration_date_ms: Some(1),
            ..Default::default()
        };
        assert!(both.check().is_err());
        let zero = LifecycleRule {
            expiration_days: Some(0),
            ..Default::default()
        };
        assert!(zero.check().is_err());
        let tagged_abort = LifecycleRule {
            abort_incomplete_days: Some(1),
            tags: BTreeMap::from([("a".into(), "b".into())]),
            ..Default::default()
        };
        assert!(tagged_abort.check().is_err());
        let fine = LifecycleRule {
            noncurrent_days: Some(1),
            ..Default::default()
        };
        assert!(fine.check().is_ok());
    }
}
