//! Peering, recovery and backfill: how a PG's primary brings its holders to one history after
//! a map change, serves through `pg_temp` while new holders backfill in the background, and
//! removes stray copies once the PG is clean (docs/osd.md, "Peering").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tidepool_placement::{Epoch, OsdId, PgActivation, PgId};
use tidepool_proto::mon::Command;
use tidepool_proto::osd::{LogEntry, ObjectState, OsdRequest, OsdResponse, PgInfo};
use tracing::{info, warn};

use crate::daemon::{list_all, storage_failed, Holders, Osd, PgState, RECOVERY_TIMEOUT};
use crate::peering::{self, Catchup, Copy};
use crate::pg::{self, META};
use crate::store::{Op, StoreError, Transaction};

/// Objects read or pushed per recovery message.
const RECOVERY_BATCH: usize = 16;

/// Why a PG is not active after peering.
#[derive(Debug)]
pub(crate) enum NotActive {
    /// It waits for the monitors to make this `pg_temp` (the caller asks for it).
    Remap(Vec<OsdId>),
    /// No OSD of its last active interval answered: it waits for one of these.
    Down(Vec<OsdId>),
    /// Peering failed; it is tried again.
    Failed(String),
}

impl From<String> for NotActive {
    fn from(reason: String) -> NotActive {
        NotActive::Failed(reason)
    }
}

impl std::fmt::Display for NotActive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotActive::Remap(want) => write!(f, "waits for pg_temp {want:?}"),
            NotActive::Down(waiting) => write!(f, "down: waits for one of {waiting:?}"),
            NotActive::Failed(reason) => f.write_str(reason),
        }
    }
}

/// A background backfill's progress, for the PG's statistics.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// Waiting for a backfill slot.
    pub waiting: bool,
    /// Objects copied so far to the holder being filled.
    pub copied: u64,
}

impl Osd {
    /// Brings the PG's acting holders to one history, ready to go active in the interval
    /// this returns (which the caller records in the map before the PG serves anything).
    /// Asks the acting and up members and those of the last interval that went active (see
    /// [`peering::probe_set`]); is down while none of the latter answers; takes the newest
    /// history as the authority, and then either answers the `pg_temp` to ask for (when
    /// members of the placement must backfill and holders with the data can serve meanwhile),
    /// or brings this primary and every acting holder up to date from the log. Before it
    /// returns, the read leases the last interval's primary may still hold have run out, and
    /// this copy records the interval as its last started one.
    pub(crate) async fn peer(
        &self,
        pg: PgId,
        state: &mut PgState,
        holders: &Holders,
    ) -> Result<PgActivation, NotActive> {
        let coll = pg::collection(pg);
        if !state.present {
            self.apply(Transaction {
                ops: vec![Op::CreateCollection(coll)],
            })
            .await
            .map_err(|e| e.to_string())?;
            state.present = true;
        }
        let view = self.view();
        let epoch = view.map.epoch;
        let last_active = view.map.pg_active.get(&pg);
        let up_osds: Vec<OsdId> = view
            .map
            .osds
            .values()
            .filter(|o| o.up)
            .map(|o| o.id)
            .collect();
        let probe =
            peering::probe_set(self.id, &holders.acting, &holders.up, last_active, &up_osds);
        // This primary's own question fences it too: nothing older than this peering is
        // acknowledged or served here from now on.
        self.fences.raise(pg, epoch);
        let query = OsdRequest::PgQuery { pg, epoch };
        let query = &query;
        let sent = std::time::Instant::now();
        let answers = futures_util::future::join_all(
            probe
                .iter()
                .map(|&osd| async move { (osd, self.call(osd, query).await) }),
        )
        .await;
        let mut copies: Vec<(OsdId, Copy)> =
            vec![(self.id, Some((state.info.clone(), state.last_entry())))];
        let mut leases = Vec::new();
        for (osd, answer) in answers {
            match answer {
                Some(OsdResponse::PgInfo {
                    copy,
                    leases: granted,
                }) => {
                    copies.push((osd, copy));
                    leases.extend(granted);
                    // An answer to a question under this epoch is a read lease too.
                    self.fences.hold(osd, sent);
                }
                _ if holders.acting.contains(&osd) => {
                    return Err(format!("acting holder osd.{} did not answer", osd.0).into())
                }
                _ => {}
            }
        }
        let answered: Vec<OsdId> = copies.iter().map(|(osd, _)| *osd).collect();
        if let Err(waiting) =
            peering::prior_answered(last_active, &answered, |o| view.map.osds.contains_key(&o))
        {
            state.down = Some(waiting.clone());
            return Err(NotActive::Down(waiting));
        }
        state.down = None;
        let authority = peering::authority(&copies).unwrap_or(self.id);
        let (auth_info, auth_log) = if authority == self.id {
            (state.info.clone(), state.log.clone())
        } else {
            self.fetch_log(pg, authority, &copies).await?
        };
        let plans: BTreeMap<OsdId, Catchup> = copies
            .iter()
            .map(|(osd, copy)| (*osd, peering::catchup(&auth_info, &auth_log, copy)))
            .collect();
        if !holders.temp {
            // Stand-ins must hold data; an up member may also be empty when the PG is.
            let usable: Vec<OsdId> = copies
                .iter()
                .filter(|(osd, copy)| {
                    plans[osd].usable() && (holders.up.contains(osd) || peering::rank(copy).2 > 0)
                })
                .map(|(osd, _)| *osd)
                .collect();
            let want = peering::choose_acting(&holders.up, &usable, holders.size);
            if want != holders.up {
                return Err(NotActive::Remap(want));
            }
        }
        let missing: u64 = holders
            .acting
            .iter()
            .filter_map(|osd| match plans.get(osd) {
                Some(Catchup::Log(entries)) => Some(names_of(entries).len() as u64),
                _ => None,
            })
            .sum();
        let _recovering = (missing > 0).then(|| Recovering::start(self, pg, missing));
        if plans[&self.id] != Catchup::UpToDate {
            info!(%pg, from = authority.0, "recovering this primary's copy");
            self.pull_from(pg, state, authority, &auth_info, &plans[&self.id])
                .await?;
        }
        for &osd in holders.acting.iter().filter(|o| **o != self.id) {
            if plans.get(&osd) != Some(&Catchup::UpToDate) {
                self.push_to(pg, state, osd).await?;
            }
        }
        let wait = peering::lease_wait(last_active, &answered, &leases);
        if wait > 0 {
            info!(%pg, wait_ms = wait, "waiting out the previous primary's read lease");
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        // Every acting copy now holds every acknowledged write: they start the interval, so
        // that each ranks above any copy from an older one (a paused primary's divergent
        // writes included).
        state.info.last_epoch_started = epoch;
        self.apply(Transaction {
            ops: pg::record(coll, &[], &state.info, None),
        })
        .await
        .map_err(|e| e.to_string())?;
        for &osd in holders.acting.iter().filter(|o| **o != self.id) {
            self.push(
                osd,
                pg,
                false,
                Vec::new(),
                Vec::new(),
                Some(state.info.clone()),
            )
            .await?;
        }
        Ok(PgActivation {
            epoch,
            acting: holders.acting.clone(),
        })
    }

    /// The summary and kept log of `source`.
    async fn fetch_log(
        &self,
        pg: PgId,
        source: OsdId,
        copies: &[(OsdId, Copy)],
    ) -> Result<(PgInfo, Vec<LogEntry>), String> {
        let info = copies
            .iter()
            .find(|(osd, _)| *osd == source)
            .and_then(|(_, copy)| copy.as_ref())
            .map(|(info, _)| info.clone())
            .unwrap_or_default();
        let request = OsdRequest::PgLog {
            pg,
            after: info.log_tail,
        };
        match self.call(source, &request).await {
            Some(OsdResponse::PgLog(Some(log))) => Ok((info, log)),
            _ => Err(format!("osd.{} did not send its log", source.0)),
        }
    }

    /// Makes this OSD's copy `source`'s (whose summary is `info`), by `plan`.
    async fn pull_from(
        &self,
        pg: PgId,
        state: &mut PgState,
        source: OsdId,
        info: &PgInfo,
        plan: &Catchup,
    ) -> Result<(), String> {
        let coll = pg::collection(pg);
        let (names, entries) = match plan {
            Catchup::UpToDate => return Ok(()),
            Catchup::Log(entries) => (names_of(entries), entries.clone()),
            Catchup::Backfill => {
                let names = self.list_remote(pg, source).await?;
                let Some(OsdResponse::PgLog(Some(entries))) = self
                    .call(
                        source,
                        &OsdRequest::PgLog {
                            pg,
                            after: info.log_tail,
                        },
                    )
                    .await
                else {
                    return Err(format!("osd.{} did not send its log", source.0));
                };
                self.apply(Transaction {
                    ops: vec![Op::RemoveCollection(coll), Op::CreateCollection(coll)],
                })
                .await
                .map_err(|e| e.to_string())?;
                (names, entries)
            }
        };
        for batch in names.chunks(RECOVERY_BATCH) {
            let Some(OsdResponse::PgObjects(objects)) = self
                .call_while_up(
                    source,
                    &OsdRequest::PgRead {
                        pg,
                        names: batch.to_vec(),
                    },
                    RECOVERY_TIMEOUT,
                )
                .await
            else {
                return Err(format!("osd.{} did not send objects", source.0));
            };
            let mut ops = Vec::new();
            for (name, object) in &objects {
                ops.extend(pg::write_state(&*self.store, coll, name, object.as_ref()));
            }
            self.apply(Transaction { ops })
                .await
                .map_err(|e| e.to_string())?;
        }
        self.apply(Transaction {
            ops: pg::record(coll, &entries, info, None),
        })
        .await
        .map_err(|e| e.to_string())?;
        self.reload(pg, state).map_err(|e| e.to_string())?;
        state.info = info.clone();
        Ok(())
    }

    async fn list_remote(&self, pg: PgId, osd: OsdId) -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        let mut start_after = None;
        loop {
            let Some(OsdResponse::PgList { names: page, done }) = self
                .call(
                    osd,
                    &OsdRequest::PgList {
                        pg,
                        start_after: start_after.clone(),
                    },
                )
                .await
            else {
                return Err(format!("osd.{} did not list its objects", osd.0));
            };
            start_after = page.last().cloned();
            names.extend(page);
            if done {
                return Ok(names);
            }
        }
    }

    /// Brings `target`'s copy up to this primary's, at once: from the log when it still
    /// covers the target's newest entry, else by a full copy.
    pub(crate) async fn push_to(
        &self,
        pg: PgId,
        state: &mut PgState,
        target: OsdId,
    ) -> Result<(), String> {
        let coll = pg::collection(pg);
        let query = OsdRequest::PgQuery {
            pg,
            epoch: self.view().map.epoch,
        };
        let their = match self.call(target, &query).await {
            Some(OsdResponse::PgInfo { copy, .. }) => copy,
            _ => return Err(format!("osd.{} did not answer", target.0)),
        };
        let (reset, names, entries) = match peering::catchup(&state.info, &state.log, &their) {
            Catchup::UpToDate => return Ok(()),
            Catchup::Log(entries) => {
                info!(%pg, to = target.0, entries = entries.len(), "recovering from the log");
                (false, names_of(&entries), entries)
            }
            Catchup::Backfill => {
                info!(%pg, to = target.0, "copying the whole PG");
                let names = tokio::task::block_in_place(|| list_all(&*self.store, coll))
                    .map_err(|e| e.to_string())?;
                (true, names, state.log.clone())
            }
        };
        let mut first = true;
        for batch in names.chunks(RECOVERY_BATCH) {
            let objects = self.read_objects(pg, batch)?;
            self.push(target, pg, reset && first, objects, Vec::new(), None)
                .await?;
            first = false;
        }
        self.push(
            target,
            pg,
            reset && first,
            Vec::new(),
            entries,
            Some(state.info.clone()),
        )
        .await
    }

    /// Whole objects of this OSD's copy of `pg`.
    fn read_objects(
        &self,
        pg: PgId,
        names: &[String],
    ) -> Result<Vec<(String, Option<ObjectState>)>, String> {
        let coll = pg::collection(pg);
        tokio::task::block_in_place(|| {
            names
                .iter()
                .map(|name| Ok((name.clone(), pg::read_state(&*self.store, coll, name)?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .map_err(|e| e.to_string())
    }

    async fn push(
        &self,
        target: OsdId,
        pg: PgId,
        reset: bool,
        objects: Vec<(String, Option<ObjectState>)>,
        entries: Vec<LogEntry>,
        info: Option<PgInfo>,
    ) -> Result<(), String> {
        let count = objects.len() as u64;
        let bytes: u64 = objects
            .iter()
            .filter_map(|(_, o)| o.as_ref())
            .map(|o| o.data.len() as u64)
            .sum();
        let _slot = self
            .recovery_out
            .acquire(|| self.option("osd_recovery_max_active"))
            .await;
        self.recovery_rate
            .take(bytes, self.option("osd_recovery_max_bytes_per_sec"))
            .await;
        let request = OsdRequest::PgPush {
            epoch: self.view().map.epoch,
            pg,
            reset,
            objects,
            entries,
            info,
        };
        match self.call_while_up(target, &request, RECOVERY_TIMEOUT).await {
            Some(OsdResponse::Ack) => {
                self.io.recovered(count, bytes);
                Ok(())
            }
            Some(OsdResponse::Failed(reason)) => Err(reason),
            Some(OsdResponse::StaleEpoch { have }) => Err(format!(
                "osd.{} is fenced at epoch {}: a newer primary peered",
                target.0, have.0
            )),
            _ => Err(format!("osd.{} did not take the recovery push", target.0)),
        }
    }

    /// Takes a recovery push from the PG's primary, unless a newer primary has peered
    /// (the push's epoch is older than the fence), or the push would replace a newer history
    /// with an older one.
    pub(crate) async fn handle_push(
        &self,
        epoch: Epoch,
        pg: PgId,
        reset: bool,
        objects: Vec<(String, Option<ObjectState>)>,
        entries: Vec<LogEntry>,
        info: Option<PgInfo>,
    ) -> OsdResponse {
        let coll = pg::collection(pg);
        let _slot = self
            .recovery_in
            .acquire(|| self.option("osd_recovery_max_active"))
            .await;
        let lock = self.pg(pg);
        let mut state = lock.lock().await;
        if let Err(error) = self.ensure_loaded(pg, &mut state) {
            return storage_failed(error);
        }
        match self.fences.get(pg) {
            None => return OsdResponse::Failed("this OSD is not up in its map".into()),
            Some(fence) if epoch < fence => return OsdResponse::StaleEpoch { have: fence },
            Some(_) => {}
        }
        if let Some(info) = info.as_ref().filter(|_| !reset) {
            let mine = Some((state.info.clone(), state.last_entry()));
            if state.present && peering::rank(&mine) > peering::rank(&Some((info.clone(), None))) {
                warn!(%pg, "refusing a push of an older history than this copy's");
                return OsdResponse::Failed(format!(
                    "{pg}: this copy's history is newer than the pushed one"
                ));
            }
        }
        let mut ops = Vec::new();
        if reset && state.present {
            ops.push(Op::RemoveCollection(coll));
        }
        if reset || !state.present {
            ops.push(Op::CreateCollection(coll));
        }
        let fresh = reset || !state.present;
        for (name, object) in &objects {
            if pg::check_name(name).is_err() {
                return OsdResponse::Failed(format!("bad object name {name:?}"));
            }
            if fresh {
                // Nothing of the old copy is left: write without looking at it.
                if let Some(object) = object {
                    ops.extend(pg::create_state(coll, name, object));
                }
            } else {
                ops.extend(pg::write_state(&*self.store, coll, name, object.as_ref()));
            }
        }
        if let Some(info) = &info {
            ops.extend(pg::record(coll, &entries, info, None));
        }
        if let Err(error) = self.apply(Transaction { ops }).await {
            return storage_failed(error);
        }
        if let Err(error) = self.reload(pg, &mut state) {
            return storage_failed(error);
        }
        self.acknowledge(pg, epoch)
    }

    /// As primary: whether `from`'s copy of `pg` is a stray that may go, i.e. the PG is
    /// active and clean under a map at least as new as the asker's, and not placed on `from`.
    pub(crate) async fn handle_stray_check(
        &self,
        pg: PgId,
        from: OsdId,
        epoch: tidepool_placement::Epoch,
    ) -> OsdResponse {
        let view = self.view_at(epoch).await;
        let Some(holders) = view.holders(pg) else {
            return OsdResponse::Failed(format!("no PG {pg}"));
        };
        let clean = holders.primary == Some(self.id)
            && !holders.temp
            && holders.acting.len() >= holders.size
            && !holders.up.contains(&from)
            && self.is_active(pg, &*self.pg(pg).lock().await, &view, &holders);
        if clean {
            OsdResponse::Ack
        } else {
            OsdResponse::Failed(format!("{pg} is not clean without osd.{}", from.0))
        }
    }

    /// Removes the copies this OSD holds of PGs placed elsewhere, each once the PG's primary
    /// says the PG is clean without it.
    pub(crate) async fn remove_strays(&self) {
        let Ok(collections) = self.store.collections() else {
            return;
        };
        let view = self.view();
        for coll in collections {
            let pg = PgId {
                pool: tidepool_placement::PoolId(coll.pool),
                seed: coll.seed,
            };
            // The copy of a removed pool goes at once; others once the primary agrees.
            if let Some(holders) = view.holders(pg) {
                if holders.up.contains(&self.id) || holders.acting.contains(&self.id) {
                    continue;
                }
                let Some(primary) = holders.primary else {
                    continue;
                };
                let check = OsdRequest::StrayCheck {
                    pg,
                    from: self.id,
                    epoch: view.map.epoch,
                };
                if !matches!(self.call(primary, &check).await, Some(OsdResponse::Ack)) {
                    continue;
                }
            } else if view.map.pools.contains_key(&pg.pool) {
                continue;
            }
            let lock = self.pg(pg);
            let mut state = lock.lock().await;
            // Placed here again meanwhile: keep it.
            if self
                .view()
                .holders(pg)
                .is_some_and(|h| h.up.contains(&self.id) || h.acting.contains(&self.id))
            {
                continue;
            }
            info!(%pg, "removing a stray copy");
            if self
                .apply(Transaction {
                    ops: vec![Op::RemoveCollection(coll)],
                })
                .await
                .is_err()
            {
                return;
            }
            *state = PgState {
                loaded: true,
                ..PgState::default()
            };
        }
    }

    /// Fills the PG's new holders (placement members outside `pg_temp`) while the `pg_temp`
    /// holders serve it, one after another, each under a backfill slot; then gives the PG
    /// back to its placement. Ends when this OSD no longer serves the PG through `pg_temp`.
    pub(crate) async fn backfill(self: Arc<Self>, pg: PgId) {
        let mut done: BTreeSet<OsdId> = BTreeSet::new();
        loop {
            let view = self.view();
            let Some(holders) = view.holders(pg) else {
                break;
            };
            if holders.primary != Some(self.id) || !holders.temp {
                break;
            }
            let targets: Vec<OsdId> = holders
                .up
                .iter()
                .filter(|o| !holders.acting.contains(o) && !done.contains(o))
                .copied()
                .collect();
            if targets.is_empty() {
                info!(%pg, "backfill complete; giving the PG back to its placement");
                let clear = Command::PgTemp(vec![(pg, Vec::new())]);
                if let Err(reason) = self.mon_command(clear).await {
                    warn!(%pg, %reason, "clearing pg_temp failed; will retry");
                }
                let mut maps = self.maps.clone();
                let _ = tokio::time::timeout(Duration::from_secs(5), maps.changed()).await;
                continue;
            }
            for target in targets {
                self.set_progress(pg, |p| {
                    p.waiting = true;
                    p.copied = 0;
                });
                let _slot = self
                    .backfills
                    .acquire(|| self.option("osd_max_backfills"))
                    .await;
                self.set_progress(pg, |p| p.waiting = false);
                match self.backfill_one(pg, &holders, target).await {
                    Ok(()) => {
                        info!(%pg, to = target.0, "backfilled");
                        done.insert(target);
                    }
                    Err(reason) => {
                        warn!(%pg, to = target.0, %reason, "backfill stopped; will retry");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
        }
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pg);
    }

    fn set_progress(&self, pg: PgId, change: impl FnOnce(&mut Progress)) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        change(progress.entry(pg).or_default());
    }

    /// Copies this copy of `pg` to `target` in name order, a batch at a time (client
    /// operations go on between batches), then the changes made meanwhile, the log and the
    /// summary under the PG's lock, so the target ends as a copy of one point in history that
    /// the log reaches from now on.
    async fn backfill_one(&self, pg: PgId, holders: &Holders, target: OsdId) -> Result<(), String> {
        let coll = pg::collection(pg);
        let lock = self.pg(pg);
        let still = |state: &PgState| -> Result<(), String> {
            let current = self.view().holders(pg);
            let same = current.as_ref().is_some_and(|h| {
                h.acting == holders.acting && h.up.contains(&target) && h.primary == Some(self.id)
            });
            if same && self.is_active(pg, state, &self.view(), holders) {
                Ok(())
            } else {
                Err("the PG's holders changed".into())
            }
        };
        let start = {
            let state = lock.lock().await;
            still(&state)?;
            state.info.last_update
        };
        info!(%pg, to = target.0, "backfilling");
        self.push(target, pg, true, Vec::new(), Vec::new(), None)
            .await?;
        let mut after: Option<String> = None;
        loop {
            let batch_started = std::time::Instant::now();
            let objects = {
                let state = lock.lock().await;
                still(&state)?;
                let page = tokio::task::block_in_place(|| {
                    self.store.list(coll, after.as_deref(), RECOVERY_BATCH)
                })
                .map_err(|e| e.to_string())?;
                let Some(last) = page.last() else { break };
                after = Some(last.clone());
                let names: Vec<String> = page.into_iter().filter(|n| n != META).collect();
                self.read_objects(pg, &names)?
            };
            let count = objects.len() as u64;
            self.push(target, pg, false, objects, Vec::new(), None)
                .await?;
            self.set_progress(pg, |p| p.copied += count);
            // Clients first: while they use this OSD, a backfill works at most half the time.
            if self.io.clients_active() {
                tokio::time::sleep(batch_started.elapsed()).await;
            }
        }
        let state = lock.lock().await;
        still(&state)?;
        if state.info.log_tail > start {
            return Err("the log moved past the backfill's start; starting again".into());
        }
        let changed: Vec<LogEntry> = state
            .log
            .iter()
            .filter(|e| e.version > start)
            .cloned()
            .collect();
        let objects = self.read_objects(pg, &names_of(&changed))?;
        self.push(
            target,
            pg,
            false,
            objects,
            state.log.clone(),
            Some(state.info.clone()),
        )
        .await
    }

    /// Asks the monitors for the `pg_temp`s in `wanted` (one command, one new epoch), except
    /// those already asked for under the current map.
    pub(crate) async fn ask_pg_temp(&self, wanted: Vec<(PgId, Vec<OsdId>)>) {
        let epoch = self.view().map.epoch;
        let fresh: Vec<(PgId, Vec<OsdId>)> = {
            let mut asked = self.remaps_asked.lock().unwrap_or_else(|p| p.into_inner());
            wanted
                .into_iter()
                .filter(|(pg, want)| {
                    let again = asked.get(pg) == Some(&(epoch, want.clone()));
                    if !again {
                        asked.insert(*pg, (epoch, want.clone()));
                    }
                    !again
                })
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        info!(
            pgs = fresh.len(),
            "asking for pg_temp while new holders backfill"
        );
        if let Err(reason) = self.mon_command(Command::PgTemp(fresh.clone())).await {
            warn!(%reason, "asking for pg_temp failed; will ask again");
            let mut asked = self.remaps_asked.lock().unwrap_or_else(|p| p.into_inner());
            for (pg, _) in fresh {
                asked.remove(&pg);
            }
        }
    }

    /// Sends a command to the monitors; the epoch of the map it made, or why it failed (a
    /// refusal included).
    pub(crate) async fn mon_command(&self, command: Command) -> Result<Epoch, String> {
        let mut mon = self.mon.lock().await;
        match mon.command(command).await {
            Ok(Ok(outcome)) => Ok(outcome.epoch),
            Ok(Err(refused)) => Err(refused.to_string()),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// Marks a PG as recovering (for its statistics) while it lives.
struct Recovering<'a> {
    osd: &'a Osd,
    pg: PgId,
}

impl<'a> Recovering<'a> {
    fn start(osd: &'a Osd, pg: PgId, copies: u64) -> Recovering<'a> {
        osd.recovering
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pg, copies);
        Recovering { osd, pg }
    }
}

impl Drop for Recovering<'_> {
    fn drop(&mut self) {
        self.osd
            .recovering
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.pg);
    }
}

/// The distinct object names of `entries`, in order.
fn names_of(entries: &[LogEntry]) -> Vec<String> {
    let names: BTreeSet<&String> = entries.iter().map(|e| &e.name).collect();
    names.into_iter().cloned().collect()
}
