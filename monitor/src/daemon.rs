//! The monitor daemon: the Paxos core, the map service and the failure policy driven by real
//! time, RocksDB and the QUIC messenger.
//!
//! One task owns all state. Inputs arrive on a bounded channel (peer messages, proposals,
//! reads, beacons) and a 20 ms tick; after each, the ready work is persisted in one synced
//! batch and only then are messages sent and answers given. Reads are answered only under a
//! lease; subscriptions are held until the next epoch commits.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidepool_messenger::{Identity, Messenger, MessengerConfig, MessengerError, Peer, Service};
use tidepool_metrics::{MetricsError, Registry};
use tidepool_placement::{Epoch, OsdId};
use tidepool_proto::mon::{Beacon, MonMap, MonRequest, MonResponse, MonStatus, Report, Request};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::metrics::MonMetrics;
use crate::paxos::{Message, PaxosConfig, PaxosNode, ProposeError, Rank};
use crate::policy::FailurePolicy;
use crate::service::{self, Command, MapState};
use crate::store::{MonStore, StoreError};

/// Why the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store failed; the monitor stops (fail-stop).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The messenger failed.
    #[error(transparent)]
    Messenger(#[from] MessengerError),
    /// Its metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file is malformed.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Reads the monitor map of the cluster folder `dir`.
pub fn load_monmap(dir: &Path) -> Result<MonMap, DaemonError> {
    let path = dir.join(MonMap::FILE);
    let bytes = std::fs::read(&path).map_err(|source| DaemonError::Io {
        path: path.clone(),
        source,
    })?;
    MonMap::parse(&bytes).map_err(|reason| DaemonError::BadFile { path, reason })
}

enum Input {
    Peer(Rank, Message),
    Propose(Request, oneshot::Sender<MonResponse>),
    Read(MonRequest, oneshot::Sender<MonResponse>),
}

struct Handler {
    inputs: mpsc::Sender<Input>,
    members: u8,
}

impl Service for Handler {
    type Request = MonRequest;
    type Response = MonResponse;

    async fn call(&self, peer: Peer, request: MonRequest) -> tidepool_proto::Reply<MonResponse> {
        let (reply, answer) = oneshot::channel();
        if !crate::authorize::permitted(peer.entity().as_deref(), &request) {
            warn!(peer = %peer.addr, entity = ?peer.entity(), "refused a request its certificate does not allow");
            return Ok(MonResponse::Denied);
        }
        let input = match request {
            MonRequest::Command(request) => Input::Propose(request, reply),
            MonRequest::Peer { .. } => return Ok(MonResponse::Busy),
            read => Input::Read(read, reply),
        };
        if self.inputs.try_send(input).is_err() {
            return Ok(MonResponse::Busy);
        }
        Ok(answer.await.unwrap_or(MonResponse::Busy))
    }

    async fn notify(&self, peer: Peer, message: MonRequest) {
        let MonRequest::Peer { from, message } = message else {
            return;
        };
        // Only monitor `from` itself may speak as monitor `from`.
        if from >= self.members || !peer.is_entity(&MonMap::entity(from)) {
            warn!(peer = %peer.addr, from, "dropping consensus traffic from a non-monitor");
            return;
        }
        let Ok(message) = rmp_serde::from_slice::<Message>(&message) else {
            warn!(peer = %peer.addr, from, "dropping a malformed consensus message");
            return;
        };
        // A snapshot is checked here, before consensus records that it installed one.
        if let Message::Snapshot { state, .. } = &message {
            if rmp_serde::from_slice::<MapState>(state).is_err() {
                warn!(from, "dropping a snapshot that does not decode");
                return;
            }
        }
        // Consensus tolerates loss; drop rather than block when overloaded.
        let _ = self.inputs.try_send(Input::Peer(from, message));
    }
}

/// Where a monitor runs.
#[derive(Debug)]
pub struct DaemonConfig {
    /// Its rank.
    pub rank: Rank,
    /// The cluster folder (monmap, certificates).
    pub cluster_dir: PathBuf,
    /// Its own data folder (the RocksDB store).
    pub data_dir: PathBuf,
    /// Its certificate.
    pub identity: Identity,
    /// Where it listens, when not at its address in the monitor map (`0.0.0.0:6789` behind a
    /// service address that forwards to it).
    pub bind: Option<SocketAddr>,
    /// Committed slots (and map epochs) kept for peers and subscribers that lag; further
    /// behind, they get the whole map.
    pub retain_slots: u64,
    /// Where its metrics are registered (served by the caller, if at all).
    pub metrics: Registry,
}

impl DaemonConfig {
    /// The default for [`DaemonConfig::retain_slots`].
    pub const RETAIN_SLOTS: u64 = 500;
}

/// Bound on queued inputs (peer messages, proposals, reads).
const INPUTS_MAX: usize = 4096;
const TICK: Duration = Duration::from_millis(20);
/// How often the metrics are brought up to date (the cluster gauges are a whole status).
const METRICS_INTERVAL_MS: u64 = 1000;
/// Bound on messages queued for one peer.
const PEER_QUEUE_MAX: usize = 1024;
/// How long a message to a peer may take, connecting included: a monitor that does not answer
/// within this is as good as gone for this message.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// Most incrementals in one answer to a subscriber.
const SUBSCRIBE_BATCH: usize = 100;
/// Longest a subscription is held.
const SUBSCRIBE_WAIT_MAX: Duration = Duration::from_secs(30);
/// Most subscriptions held at once.
const SUBSCRIBERS_MAX: usize = 4096;

/// A subscriber waiting for an epoch after `have`.
struct Subscriber {
    have: Epoch,
    until: Instant,
    reply: oneshot::Sender<MonResponse>,
}

/// Everything the monitor's task owns.
struct Monitor {
    rank: Rank,
    node: PaxosNode,
    state: MapState,
    store: MonStore,
    started: Instant,
    outgoing: Vec<mpsc::Sender<Message>>,
    /// Proposals in flight, with when they were proposed.
    waiting: BTreeMap<(String, u64), (Instant, oneshot::Sender<MonResponse>)>,
    subscribers: Vec<Subscriber>,
    /// The failure policy and the latest beacon per OSD, while leading.
    leading: Option<(FailurePolicy, HashMap<OsdId, Beacon>)>,
    retain_slots: u64,
    /// The leader followed and whether it is us, as last logged.
    role: (Option<Rank>, bool),
    /// The leader's own requests (failure policy), with this process's nonce.
    own_client: String,
    own_sequence: u64,
    members: u8,
    metrics: MonMetrics,
    /// When the metrics were last brought up to date (milliseconds after `started`).
    metrics_ms: u64,
}

/// Runs a monitor until `shutdown` resolves or its store fails.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let monmap = load_monmap(&config.cluster_dir)?;
    let members = monmap.addrs.len() as u8;
    let rank = config.rank;
    let store = MonStore::open(&config.data_dir)?;
    let (durable, state) = store.load()?;
    let started = Instant::now();
    let node = PaxosNode::new(PaxosConfig::new(rank, members), durable, 0);
    info!(
        rank,
        commit = node.commit(),
        epoch = state.map.epoch.0,
        "monitor starting"
    );

    let messenger = Messenger::bind(
        config.bind.unwrap_or(monmap.addrs[usize::from(rank)]),
        &config.identity,
        MessengerConfig {
            request_timeout: PEER_TIMEOUT,
            ..MessengerConfig::default()
        },
    )?;
    let (inputs, mut input_rx) = mpsc::channel(INPUTS_MAX);
    messenger.serve(Arc::new(Handler {
        inputs: inputs.clone(),
        members,
    }));
    // Outgoing consensus messages go through one sender task per peer, so a dead peer (whose
    // connection attempts time out) delays nobody else. A full queue drops, as a lossy network
    // would; Paxos retransmits.
    let mut outgoing = Vec::new();
    let mut senders = Vec::new();
    for to in 0..members {
        let (queue, mut queue_rx) = mpsc::channel::<Message>(PEER_QUEUE_MAX);
        let messenger = messenger.clone();
        let addr: SocketAddr = monmap.addrs[usize::from(to)];
        senders.push(tokio::spawn(async move {
            let entity = MonMap::entity(to);
            while let Some(message) = queue_rx.recv().await {
                let Ok(message) = rmp_serde::to_vec(&message) else {
                    continue;
                };
                let request = MonRequest::Peer {
                    from: rank,
                    message,
                };
                let _ = messenger.send(addr, &entity, &request).await;
            }
        }));
        outgoing.push(queue);
    }

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut monitor = Monitor {
        rank,
        node,
        state,
        store,
        started,
        outgoing,
        waiting: BTreeMap::new(),
        subscribers: Vec::new(),
        leading: None,
        retain_slots: config.retain_slots.max(1),
        role: (None, false),
        own_client: format!("mon-{rank}-{}-{nanos}", std::process::id()),
        own_sequence: 0,
        members,
        metrics: MonMetrics::new(&config.metrics)?,
        metrics_ms: 0,
    };
    let mut ticker = tokio::time::interval(TICK);
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = ticker.tick() => monitor.tick(),
            Some(input) = input_rx.recv() => monitor.input(input),
        }
        if let Err(error) = monitor.step() {
            break Err(error);
        }
    };
    if let Err(error) = &result {
        warn!(%error, "monitor stopping: its store failed");
    }
    for sender in senders {
        sender.abort();
    }
    messenger.shutdown().await;
    result
}

impl Monitor {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn readable(&self) -> bool {
        self.node.is_readable(self.now_ms())
    }

    fn tick(&mut self) {
        let now = self.now_ms();
        self.node.handle_tick(now);
        if now >= self.metrics_ms + METRICS_INTERVAL_MS {
            self.metrics_ms = now;
            self.update_metrics(now);
        }
        if !self.node.is_leader() {
            // Proposals in flight may or may not commit; the client resends to the new leader
            // with the same sequence number and gets the one true answer.
            let leader = self.node.leader();
            for (_, (_, reply)) in std::mem::take(&mut self.waiting) {
                let _ = reply.send(MonResponse::NotLeader { leader });
            }
            self.leading = None;
        } else if self.readable() {
            // The failure policy acts only once this leader has every chosen value.
            let (policy, _) = self
                .leading
                .get_or_insert_with(|| (FailurePolicy::new(now), HashMap::new()));
            for command in policy.tick(&self.state, now) {
                info!(?command, "failure policy");
                self.propose_own(command);
            }
        }
        // Subscriptions that waited long enough get an empty answer, so they ask again.
        let instant = Instant::now();
        let readable = self.readable();
        let leader = self.node.leader();
        let (expired, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.subscribers)
            .into_iter()
            .partition(|s| s.until <= instant || !readable || s.reply.is_closed());
        self.subscribers = held;
        for subscriber in expired {
            let _ = subscriber.reply.send(if readable {
                MonResponse::Maps {
                    full: None,
                    incrementals: Vec::new(),
                }
            } else {
                MonResponse::NotReadable { leader }
            });
        }
    }

    fn propose_own(&mut self, command: Command) {
        self.own_sequence += 1;
        let request = Request {
            client: self.own_client.clone(),
            sequence: self.own_sequence,
            command,
        };
        let _ = self.node.propose(service::proposal(&request));
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Peer(from, message) => self.node.handle_message(from, message),
            Input::Propose(request, reply) => {
                let key = (request.client.clone(), request.sequence);
                match self.node.propose(service::proposal(&request)) {
                    Ok(()) => {
                        self.waiting.insert(key, (Instant::now(), reply));
                    }
                    Err(ProposeError::NotLeader { leader }) => {
                        let _ = reply.send(MonResponse::NotLeader { leader });
                    }
                    Err(ProposeError::Busy) => {
                        let _ = reply.send(MonResponse::Busy);
                    }
                }
            }
            Input::Read(request, reply) => {
                let _ = match self.read(request, reply) {
                    Ok(()) => Ok(()),
                    Err((response, reply)) => reply.send(response),
                };
            }
        }
    }

    /// Answers a read, or holds it (subscriptions); gives the reply back with an answer.
    #[allow(clippy::result_large_err)]
    fn read(
        &mut self,
        request: MonRequest,
        reply: oneshot::Sender<MonResponse>,
    ) -> Result<(), (MonResponse, oneshot::Sender<MonResponse>)> {
        let leader = self.node.leader();
        let answer = match request {
            MonRequest::Status => MonResponse::Status(MonStatus {
                rank: self.rank,
                leader,
                readable: self.readable(),
                commit: self.node.commit(),
                epoch: self.state.map.epoch,
                map_digest: tidepool_placement::hash::fnv1a64(
                    &tidepool_placement::encoding::encode(&self.state.map),
                ),
            }),
            _ if !self.readable() => MonResponse::NotReadable { leader },
            MonRequest::GetMap => {
                MonResponse::Map(tidepool_placement::encoding::encode(&self.state.map))
            }
            MonRequest::Subscribe { have, wait_ms } => {
                if have < self.state.map.epoch {
                    self.maps_since(have)
                } else if self.subscribers.len() >= SUBSCRIBERS_MAX {
                    MonResponse::Busy
                } else {
                    let wait = Duration::from_millis(wait_ms).min(SUBSCRIBE_WAIT_MAX);
                    self.subscribers.push(Subscriber {
                        have,
                        until: Instant::now() + wait,
                        reply,
                    });
                    return Ok(());
                }
            }
            MonRequest::GetUsers => {
                MonResponse::Users(self.state.users.values().cloned().collect())
            }
            MonRequest::GetConfig => MonResponse::Config(self.config()),
            MonRequest::Beacon(_) | MonRequest::Failure { .. } | MonRequest::GetReport => {
                let now = self.now_ms();
                let Some((policy, beacons)) = self.leading.as_mut() else {
                    return Err((MonResponse::NotLeader { leader }, reply));
                };
                match request {
                    MonRequest::Beacon(beacon) => {
                        policy.beacon(beacon.osd, now);
                        policy.usage(beacon.osd, &beacon.stat);
                        beacons.insert(beacon.osd, beacon);
                        MonResponse::Config(self.config())
                    }
                    MonRequest::Failure {
                        reporter, target, ..
                    } => {
                        policy.failure(reporter, target, now);
                        MonResponse::Ack
                    }
                    _ => MonResponse::Report(self.report()),
                }
            }
            MonRequest::Command(_) | MonRequest::Peer { .. } => MonResponse::Busy,
        };
        Err((answer, reply))
    }

    /// The monitor's gauges, and the cluster's while leading.
    fn update_metrics(&mut self, now_ms: u64) {
        let leading = self.node.is_leader();
        self.metrics
            .set_role(leading, self.readable(), self.state.map.epoch.0);
        if leading && self.readable() {
            let quorum = self.node.quorum(now_ms);
            let (report, config) = (self.report(), self.config());
            self.metrics.set_cluster(
                self.rank,
                self.members,
                &quorum,
                &self.state.map,
                report,
                config,
            );
        } else {
            self.metrics.clear_cluster();
        }
    }

    fn config(&self) -> Vec<(String, String)> {
        self.state
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The latest reports of OSDs still in the map, and of PGs of pools that still exist.
    fn report(&self) -> Report {
        let Some((_, beacons)) = &self.leading else {
            return Report::default();
        };
        let map = &self.state.map;
        let mut pgs: BTreeMap<tidepool_placement::PgId, &tidepool_proto::mon::PgStat> =
            BTreeMap::new();
        let mut osds = Vec::new();
        for (id, beacon) in beacons.iter().filter(|(id, _)| map.osds.contains_key(id)) {
            osds.push((*id, beacon.stat.clone()));
            for pg in beacon
                .pgs
                .iter()
                .filter(|pg| map.pools.contains_key(&pg.pg.pool))
            {
                // Two primaries may report one PG across a map change: the newer one wins.
                if pgs.get(&pg.pg).is_none_or(|known| known.epoch < pg.epoch) {
                    pgs.insert(pg.pg, pg);
                }
            }
        }
        osds.sort_by_key(|(id, _)| *id);
        Report {
            osds,
            pgs: pgs.into_values().cloned().collect(),
        }
    }

    /// The maps a subscriber at `have` lacks: incrementals when they are all kept, else the
    /// whole map.
    fn maps_since(&self, have: Epoch) -> MonResponse {
        let current = self.state.map.epoch;
        let full = || MonResponse::Maps {
            full: Some(serde_bytes::ByteBuf::from(
                tidepool_placement::encoding::encode(&self.state.map),
            )),
            incrementals: Vec::new(),
        };
        if have.0 == 0 {
            return full();
        }
        let Ok(incrementals) = self.store.incrementals(have.0 + 1, SUBSCRIBE_BATCH) else {
            return full();
        };
        // Only a contiguous run from `have + 1` is of use.
        let mut expected = have.0 + 1;
        let mut run = Vec::new();
        for bytes in incrementals {
            match tidepool_placement::encoding::decode::<tidepool_placement::Incremental>(&bytes) {
                Ok(incremental) if incremental.epoch.0 == expected && expected <= current.0 => {
                    expected += 1;
                    run.push(serde_bytes::ByteBuf::from(bytes));
                }
                _ => break,
            }
        }
        if run.is_empty() {
            return full();
        }
        MonResponse::Maps {
            full: None,
            incrementals: run,
        }
    }

    /// Persists the core's ready work with the map it produces, then sends and answers.
    fn step(&mut self) -> Result<(), DaemonError> {
        let role = (self.node.leader(), self.node.is_leader());
        if role != self.role {
            if role.0.is_some() && role.0 != self.role.0 {
                self.metrics.elected();
            }
            self.role = role;
            match role {
                (_, true) => info!(commit = self.node.commit(), "leading"),
                (Some(leader), false) => info!(leader, commit = self.node.commit(), "following"),
                (None, _) => info!(commit = self.node.commit(), "no leader: electing"),
            }
        }
        self.trim();
        let ready = self.node.poll_ready();
        if ready.is_empty() {
            return Ok(());
        }
        let mut changed = false;
        if let Some((slot, bytes)) = &ready.install {
            // Checked when the message arrived.
            if let Ok(state) = rmp_serde::from_slice::<MapState>(bytes) {
                info!(slot, epoch = state.map.epoch.0, "installed a snapshot");
                self.state = state;
                changed = true;
            }
        }
        let mut incrementals = Vec::new();
        let mut answers = Vec::new();
        for (_, value) in &ready.committed {
            let (incremental, results) = self.state.apply_slot(value);
            incrementals.extend(incremental);
            for (proposal, result) in value.iter().zip(results) {
                if let Ok(request) = rmp_serde::from_slice::<Request>(&proposal.0) {
                    answers.push(((request.client, request.sequence), result));
                }
            }
            changed = true;
        }
        let mut ops = MonStore::ops(
            &ready.persist,
            changed.then_some(&self.state),
            &incrementals,
        );
        if ready.persist.iter().any(|r| {
            matches!(
                r,
                crate::paxos::Record::Trimmed { .. } | crate::paxos::Record::Installed { .. }
            )
        }) {
            let epoch = self.state.map.epoch.0;
            if epoch > self.retain_slots {
                ops.push(MonStore::trim_incrementals(epoch - self.retain_slots));
            }
        }
        if !ops.is_empty() {
            tokio::task::block_in_place(|| self.store.write(&ops))?;
        }
        for (to, message) in ready.send {
            if let Some(queue) = self.outgoing.get(usize::from(to)) {
                let _ = queue.try_send(message);
            }
        }
        if !ready.snapshot_to.is_empty() {
            let message = Message::Snapshot {
                slot: self.node.commit(),
                state: rmp_serde::to_vec_named(&self.state).expect("map states encode"),
            };
            for to in ready.snapshot_to {
                if let Some(queue) = self.outgoing.get(usize::from(to)) {
                    let _ = queue.try_send(message.clone());
                }
            }
        }
        for (key, result) in answers {
            if let Some((proposed, reply)) = self.waiting.remove(&key) {
                self.metrics
                    .commit_seconds
                    .observe(proposed.elapsed().as_secs_f64());
                let _ = reply.send(MonResponse::Done(result));
            }
        }
        if changed {
            self.wake_subscribers();
        }
        Ok(())
    }

    fn wake_subscribers(&mut self) {
        if !self.readable() {
            return;
        }
        let epoch = self.state.map.epoch;
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.subscribers)
            .into_iter()
            .partition(|s| s.have < epoch);
        self.subscribers = held;
        for subscriber in due {
            let answer = self.maps_since(subscriber.have);
            let _ = subscriber.reply.send(answer);
        }
    }

    /// Keeps the last `retain_slots` slots, dropping older ones a fifth of that at a time.
    fn trim(&mut self) {
        let commit = self.node.commit();
        let step = (self.retain_slots / 5).max(1);
        if commit >= self.node.first_kept() + self.retain_slots + step {
            self.node.trim(commit - self.retain_slots);
        }
    }
}
