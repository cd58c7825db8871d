//! The monitor daemon: the Paxos core and the map service driven by real time, RocksDB and the
//! QUIC messenger; and [`MonClient`], which admin commands use to reach the monitors.
//!
//! One task owns all state. Inputs arrive on a bounded channel (peer messages, proposals,
//! reads) and a 20 ms tick; after each, the ready work is persisted in one synced batch and only
//! then are messages sent and answers given.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tidepool_messenger::{Identity, Messenger, MessengerConfig, MessengerError, Peer, Service};
use tidepool_placement::{ClusterMap, Epoch};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::paxos::{Message, PaxosConfig, PaxosNode, ProposeError, Rank, Slot};
use crate::service::{Command, CommandError, MapState, Outcome, Request};
use crate::store::{MonStore, StoreError};

/// The monitors of a cluster: rank `i` listens at `addrs[i]`. Written by `cluster init` to
/// `monmap.json` in the cluster folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonMap {
    /// Format version of the file.
    pub version: u32,
    /// Monitor addresses by rank.
    pub addrs: Vec<SocketAddr>,
}

impl MonMap {
    /// The file name in the cluster folder.
    pub const FILE: &'static str = "monmap.json";

    /// Reads the monitor map of the cluster folder `dir`.
    pub fn load(dir: &Path) -> Result<MonMap, DaemonError> {
        let path = dir.join(Self::FILE);
        let bytes = std::fs::read(&path).map_err(|source| DaemonError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| DaemonError::BadFile {
            path,
            reason: e.to_string(),
        })
    }

    /// The certificate name of the monitor of `rank`.
    pub fn entity(rank: Rank) -> String {
        format!("mon-{rank}")
    }
}

/// Requests a monitor serves.
#[derive(Debug, Serialize, Deserialize)]
pub enum MonRequest {
    /// Consensus traffic between monitors (one-way).
    Paxos {
        /// The sender's rank.
        from: Rank,
        /// The message.
        message: Message,
    },
    /// A map change; answered once committed (or with the leader to ask instead).
    Command(Request),
    /// The current map.
    GetMap,
    /// This monitor's view of consensus.
    Status,
}

/// Answers of a monitor.
#[derive(Debug, Serialize, Deserialize)]
pub enum MonResponse {
    /// The command committed (or failed on its own terms).
    Done(Result<Outcome, CommandError>),
    /// Ask the leader instead.
    NotLeader {
        /// The leader, when known.
        leader: Option<Rank>,
    },
    /// The current map, in the versioned encoding.
    Map(#[serde(with = "serde_bytes")] Vec<u8>),
    /// This monitor's view.
    Status(MonStatus),
    /// The monitor cannot take more right now.
    Busy,
}

/// One monitor's view of consensus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonStatus {
    /// Its rank.
    pub rank: Rank,
    /// The leader it follows.
    pub leader: Option<Rank>,
    /// Its commit index.
    pub commit: Slot,
    /// Its map epoch.
    pub epoch: Epoch,
    /// A digest of its whole map (FNV-1a over the encoding): monitors with equal epochs must
    /// report equal digests.
    pub map_digest: u64,
}

/// Why the daemon or a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store failed; the monitor stops (fail-stop).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The messenger failed.
    #[error(transparent)]
    Messenger(#[from] MessengerError),
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
    /// No quorum answered in time.
    #[error("no monitor quorum answered within {waited:?} (monitors at {addrs:?}); is a majority of monitors running?")]
    NoQuorum {
        /// How long the client waited.
        waited: Duration,
        /// The monitors tried.
        addrs: Vec<SocketAddr>,
    },
    /// A monitor answered something unexpected.
    #[error("unexpected answer from a monitor: {0}")]
    Unexpected(String),
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

    async fn call(&self, _peer: Peer, request: MonRequest) -> tidepool_proto::Reply<MonResponse> {
        let (reply, answer) = oneshot::channel();
        let input = match request {
            MonRequest::Command(request) => Input::Propose(request, reply),
            MonRequest::Paxos { .. } => return Ok(MonResponse::Busy),
            read => Input::Read(read, reply),
        };
        if self.inputs.try_send(input).is_err() {
            return Ok(MonResponse::Busy);
        }
        Ok(answer.await.unwrap_or(MonResponse::Busy))
    }

    async fn notify(&self, peer: Peer, message: MonRequest) {
        if let MonRequest::Paxos { from, message } = message {
            // Only monitor `from` itself may speak as monitor `from`.
            if !peer.is_entity(&MonMap::entity(from)) {
                warn!(peer = %peer.addr, from, "dropping consensus traffic from a non-monitor");
                return;
            }
            if from < self.members {
                // Consensus tolerates loss; drop rather than block when overloaded.
                let _ = self.inputs.try_send(Input::Peer(from, message));
            }
        }
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
}

/// Bound on queued inputs (peer messages, proposals, reads).
const INPUTS_MAX: usize = 4096;
const TICK: Duration = Duration::from_millis(20);
/// Bound on messages queued for one peer.
const PEER_QUEUE_MAX: usize = 1024;
/// How long a message to a peer may take, connecting included: a monitor that does not answer
/// within this is as good as gone for this message.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs a monitor until `shutdown` resolves or its store fails.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let monmap = MonMap::load(&config.cluster_dir)?;
    let members = monmap.addrs.len() as u8;
    let rank = config.rank;
    let store = MonStore::open(&config.data_dir)?;
    let (durable, mut state) = store.load()?;
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut node = PaxosNode::new(PaxosConfig::new(rank, members), durable, now_ms());
    info!(
        rank,
        commit = node.commit(),
        epoch = state.map.epoch.0,
        "monitor starting"
    );

    let messenger = Messenger::bind(
        monmap.addrs[usize::from(rank)],
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
        let addr = monmap.addrs[usize::from(to)];
        senders.push(tokio::spawn(async move {
            let entity = MonMap::entity(to);
            while let Some(message) = queue_rx.recv().await {
                let request = MonRequest::Paxos {
                    from: rank,
                    message,
                };
                let _ = messenger.send(addr, &entity, &request).await;
            }
        }));
        outgoing.push(queue);
    }

    let mut waiting: BTreeMap<(String, u64), oneshot::Sender<MonResponse>> = BTreeMap::new();
    let mut ticker = tokio::time::interval(TICK);
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = ticker.tick() => {
                node.handle_tick(now_ms());
                if !node.is_leader() {
                    // Proposals in flight may or may not commit; the client resends to the new
                    // leader with the same sequence number and gets the one true answer.
                    let leader = node.leader();
                    for (_, reply) in std::mem::take(&mut waiting) {
                        let _ = reply.send(MonResponse::NotLeader { leader });
                    }
                }
            }
            Some(input) = input_rx.recv() => match input {
                Input::Peer(from, message) => node.handle_message(from, message),
                Input::Propose(request, reply) => {
                    let key = (request.client.clone(), request.sequence);
                    match node.propose(request.to_proposal()) {
                        Ok(()) => {
                            waiting.insert(key, reply);
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
                    let response = match request {
                        MonRequest::GetMap => {
                            MonResponse::Map(tidepool_placement::encoding::encode(&state.map))
                        }
                        _ => MonResponse::Status(MonStatus {
                            rank,
                            leader: node.leader(),
                            commit: node.commit(),
                            epoch: state.map.epoch,
                            map_digest: tidepool_placement::hash::fnv1a64(
                                &tidepool_placement::encoding::encode(&state.map),
                            ),
                        }),
                    };
                    let _ = reply.send(response);
                }
            },
        }
        if let Err(error) = step(&mut node, &mut state, &store, &outgoing, &mut waiting) {
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

/// Persists the core's ready work with the map it produces, then sends and answers.
fn step(
    node: &mut PaxosNode,
    state: &mut MapState,
    store: &MonStore,
    outgoing: &[mpsc::Sender<Message>],
    waiting: &mut BTreeMap<(String, u64), oneshot::Sender<MonResponse>>,
) -> Result<(), DaemonError> {
    let ready = node.poll_ready();
    if ready.is_empty() {
        return Ok(());
    }
    let mut incrementals = Vec::new();
    let mut answers = Vec::new();
    for (_, value) in &ready.committed {
        let (incremental, results) = state.apply_slot(value);
        incrementals.extend(incremental);
        for (proposal, result) in value.iter().zip(results) {
            if let Ok(request) = rmp_serde::from_slice::<Request>(&proposal.0) {
                answers.push(((request.client, request.sequence), result));
            }
        }
    }
    let changed = !ready.committed.is_empty();
    let ops = MonStore::ops(&ready.persist, changed.then_some(&*state), &incrementals);
    if !ops.is_empty() {
        tokio::task::block_in_place(|| store.write(&ops))?;
    }
    for (to, message) in ready.send {
        if let Some(queue) = outgoing.get(usize::from(to)) {
            let _ = queue.try_send(message);
        }
    }
    for (key, result) in answers {
        if let Some(reply) = waiting.remove(&key) {
            let _ = reply.send(MonResponse::Done(result));
        }
    }
    Ok(())
}

/// How admin commands reach the monitors: finds the leader, resends on leader changes with the
/// same sequence number, and gives up with a clear error after a bounded wait.
#[derive(Debug)]
pub struct MonClient {
    messenger: Messenger,
    monmap: MonMap,
    client: String,
    sequence: u64,
    leader_hint: Option<Rank>,
    /// How long a command may take before it fails with [`DaemonError::NoQuorum`].
    pub deadline: Duration,
}

impl MonClient {
    /// A client for the cluster in `cluster_dir`, as `identity`.
    pub fn new(cluster_dir: &Path, identity: &Identity) -> Result<MonClient, DaemonError> {
        let monmap = MonMap::load(cluster_dir)?;
        let config = MessengerConfig {
            request_timeout: Duration::from_secs(2),
            ..MessengerConfig::default()
        };
        let messenger = Messenger::bind(SocketAddr::from(([127, 0, 0, 1], 0)), identity, config)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(MonClient {
            messenger,
            monmap,
            client: format!("{}-{}-{nanos}", identity.entity, std::process::id()),
            sequence: 0,
            leader_hint: None,
            deadline: Duration::from_secs(15),
        })
    }

    /// The monitor map in use.
    pub fn monmap(&self) -> &MonMap {
        &self.monmap
    }

    async fn ask(&self, rank: Rank, request: &MonRequest) -> Result<MonResponse, MessengerError> {
        let addr = self.monmap.addrs[usize::from(rank)];
        self.messenger
            .call(addr, &MonMap::entity(rank), request)
            .await
    }

    /// Applies `command` through the leader; returns its outcome once committed.
    pub async fn command(
        &mut self,
        command: Command,
    ) -> Result<Result<Outcome, CommandError>, DaemonError> {
        self.sequence += 1;
        let request = MonRequest::Command(Request {
            client: self.client.clone(),
            sequence: self.sequence,
            command,
        });
        let started = Instant::now();
        let members = self.monmap.addrs.len() as Rank;
        let mut next = self.leader_hint.unwrap_or(0);
        while started.elapsed() < self.deadline {
            match self.ask(next, &request).await {
                Ok(MonResponse::Done(result)) => {
                    self.leader_hint = Some(next);
                    return Ok(result);
                }
                Ok(MonResponse::NotLeader {
                    leader: Some(leader),
                }) if leader != next => {
                    next = leader;
                    continue;
                }
                Ok(_) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    next = (next + 1) % members;
                }
            }
        }
        Err(DaemonError::NoQuorum {
            waited: self.deadline,
            addrs: self.monmap.addrs.clone(),
        })
    }

    /// The current map, from the first monitor that answers.
    pub async fn map(&self) -> Result<ClusterMap, DaemonError> {
        for rank in 0..self.monmap.addrs.len() as Rank {
            if let Ok(MonResponse::Map(bytes)) = self.ask(rank, &MonRequest::GetMap).await {
                return tidepool_placement::encoding::decode(&bytes)
                    .map_err(|e| DaemonError::Unexpected(e.to_string()));
            }
        }
        Err(DaemonError::NoQuorum {
            waited: Duration::from_secs(2),
            addrs: self.monmap.addrs.clone(),
        })
    }

    /// Every monitor's view (`None` for those that do not answer).
    pub async fn statuses(&self) -> Vec<Option<MonStatus>> {
        let mut statuses = Vec::new();
        for rank in 0..self.monmap.addrs.len() as Rank {
            statuses.push(match self.ask(rank, &MonRequest::Status).await {
                Ok(MonResponse::Status(status)) => Some(status),
                _ => None,
            });
        }
        statuses
    }
}
