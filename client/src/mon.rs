//! [`MonClient`]: commands through the leader, reads from any monitor holding a lease,
//! subscriptions that follow the map, all with bounded waits and clear errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidepool_messenger::{Identity, Messenger, MessengerConfig, MessengerError};
use tidepool_placement::{ClusterMap, Epoch, Incremental, OsdId};
use tidepool_proto::mon::{
    Beacon, Command, CommandError, MonMap, MonRequest, MonResponse, MonStatus, Outcome, Rank,
    Report, Request, User,
};

/// Why a call to the monitors failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The messenger could not start.
    #[error(transparent)]
    Messenger(#[from] MessengerError),
    /// A file of the cluster folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file of the cluster folder is malformed.
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
    /// The monitors refused: this identity may not ask that.
    #[error("the monitors refused the request: this certificate may not ask for it")]
    Denied,
    /// A monitor answered something that does not fit.
    #[error("unexpected answer from a monitor: {0}")]
    Unexpected(String),
}

/// Reads the monitor map of the cluster folder `dir`.
pub fn load_monmap(dir: &Path) -> Result<MonMap, ClientError> {
    let path = dir.join(MonMap::FILE);
    let bytes = std::fs::read(&path).map_err(|source| ClientError::Io {
        path: path.clone(),
        source,
    })?;
    MonMap::parse(&bytes).map_err(|reason| ClientError::BadFile { path, reason })
}

/// How long one monitor gets to answer before the next is tried.
const PER_MONITOR: Duration = Duration::from_secs(2);
/// Pause before another round over the monitors.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long the others get once one monitor answered a probe for the leader.
const PROBE_GRACE: Duration = Duration::from_millis(200);

/// A client of the monitors. Commands carry this client's id and a growing sequence number,
/// so resending one across a leader change applies it once.
#[derive(Debug)]
pub struct MonClient {
    messenger: Messenger,
    monmap: MonMap,
    client: String,
    sequence: u64,
    leader_hint: Option<Rank>,
    /// How long a call may take before it fails with [`ClientError::NoQuorum`].
    pub deadline: Duration,
}

impl MonClient {
    /// A client for the cluster in `cluster_dir`, as `identity`, on its own endpoint.
    pub fn new(cluster_dir: &Path, identity: &Identity) -> Result<MonClient, ClientError> {
        let monmap = load_monmap(cluster_dir)?;
        let config = MessengerConfig {
            request_timeout: PER_MONITOR,
            ..MessengerConfig::default()
        };
        let messenger = Messenger::bind(monmap.client_bind(), identity, config)?;
        Ok(MonClient::with_messenger(
            messenger,
            monmap,
            &identity.entity,
        ))
    }

    /// A client on an existing endpoint (a daemon's own).
    pub fn with_messenger(messenger: Messenger, monmap: MonMap, entity: &str) -> MonClient {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        MonClient {
            messenger,
            monmap,
            client: format!("{entity}-{}-{nanos}", std::process::id()),
            sequence: 0,
            leader_hint: None,
            deadline: Duration::from_secs(15),
        }
    }

    /// The monitor map in use.
    pub fn monmap(&self) -> &MonMap {
        &self.monmap
    }

    fn members(&self) -> Rank {
        self.monmap.addrs.len() as Rank
    }

    fn no_quorum(&self) -> ClientError {
        ClientError::NoQuorum {
            waited: self.deadline,
            addrs: self.monmap.addrs.clone(),
        }
    }

    async fn ask(
        &self,
        rank: Rank,
        request: &MonRequest,
        timeout: Duration,
    ) -> Result<MonResponse, MessengerError> {
        let addr = self.monmap.addrs[usize::from(rank)];
        self.messenger
            .call_within(addr, &MonMap::entity(rank), request, timeout)
            .await
    }

    /// Sends `request` to the leader, following its hints, until `accept` takes an answer or
    /// the deadline passes.
    async fn via_leader<T>(
        &mut self,
        request: &MonRequest,
        accept: impl Fn(MonResponse) -> Option<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let started = Instant::now();
        let (mut next, silent) = self.first_rank().await;
        while started.elapsed() < self.deadline {
            match self.ask(next, request, PER_MONITOR).await {
                // A hint that names a monitor which did not answer the probe is stale (the
                // leader died and no new one is elected yet): ask a live one again shortly.
                Ok(MonResponse::NotLeader {
                    leader: Some(leader),
                }) if leader != next && leader < self.members() && !silent[usize::from(leader)] => {
                    next = leader;
                    continue;
                }
                Ok(MonResponse::Denied) => return Err(ClientError::Denied),
                Ok(response) => {
                    if let Some(result) = accept(response) {
                        self.leader_hint = Some(next);
                        return result;
                    }
                }
                Err(_) => {}
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            next = (next + 1) % self.members();
            while silent[usize::from(next)] && silent.iter().any(|s| !s) {
                next = (next + 1) % self.members();
            }
        }
        Err(self.no_quorum())
    }

    /// Sends `request` to any monitor that answers under a lease (the leader first).
    async fn read<T>(
        &mut self,
        request: &MonRequest,
        timeout: Duration,
        accept: impl Fn(MonResponse) -> Option<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let started = Instant::now();
        let (first, _) = self.first_rank().await;
        let mut next = first;
        while started.elapsed() < self.deadline {
            match self.ask(next, request, timeout).await {
                Ok(MonResponse::Denied) => return Err(ClientError::Denied),
                Ok(response) => {
                    if let Some(result) = accept(response) {
                        return result;
                    }
                }
                Err(_) => {}
            }
            next = (next + 1) % self.members();
            if next == first {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        Err(self.no_quorum())
    }

    /// Applies `command` through the leader; returns its outcome once committed.
    pub async fn command(
        &mut self,
        command: Command,
    ) -> Result<Result<Outcome, CommandError>, ClientError> {
        self.sequence += 1;
        let request = MonRequest::Command(Request {
            client: self.client.clone(),
            sequence: self.sequence,
            command,
        });
        self.via_leader(&request, |response| match response {
            MonResponse::Done(result) => Some(Ok(result)),
            _ => None,
        })
        .await
    }

    /// The current map.
    pub async fn map(&mut self) -> Result<ClusterMap, ClientError> {
        self.read(
            &MonRequest::GetMap,
            PER_MONITOR,
            |response| match response {
                MonResponse::Map(bytes) => Some(decode_map(&bytes)),
                _ => None,
            },
        )
        .await
    }

    /// The maps after `have`, waiting up to `wait` for a new epoch: `None` when nothing
    /// changed.
    pub async fn subscribe(
        &mut self,
        have: Epoch,
        wait: Duration,
    ) -> Result<Option<MapUpdate>, ClientError> {
        let request = MonRequest::Subscribe {
            have,
            wait_ms: wait.as_millis() as u64,
        };
        self.read(&request, wait + PER_MONITOR, |response| match response {
            MonResponse::Maps { full, incrementals } => Some(MapUpdate::decode(full, incrementals)),
            _ => None,
        })
        .await
    }

    /// Every monitor's view (`None` for those that do not answer), asked all at once.
    pub async fn statuses(&self) -> Vec<Option<MonStatus>> {
        self.ask_statuses(|_| false, Duration::from_secs(1)).await
    }

    /// Asks every monitor for its view at once; returns when `enough` holds for an answer, or
    /// [`PROBE_GRACE`] after the first answer (a dead monitor would take a whole timeout).
    async fn ask_statuses(
        &self,
        enough: impl Fn(&MonStatus) -> bool,
        grace: Duration,
    ) -> Vec<Option<MonStatus>> {
        let mut asks = tokio::task::JoinSet::new();
        for rank in 0..self.members() {
            let messenger = self.messenger.clone();
            let addr = self.monmap.addrs[usize::from(rank)];
            asks.spawn(async move {
                let answer = messenger
                    .call_within(
                        addr,
                        &MonMap::entity(rank),
                        &MonRequest::Status,
                        PER_MONITOR,
                    )
                    .await;
                (rank, answer)
            });
        }
        let mut statuses = vec![None; usize::from(self.members())];
        let mut until: Option<tokio::time::Instant> = None;
        loop {
            let joined = match until {
                Some(until) => match tokio::time::timeout_at(until, asks.join_next()).await {
                    Ok(joined) => joined,
                    Err(_) => break,
                },
                None => asks.join_next().await,
            };
            let Some(joined) = joined else { break };
            if let Ok((rank, Ok(MonResponse::Status(status)))) = joined {
                let done = enough(&status);
                statuses[usize::from(rank)] = Some(status);
                if done {
                    break;
                }
                until.get_or_insert_with(|| tokio::time::Instant::now() + grace);
            }
        }
        statuses
    }

    /// Where to start, and which monitors did not answer: the last leader, else the monitor
    /// that says it leads (all are asked at once, so a dead monitor costs no timeout), else any
    /// that answered, else rank 0.
    async fn first_rank(&mut self) -> (Rank, Vec<bool>) {
        let members = usize::from(self.members());
        if let Some(rank) = self.leader_hint {
            return (rank, vec![false; members]);
        }
        // Every monitor's word (within a grace after the first): one claim to lead is not
        // enough, as a leader cut off from the others goes on claiming it.
        let statuses = self.ask_statuses(|_| false, PROBE_GRACE).await;
        let silent = statuses.iter().map(Option::is_none).collect();
        let leader = likely_leader(&statuses);
        if let Some(rank) = leader {
            self.leader_hint = Some(rank);
        }
        (leader.unwrap_or(0), silent)
    }

    /// What the OSDs last reported, from the leader.
    pub async fn report(&mut self) -> Result<Report, ClientError> {
        self.via_leader(&MonRequest::GetReport, |response| match response {
            MonResponse::Report(report) => Some(Ok(report)),
            _ => None,
        })
        .await
    }

    /// The users and their keys (admins and gateways only).
    pub async fn users(&mut self) -> Result<Vec<User>, ClientError> {
        self.read(
            &MonRequest::GetUsers,
            PER_MONITOR,
            |response| match response {
                MonResponse::Users(users) => Some(Ok(users)),
                _ => None,
            },
        )
        .await
    }

    /// The cluster-wide options that were set.
    pub async fn config(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        self.read(
            &MonRequest::GetConfig,
            PER_MONITOR,
            |response| match response {
                MonResponse::Config(config) => Some(Ok(config)),
                _ => None,
            },
        )
        .await
    }

    /// Sends an OSD's beacon to the leader; returns the options that were set.
    pub async fn beacon(&mut self, beacon: Beacon) -> Result<Vec<(String, String)>, ClientError> {
        self.via_leader(&MonRequest::Beacon(beacon), |response| match response {
            MonResponse::Config(config) => Some(Ok(config)),
            _ => None,
        })
        .await
    }

    /// Reports to the leader that `target` has been silent.
    pub async fn failure(
        &mut self,
        reporter: OsdId,
        target: OsdId,
        epoch: Epoch,
    ) -> Result<(), ClientError> {
        let request = MonRequest::Failure {
            reporter,
            target,
            epoch,
        };
        self.via_leader(&request, |response| match response {
            MonResponse::Ack => Some(Ok(())),
            _ => None,
        })
        .await
    }
}

fn decode_map(bytes: &[u8]) -> Result<ClusterMap, ClientError> {
    tidepool_placement::encoding::decode(bytes).map_err(|e| ClientError::Unexpected(e.to_string()))
}

/// New maps for a subscriber: a whole map when it was too far behind, then incrementals.
#[derive(Clone, Debug)]
pub struct MapUpdate {
    /// A whole map.
    pub full: Option<ClusterMap>,
    /// Incrementals after `full` or after the subscriber's epoch, in order.
    pub incrementals: Vec<Incremental>,
}

impl MapUpdate {
    fn decode(
        full: Option<serde_bytes::ByteBuf>,
        incrementals: Vec<serde_bytes::ByteBuf>,
    ) -> Result<Option<MapUpdate>, ClientError> {
        if full.is_none() && incrementals.is_empty() {
            return Ok(None);
        }
        let full = full.map(|bytes| decode_map(&bytes)).transpose()?;
        let incrementals = incrementals
            .iter()
            .map(|bytes| {
                tidepool_placement::encoding::decode(bytes)
                    .map_err(|e| ClientError::Unexpected(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(MapUpdate { full, incrementals }))
    }

    /// The map after this update, from `current` (the subscriber's map, if any).
    pub fn apply(self, current: Option<&ClusterMap>) -> Result<ClusterMap, ClientError> {
        let mut map = match (self.full, current) {
            (Some(full), _) => full,
            (None, Some(current)) => current.clone(),
            (None, None) => {
                return Err(ClientError::Unexpected(
                    "incrementals without a map to apply them to".into(),
                ))
            }
        };
        for incremental in &self.incrementals {
            if incremental.epoch <= map.epoch {
                continue;
            }
            map = map
                .apply(incremental)
                .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        }
        Ok(map)
    }
}

/// The monitor most likely to lead, from what each said (`None`: it did not answer): of the
/// monitors that claim to lead, one that holds a majority's leases (it answers reads) first,
/// then the one most monitors follow, then the newest commit. A leader cut off from the others
/// goes on claiming to lead until it hears of a newer one, but its leases lapse and the others
/// follow someone else. With no claim, the one most monitors name.
fn likely_leader(statuses: &[Option<MonStatus>]) -> Option<Rank> {
    let answered: Vec<&MonStatus> = statuses.iter().flatten().collect();
    let followers = |rank: Rank| answered.iter().filter(|s| s.leader == Some(rank)).count();
    let claimed = answered
        .iter()
        .filter(|s| s.leader == Some(s.rank))
        .max_by_key(|s| {
            (
                s.readable,
                followers(s.rank),
                s.commit,
                std::cmp::Reverse(s.rank),
            )
        })
        .map(|s| s.rank);
    claimed.or_else(|| {
        answered
            .iter()
            .filter_map(|s| s.leader)
            .max_by_key(|rank| (followers(*rank), std::cmp::Reverse(*rank)))
            .or_else(|| answered.first().map(|s| s.rank))
    })
}

#[cfg(test)]
mod leader_tests {
    use super::*;
    use tidepool_placement::Epoch;

    fn status(rank: Rank, leader: Option<Rank>, readable: bool, commit: u64) -> Option<MonStatus> {
        Some(MonStatus {
            rank,
            leader,
            readable,
            commit,
            epoch: Epoch(commit),
            map_digest: 0,
        })
    }

    #[test]
    fn a_leader_cut_off_from_the_quorum_is_not_the_one_asked() {
        // mon.0 still claims to lead, alone and behind; mon.1 leads mon.2.
        let statuses = [
            status(0, Some(0), false, 92),
            status(1, Some(1), true, 99),
            status(2, Some(1), true, 99),
        ];
        assert_eq!(likely_leader(&statuses), Some(1));
        // Even before mon.1's lease shows and with equal commits, two follow mon.1.
        let statuses = [
            status(0, Some(0), false, 99),
            status(1, Some(1), false, 99),
            status(2, Some(1), false, 99),
        ];
        assert_eq!(likely_leader(&statuses), Some(1));
        // mon.1 did not answer: the one mon.2 follows.
        let statuses = [status(0, None, false, 5), None, status(2, Some(1), true, 9)];
        assert_eq!(likely_leader(&statuses), Some(1));
        // Nobody leads yet.
        assert_eq!(
            likely_leader(&[None, status(1, None, false, 1), None]),
            Some(1)
        );
        assert_eq!(likely_leader(&[None, None, None]), None);
    }
}
