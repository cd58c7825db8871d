//! The OSD daemon: boots into the map, follows it, serves object transactions for the PGs it
//! leads, replicates writes to the other holders, brings holders up to date when a PG's
//! holders change (from the log, or by backfill), sends beacons and heartbeats its peers.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidepool_client::MonClient;
use tidepool_erasure::{Codec, Layout};
use tidepool_messenger::{Identity, Messenger, MessengerConfig, Peer, Service};
use tidepool_metrics::{
    self as metrics, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, MetricsError, Registry,
};
use tidepool_placement::{
    ClusterMap, Epoch, OsdId, PgActivation, PgId, Placement, PoolId, PoolKind, Scratch,
};
use tidepool_proto::mon::{Beacon, Command, IoRates, MonMap, OsdStat, PgStat};
use tidepool_proto::osd::{ObjectOp, ObjectRequest, OpError, OpOutput, OsdRequest, OsdResponse};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ec::is_internal;
use crate::fence::Fences;
use crate::machine::WriteError;
use crate::pg;
use crate::recovery::Progress;
use crate::shell::PgSlot;
use crate::store::{ObjectStore, StoreError, StoreUsage, Transaction};
use crate::throttle::{Rate, Slots};

/// What OSDs send each other: replication carries the store's transaction itself, so its data
/// travels as payloads in the frame's data section and the replica applies it from there.
pub type PeerRequest = OsdRequest<Transaction>;

/// Largest message: an object of the store's maximum size, with room for its metadata.
pub const BODY_BYTES_MAX: u32 = (crate::store::OBJECT_BYTES_MAX as u32) + (8 << 20);
const BEACON_EVERY: Duration = Duration::from_secs(2);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a replica may take to apply one change before the primary checks the map again.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a holder may take to take or send one batch of recovery (tens of MiB, on a disk
/// busy with the clients' writes too).
pub(crate) const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Where its metrics are registered (served by the caller, if at all).
    pub metrics: Registry,
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
    /// The codec of each erasure pool.
    codecs: HashMap<PoolId, Arc<Codec>>,
}

impl MapView {
    fn new(map: ClusterMap) -> MapView {
        let placement = Placement::new(&map);
        let codecs = map
            .pools
            .values()
            .filter_map(|pool| match pool.kind {
                PoolKind::Erasure { k, m, stripe_unit } => {
                    let layout = Layout::new(k.into(), m.into(), stripe_unit as usize).ok()?;
                    Some((pool.id, Arc::new(Codec::new(layout))))
                }
                PoolKind::Replicated { .. } => None,
            })
            .collect();
        MapView {
            map,
            placement,
            codecs,
        }
    }

    /// The codec of `pool`, when it is an erasure pool.
    pub fn codec(&self, pool: PoolId) -> Option<Arc<Codec>> {
        self.codecs.get(&pool).cloned()
    }

    /// Who serves each position of `pg` (erasure pools: a shard per position).
    pub fn positions(&self, pg: PgId) -> Option<Vec<Option<OsdId>>> {
        Some(self.placement.map_pg(pg, &mut Scratch::default())?.acting)
    }

    /// The acting holders of `pg` other than `me`.
    pub fn other_holders(&self, pg: PgId, me: OsdId) -> Vec<OsdId> {
        self.holders(pg)
            .map(|h| h.acting)
            .unwrap_or_default()
            .into_iter()
            .filter(|o| *o != me)
            .collect()
    }

    /// Who holds `pg` and who serves it (`None` for an unknown pool or PG).
    pub fn holders(&self, pg: PgId) -> Option<Holders> {
        let pool = self.map.pools.get(&pg.pool)?;
        let mapping = self.placement.map_pg(pg, &mut Scratch::default())?;
        let min_size = pool.kind.min_size();
        Some(Holders {
            up: mapping.up.into_iter().flatten().collect(),
            acting: mapping.acting.into_iter().flatten().collect(),
            primary: mapping.primary,
            temp: self.map.pg_temp.contains_key(&pg),
            size: pool.kind.width(),
            min_size,
            k: pool.kind.rebuild_from(),
        })
    }

    fn addr(&self, osd: OsdId) -> Option<SocketAddr> {
        self.map.osds.get(&osd)?.addr.as_deref()?.parse().ok()
    }

    /// Every PG of every pool.
    pub(crate) fn pgs(&self) -> impl Iterator<Item = PgId> + '_ {
        self.map.pools.values().flat_map(|pool| {
            (0..pool.pg_num).map(move |seed| PgId {
                pool: pool.id,
                seed,
            })
        })
    }
}

/// A PG's holders under one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holders {
    /// Where placement puts it, in order.
    pub up: Vec<OsdId>,
    /// Who serves it: `pg_temp` while set (without its down members), else `up`.
    pub acting: Vec<OsdId>,
    /// The first of `acting`.
    pub primary: Option<OsdId>,
    /// Whether `pg_temp` is set for it.
    pub temp: bool,
    /// Copies wanted.
    pub size: usize,
    /// Copies needed to take writes.
    pub min_size: usize,
    /// Copies that rebuild every object (1, or an erasure pool's `k`).
    pub k: usize,
}

/// The kind of `request`, a label of the OSD's metrics (a fixed set).
fn request_kind<T>(request: &OsdRequest<T>) -> &'static str {
    match request {
        OsdRequest::Object(object) if object.ops.iter().any(ObjectOp::is_write) => "write",
        OsdRequest::Object(_) => "read",
        OsdRequest::Replicate { .. } => "replicate",
        OsdRequest::PgQuery { .. } => "pg_query",
        OsdRequest::PgLog { .. } => "pg_log",
        OsdRequest::PgList { .. } => "pg_list",
        OsdRequest::PgRead { .. } => "pg_read",
        OsdRequest::ShardRead { .. } => "shard_read",
        OsdRequest::PgPush { .. } => "pg_push",
        OsdRequest::StrayCheck { .. } => "stray_check",
        OsdRequest::Ping { .. } => "ping",
        OsdRequest::PgUndo { .. } => "pg_undo",
        OsdRequest::PgScrub { .. } => "pg_scrub",
        OsdRequest::ScrubMap { .. } => "scrub_map",
        OsdRequest::ScrubRecorded { .. } => "scrub_recorded",
        OsdRequest::PgScrubRecord { .. } => "pg_scrub_record",
    }
}

/// What the OSD counts: its Prometheus metrics (`tidepool_osd_…`), which its beacons also
/// turn into the rates the monitors show.
pub(crate) struct IoCounters {
    /// Requests handled, by kind (`read` and `write` for clients' object operations).
    ops: IntCounterVec,
    op_seconds: HistogramVec,
    read_bytes: IntCounter,
    pub write_bytes: IntCounter,
    recovery_bytes: IntCounter,
    recovery_objects: IntCounter,
    /// The PGs this OSD is primary of, by state, as of its last beacon.
    pgs: IntGaugeVec,
    /// The store's bytes: `total`, `used` (stored) and `available`.
    store_bytes: IntGaugeVec,
    /// Time spent waiting for a recovery or backfill throttle, by throttle.
    throttle_seconds: HistogramVec,
    /// When the last client operation arrived, in milliseconds after `clock`.
    last_client_ms: AtomicU64,
    pub clock: Instant,
}

impl IoCounters {
    /// Its counters, registered in `registry`.
    fn new(registry: &Registry) -> Result<IoCounters, MetricsError> {
        let op_bytes = metrics::counters(
            registry,
            "tidepool_osd_op_bytes_total",
            "Bytes clients read and wrote through this OSD as primary",
            &["op"],
        )?;
        Ok(IoCounters {
            ops: metrics::counters(
                registry,
                "tidepool_osd_ops_total",
                "Requests this OSD handled, by kind (read and write: clients' object operations)",
                &["op"],
            )?,
            op_seconds: metrics::latencies(
                registry,
                "tidepool_osd_op_seconds",
                "Time to handle a request, by kind",
                &["op"],
            )?,
            read_bytes: op_bytes.with_label_values(&["read"]),
            write_bytes: op_bytes.with_label_values(&["write"]),
            recovery_bytes: metrics::counter(
                registry,
                "tidepool_osd_recovery_bytes_total",
                "Bytes this OSD pushed to recover or backfill other holders",
            )?,
            recovery_objects: metrics::counter(
                registry,
                "tidepool_osd_recovery_objects_total",
                "Objects this OSD pushed to recover or backfill other holders",
            )?,
            pgs: metrics::gauges(
                registry,
                "tidepool_osd_pgs",
                "PGs this OSD is primary of, by state",
                &["state"],
            )?,
            store_bytes: metrics::gauges(
                registry,
                "tidepool_osd_store_bytes",
                "The store's size (total), what it holds (used) and what is left (available)",
                &["kind"],
            )?,
            throttle_seconds: metrics::latencies(
                registry,
                "tidepool_osd_throttle_wait_seconds",
                "Time a recovery or backfill waited for its throttle (slots or bytes per second)",
                &["throttle"],
            )?,
            last_client_ms: AtomicU64::new(0),
            clock: Instant::now(),
        })
    }

    fn client_op(&self) {
        let now = self.clock.elapsed().as_millis() as u64;
        self.last_client_ms.store(now.max(1), Ordering::Relaxed);
    }

    /// Whether clients used this OSD within the last second.
    pub fn clients_active(&self) -> bool {
        let last = self.last_client_ms.load(Ordering::Relaxed);
        last > 0 && (self.clock.elapsed().as_millis() as u64).saturating_sub(last) < 1000
    }

    pub fn recovered(&self, objects: u64, bytes: u64) {
        self.recovery_objects.inc_by(objects);
        self.recovery_bytes.inc_by(bytes);
    }

    /// A wait for the throttle `which`, begun at `start`, is over.
    pub fn waited(&self, which: &str, start: Instant) {
        self.throttle_seconds
            .with_label_values(&[which])
            .observe(metrics::seconds_since(start));
    }

    /// A request of `kind` handled, begun at `start`.
    fn handled(&self, kind: &str, start: Instant) {
        self.ops.with_label_values(&[kind]).inc();
        self.op_seconds
            .with_label_values(&[kind])
            .observe(metrics::seconds_since(start));
    }

    /// The beacon's view: PGs by state and the store's usage.
    fn set_state<'a>(&self, states: impl Iterator<Item = &'a str>, usage: &StoreUsage) {
        self.pgs.reset();
        for state in states {
            self.pgs.with_label_values(&[state]).inc();
        }
        for (kind, bytes) in [
            ("total", usage.total_bytes),
            ("used", usage.stored_bytes),
            ("available", usage.available_bytes),
        ] {
            self.store_bytes
                .with_label_values(&[kind])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Client bytes read and written, client operations, recovery bytes and objects.
    fn snapshot(&self) -> [u64; 5] {
        let client_ops = ["read", "write"]
            .iter()
            .map(|op| self.ops.with_label_values(&[op]).get())
            .sum();
        [
            self.read_bytes.get(),
            self.write_bytes.get(),
            client_ops,
            self.recovery_bytes.get(),
            self.recovery_objects.get(),
        ]
    }
}

pub(crate) struct Osd {
    pub id: OsdId,
    pub store: Arc<dyn ObjectStore>,
    messenger: Messenger,
    pub maps: watch::Receiver<Arc<MapView>>,
    pub pgs: Mutex<HashMap<PgId, Arc<PgSlot>>>,
    /// Tokens of peers' requests and client writes handed to the machines.
    pub next_token: AtomicU64,
    /// Activations the machines want recorded, and `pg_temp`s they want, for the monitors.
    pub activations: Mutex<Vec<(PgId, PgActivation)>>,
    pub remaps: Mutex<Vec<(PgId, Vec<OsdId>)>>,
    pub monitor_work: tokio::sync::Notify,
    options: Mutex<Vec<(String, String)>>,
    /// `osd_pg_log_entries`, read on every PG step.
    pub log_entries: AtomicU64,
    /// When each peer last answered a ping.
    heard: Mutex<HashMap<OsdId, Instant>>,
    /// Woken when the store fails: the OSD stops rather than serve from a broken disk.
    stop: tokio::sync::Notify,
    /// Commands to the monitors (`pg_temp`).
    pub mon: tokio::sync::Mutex<MonClient>,
    /// Backfills this OSD drives at once (`osd_max_backfills`).
    pub backfills: Slots,
    /// Recovery pushes this OSD sends at once (`osd_recovery_max_active`).
    pub recovery_out: Slots,
    /// Recovery pushes this OSD applies at once (`osd_recovery_max_active`).
    pub recovery_in: Slots,
    /// Recovery bytes per second (`osd_recovery_max_bytes_per_sec`).
    pub recovery_rate: Rate,
    /// Background backfills, by PG.
    pub progress: Mutex<HashMap<PgId, Progress>>,
    /// The `pg_temp` asked for per PG, and under which epoch (asked once per map).
    pub remaps_asked: Mutex<HashMap<PgId, (Epoch, Vec<OsdId>)>>,
    /// The statistics last reported per PG.
    last_stats: Mutex<HashMap<PgId, PgStat>>,
    pub io: IoCounters,
    /// Fences and read leases.
    pub fences: Fences,
    /// When this OSD last looked at its own disk, and whether it was past
    /// `mon_osd_full_percent` (the map says so of every OSD a moment later).
    full: Mutex<(Instant, bool)>,
    /// Scrubs: their schedule, read rate and records.
    pub(crate) scrubs: crate::scrubber::Scrubs,
}

/// The answer to a client's write, from its outcome and the outputs of its reads.
pub(crate) fn written(result: Result<u64, WriteError>, outputs: Vec<OpOutput>) -> OsdResponse {
    match result {
        Ok(version) => OsdResponse::Object(Ok((version, outputs))),
        Err(WriteError::Undersized { acting, min_size }) => {
            OsdResponse::Object(Err(OpError::Undersized {
                up: acting,
                min_size,
            }))
        }
        Err(WriteError::NotActive(reason)) => OsdResponse::Failed(reason),
    }
}

pub(crate) fn storage_failed(error: StoreError) -> OsdResponse {
    OsdResponse::Failed(error.to_string())
}

impl Osd {
    pub fn view(&self) -> Arc<MapView> {
        self.maps.borrow().clone()
    }

    /// The map, once it is at least `epoch` (waiting up to 5 s for it).
    pub async fn view_at(&self, epoch: Epoch) -> Arc<MapView> {
        let mut maps = self.maps.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            maps.wait_for(|v| v.map.epoch >= epoch),
        )
        .await;
        self.view()
    }

    /// Whether this OSD's disk is past `mon_osd_full_percent`, looked at no more than every
    /// 100 ms: between two looks a primary writes little, so a full disk refuses writes well
    /// before it has no space at all.
    fn own_disk_full(&self) -> bool {
        let mut full = self.full.lock().unwrap_or_else(|p| p.into_inner());
        if full.0.elapsed() >= Duration::from_millis(100) {
            let usage = self.store.usage().unwrap_or_default();
            let used = u128::from(usage.total_bytes.saturating_sub(usage.available_bytes));
            let percent = u128::from(self.option("mon_osd_full_percent"));
            *full = (
                Instant::now(),
                usage.total_bytes > 0 && used * 100 >= percent * u128::from(usage.total_bytes),
            );
        }
        full.1
    }

    pub fn option(&self, name: &str) -> u64 {
        let options = self.options.lock().unwrap_or_else(|p| p.into_inner());
        tidepool_proto::config::get(options.iter().map(|(k, v)| (k.as_str(), v.as_str())), name)
    }

    /// Applies `tx` and waits until it is durable.
    pub async fn apply(&self, tx: Transaction) -> Result<(), StoreError> {
        let result = match self.submit(tx).await {
            Ok(commit) => commit.await,
            Err(error) => Err(error),
        };
        self.fail_stop(result)
    }

    /// Stops the OSD when `result` says the store failed (a write, a sync, a full disk).
    pub(crate) fn fail_stop<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Failed(reason)) = &result {
            tracing::error!(%reason, "the store failed; this OSD stops");
            self.stop.notify_one();
        }
        result
    }

    pub async fn call(&self, osd: OsdId, request: &PeerRequest) -> Option<OsdResponse> {
        self.call_within(osd, request, REPLICA_TIMEOUT).await
    }

    /// [`Osd::call_within`], given up as soon as the map has `osd` down: a recovery batch may
    /// take long on a busy disk, but not on a dead OSD.
    pub async fn call_while_up(
        &self,
        osd: OsdId,
        request: &PeerRequest,
        limit: Duration,
    ) -> Option<OsdResponse> {
        let mut maps = self.maps.clone();
        let down = async move {
            let _ = maps
                .wait_for(|v| !v.map.osds.get(&osd).is_some_and(|o| o.up))
                .await;
        };
        tokio::select! {
            answer = self.call_within(osd, request, limit) => answer,
            _ = down => None,
        }
    }

    /// [`Osd::call`] with another time limit.
    pub async fn call_within(
        &self,
        osd: OsdId,
        request: &PeerRequest,
        limit: Duration,
    ) -> Option<OsdResponse> {
        let addr = self.view().addr(osd)?;
        self.messenger
            .call_within(addr, &entity(osd), request, limit)
            .await
            .ok()
    }

    async fn handle_object(self: &Arc<Self>, request: ObjectRequest) -> OsdResponse {
        let view = self.view();
        if request.epoch < view.map.epoch {
            return OsdResponse::StaleEpoch {
                have: view.map.epoch,
            };
        }
        // The client may have seen a newer map: wait (briefly) until this OSD has it too.
        let view = self.view_at(request.epoch).await;
        let Some(holders) = view.holders(request.pg) else {
            return OsdResponse::Object(Err(OpError::NoPool));
        };
        if holders.primary != Some(self.id) {
            return OsdResponse::NotPrimary;
        }
        if let Err(error) = pg::check_name(&request.name) {
            return OsdResponse::Object(Err(error));
        }
        if ObjectOp::needs_space(&request.ops) {
            // One full OSD stops the growth of every pool, as Ceph's full flag does: pools
            // share the OSDs, and a write that still fits elsewhere now fails there soon.
            let mut full: Vec<String> = view
                .map
                .osds
                .values()
                .filter(|o| o.full && o.is_in)
                .map(|o| o.id.to_string())
                .collect();
            if self.own_disk_full() && !full.contains(&self.id.to_string()) {
                full.push(self.id.to_string());
            }
            if !full.is_empty() {
                return OsdResponse::Object(Err(OpError::Full(full.join(", "))));
            }
        }
        let pg = request.pg;
        let slot = self.slot(pg);
        let _ops = slot.ops.lock().await;
        let reqid = (request.client.clone(), request.sequence);
        // The machine (activated by peering on every map change) serves the PG, or the
        // client retries; a resend of a change already made gets its version back.
        let state = self
            .with_machine_in(pg, &slot, |m| (m.serves(), m.status().down, m.done(&reqid)))
            .await;
        match state {
            Err(error) => return storage_failed(error),
            Ok((false, Some(waiting), _)) => {
                return OsdResponse::Failed(format!("PG {pg} is down: waiting for {waiting:?}"))
            }
            Ok((false, None, _)) => return OsdResponse::Failed(format!("PG {pg} is peering")),
            Ok((true, _, Some(version))) => return OsdResponse::Object(Ok((version, Vec::new()))),
            Ok((true, _, None)) => {}
        }
        if let Some(codec) = view.codec(pg.pool) {
            return self.erasure_object(&view, &slot, codec, request).await;
        }
        let coll = pg::collection(pg);
        // A plan that reads only the object's metadata (its onode, cached or in RocksDB's
        // caches) runs right here: handing the worker thread over, as `block_in_place` does,
        // costs more than the lookup. Reads of data or of many omap keys hand it over.
        let heavy = request.ops.iter().any(pg::reads_much);
        // A read that fails its checksums here is served from another holder's copy: its
        // steps are kept for a second try.
        let again =
            (heavy && !request.ops.iter().any(ObjectOp::is_write)).then(|| request.ops.clone());
        let plan = || pg::plan(&*self.store, coll, &request.name, request.ops);
        let planned = if heavy {
            tokio::task::block_in_place(plan)
        } else {
            plan()
        };
        let mut planned = match (planned, again) {
            (Ok(planned), _) => planned,
            (Err(OpError::Storage(reason)), Some(steps)) => {
                match self
                    .read_repaired(pg, &view, &request.name, &reason, steps)
                    .await
                {
                    Ok(planned) => planned,
                    Err(error) => return OsdResponse::Object(Err(error)),
                }
            }
            (Err(error), _) => return OsdResponse::Object(Err(error)),
        };
        self.count_client_op(&planned.outputs);
        if planned.ops.is_empty() {
            return self
                .after_read(pg, &view, planned.version, planned.outputs)
                .await;
        }
        let outputs = std::mem::take(&mut planned.outputs);
        let result = self
            .write(pg, &slot, request.name.clone(), planned, reqid)
            .await;
        written(result, outputs)
    }

    /// Counts a client operation and the bytes it read.
    pub(crate) fn count_client_op(&self, outputs: &[OpOutput]) {
        self.io.client_op();
        let read: usize = outputs
            .iter()
            .map(|o| match o {
                OpOutput::Data(data) => data.len(),
                _ => 0,
            })
            .sum();
        self.io.read_bytes.inc_by(read as u64);
    }

    /// The answer to a read-only transaction, planned just now: given only while this primary
    /// still holds its read lease from every other holder.
    pub(crate) async fn after_read(
        self: &Arc<Self>,
        pg: PgId,
        view: &MapView,
        version: u64,
        outputs: Vec<OpOutput>,
    ) -> OsdResponse {
        // Read after planning: the bytes were current when the lease still held, since no
        // newer primary serves before this primary's leases have run out.
        let others = view.other_holders(pg, self.id);
        if !self.fences.held_from_all(&others) || !self.serves(pg).await {
            return OsdResponse::Failed(format!("PG {pg}: no read lease from its holders"));
        }
        OsdResponse::Object(Ok((version, outputs)))
    }

    /// A slot of `slots`, limited by the option `limit`; the wait is counted as `which`.
    pub(crate) async fn throttled<'a>(
        &self,
        which: &'static str,
        slots: &'a Slots,
        limit: &str,
    ) -> crate::throttle::Slot<'a> {
        let start = Instant::now();
        let slot = slots.acquire(|| self.option(limit)).await;
        self.io.waited(which, start);
        slot
    }

    /// Answers `request`, counted and timed by kind in the OSD's metrics.
    async fn handle(self: &Arc<Self>, request: PeerRequest) -> OsdResponse {
        let kind = request_kind(&request);
        let start = Instant::now();
        let response = self.answer(request).await;
        self.io.handled(kind, start);
        response
    }

    async fn answer(self: &Arc<Self>, request: PeerRequest) -> OsdResponse {
        match request {
            OsdRequest::Object(request) => self.handle_object(request).await,
            OsdRequest::Replicate { pg, .. } | OsdRequest::PgQuery { pg, .. } => {
                self.ask(pg, request).await
            }
            OsdRequest::PgLog { pg, .. } | OsdRequest::PgUndo { pg, .. } => {
                self.ask(pg, request).await
            }
            OsdRequest::PgPush { pg, .. } => {
                let _slot = self
                    .throttled("recovery_in", &self.recovery_in, "osd_recovery_max_active")
                    .await;
                self.ask(pg, request).await
            }
            OsdRequest::StrayCheck { pg, from, epoch } => {
                self.handle_stray_check(pg, from, epoch).await
            }
            // Answered either way (the sender is alive); a lease only when its map is new
            // enough.
            OsdRequest::Ping { from, epoch } => {
                if self.fences.grant(from, epoch) {
                    OsdResponse::Ack
                } else {
                    OsdResponse::StaleEpoch {
                        have: self.view().map.epoch,
                    }
                }
            }
            OsdRequest::PgList { pg, start_after } => {
                let coll = pg::collection(pg);
                // A primary lists for clients only once its copy is the PG's.
                let view = self.view();
                if let Some(holders) = view.holders(pg) {
                    if holders.primary == Some(self.id) && !self.serves(pg).await {
                        return OsdResponse::Failed(format!("{pg} is peering"));
                    }
                }
                match tokio::task::block_in_place(|| {
                    self.store.list(coll, start_after.as_deref(), 1024)
                }) {
                    Ok(names) => {
                        let done = names.len() < 1024;
                        OsdResponse::PgList {
                            names: names.into_iter().filter(|n| !is_internal(n)).collect(),
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
            OsdRequest::ShardRead {
                pg,
                name,
                offset,
                len,
            } => self.shard_read(pg, &name, offset, len),
            OsdRequest::ScrubMap {
                pg,
                deep,
                after,
                until,
            } => self.scrub_map(pg, deep, after.as_deref(), until.as_deref()),
            OsdRequest::ScrubRecorded { pg, record } => self.keep_scrub_record(pg, record).await,
            OsdRequest::PgScrubRecord { pg } => self.scrub_record_of(pg),
            OsdRequest::PgScrub { pg, deep, repair } => self.scrub_pg(pg, deep, repair).await,
            OsdRequest::PgRead { pg, .. } if self.view().codec(pg.pool).is_some() => {
                OsdResponse::Failed(format!(
                    "{pg} is of an erasure pool: its shards are rebuilt, not copied"
                ))
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

    /// The statistics last reported per PG.
    pub(crate) fn last_stats(&self) -> HashMap<PgId, PgStat> {
        self.last_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The PG statistics for the PGs this OSD leads. A PG busy with a write keeps the state
    /// it was last seen in.
    fn pg_stats(&self, view: &MapView) -> Vec<PgStat> {
        let mut stats = Vec::new();
        let mut last = self.last_stats.lock().unwrap_or_else(|p| p.into_inner());
        for pg in view.pgs() {
            let Some(holders) = view.holders(pg) else {
                continue;
            };
            if holders.primary != Some(self.id) {
                continue;
            }
            let slot = self.slot(pg);
            let status = match slot.machine.try_lock() {
                Ok(machine) => machine.as_ref().map(|m| m.status()),
                Err(_) => None,
            };
            let Some(status) = status else {
                // A PG busy (or not loaded yet) keeps the state it was last seen in.
                if let Some(stat) = last.get(&pg).filter(|s| s.acting == holders.acting) {
                    stats.push(PgStat {
                        epoch: view.map.epoch,
                        ..stat.clone()
                    });
                }
                continue;
            };
            let (objects, bytes) = self.usage(pg);
            let activity = if status.active {
                Activity::Active
            } else if let Some(waiting) = &status.down {
                Activity::Down(waiting.clone())
            } else if status.recovering > 0 {
                Activity::Recovering(status.recovering)
            } else {
                Activity::Peering
            };
            let progress = self
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&pg)
                .cloned();
            let waiting_for = match &activity {
                Activity::Down(waiting) => waiting.clone(),
                _ => Vec::new(),
            };
            let (mut state, degraded, misplaced) =
                pg_state(&holders, &activity, progress.as_ref(), objects);
            let scrub = self.scrub_stat(pg);
            for word in &scrub.states {
                state.push('+');
                state.push_str(word);
            }
            let stat = PgStat {
                pg,
                state,
                objects,
                bytes,
                degraded,
                misplaced,
                up: holders.up,
                acting: holders.acting,
                epoch: view.map.epoch,
                waiting_for,
                last_scrub: scrub.last_scrub,
                last_deep_scrub: scrub.last_deep_scrub,
                scrub_errors: scrub.errors,
                unrepairable: scrub.unrepairable,
            };
            last.insert(pg, stat.clone());
            stats.push(stat);
        }
        stats
    }

    /// Objects and bytes of this OSD's copy of `pg` (bytes of whole objects: a shard's times
    /// `k`), as the store counts them, without the
    /// PG's own objects (its log, and an erasure pool's rollback records), whose names start
    /// with NUL and so come first.
    fn usage(&self, pg: PgId) -> (u64, u64) {
        let coll = pg::collection(pg);
        let Ok(usage) = self.store.collection_usage(coll) else {
            return (0, 0);
        };
        let own = self.store.list(coll, None, 16).map_or(0, |names| {
            names
                .iter()
                .take_while(|n| crate::ec::is_internal(n))
                .count() as u64
        });
        // A shard holds 1/k of each object: a PG's stored bytes are its objects' bytes.
        let k = self
            .view()
            .map
            .pools
            .get(&pg.pool)
            .map_or(1, |pool| pool.kind.rebuild_from() as u64);
        (usage.objects.saturating_sub(own), usage.bytes * k)
    }
}

/// Whether a PG this OSD leads serves operations.
enum Activity {
    /// Active here.
    Active,
    /// Peering, or waiting for its activation to be recorded.
    Peering,
    /// Peering copies this many objects from the log to its holders.
    Recovering(u64),
    /// No OSD of its last active interval answered: it waits for these.
    Down(Vec<OsdId>),
}

/// A PG's state in Ceph's words, and its degraded and misplaced object copies.
fn pg_state(
    holders: &Holders,
    activity: &Activity,
    progress: Option<&Progress>,
    objects: u64,
) -> (String, u64, u64) {
    let missing = holders.size.saturating_sub(holders.acting.len()) as u64;
    let degraded = objects * missing;
    let targets = holders
        .up
        .iter()
        .filter(|o| !holders.acting.contains(o))
        .count() as u64;
    let copied = progress.map_or(0, |p| p.copied);
    let misplaced = if holders.temp {
        (objects * targets).saturating_sub(copied)
    } else {
        0
    };
    match activity {
        Activity::Active => {}
        Activity::Peering => return ("peering".into(), degraded, misplaced),
        Activity::Recovering(copies) => {
            return (
                "recovering+degraded".into(),
                degraded.max(*copies),
                misplaced,
            )
        }
        Activity::Down(_) => return ("down".into(), degraded, misplaced),
    }
    let mut parts = vec![if holders.acting.len() >= holders.min_size {
        "active"
    } else {
        "peered"
    }];
    if missing > 0 {
        parts.extend(["undersized", "degraded"]);
    }
    if holders.temp {
        parts.push("remapped");
        match progress {
            Some(p) if p.waiting => parts.push("backfill_wait"),
            Some(_) => parts.push("backfilling"),
            None => {}
        }
    }
    if missing == 0 && !holders.temp {
        parts.push("clean");
    }
    (parts.join("+"), degraded, misplaced)
}

/// Every object name of a collection (without the meta object).
pub(crate) fn list_all(
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
        names.extend(page.into_iter().filter(|n| !is_internal(n)));
    }
}

struct Handler(Arc<Osd>);

impl Service for Handler {
    type Request = PeerRequest;
    type Response = OsdResponse;

    async fn call(&self, _peer: Peer, request: PeerRequest) -> tidepool_proto::Reply<OsdResponse> {
        Ok(self.0.handle(request).await)
    }

    async fn notify(&self, _peer: Peer, _message: PeerRequest) {}
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
    /// Its metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
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
        next_token: AtomicU64::new(1),
        activations: Mutex::new(Vec::new()),
        remaps: Mutex::new(Vec::new()),
        monitor_work: tokio::sync::Notify::new(),
        options: Mutex::new(Vec::new()),
        log_entries: AtomicU64::new(tidepool_proto::config::get(
            std::iter::empty(),
            "osd_pg_log_entries",
        )),
        heard: Mutex::new(HashMap::new()),
        stop: tokio::sync::Notify::new(),
        mon: tokio::sync::Mutex::new(MonClient::with_messenger(
            messenger.clone(),
            config.monmap.clone(),
            &entity(config.id),
        )),
        backfills: Slots::default(),
        recovery_out: Slots::default(),
        recovery_in: Slots::default(),
        recovery_rate: Rate::default(),
        progress: Mutex::new(HashMap::new()),
        remaps_asked: Mutex::new(HashMap::new()),
        last_stats: Mutex::new(HashMap::new()),
        io: IoCounters::new(&config.metrics)?,
        fences: Fences::default(),
        full: Mutex::new((Instant::now(), false)),
        scrubs: crate::scrubber::Scrubs::default(),
    });
    messenger.serve(Arc::new(Handler(osd.clone())));
    let boot = Command::OsdBoot {
        id: config.id,
        addr: addr.to_string(),
    };
    match mon.command(boot.clone()).await? {
        // The boot makes a new epoch (this OSD's address, up): everything older is fenced.
        Ok(outcome) => osd.fences.set_booted(Some(outcome.epoch)),
        Err(error) => {
            warn!(%error, "boot refused");
            return Err(OsdError::Monitors(
                tidepool_client::ClientError::Unexpected(error.to_string()),
            ));
        }
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
        tokio::spawn(crate::shell::follow_pgs(osd.clone())),
        tokio::spawn(crate::shell::monitor_commands(osd.clone())),
        tokio::spawn(housekeeping(osd.clone())),
        tokio::spawn(crate::scrubber::schedule_scrubs(osd.clone())),
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
    if result.is_ok() {
        // A clean stop says so, so that peers need not wait out the heartbeat grace.
        let down = Command::OsdDown { id: config.id };
        let _ = tokio::time::timeout(Duration::from_secs(3), mon.command(down)).await;
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
    let address = osd.messenger.local_addr().to_string();
    loop {
        let current = osd.view();
        match mon
            .subscribe(current.map.epoch, Duration::from_secs(10))
            .await
        {
            Ok(Some(update)) => match update.apply(Some(&current.map)) {
                Ok(map) => {
                    let down = map.osds.get(&osd.id).is_some_and(|o| !o.up);
                    osd.note_boot(&current.map, &map, &address);
                    let _ = publish.send(Arc::new(MapView::new(map)));
                    if down {
                        warn!("the map says this OSD is down; booting again");
                        if let Ok(Ok(outcome)) = mon.command(boot.clone()).await {
                            osd.fences.set_booted(Some(outcome.epoch));
                        }
                    }
                }
                Err(error) => warn!(%error, "a map update did not apply"),
            },
            Ok(None) => {}
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Starts the backfill of the PGs this OSD serves through `pg_temp`, and removes stray
/// copies; on every map, and every 2 s.
async fn housekeeping(osd: Arc<Osd>) {
    let mut maps = osd.maps.clone();
    loop {
        let view = osd.view();
        let remapped: Vec<PgId> = view
            .pgs()
            .filter(|pg| {
                view.holders(*pg)
                    .is_some_and(|h| h.primary == Some(osd.id) && h.temp)
            })
            .collect();
        for pg in remapped {
            if osd.serves(pg).await {
                osd.start_backfill(pg);
            }
        }
        osd.remove_strays().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), maps.changed()).await;
    }
}

impl Osd {
    /// Follows this OSD's own entry from map `old` to `new`: the epoch in which it came up at
    /// its address fences everything older (a primary that has not seen this OSD come back
    /// cannot reach it); while the map has it down it takes nothing and leads nothing.
    fn note_boot(&self, old: &ClusterMap, new: &ClusterMap, address: &str) {
        let here = |map: &ClusterMap| {
            map.osds
                .get(&self.id)
                .is_some_and(|o| o.up && o.addr.as_deref() == Some(address))
        };
        match (here(old), here(new)) {
            (false, true) => {
                info!(epoch = new.epoch.0, "up in the map");
                self.fences.set_booted(Some(new.epoch));
            }
            (true, false) => {
                warn!(
                    epoch = new.epoch.0,
                    "down in the map: taking nothing until up again"
                );
                self.fences.set_booted(None);
            }
            _ => {}
        }
    }

    /// Starts the background backfill of a PG served through `pg_temp`, unless it runs.
    fn start_backfill(self: &Arc<Self>, pg: PgId) {
        let start = {
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            match progress.entry(pg) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Progress {
                        waiting: true,
                        ..Progress::default()
                    });
                    true
                }
            }
        };
        if start {
            tokio::spawn(self.clone().backfill(pg));
        }
    }
}

async fn beacons(osd: Arc<Osd>, monmap: MonMap) {
    let mut mon = MonClient::with_messenger(osd.messenger.clone(), monmap, &entity(osd.id));
    let mut before = (Instant::now(), osd.io.snapshot());
    loop {
        let view = osd.view();
        let pgs = tokio::task::block_in_place(|| osd.pg_stats(&view));
        let now = (Instant::now(), osd.io.snapshot());
        let seconds = now.0.duration_since(before.0).as_secs_f64().max(0.001);
        let rate = |i: usize| ((now.1[i] - before.1[i]) as f64 / seconds) as u64;
        let io = IoRates {
            read_bytes_per_sec: rate(0),
            write_bytes_per_sec: rate(1),
            ops_per_sec: rate(2),
            recovery_bytes_per_sec: rate(3),
            recovery_objects_per_sec: rate(4),
        };
        before = now;
        let usage = osd.store.usage().unwrap_or_default();
        osd.io
            .set_state(pgs.iter().map(|stat| stat.state.as_str()), &usage);
        let beacon = Beacon {
            osd: osd.id,
            epoch: view.map.epoch,
            stat: OsdStat {
                total_bytes: usage.total_bytes,
                available_bytes: usage.available_bytes,
                used_bytes: usage.stored_bytes,
                pgs: osd.store.collections().map_or(0, |c| c.len() as u32),
                io,
                epoch: view.map.epoch,
                bad_reads: osd.scrubs.bad_reads.load(Ordering::Relaxed),
            },
            pgs,
        };
        if let Ok(options) = mon.beacon(beacon).await {
            *osd.options.lock().unwrap_or_else(|p| p.into_inner()) = options;
            let entries = osd.option("osd_pg_log_entries");
            osd.log_entries.store(entries, Ordering::Relaxed);
        }
        tokio::time::sleep(BEACON_EVERY).await;
    }
}

/// Pings the OSDs this one shares PGs with; reports those silent for `osd_heartbeat_grace`.
async fn heartbeats(osd: Arc<Osd>, monmap: MonMap) {
    let mut mon = MonClient::with_messenger(osd.messenger.clone(), monmap, &entity(osd.id));
    let mut reported: HashMap<OsdId, Instant> = HashMap::new();
    // When each peer, at its current address, was first pinged: a peer that just booted (or
    // just became a peer) gets the whole grace before it is reported.
    let mut since: HashMap<OsdId, (Option<SocketAddr>, Instant)> = HashMap::new();
    loop {
        let view = osd.view();
        let mut peers = BTreeSet::new();
        for pg in view.pgs() {
            if let Some(holders) = view.holders(pg) {
                if holders.acting.contains(&osd.id) || holders.up.contains(&osd.id) {
                    peers.extend(
                        holders
                            .acting
                            .into_iter()
                            .chain(holders.up)
                            .filter(|o| *o != osd.id),
                    );
                }
            }
        }
        let ping = PeerRequest::Ping {
            from: osd.id,
            epoch: view.map.epoch,
        };
        let answers = futures_util::future::join_all(peers.iter().map(|&peer| {
            let ping = &ping;
            let osd = &osd;
            async move {
                let addr = osd.view().addr(peer);
                let sent = Instant::now();
                let answer = match addr {
                    Some(addr) => osd
                        .messenger
                        .call_within::<_, OsdResponse>(addr, &entity(peer), ping, HEARTBEAT_EVERY)
                        .await
                        .ok(),
                    None => None,
                };
                // `Ack` is a read lease too (see `fence`); any answer shows the peer alive.
                if matches!(answer, Some(OsdResponse::Ack)) {
                    osd.fences.hold(peer, sent);
                }
                (peer, answer.is_some())
            }
        }))
        .await;
        let grace = Duration::from_secs(osd.option("osd_heartbeat_grace"));
        since.retain(|peer, _| peers.contains(peer));
        for &peer in &peers {
            let addr = view.addr(peer);
            let first = since.entry(peer).or_insert((addr, Instant::now()));
            if first.0 != addr {
                *first = (addr, Instant::now());
            }
        }
        for (peer, answered) in answers {
            let last = {
                let mut heard = osd.heard.lock().unwrap_or_else(|p| p.into_inner());
                if answered {
                    heard.insert(peer, Instant::now());
                    continue;
                }
                let first = since.get(&peer).map_or_else(Instant::now, |(_, at)| *at);
                heard.get(&peer).map_or(first, |at| (*at).max(first))
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
