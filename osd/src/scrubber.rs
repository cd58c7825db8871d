//! Scrub on the OSD: a holder's scrub map of a chunk of a PG; the primary's scrub of a PG,
//! chunk by chunk (each chunk's maps gathered from every holder while the PG's writes wait,
//! compared, and each bad copy rewritten from a good one when repairing), on an operator's
//! request or on its schedule; the record of the last scrubs every holder keeps; and a read
//! whose copy here fails its checksums, served and repaired from another holder's. See
//! docs/scrub.md.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidepool_placement::{Epoch, OsdId, PgId};
use tidepool_proto::osd::{ObjectOp, ObjectState, OpError, OsdRequest, OsdResponse};
use tidepool_proto::scrub::{Inconsistency, ScrubRecord};

use crate::daemon::{storage_failed, MapView, Osd};
use crate::machine::Answer;
use crate::pg::{self, Planned, VERSION_XATTR};
use crate::scrub::{self, Repair, ScrubMap, ScrubReport};
use crate::store::{StoreError, Transaction};
use crate::throttle::Rate;

/// How long a holder may take to answer with its scrub map of a chunk.
const SCRUB_MAP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a holder may take to send a good copy of an object whose read failed here.
const GOOD_COPY_TIMEOUT: Duration = Duration::from_secs(30);

/// Objects a scrub compares at once: the PG's writes wait while a chunk is read and compared.
const CHUNK_OBJECTS: usize = 32;

/// Bytes of a chunk past its first object.
const CHUNK_BYTES: u64 = 32 << 20;

/// How long a PG whose scheduled scrub could not run waits before the next try.
const RETRY_SECS: u64 = 30;

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Scrub on this OSD: the read rate of the deep scrubs it leads, the scheduled scrubs
/// running, and per PG it leads, the record of its last scrubs and what runs or is asked.
#[derive(Debug, Default)]
pub(crate) struct Scrubs {
    /// The deep scrubs' read rate (`osd_scrub_bytes_per_second`).
    rate: Rate,
    /// Scheduled scrubs running (at most `osd_max_scrubs`).
    scheduled: AtomicU64,
    /// Bad copies and shards reads here found, since the OSD started.
    pub(crate) bad_reads: AtomicU64,
    pgs: Mutex<HashMap<PgId, PgScrubs>>,
}

/// One PG's scrubs, as its primary (or a former one) follows them.
#[derive(Clone, Debug, Default)]
struct PgScrubs {
    /// Its record, once read from the store.
    record: Option<ScrubRecord>,
    /// When this OSD began to follow it: the time its scrubs are due from before its first.
    since: u64,
    /// The scrub running: whether deep, and whether it repairs.
    running: Option<(bool, bool)>,
    /// A read here found a bad copy: a deep scrub that repairs is due now.
    requested: bool,
    /// No scheduled scrub before this time (the last one could not run).
    not_before: u64,
}

/// What a PG's primary reports of its scrubs with its statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ScrubStat {
    pub last_scrub: u64,
    pub last_deep_scrub: u64,
    pub errors: u64,
    pub unrepairable: u64,
    /// Words for the PG's state: `scrubbing`, `deep`, `inconsistent`, `repair`.
    pub states: Vec<&'static str>,
}

/// When a PG's next scrub (or deep scrub) is due: the last one (or when its primary began to
/// follow it) plus the interval, plus a spread of up to half the interval from a hash of the
/// PG and that time, so that PGs created together are not all scrubbed together.
pub(crate) fn due_at(pg: PgId, last: u64, interval: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in u64::from(pg.pool.0)
        .to_le_bytes()
        .into_iter()
        .chain(u64::from(pg.seed).to_le_bytes())
        .chain(last.to_le_bytes())
    {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    last.saturating_add(interval)
        .saturating_add(hash % (interval / 2 + 1))
}

/// What one chunk of a scrub found.
struct Chunk {
    /// Its last name (`None`: it ran to the end of the PG).
    until: Option<String>,
    objects: u64,
    /// Bytes read on this OSD.
    bytes: u64,
    /// Every inconsistency found.
    found: Vec<Inconsistency>,
    /// Those left after the repairs.
    left: Vec<Inconsistency>,
    unrepairable: Vec<String>,
    repaired: Vec<(String, Vec<OsdId>)>,
}

impl Osd {
    /// A holder's answer to [`OsdRequest::ScrubMap`]: its scrub map of a chunk of `pg`.
    pub(crate) fn scrub_map(
        &self,
        pg: PgId,
        deep: bool,
        after: Option<&str>,
        until: Option<&str>,
    ) -> OsdResponse {
        let coll = pg::collection(pg);
        let fold = self.view().codec(pg.pool).map(|c| c.layout().unit());
        let store = &*self.store;
        match tokio::task::block_in_place(|| scrub::map_of(store, coll, deep, fold, after, until)) {
            Ok(map) => OsdResponse::ScrubMap(map),
            Err(StoreError::NoCollection(_)) => OsdResponse::ScrubMap(ScrubMap::new()),
            Err(error) => storage_failed(error),
        }
    }

    /// A holder's answer to [`OsdRequest::ScrubRecorded`]: keeps `record`.
    pub(crate) async fn keep_scrub_record(&self, pg: PgId, record: ScrubRecord) -> OsdResponse {
        let tx = Transaction {
            ops: vec![pg::keep_scrub_record(pg, &record)],
        };
        match self.apply(tx).await {
            Ok(()) => {
                self.with_scrubs(pg, |s| s.record = Some(record));
                OsdResponse::Ack
            }
            Err(error) => storage_failed(error),
        }
    }

    /// The primary's answer to [`OsdRequest::PgScrubRecord`].
    pub(crate) fn scrub_record_of(&self, pg: PgId) -> OsdResponse {
        let view = self.view();
        if view.holders(pg).and_then(|h| h.primary) != Some(self.id) {
            return OsdResponse::NotPrimary;
        }
        OsdResponse::ScrubRecord(self.with_scrubs(pg, |s| s.record.clone().unwrap_or_default()))
    }

    /// Runs `f` on what this OSD follows of `pg`'s scrubs, its record read from the store on
    /// first use.
    fn with_scrubs<T>(&self, pg: PgId, f: impl FnOnce(&mut PgScrubs) -> T) -> T {
        let mut pgs = self.scrubs.pgs.lock().unwrap_or_else(|p| p.into_inner());
        let state = pgs.entry(pg).or_insert_with(|| PgScrubs {
            since: unix_now(),
            ..PgScrubs::default()
        });
        if state.record.is_none() {
            match pg::scrub_record(&*self.store, pg) {
                Ok(record) => state.record = Some(record.unwrap_or_default()),
                Err(error) => tracing::warn!(%pg, %error, "reading the PG's scrub record failed"),
            }
        }
        f(state)
    }

    /// What the primary of `pg` reports of its scrubs.
    pub(crate) fn scrub_stat(&self, pg: PgId) -> ScrubStat {
        self.with_scrubs(pg, |s| {
            let record = s.record.clone().unwrap_or_default();
            let mut states = Vec::new();
            if let Some((deep, repair)) = s.running {
                states.push("scrubbing");
                if deep {
                    states.push("deep");
                }
                if repair {
                    states.push("repair");
                }
            }
            if record.errors() > 0 {
                states.push("inconsistent");
            }
            let or_since = |at: u64| if at == 0 { s.since } else { at };
            ScrubStat {
                last_scrub: or_since(record.last_scrub),
                last_deep_scrub: or_since(record.last_deep_scrub),
                errors: record.errors(),
                unrepairable: record.unrepairable.len() as u64,
                states,
            }
        })
    }

    /// A read of `pg` here found a bad copy (and served the client around it): it is
    /// counted, and a deep scrub that repairs is due now.
    pub(crate) fn found_bad_copy(&self, pg: PgId) {
        self.scrubs.bad_reads.fetch_add(1, Ordering::Relaxed);
        self.with_scrubs(pg, |s| s.requested = true);
    }

    /// The primary's scrub of `pg`, then its repairs when `repair`: refused unless this OSD
    /// leads the PG and it is active and clean (a holder that is behind is recovery's work).
    /// The PG is scrubbed a chunk at a time: while a chunk's maps are read, compared and its
    /// repairs made, the PG's writes wait, so every map is of the same PG version and every
    /// repair writes that version. A repaired chunk is compared again. A deep scrub reads at
    /// most `osd_scrub_bytes_per_second` from each holder, on average. When the whole PG is
    /// scrubbed, every holder keeps the record of what it found.
    pub(crate) async fn scrub_pg(
        self: &Arc<Self>,
        pg: PgId,
        deep: bool,
        repair: bool,
    ) -> OsdResponse {
        let slot = self.slot(pg);
        let _one = slot.scrub.lock().await;
        let outcome = self.scrub_whole(pg, deep, repair).await;
        // Also a scheduled scrub's mark, when this one took its place.
        self.with_scrubs(pg, |s| s.running = None);
        outcome
    }

    async fn scrub_whole(self: &Arc<Self>, pg: PgId, deep: bool, repair: bool) -> OsdResponse {
        let view = self.view();
        let Some(holders) = view.holders(pg) else {
            return OsdResponse::Failed(format!("{pg}: no such PG"));
        };
        if holders.primary != Some(self.id) {
            return OsdResponse::NotPrimary;
        }
        self.with_scrubs(pg, |s| s.running = Some((deep, repair)));
        let mut report = ScrubReport {
            pg,
            deep,
            holders: holders.acting.clone(),
            objects: 0,
            inconsistencies: Vec::new(),
            unrepairable: Vec::new(),
            repaired: Vec::new(),
        };
        let mut left = Vec::new();
        let mut after: Option<String> = None;
        let outcome = loop {
            let chunk = match self
                .scrub_chunk(pg, deep, repair, &holders.acting, after.as_deref())
                .await
            {
                Ok(chunk) => chunk,
                Err(reason) => break Err(reason),
            };
            report.objects += chunk.objects;
            report.inconsistencies.extend(chunk.found);
            report.unrepairable.extend(chunk.unrepairable);
            report.repaired.extend(chunk.repaired);
            left.extend(chunk.left);
            if deep {
                let rate = self.option("osd_scrub_bytes_per_second");
                self.scrubs.rate.take(chunk.bytes, rate).await;
            }
            match chunk.until {
                Some(until) => after = Some(until),
                None => break Ok(()),
            }
        };
        self.with_scrubs(pg, |s| s.running = None);
        if let Err(reason) = outcome {
            return OsdResponse::Failed(format!("{pg}: {reason}"));
        }
        tracing::info!(
            %pg, deep, objects = report.objects, inconsistencies = report.inconsistencies.len(),
            repaired = report.repaired.len(), unrepairable = report.unrepairable.len(), "scrubbed"
        );
        let record = self.with_scrubs(pg, |s| {
            let record = s.record.clone().unwrap_or_default().after(
                deep,
                unix_now(),
                left,
                report.unrepairable.clone(),
            );
            // The bad copy a read found is repaired, or recorded.
            if deep {
                s.requested = false;
            }
            record
        });
        self.record_scrub(pg, &holders.acting, record).await;
        OsdResponse::Scrubbed(report)
    }

    /// Has every holder of `holders` keep `record` of `pg`; a holder that cannot keeps its
    /// older one (the next primary may scrub the PG sooner than it had to).
    async fn record_scrub(&self, pg: PgId, holders: &[OsdId], record: ScrubRecord) {
        let request = OsdRequest::ScrubRecorded {
            pg,
            record: record.clone(),
        };
        for osd in holders {
            let answer = if *osd == self.id {
                Some(self.keep_scrub_record(pg, record.clone()).await)
            } else {
                self.call_while_up(*osd, &request, SCRUB_MAP_TIMEOUT).await
            };
            if !matches!(answer, Some(OsdResponse::Ack)) {
                tracing::warn!(%pg, osd = osd.0, ?answer, "a holder did not keep the scrub record");
            }
        }
    }

    /// Scrubs the chunk of `pg` after `after` (under the PG's ops lock), and repairs it when
    /// `repair`: fails when this OSD no longer leads the PG, its holders are no longer
    /// `acting`, or it is no longer active and clean.
    async fn scrub_chunk(
        self: &Arc<Self>,
        pg: PgId,
        deep: bool,
        repair: bool,
        acting: &[OsdId],
        after: Option<&str>,
    ) -> Result<Chunk, String> {
        let slot = self.slot(pg);
        let _ops = slot.ops.lock().await;
        let view = self.view();
        let holders = view.holders(pg).ok_or("the PG is gone")?;
        if holders.primary != Some(self.id) || holders.acting != acting {
            return Err(format!(
                "its holders changed (now {:?}); scrub later",
                holders.acting
            ));
        }
        let clean = holders.acting.len() == holders.size && !holders.temp;
        let serving = self
            .with_machine_in(pg, &slot, |m| {
                let status = m.status();
                status.active && status.recovering == 0
            })
            .await
            .map_err(|e| e.to_string())?;
        if !serving {
            return Err("it is not active; scrub later".into());
        }
        if !clean {
            return Err(format!(
                "it is not clean (acting {:?} of {} copies); scrub once it is",
                holders.acting, holders.size
            ));
        }
        let coll = pg::collection(pg);
        let until = tokio::task::block_in_place(|| {
            scrub::chunk_end(&*self.store, coll, after, CHUNK_OBJECTS, CHUNK_BYTES)
        })
        .map_err(|e| e.to_string())?;
        let until = until.as_deref();
        let maps = self.gather_maps(pg, deep, acting, after, until).await?;
        let codec = view.codec(pg.pool);
        let first = scrub::compare(&maps, codec.as_deref());
        let objects = maps
            .iter()
            .flat_map(|(_, map)| map.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        let bytes = maps
            .iter()
            .find(|(osd, _)| *osd == self.id)
            .map_or(0, |(_, map)| map.values().map(|o| o.size).sum::<u64>())
            / holders.k.max(1) as u64;
        for found in &first.inconsistencies {
            tracing::warn!(
                %pg, object = found.object, osd = found.holder.0, problem = ?found.problem,
                deep, "scrub found an inconsistency"
            );
        }
        let mut chunk = Chunk {
            until: until.map(str::to_owned),
            objects,
            bytes,
            found: first.inconsistencies.clone(),
            left: first.inconsistencies,
            unrepairable: first.unrepairable,
            repaired: Vec::new(),
        };
        if repair && !first.repairs.is_empty() {
            for fix in &first.repairs {
                let done = self.repair(pg, view.map.epoch, fix).await?;
                tracing::warn!(%pg, object = done.0, on = ?done.1, "repaired");
                chunk.repaired.push(done);
            }
            // What the repairs left, compared again.
            let maps = self.gather_maps(pg, deep, acting, after, until).await?;
            let again = scrub::compare(&maps, codec.as_deref());
            chunk.left = again.inconsistencies;
            chunk.unrepairable = again.unrepairable;
        }
        Ok(chunk)
    }

    /// Every holder's scrub map of the chunk of `pg` after `after` up to `until`.
    async fn gather_maps(
        &self,
        pg: PgId,
        deep: bool,
        holders: &[OsdId],
        after: Option<&str>,
        until: Option<&str>,
    ) -> Result<Vec<(OsdId, ScrubMap)>, String> {
        let request = OsdRequest::ScrubMap {
            pg,
            deep,
            after: after.map(str::to_owned),
            until: until.map(str::to_owned),
        };
        let answers = futures_util::future::join_all(holders.iter().map(|osd| {
            let request = &request;
            async move {
                let answer = if *osd == self.id {
                    Some(self.scrub_map(pg, deep, after, until))
                } else {
                    self.call_while_up(*osd, request, SCRUB_MAP_TIMEOUT).await
                };
                (*osd, answer)
            }
        }))
        .await;
        answers
            .into_iter()
            .map(|(osd, answer)| match answer {
                Some(OsdResponse::ScrubMap(map)) => Ok((osd, map)),
                other => Err(format!(
                    "osd.{} sent no scrub map ({other:?}); scrub later",
                    osd.0
                )),
            })
            .collect()
    }

    /// The next scheduled scrub this OSD should run, marked as running: of the PGs it leads
    /// that are active and clean, one a read asked for, else the most overdue deep scrub,
    /// else the most overdue scrub. `None` when `osd_max_scrubs` run already or none is due.
    fn next_scrub(&self, view: &MapView, now: u64) -> Option<(PgId, bool)> {
        if self.scrubs.scheduled.load(Ordering::Relaxed) >= self.option("osd_max_scrubs") {
            return None;
        }
        let (interval, deep_interval) = (
            self.option("osd_scrub_interval"),
            self.option("osd_deep_scrub_interval"),
        );
        let clean = self.clean_pgs(view);
        let mut best: Option<(u64, PgId, bool)> = None;
        for pg in clean {
            let candidate = self.with_scrubs(pg, |s| {
                if s.running.is_some() || s.not_before > now {
                    return None;
                }
                if s.requested {
                    return Some((0, true));
                }
                let record = s.record.as_ref()?;
                let or_since = |at: u64| if at == 0 { s.since } else { at };
                let deep_due = due_at(pg, or_since(record.last_deep_scrub), deep_interval);
                let due = due_at(pg, or_since(record.last_scrub), interval);
                if deep_due <= now {
                    Some((deep_due, true))
                } else if due <= now {
                    Some((due, false))
                } else {
                    None
                }
            });
            if let Some((at, deep)) = candidate {
                // Deep scrubs first, then the longest overdue.
                let key = (u64::from(!deep), at);
                if best.is_none_or(|(k, _, d)| key < (u64::from(!d), k)) {
                    best = Some((at, pg, deep));
                }
            }
        }
        let (_, pg, deep) = best?;
        self.scrubs.scheduled.fetch_add(1, Ordering::Relaxed);
        self.with_scrubs(pg, |s| s.running = Some((deep, false)));
        Some((pg, deep))
    }

    /// The PGs this OSD leads whose last reported state is active and clean.
    fn clean_pgs(&self, view: &MapView) -> Vec<PgId> {
        let stats = self.last_stats();
        view.pgs()
            .filter(|pg| {
                view.holders(*pg)
                    .is_some_and(|h| h.primary == Some(self.id))
                    && stats
                        .get(pg)
                        .is_some_and(|s| tidepool_proto::mon::is_active_clean(&s.state))
            })
            .collect()
    }

    /// Runs a scheduled scrub of `pg` (marked by [`Osd::next_scrub`]), repairing when
    /// `osd_scrub_auto_repair` is set or a read asked for it.
    async fn scheduled_scrub(self: Arc<Self>, pg: PgId, deep: bool) {
        let slot = self.slot(pg);
        if let Ok(_one) = slot.scrub.try_lock() {
            let repair = self.option("osd_scrub_auto_repair") != 0;
            let outcome = self.scrub_whole(pg, deep, repair).await;
            // Also when the scrub was refused before it began.
            self.with_scrubs(pg, |s| s.running = None);
            if !matches!(outcome, OsdResponse::Scrubbed(_)) {
                tracing::info!(%pg, deep, ?outcome, "a scheduled scrub did not run; trying later");
                self.with_scrubs(pg, |s| s.not_before = unix_now() + RETRY_SECS);
            }
        }
        // Otherwise an operator's scrub of it runs, and clears the mark when it ends.
        self.scrubs.scheduled.fetch_sub(1, Ordering::Relaxed);
    }

    /// Carries out one repair of a scrub of `pg` under `epoch`: this OSD's own copy (or shard)
    /// first, from a good holder's, so that it can serve as a source; then each other holder's,
    /// pushed as recovery pushes are. Returns the object and the holders written.
    async fn repair(
        self: &Arc<Self>,
        pg: PgId,
        epoch: Epoch,
        fix: &Repair,
    ) -> Result<(String, Vec<OsdId>), String> {
        let (object, targets) = match fix {
            Repair::Remove { object, on } => {
                for osd in on {
                    self.put_object(pg, epoch, *osd, object, None).await?;
                }
                return Ok((object.clone(), on.clone()));
            }
            Repair::Copy { object, from, to } => (object, (from, to)),
        };
        let (from, to) = targets;
        let names = [object.clone()];
        let erasure = self.view().codec(pg.pool).is_some();
        if to.contains(&self.id) {
            let source = *from.first().ok_or("no good copy to repair from")?;
            let mut got = if erasure {
                self.own_shards_from(pg, source, &names).await?
            } else {
                self.fetch_objects(pg, source, &names, GOOD_COPY_TIMEOUT)
                    .await?
            };
            let state = got
                .pop()
                .and_then(|(_, state)| state)
                .ok_or_else(|| format!("osd.{} no longer has {object:?}", source.0))?;
            self.put_object(pg, epoch, self.id, object, Some(state))
                .await?;
        }
        for osd in to.iter().filter(|o| **o != self.id) {
            let mut got = self.objects_for(pg, *osd, &names).await?;
            let state = got.pop().and_then(|(_, state)| state);
            self.put_object(pg, epoch, *osd, object, state).await?;
        }
        Ok((object.clone(), to.clone()))
    }

    /// Makes `name` of `pg` exactly `state` (or removes it) on `osd`: in this OSD's store, or
    /// by a push to another holder.
    async fn put_object(
        &self,
        pg: PgId,
        epoch: Epoch,
        osd: OsdId,
        name: &str,
        state: Option<ObjectState>,
    ) -> Result<(), String> {
        if osd != self.id {
            let objects = vec![(name.to_owned(), state)];
            return match self
                .push(osd, pg, epoch, false, objects, Vec::new(), None)
                .await
            {
                Some(Answer::Ack) => Ok(()),
                other => Err(format!(
                    "osd.{} took no repair of {name:?}: {other:?}",
                    osd.0
                )),
            };
        }
        let coll = pg::collection(pg);
        let store = &*self.store;
        let ops =
            tokio::task::block_in_place(|| pg::write_state(store, coll, name, state.as_ref()));
        match self.store.submit(&Transaction { ops }) {
            Ok(commit) => commit.await,
            Err(error) => Err(error),
        }
        .map_err(|e| format!("repairing {name:?} here: {e}"))
    }

    /// Objects `names` of `pg` as the holder `source` has them, read through its checksums.
    pub(crate) async fn fetch_objects(
        &self,
        pg: PgId,
        source: OsdId,
        names: &[String],
        limit: Duration,
    ) -> Result<Vec<(String, Option<ObjectState>)>, String> {
        let request = OsdRequest::PgRead {
            pg,
            names: names.to_vec(),
        };
        match self.call_while_up(source, &request, limit).await {
            Some(OsdResponse::PgObjects(objects)) => Ok(objects),
            other => Err(format!("osd.{} sent no objects: {other:?}", source.0)),
        }
    }

    /// The read-only transaction `steps` on `name` of `pg`, whose read here failed with
    /// `reason` (a checksum that does not match): this OSD's copy is replaced by another
    /// holder's at the same version (read through that holder's own checksums), and the steps
    /// run again on it. The client gets exact bytes; the bad copy is repaired as it is found,
    /// and logged. Fails as before when no other holder has a good copy.
    pub(crate) async fn read_repaired(
        self: &Arc<Self>,
        pg: PgId,
        view: &MapView,
        name: &str,
        reason: &str,
        steps: Vec<ObjectOp>,
    ) -> Result<Planned, OpError> {
        let coll = pg::collection(pg);
        let failed = || OpError::Storage(reason.to_owned());
        // The copy's metadata says which version a good copy must have.
        let version = match self.store.xattrs(coll, name) {
            Ok(xattrs) => pg::version_of(&xattrs),
            Err(_) => return Err(failed()),
        };
        tracing::warn!(%pg, name, version, reason, "a read failed its checksums; fetching a good copy");
        let names = [name.to_owned()];
        for osd in view.other_holders(pg, self.id) {
            let state = match self.fetch_objects(pg, osd, &names, GOOD_COPY_TIMEOUT).await {
                Ok(objects) => objects.into_iter().next().and_then(|o| o.1),
                Err(reason) => {
                    tracing::warn!(%pg, name, reason, "no good copy from this holder");
                    continue;
                }
            };
            let Some(state) = state else { continue };
            let theirs = state
                .xattrs
                .get(VERSION_XATTR)
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(u64::from_le_bytes);
            if theirs != Some(version) {
                continue;
            }
            let store = &*self.store;
            let ops =
                tokio::task::block_in_place(|| pg::write_state(store, coll, name, Some(&state)));
            let written = match self.store.submit(&Transaction { ops }) {
                Ok(commit) => commit.await,
                Err(error) => Err(error),
            };
            if let Err(error) = written {
                tracing::warn!(%pg, name, %error, "repairing this OSD's copy failed");
                return Err(failed());
            }
            tracing::warn!(%pg, name, version, osd = osd.0, "this OSD's bad copy was repaired from another holder's");
            self.found_bad_copy(pg);
            return tokio::task::block_in_place(|| pg::plan(store, coll, name, steps));
        }
        Err(OpError::Storage(format!(
            "{reason}; no other holder has a good copy of version {version}"
        )))
    }
}

/// Starts the scheduled scrubs of the PGs this OSD leads, as they fall due (docs/scrub.md,
/// "Schedule"); looks every second.
pub(crate) async fn schedule_scrubs(osd: Arc<Osd>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let view = osd.view();
        let now = unix_now();
        while let Some((pg, deep)) = tokio::task::block_in_place(|| osd.next_scrub(&view, now)) {
            tokio::spawn(osd.clone().scheduled_scrub(pg, deep));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidepool_placement::PoolId;

    /// Rule: a PG is due between one and one and a half intervals after its last scrub, the
    /// same time every time it is asked, and PGs scrubbed together fall due at different times.
    #[test]
    fn due_times_are_spread_over_half_an_interval() {
        let (last, interval) = (1_000_000, 3600);
        let dues: Vec<u64> = (0..64)
            .map(|seed| {
                let pg = PgId {
                    pool: PoolId(1),
                    seed,
                };
                let due = due_at(pg, last, interval);
                assert_eq!(due, due_at(pg, last, interval));
                assert!((last + interval..=last + interval * 3 / 2).contains(&due));
                due
            })
            .collect();
        let distinct: std::collections::BTreeSet<_> = dues.iter().collect();
        assert!(distinct.len() > 48, "{} distinct of 64", distinct.len());
        assert_eq!(
            due_at(
                PgId {
                    pool: PoolId(1),
                    seed: 0
                },
                u64::MAX - 1,
                interval
            ),
            u64::MAX
        );
    }
}
