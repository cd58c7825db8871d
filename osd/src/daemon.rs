//! The OSD daemon: boots into the map, follows it, serves object transactions for the PGs it
//! leads, replicates writes to the other holders, brings holders up to date when a PG's
//! holders change (from the log, or by backfill), sends beacons and heartbeats its peers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidepool_client::MonClient;
use tidepool_messenger::{Identity, Messenger, MessengerConfig, Peer, Service};
use tidepool_placement::{ClusterMap, Epoch, OsdId, PgId, Placement, PoolKind, Scratch};
use tidepool_proto::mon::{Beacon, Command, MonMap, OsdStat, PgStat};
use tidepool_proto::osd::{
    LogEntry, ObjectRequest, ObjectState, OpError, OsdRequest, OsdResponse, PgInfo,
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::pg::{self, META};
use crate::store::{ObjectStore, Op, StoreError, Transaction};

/// Largest message: an object of the store's maximum size, with room for its metadata.
pub const BODY_BYTES_MAX: u32 = (crate::store::OBJECT_BYTES_MAX as u32) + (8 << 20);
const BEACON_EVERY: Duration = Duration::from_secs(2);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a replica may take to apply one change before the primary checks the map again.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write may wait for its replicas in all, across map changes.
const WRITE_DEADLINE: Duration = Duration::from_secs(60);
/// Objects read or pushed per recovery message.
const RECOVERY_BATCH: usize = 16;

/// What an OSD needs to run.
#[derive(Debug)]
pub struct OsdConfig {
    /// Its id in the map.
    pub id: OsdId,
    /// Its certificate (`osd-<id>`).
    pub identity: Identity,
    /// The monitors.
    pub monmap: MonMap,
    /// Where it listens (port 0: any free one).
    pub bind: SocketAddr,
}

/// The entity name of OSD `id`.
pub fn entity(id: OsdId) -> String {
    format!("osd-{}", id.0)
}

/// A map with its placement compiled.
#[derive(Debug)]
pub struct MapView {
    /// The map.
    pub map: ClusterMap,
    /// Its placement.
    pub placement: Placement,
}

impl MapView {
    fn new(map: ClusterMap) -> MapView {
        let placement = Placement::new(&map);
        MapView { map, placement }
    }

    /// The acting OSDs of `pg` and its primary (`None` for an unknown pool or PG).
    pub fn acting(&self, pg: PgId) -> Option<(Vec<OsdId>, Option<OsdId>)> {
        let mapping = self.placement.map_pg(pg, &mut Scratch::default())?;
        Some((
            mapping.acting.into_iter().flatten().collect(),
            mapping.primary,
        ))
    }

    fn addr(&self, osd: OsdId) -> Option<SocketAddr> {
        self.map.osds.get(&osd)?.addr.as_deref()?.parse().ok()
    }

    /// Every PG of every pool.
    fn pgs(&self) -> impl Iterator<Item = PgId> + '_ {
        self.map.pools.values().flat_map(|pool| {
            (0..pool.pg_num).map(move |seed| PgId {
                pool: pool.id,
                seed,
            })
        })
    }
}

/// One PG's state on this OSD.
#[derive(Debug, Default)]
struct PgState {
    loaded: bool,
    /// Whether this OSD holds a copy.
    present: bool,
    info: PgInfo,
    log: Vec<LogEntry>,
    reqids: HashMap<(String, u64), u64>,
    /// The acting set this OSD (as primary) last brought up to date.
    peered: Option<Vec<OsdId>>,
}

impl PgState {
    fn last_entry(&self) -> Option<LogEntry> {
        self.log.last().cloned()
    }
}

struct Osd {
    id: OsdId,
    store: Arc<dyn ObjectStore>,
    messenger: Messenger,
    maps: watch::Receiver<Arc<MapView>>,
    pgs: Mutex<HashMap<PgId, Arc<tokio::sync::Mutex<PgState>>>>,
    options: Mutex<Vec<(String, String)>>,
    /// When each peer last answered a ping.
    heard: Mutex<HashMap<OsdId, Instant>>,
    /// Woken when the store fails: the OSD stops rather than serve from a broken disk.
    stop: tokio::sync::Notify,
}

fn storage_failed(error: StoreError) -> OsdResponse {
    OsdResponse::Failed(error.to_string())
}

impl Osd {
    fn view(&self) -> Arc<MapView> {
        self.maps.borrow().clone()
    }

    fn pg(&self, pg: PgId) -> Arc<tokio::sync::Mutex<PgState>> {
        self.pgs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(pg)
            .or_default()
            .clone()
    }

    fn option(&self, name: &str) -> u64 {
        let options = self.options.lock().unwrap_or_else(|p| p.into_inner());
        tidepool_proto::config::get(options.iter().map(|(k, v)| (k.as_str(), v.as_str())), name)
    }

    /// Loads the PG's state from the store the first time it is used.
    fn ensure_loaded(&self, pg: PgId, state: &mut PgState) -> Result<(), StoreError> {
        if state.loaded {
            return Ok(());
        }
        self.reload(pg, state)
    }

    fn reload(&self, pg: PgId, state: &mut PgState) -> Result<(), StoreError> {
        let loaded = tokio::task::block_in_place(|| pg::load(&*self.store, pg))?;
        state.loaded = true;
        state.present = loaded.is_some();
        let (info, log) = loaded.unwrap_or_default();
        state.reqids = log
            .iter()
            .filter_map(|e| e.reqid.clone().map(|r| (r, e.version)))
            .collect();
        state.info = info;
        state.log = log;
        Ok(())
    }

    fn apply(&self, tx: &Transaction) -> Result<(), StoreError> {
        let result = tokio::task::block_in_place(|| self.store.apply(tx));
        self.fail_stop(result)
    }

    /// Stops the OSD when `result` says the store failed (a write, a sync, a full disk).
    fn fail_stop<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Failed(reason)) = &result {
            tracing::error!(%reason, "the store failed; this OSD stops");
            self.stop.notify_one();
        }
        result
    }

    async fn call(&self, osd: OsdId, request: &OsdRequest) -> Option<OsdResponse> {
        let addr = self.view().addr(osd)?;
        self.messenger
            .call_within(addr, &entity(osd), request, REPLICA_TIMEOUT)
            .await
            .ok()
    }

    async fn handle_object(&self, request: ObjectRequest) -> OsdResponse {
        let mut view = self.view();
        if request.epoch < view.map.epoch {
            return OsdResponse::StaleEpoch {
                have: view.map.epoch,
            };
        }
        if request.epoch > view.map.epoch {
            // The client saw a newer map: wait (briefly) until this OSD has it too.
            let mut maps = self.maps.clone();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                maps.wait_for(|v| v.map.epoch >= request.epoch),
            )
            .await;
            view = self.view();
        }
        let Some(pool) = view.map.pools.get(&request.pg.pool).cloned() else {
            return OsdResponse::Object(Err(OpError::NoPool));
        };
        let Some((acting, primary)) = view.acting(request.pg) else {
            return OsdResponse::Object(Err(OpError::NoPool));
        };
        if primary != Some(self.id) {
            return OsdResponse::NotPrimary;
        }
        if let Err(error) = pg::check_name(&request.name) {
            return OsdResponse::Object(Err(error));
        }
        let pg = request.pg;
        let lock = self.pg(pg);
        let mut state = lock.lock().await;
        if let Err(error) = self.ensure_loaded(pg, &mut state) {
            return storage_failed(error);
        }
        if state.peered.as_ref() != Some(&acting) {
            if let Err(reason) = self.peer(pg, &mut state, &acting).await {
                return OsdResponse::Failed(format!("PG {pg} could not peer: {reason}"));
            }
        }
        // A resend of a change already made gets its version back, not a second change.
        let reqid = (request.client.clone(), request.sequence);
        if let Some(version) = state.reqids.get(&reqid) {
            return OsdResponse::Object(Ok((*version, Vec::new())));
        }
        let coll = pg::collection(pg);
        let mut planned = match tokio::task::block_in_place(|| {
            pg::plan(&*self.store, coll, &request.name, request.ops)
        }) {
            Ok(planned) => planned,
            Err(error) => return OsdResponse::Object(Err(error)),
        };
        if planned.ops.is_empty() {
            return OsdResponse::Object(Ok((planned.version, planned.outputs)));
        }
        let min_size = match pool.kind {
            PoolKind::Replicated { min_size, .. } => usize::from(min_size),
            PoolKind::Erasure { k, .. } => usize::from(k),
        };
        if acting.len() < min_size {
            return OsdResponse::Object(Err(OpError::Undersized {
                up: acting.len(),
                min_size,
            }));
        }
        let entry = LogEntry {
            version: state.info.last_update + 1,
            epoch: view.map.epoch,
            name: request.name.clone(),
            delete: planned.removed,
            reqid: Some(reqid.clone()),
        };
        let (tx, next) = pg::commit_tx(coll, &request.name, &mut planned, &entry, &state.info);
        let encoded = encode_transaction(&tx);
        // The local write and the replicas' run at once; the client hears back when all are on
        // disk.
        let store = self.store.clone();
        let mut local = Some(tokio::task::spawn_blocking(move || store.apply(&tx)));
        state.info = next;
        state.log.push(entry.clone());
        state.reqids.insert(reqid, entry.version);
        let replicated = self
            .replicate(pg, &mut state, &acting, &entry, encoded, &mut local)
            .await;
        if let Err(error) = self.fail_stop(finish_local(&mut local).await) {
            // Fail-stop: the store refuses everything from now on, and so does this OSD.
            return storage_failed(error);
        }
        if let Err(reason) = replicated {
            return OsdResponse::Failed(reason);
        }
        OsdResponse::Object(Ok((entry.version, planned.outputs)))
    }

    /// Sends a change to every other holder and waits until each has it on disk, or has left
    /// the acting set in a newer map. A holder that missed earlier changes is recovered first.
    async fn replicate(
        &self,
        pg: PgId,
        state: &mut PgState,
        acting: &[OsdId],
        entry: &LogEntry,
        transaction: Vec<u8>,
        local: &mut Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut waiting: BTreeSet<OsdId> =
            acting.iter().copied().filter(|o| *o != self.id).collect();
        let request = OsdRequest::Replicate {
            epoch: self.view().map.epoch,
            pg,
            entry: entry.clone(),
            transaction,
        };
        while !waiting.is_empty() {
            let request = &request;
            let calls = waiting
                .iter()
                .map(|&osd| async move { (osd, self.call(osd, request).await) });
            let answers = futures_util::future::join_all(calls).await;
            let mut behind = Vec::new();
            for (osd, answer) in answers {
                match answer {
                    Some(OsdResponse::Ack) => {
                        waiting.remove(&osd);
                    }
                    Some(OsdResponse::Behind) => behind.push(osd),
                    _ => {}
                }
            }
            // Those that missed changes (they were down) are brought up to date from this copy,
            // which includes this change once the local write is done.
            if !behind.is_empty() {
                finish_local(local).await.map_err(|e| e.to_string())?;
            }
            for osd in behind {
                if self.push_to(pg, state, osd).await.is_ok() {
                    waiting.remove(&osd);
                }
            }
            if waiting.is_empty() {
                break;
            }
            // A holder that does not answer is waited for until the map drops it.
            let view = self.view();
            let still: BTreeSet<OsdId> = view
                .acting(pg)
                .map(|(acting, _)| acting.into_iter().collect())
                .unwrap_or_default();
            waiting.retain(|osd| still.contains(osd));
            if started.elapsed() > WRITE_DEADLINE {
                return Err(format!("replicas {waiting:?} did not take the write"));
            }
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    async fn handle_replicate(
        &self,
        pg: PgId,
        entry: LogEntry,
        transaction: Vec<u8>,
    ) -> OsdResponse {
        let Ok(mut tx) = rmp_serde::from_slice::<Transaction>(&transaction) else {
            return OsdResponse::Failed("malformed transaction".into());
        };
        let coll = pg::collection(pg);
        if tx.ops.iter().any(|op| op.collection() != coll) {
            return OsdResponse::Failed("transaction outside its PG".into());
        }
        let lock = self.pg(pg);
        let mut state = lock.lock().await;
        if let Err(error) = self.ensure_loaded(pg, &mut state) {
            return storage_failed(error);
        }
        if state.info.last_update == entry.version {
            return OsdResponse::Ack;
        }
        if state.info.last_update + 1 != entry.version {
            return OsdResponse::Behind;
        }
        if !state.present {
            tx.ops.insert(0, Op::CreateCollection(coll));
        }
        if let Err(error) = self.apply(&tx) {
            return storage_failed(error);
        }
        state.present = true;
        state.info = pg::advance(&state.info, &entry);
        if let Some(reqid) = entry.reqid.clone() {
            state.reqids.insert(reqid, entry.version);
        }
        state.log.push(entry);
        OsdResponse::Ack
    }

    /// Brings the PG's holders up to date: the one with the newest history is the authority;
    /// this primary copies from it when it is another, then updates the others.
    async fn peer(&self, pg: PgId, state: &mut PgState, acting: &[OsdId]) -> Result<(), String> {
        let coll = pg::collection(pg);
        if !state.present {
            self.apply(&Transaction {
                ops: vec![Op::CreateCollection(coll)],
            })
            .map_err(|e| e.to_string())?;
            state.present = true;
        }
        let mut infos: BTreeMap<OsdId, Option<(PgInfo, Option<LogEntry>)>> = BTreeMap::new();
        for &osd in acting.iter().filter(|o| **o != self.id) {
            if let Some(OsdResponse::PgInfo(info)) =
                self.call(osd, &OsdRequest::PgQuery { pg }).await
            {
                infos.insert(osd, info);
            }
        }
        let newest = infos
            .iter()
            .filter_map(|(osd, info)| info.as_ref().map(|(i, _)| (*osd, i.clone())))
            .max_by_key(|(_, i)| (i.last_epoch, i.last_update));
        if let Some((source, info)) = newest {
            if (info.last_epoch, info.last_update) > (state.info.last_epoch, state.info.last_update)
            {
                info!(%pg, from = source.0, "recovering this primary's copy");
                self.pull_from(pg, state, source).await?;
            }
        }
        for (osd, info) in infos {
            let same = info.as_ref().is_some_and(|(i, last)| {
                i.last_update == state.info.last_update && *last == state.last_entry()
            });
            if !same {
                self.push_to(pg, state, osd).await?;
            }
        }
        state.peered = Some(acting.to_vec());
        Ok(())
    }

    /// Copies the newer history of `source` into this OSD's copy.
    async fn pull_from(&self, pg: PgId, state: &mut PgState, source: OsdId) -> Result<(), String> {
        let coll = pg::collection(pg);
        let Some(OsdResponse::PgInfo(Some((source_info, _)))) =
            self.call(source, &OsdRequest::PgQuery { pg }).await
        else {
            return Err(format!("osd.{} did not answer", source.0));
        };
        let have = state.info.last_update;
        let entries = match self
            .call(
                source,
                &OsdRequest::PgLog {
                    pg,
                    after: have.saturating_sub(1),
                },
            )
            .await
        {
            Some(OsdResponse::PgLog(Some(entries))) => Some(entries),
            _ => None,
        };
        // Log-based when the source still logs our newest entry and agrees on it.
        let missing = entries.and_then(|entries| {
            if have == 0 {
                return Some(entries);
            }
            let first = entries.first()?;
            (Some(first) == state.log.last()).then(|| entries[1..].to_vec())
        });
        let (reset, names, entries) = match missing {
            Some(entries) => {
                let names: BTreeSet<String> = entries.iter().map(|e| e.name.clone()).collect();
                (false, names.into_iter().collect::<Vec<_>>(), entries)
            }
            None => {
                let names = self.list_remote(pg, source).await?;
                let Some(OsdResponse::PgLog(Some(entries))) = self
                    .call(
                        source,
                        &OsdRequest::PgLog {
                            pg,
                            after: source_info.log_tail,
                        },
                    )
                    .await
                else {
                    return Err(format!("osd.{} did not send its log", source.0));
                };
                (true, names, entries)
            }
        };
        if reset {
            self.apply(&Transaction {
                ops: vec![Op::RemoveCollection(coll), Op::CreateCollection(coll)],
            })
            .map_err(|e| e.to_string())?;
        }
        for batch in names.chunks(RECOVERY_BATCH) {
            let Some(OsdResponse::PgObjects(objects)) = self
                .call(
                    source,
                    &OsdRequest::PgRead {
                        pg,
                        names: batch.to_vec(),
                    },
                )
                .await
            else {
                return Err(format!("osd.{} did not send objects", source.0));
            };
            let mut ops = Vec::new();
            for (name, object) in &objects {
                ops.extend(pg::write_state(&*self.store, coll, name, object.as_ref()));
            }
            self.apply(&Transaction { ops })
                .map_err(|e| e.to_string())?;
        }
        self.apply(&Transaction {
            ops: pg::record(coll, &entries, &source_info, None),
        })
        .map_err(|e| e.to_string())?;
        self.reload(pg, state).map_err(|e| e.to_string())?;
        state.info = source_info;
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

    /// Brings `target`'s copy up to this primary's: from the log when it still covers the
    /// target's newest entry, else by backfill (a full copy).
    async fn push_to(&self, pg: PgId, state: &mut PgState, target: OsdId) -> Result<(), String> {
        let coll = pg::collection(pg);
        let their = match self.call(target, &OsdRequest::PgQuery { pg }).await {
            Some(OsdResponse::PgInfo(info)) => info,
            _ => return Err(format!("osd.{} did not answer", target.0)),
        };
        let whole_log = state.info.log_tail == 0;
        let log_based = match &their {
            // No copy yet: the log still holds every change, so it covers one from nothing.
            None if whole_log => Some(state.log.clone()),
            None => None,
            Some(_) => None,
        };
        let log_based = log_based.or_else(|| {
            their.as_ref().and_then(|(info, last)| {
                if info.last_update > state.info.last_update {
                    return None;
                }
                if info.last_update == 0 {
                    return Some(state.log.clone());
                }
                let position = state.log.iter().position(|e| Some(e) == last.as_ref())?;
                Some(state.log[position + 1..].to_vec())
            })
        });
        let (reset, names, entries) = match log_based {
            Some(entries) => {
                let names: BTreeSet<String> = entries.iter().map(|e| e.name.clone()).collect();
                (false, names.into_iter().collect::<Vec<_>>(), entries)
            }
            None => {
                info!(%pg, to = target.0, "backfilling");
                let names = tokio::task::block_in_place(|| list_all(&*self.store, coll))
                    .map_err(|e| e.to_string())?;
                (true, names, state.log.clone())
            }
        };
        let mut first = true;
        for batch in names.chunks(RECOVERY_BATCH) {
            let objects = tokio::task::block_in_place(|| {
                batch
                    .iter()
                    .map(|name| Ok((name.clone(), pg::read_state(&*self.store, coll, name)?)))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .map_err(|e| e.to_string())?;
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

    async fn push(
        &self,
        target: OsdId,
        pg: PgId,
        reset: bool,
        objects: Vec<(String, Option<ObjectState>)>,
        entries: Vec<LogEntry>,
        info: Option<PgInfo>,
    ) -> Result<(), String> {
        let request = OsdRequest::PgPush {
            pg,
            reset,
            objects,
            entries,
            info,
        };
        match self.call(target, &request).await {
            Some(OsdResponse::Ack) => Ok(()),
            Some(OsdResponse::Failed(reason)) => Err(reason),
            _ => Err(format!("osd.{} did not take the recovery push", target.0)),
        }
    }

    async fn handle_push(
        &self,
        pg: PgId,
        reset: bool,
        objects: Vec<(String, Option<ObjectState>)>,
        entries: Vec<LogEntry>,
        info: Option<PgInfo>,
    ) -> OsdResponse {
        let coll = pg::collection(pg);
        let lock = self.pg(pg);
        let mut state = lock.lock().await;
        if let Err(error) = self.ensure_loaded(pg, &mut state) {
            return storage_failed(error);
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
        if let Err(error) = self.apply(&Transaction { ops }) {
            return storage_failed(error);
        }
        if let Err(error) = self.reload(pg, &mut state) {
            return storage_failed(error);
        }
        OsdResponse::Ack
    }

    fn handle_query(state: &PgState) -> OsdResponse {
        OsdResponse::PgInfo(
            state
                .present
                .then(|| (state.info.clone(), state.last_entry())),
        )
    }

    async fn handle(&self, request: OsdRequest) -> OsdResponse {
        match request {
            OsdRequest::Object(request) => self.handle_object(request).await,
            OsdRequest::Replicate {
                pg,
                entry,
                transaction,
                ..
            } => self.handle_replicate(pg, entry, transaction).await,
            OsdRequest::PgPush {
                pg,
                reset,
                objects,
                entries,
                info,
            } => self.handle_push(pg, reset, objects, entries, info).await,
            OsdRequest::Ping { .. } => OsdResponse::Ack,
            OsdRequest::PgQuery { pg } => {
                let lock = self.pg(pg);
                let mut state = lock.lock().await;
                match self.ensure_loaded(pg, &mut state) {
                    Ok(()) => Self::handle_query(&state),
                    Err(error) => storage_failed(error),
                }
            }
            OsdRequest::PgLog { pg, after } => {
                let lock = self.pg(pg);
                let mut state = lock.lock().await;
                if let Err(error) = self.ensure_loaded(pg, &mut state) {
                    return storage_failed(error);
                }
                if !state.present || after < state.info.log_tail {
                    return OsdResponse::PgLog(None);
                }
                OsdResponse::PgLog(Some(
                    state
                        .log
                        .iter()
                        .filter(|e| e.version > after)
                        .cloned()
                        .collect(),
                ))
            }
            OsdRequest::PgList { pg, start_after } => {
                let coll = pg::collection(pg);
                match tokio::task::block_in_place(|| {
                    self.store.list(coll, start_after.as_deref(), 1024)
                }) {
                    Ok(names) => {
                        let done = names.len() < 1024;
                        OsdResponse::PgList {
                            names: names.into_iter().filter(|n| n != META).collect(),
                            done,
                        }
                    }
                    Err(StoreError::NoCollection(_)) => OsdResponse::PgList {
                        names: Vec::new(),
                        done: true,
                    },
                    Err(error) => storage_failed(error),
                }
            }
            OsdRequest::PgRead { pg, names } => {
                let coll = pg::collection(pg);
                match tokio::task::block_in_place(|| {
                    names
                        .iter()
                        .map(|name| Ok((name.clone(), pg::read_state(&*self.store, coll, name)?)))
                        .collect::<Result<Vec<_>, StoreError>>()
                }) {
                    Ok(objects) => OsdResponse::PgObjects(objects),
                    Err(error) => storage_failed(error),
                }
            }
        }
    }

    /// The PG statistics for the PGs this OSD leads.
    fn pg_stats(&self, view: &MapView) -> Vec<PgStat> {
        let mut stats = Vec::new();
        for pg in view.pgs() {
            let Some((acting, primary)) = view.acting(pg) else {
                continue;
            };
            if primary != Some(self.id) {
                continue;
            }
            let size = view.map.pools.get(&pg.pool).map_or(0, |p| p.kind.width());
            let peered = self
                .pgs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&pg)
                .and_then(|s| {
                    s.try_lock()
                        .ok()
                        .map(|s| s.peered.as_ref() == Some(&acting))
                })
                .unwrap_or(false);
            let objects = list_all(&*self.store, pg::collection(pg)).map_or(0, |n| n.len() as u64);
            let state = match (peered, acting.len() >= size) {
                (false, _) => "peering",
                (true, true) => "active+clean",
                (true, false) => "active+undersized+degraded",
            };
            stats.push(PgStat {
                pg,
                state: state.into(),
                objects,
                bytes: 0,
                degraded: if acting.len() < size { objects } else { 0 },
                misplaced: 0,
                epoch: view.map.epoch,
            });
        }
        stats
    }
}

/// Encodes a transaction for the replicas into one allocation of about the right size.
fn encode_transaction(tx: &Transaction) -> Vec<u8> {
    let data: usize = tx
        .ops
        .iter()
        .map(|op| match op {
            Op::Write { data, .. } | Op::WriteFull { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    let mut bytes = Vec::with_capacity(data + 4096);
    rmp_serde::encode::write(&mut bytes, tx).expect("transactions encode");
    bytes
}

/// Waits for the local write of a change, once.
async fn finish_local(
    local: &mut Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
) -> Result<(), StoreError> {
    match local.take() {
        Some(handle) => handle
            .await
            .unwrap_or_else(|e| Err(StoreError::Failed(format!("local write task: {e}")))),
        None => Ok(()),
    }
}

/// Every object name of a collection (without the meta object).
fn list_all(
    store: &dyn ObjectStore,
    coll: crate::store::CollectionId,
) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = match store.list(coll, after.as_deref(), 1024) {
            Ok(page) => page,
            Err(StoreError::NoCollection(_)) => return Ok(names),
            Err(other) => return Err(other),
        };
        let Some(last) = page.last().cloned() else {
            return Ok(names);
        };
        after = Some(last);
        names.extend(page.into_iter().filter(|n| n != META));
    }
}

struct Handler(Arc<Osd>);

impl Service for Handler {
    type Request = OsdRequest;
    type Response = OsdResponse;

    async fn call(&self, _peer: Peer, request: OsdRequest) -> tidepool_proto::Reply<OsdResponse> {
        Ok(self.0.handle(request).await)
    }

    async fn notify(&self, _peer: Peer, _message: OsdRequest) {}
}

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum OsdError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The messenger failed.
    #[error(transparent)]
    Messenger(#[from] tidepool_messenger::MessengerError),
    /// The monitors failed.
    #[error(transparent)]
    Monitors(#[from] tidepool_client::ClientError),
}

/// Runs an OSD on `store` until `shutdown` resolves.
pub async fn run(
    config: OsdConfig,
    store: Arc<dyn ObjectStore>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), OsdError> {
    let messenger = Messenger::bind(
        config.bind,
        &config.identity,
        MessengerConfig {
            body_bytes_max: BODY_BYTES_MAX,
            request_timeout: Duration::from_secs(30),
            ..MessengerConfig::default()
        },
    )?;
    let addr = messenger.local_addr();
    let mut mon =
        MonClient::with_messenger(messenger.clone(), config.monmap.clone(), &entity(config.id));
    let first = mon
        .subscribe(Epoch(0), Duration::from_secs(1))
        .await?
        .map(|update| update.apply(None))
        .transpose()?
        .unwrap_or_default();
    let (publish, maps) = watch::channel(Arc::new(MapView::new(first)));
    let osd = Arc::new(Osd {
        id: config.id,
        store,
        messenger: messenger.clone(),
        maps,
        pgs: Mutex::new(HashMap::new()),
        options: Mutex::new(Vec::new()),
        heard: Mutex::new(HashMap::new()),
        stop: tokio::sync::Notify::new(),
    });
    messenger.serve(Arc::new(Handler(osd.clone())));
    let boot = Command::OsdBoot {
        id: config.id,
        addr: addr.to_string(),
    };
    if let Err(error) = mon.command(boot.clone()).await? {
        warn!(%error, "boot refused");
        return Err(OsdError::Monitors(
            tidepool_client::ClientError::Unexpected(error.to_string()),
        ));
    }
    info!(osd = config.id.0, %addr, "booted");

    let tasks = vec![
        tokio::spawn(follow_maps(
            osd.clone(),
            publish,
            config.monmap.clone(),
            boot,
        )),
        tokio::spawn(beacons(osd.clone(), config.monmap.clone())),
        tokio::spawn(heartbeats(osd.clone(), config.monmap.clone())),
        tokio::spawn(activate(osd.clone())),
    ];
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        _ = osd.stop.notified() => Err(OsdError::Store(StoreError::Failed(
            "the store failed; see the log".into(),
        ))),
    };
    for task in tasks {
        task.abort();
    }
    messenger.shutdown().await;
    result
}

/// Follows the map; boots again when the map says this OSD is down while it runs.
async fn follow_maps(
    osd: Arc<Osd>,
    publish: watch::Sender<Arc<MapView>>,
    monmap: MonMap,
    boot: Command,
) {
    let mut mon = MonClient::with_messenger(osd.messenger.clone(), monmap, &entity(osd.id));
    loop {
        let current = osd.view();
        match mon
            .subscribe(current.map.epoch, Duration::from_secs(10))
            .await
        {
            Ok(Some(update)) => match update.apply(Some(&current.map)) {
                Ok(map) => {
                    let down = map.osds.get(&osd.id).is_some_and(|o| !o.up);
                    let _ = publish.send(Arc::new(MapView::new(map)));
                    if down {
                        warn!("the map says this OSD is down; booting again");
                        let _ = mon.command(boot.clone()).await;
                    }
                }
                Err(error) => warn!(%error, "a map update did not apply"),
            },
            Ok(None) => {}
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Peers every PG this OSD leads whose holders changed, so they recover without waiting for
/// a client.
async fn activate(osd: Arc<Osd>) {
    let mut maps = osd.maps.clone();
    loop {
        let view = osd.view();
        for pg in view.pgs().collect::<Vec<_>>() {
            let Some((acting, Some(primary))) = view.acting(pg) else {
                continue;
            };
            if primary != osd.id {
                continue;
            }
            let lock = osd.pg(pg);
            let mut state = lock.lock().await;
            if osd.ensure_loaded(pg, &mut state).is_err() || state.peered.as_ref() == Some(&acting)
            {
                continue;
            }
            if let Err(reason) = osd.peer(pg, &mut state, &acting).await {
                warn!(%pg, %reason, "peering failed; will retry");
            }
        }
        // Retry failed peering now and then; react to new maps at once.
        let _ = tokio::time::timeout(Duration::from_secs(2), maps.changed()).await;
    }
}

async fn beacons(osd: Arc<Osd>, monmap: MonMap) {
    let mut mon = MonClient::with_messenger(osd.messenger.clone(), monmap, &entity(osd.id));
    loop {
        let view = osd.view();
        let pgs = tokio::task::block_in_place(|| osd.pg_stats(&view));
        let usage = osd.store.usage().unwrap_or_default();
        let beacon = Beacon {
            osd: osd.id,
            epoch: view.map.epoch,
            stat: OsdStat {
                total_bytes: usage.total_bytes,
                available_bytes: usage.available_bytes,
                used_bytes: usage.stored_bytes,
                pgs: osd.store.collections().map_or(0, |c| c.len() as u32),
            },
            pgs,
        };
        if let Ok(options) = mon.beacon(beacon).await {
            *osd.options.lock().unwrap_or_else(|p| p.into_inner()) = options;
        }
        tokio::time::sleep(BEACON_EVERY).await;
    }
}

/// Pings the OSDs this one shares PGs with; reports those silent for `osd_heartbeat_grace`.
async fn heartbeats(osd: Arc<Osd>, monmap: MonMap) {
    let mut mon = MonClient::with_messenger(osd.messenger.clone(), monmap, &entity(osd.id));
    let started = Instant::now();
    let mut reported: HashMap<OsdId, Instant> = HashMap::new();
    loop {
        let view = osd.view();
        let mut peers = BTreeSet::new();
        for pg in view.pgs() {
            if let Some((acting, _)) = view.acting(pg) {
                if acting.contains(&osd.id) {
                    peers.extend(acting.into_iter().filter(|o| *o != osd.id));
                }
            }
        }
        let ping = OsdRequest::Ping {
            from: osd.id,
            epoch: view.map.epoch,
        };
        let answers = futures_util::future::join_all(peers.iter().map(|&peer| {
            let ping = &ping;
            let osd = &osd;
            async move {
                let addr = osd.view().addr(peer);
                let answer = match addr {
                    Some(addr) => osd
                        .messenger
                        .call_within::<_, OsdResponse>(addr, &entity(peer), ping, HEARTBEAT_EVERY)
                        .await
                        .is_ok(),
                    None => false,
                };
                (peer, answer)
            }
        }))
        .await;
        let grace = Duration::from_secs(osd.option("osd_heartbeat_grace"));
        for (peer, answered) in answers {
            let last = {
                let mut heard = osd.heard.lock().unwrap_or_else(|p| p.into_inner());
                if answered {
                    heard.insert(peer, Instant::now());
                    continue;
                }
                heard.get(&peer).copied().unwrap_or(started)
            };
            let recently = reported
                .get(&peer)
                .is_some_and(|at| at.elapsed() < Duration::from_secs(2));
            if last.elapsed() > grace && !recently {
                warn!(peer = peer.0, "peer silent; reporting it");
                reported.insert(peer, Instant::now());
                let _ = mon.failure(osd.id, peer, view.map.epoch).await;
            }
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

/// The OSD's folder layout: the store in `<data>/store`, its id in `<data>/osd.json`.
pub fn store_dir(data: &std::path::Path) -> PathBuf {
    data.join("store")
}
