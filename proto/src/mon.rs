//! The monitor protocol: what admin tools, OSDs, gateways and clients ask the monitors, and
//! what they answer. Map changes are [`Command`]s, made exactly once through a client id and
//! a sequence number ([`Request`]).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tidepool_placement::{BucketType, Epoch, OsdId, PgActivation, PgId, PoolKind, Weight};

/// A monitor's position in the monitor map, `0..members`; lower ranks are preferred leaders.
pub type Rank = u8;

/// The monitors of a cluster: rank `i` listens at `addrs[i]`. Written by `cluster init` to
/// `monmap.json` in the cluster folder, where an address may also be a name (`HOST:PORT`,
/// such as a Kubernetes service's), resolved each time the file is read.
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

    /// The certificate name of the monitor of `rank`.
    pub fn entity(rank: Rank) -> String {
        format!("mon-{rank}")
    }

    /// Parses the file's bytes, resolving names with the system's resolver.
    pub fn parse(bytes: &[u8]) -> Result<MonMap, String> {
        MonMap::parse_with(bytes, resolve)
    }

    /// Parses the file's bytes, resolving names (entries that are not socket addresses) with
    /// `resolve`.
    pub fn parse_with(
        bytes: &[u8],
        resolve: impl Fn(&str) -> Result<SocketAddr, String>,
    ) -> Result<MonMap, String> {
        #[derive(Deserialize)]
        struct File {
            version: u32,
            addrs: Vec<String>,
        }
        let file: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let map = MonMap {
            version: file.version,
            addrs: file
                .addrs
                .iter()
                .map(|text| text.parse().or_else(|_| resolve(text)))
                .collect::<Result<_, _>>()?,
        };
        if map.addrs.is_empty() || map.addrs.len() > 5 || map.addrs.len().is_multiple_of(2) {
            return Err(format!(
                "a cluster has 1, 3 or 5 monitors, not {}",
                map.addrs.len()
            ));
        }
        Ok(map)
    }

    /// Where a client of these monitors binds: any address of their family, any port, so
    /// that it reaches monitors and OSDs on other hosts as well as on loopback.
    pub fn client_bind(&self) -> SocketAddr {
        let any: std::net::IpAddr = match self.addrs.first() {
            Some(SocketAddr::V6(_)) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            _ => std::net::Ipv4Addr::UNSPECIFIED.into(),
        };
        SocketAddr::new(any, 0)
    }
}

/// `HOST:PORT` resolved to one address (the first the resolver gives).
pub fn resolve(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    check_host_port(text)?;
    text.to_socket_addrs()
        .map_err(|e| format!("monitor {text}: {e}"))?
        .next()
        .ok_or_else(|| format!("monitor {text}: the name resolves to no address"))
}

/// Whether `text` has the form `HOST:PORT` (an address or a name, and a port).
pub fn check_host_port(text: &str) -> Result<(), String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("{text:?} is not HOST:PORT")),
    }
}

/// A change an operator, an OSD or the leader's failure policy asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Creates a pool under the root `default`.
    PoolCreate {
        /// Unique name.
        name: String,
        /// Replication or erasure coding.
        kind: PoolKind,
        /// Placement groups.
        pg_num: u32,
        /// No two copies share a bucket of this type.
        failure_domain: BucketType,
    },
    /// Removes a pool.
    PoolRemove {
        /// Its name.
        name: String,
    },
    /// Creates a bucket (a host, rack or zone) under `parent` (default: the root `default`).
    BucketCreate {
        /// Unique name.
        name: String,
        /// Its level.
        kind: BucketType,
        /// The bucket it sits in.
        parent: Option<String>,
    },
    /// Creates an OSD in `host` (created under the root when new); it starts down and in.
    OsdCreate {
        /// The host bucket.
        host: String,
        /// Its weight.
        weight: Weight,
    },
    /// An OSD started and listens at `addr`: it is marked up (and in again, if the failure
    /// policy had marked it out).
    OsdBoot {
        /// The OSD.
        id: OsdId,
        /// Where it listens.
        addr: String,
    },
    /// Marks an OSD down (failure reports or missed beacons).
    OsdDown {
        /// The OSD.
        id: OsdId,
    },
    /// Marks an OSD out: it is given no data.
    OsdOut {
        /// The OSD.
        id: OsdId,
    },
    /// Marks an OSD out because it stayed down for `mon_osd_down_out_interval`; it comes back
    /// in on its own when it boots again.
    OsdAutoOut {
        /// The OSD.
        id: OsdId,
    },
    /// Marks an OSD's disk full, or not full (the leader's fullness policy, from beacons).
    OsdFull {
        /// The OSD.
        id: OsdId,
        /// Full or not.
        full: bool,
    },
    /// Marks an OSD in.
    OsdIn {
        /// The OSD.
        id: OsdId,
    },
    /// Changes an OSD's weight.
    OsdReweight {
        /// The OSD.
        id: OsdId,
        /// The new weight.
        weight: Weight,
    },
    /// Moves an OSD to another bucket.
    OsdMove {
        /// The OSD.
        id: OsdId,
        /// The bucket's name.
        bucket: String,
    },
    /// Removes an OSD, which must be down.
    OsdRemove {
        /// The OSD.
        id: OsdId,
    },
    /// Adds a user with keys the requester generated.
    UserCreate(User),
    /// Removes a user.
    UserRemove {
        /// Its name.
        name: String,
    },
    /// From PG primaries: for each PG, let the OSDs listed serve it instead of its placement
    /// while new holders backfill (`pg_temp`, primary first); an empty list gives the PG back
    /// to its placement. One command for many PGs, so a map change costs one new epoch.
    PgTemp(Vec<(PgId, Vec<OsdId>)>),
    /// From PGs' primaries: record that each PG peered in this interval and goes active. An
    /// entry is recorded only while the PG's acting set is still the one given and no newer
    /// activation is recorded; refused when no entry is.
    PgActive(Vec<(PgId, PgActivation)>),
    /// Sets a cluster-wide option (see [`crate::config`]).
    ConfigSet {
        /// The option.
        key: String,
        /// Its new value, as text.
        value: String,
    },
}

/// A user of the S3 gateway and its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Unique name.
    pub name: String,
    /// The access key id (unique over users).
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
}

/// A command with the identity that makes retries safe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Who asks (an entity name, plus a per-process nonce).
    pub client: String,
    /// Grows by one per request of that client.
    pub sequence: u64,
    /// What is asked.
    pub command: Command,
}

/// The result of a command that applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The epoch of the map that holds the change.
    pub epoch: Epoch,
    /// The OSD or pool the command created, when it created one.
    pub created: Option<u32>,
}

/// Why a command did not apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// A pool, bucket or user of that name exists.
    #[error("{0} already exists")]
    Exists(String),
    /// No pool, bucket, OSD or user of that name or id.
    #[error("{0} does not exist")]
    Missing(String),
    /// An OSD must be down before it is removed.
    #[error("osd.{0} is up; stop it (or wait until it is marked down) before removing it")]
    OsdUp(u32),
    /// The change would make the map invalid.
    #[error("invalid change: {0}")]
    Invalid(String),
    /// The proposal bytes are not a request.
    #[error("malformed request")]
    Malformed,
}

/// One monitor's view of consensus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonStatus {
    /// Its rank.
    pub rank: Rank,
    /// The leader it follows.
    pub leader: Option<Rank>,
    /// Whether it holds a lease and answers reads.
    pub readable: bool,
    /// Its commit index.
    pub commit: u64,
    /// Its map epoch.
    pub epoch: Epoch,
    /// A digest of its whole map (FNV-1a over the encoding): monitors with equal epochs must
    /// report equal digests.
    pub map_digest: u64,
}

/// What one OSD reports about itself and the placement groups it leads, every beacon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    /// The OSD.
    pub osd: OsdId,
    /// The map epoch it runs.
    pub epoch: Epoch,
    /// Its disk.
    pub stat: OsdStat,
    /// The placement groups it is primary for.
    pub pgs: Vec<PgStat>,
}

/// An OSD's disk usage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsdStat {
    /// Capacity of its disk in bytes.
    pub total_bytes: u64,
    /// Bytes free on its disk (other programs may share the disk).
    pub available_bytes: u64,
    /// Bytes of object data its store holds.
    pub used_bytes: u64,
    /// Placement groups it holds.
    pub pgs: u32,
    /// Its traffic over the last beacon interval.
    #[serde(default)]
    pub io: IoRates,
    /// The map epoch it ran when it reported.
    #[serde(default)]
    pub epoch: Epoch,
    /// Copies and shards its reads found bad (failing their checksums) and served around,
    /// since it started.
    #[serde(default)]
    pub bad_reads: u64,
}

/// Traffic rates of one OSD, averaged over its last beacon interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoRates {
    /// Client bytes read per second (as primary).
    pub read_bytes_per_sec: u64,
    /// Client bytes written per second (as primary).
    pub write_bytes_per_sec: u64,
    /// Client object transactions per second (as primary).
    pub ops_per_sec: u64,
    /// Bytes copied to other holders by recovery and backfill per second.
    pub recovery_bytes_per_sec: u64,
    /// Objects copied by recovery and backfill per second.
    pub recovery_objects_per_sec: u64,
}

/// Whether a PG state in Ceph's words (`active+clean`) holds `word`.
pub fn state_has(state: &str, word: &str) -> bool {
    state.split('+').any(|part| part == word)
}

/// Whether a PG in `state` is active and clean.
pub fn is_active_clean(state: &str) -> bool {
    state_has(state, "active") && state_has(state, "clean")
}

/// A placement group's state as its primary reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgStat {
    /// The placement group.
    pub pg: PgId,
    /// Its state in Ceph's words, joined by `+` (`active+clean`, `active+recovering`, …).
    pub state: String,
    /// Objects in it.
    pub objects: u64,
    /// Bytes in it.
    pub bytes: u64,
    /// Object copies missing from some holder.
    pub degraded: u64,
    /// Object copies on a holder that is not where placement wants them.
    pub misplaced: u64,
    /// The OSDs placement puts it on (up), in order.
    #[serde(default)]
    pub up: Vec<OsdId>,
    /// The OSDs serving it (acting), primary first.
    #[serde(default)]
    pub acting: Vec<OsdId>,
    /// The map epoch of the report.
    pub epoch: Epoch,
    /// While the PG is `down`: the OSDs of its last active interval that peering waits for
    /// (one of them must come back, or be removed from the map as lost).
    #[serde(default)]
    pub waiting_for: Vec<OsdId>,
    /// When its last scrub finished (seconds since the Unix epoch; before its first, when its
    /// primary began to track it).
    #[serde(default)]
    pub last_scrub: u64,
    /// When its last deep scrub finished (likewise).
    #[serde(default)]
    pub last_deep_scrub: u64,
    /// Inconsistencies its scrubs found and that are not repaired.
    #[serde(default)]
    pub scrub_errors: u64,
    /// Objects among them with no provably good copy.
    #[serde(default)]
    pub unrepairable: u64,
}

/// The cluster's reported state, as the leader last heard it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Per OSD, its latest disk usage.
    pub osds: Vec<(OsdId, OsdStat)>,
    /// Per placement group, its primary's latest report.
    pub pgs: Vec<PgStat>,
}

/// Requests a monitor serves.
#[derive(Debug, Serialize, Deserialize)]
pub enum MonRequest {
    /// Consensus traffic between monitors (one-way), encoded by the monitors.
    Peer {
        /// The sender's rank.
        from: Rank,
        /// The encoded message.
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// A map change; answered once committed (or with the leader to ask instead).
    Command(Request),
    /// The current map.
    GetMap,
    /// This monitor's view of consensus.
    Status,
    /// The maps after epoch `have`: answered at once when there are some, otherwise held until
    /// the next epoch commits or `wait_ms` passes.
    Subscribe {
        /// The epoch the subscriber holds (0 for none).
        have: Epoch,
        /// How long the monitor may hold the request.
        wait_ms: u64,
    },
    /// An OSD is alive, with its statistics (sent to the leader).
    Beacon(Beacon),
    /// `reporter` has not heard from `target` within the heartbeat grace (sent to the leader).
    Failure {
        /// The reporting OSD.
        reporter: OsdId,
        /// The silent OSD.
        target: OsdId,
        /// The reporter's map epoch.
        epoch: Epoch,
    },
    /// The cluster's reported state (from the leader).
    GetReport,
    /// The users and their keys (admins and gateways only).
    GetUsers,
    /// The cluster-wide options that were set.
    GetConfig,
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
    /// This monitor holds no lease now; ask another.
    NotReadable {
        /// The leader, when known.
        leader: Option<Rank>,
    },
    /// The current map, in the versioned encoding.
    Map(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Maps for a subscriber: the whole map when it is too far behind (or holds none), then
    /// incrementals in epoch order; both empty when nothing changed.
    Maps {
        /// A whole map, in the versioned encoding.
        full: Option<serde_bytes::ByteBuf>,
        /// Incrementals after `full` (or after the subscriber's epoch), in the versioned encoding.
        incrementals: Vec<serde_bytes::ByteBuf>,
    },
    /// This monitor's view.
    Status(MonStatus),
    /// The cluster's reported state.
    Report(Report),
    /// The users.
    Users(Vec<User>),
    /// The options that were set.
    Config(Vec<(String, String)>),
    /// Taken.
    Ack,
    /// Refused: the requester may not ask this.
    Denied,
    /// The monitor cannot take more right now.
    Busy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_map_holds_addresses_and_names() {
        let file =
            br#"{"version":1,"addrs":["198.18.0.11:6789","mon-1.tidepool.svc:6789","[::1]:6789"]}"#;
        let map = MonMap::parse_with(file, |name| {
            assert_eq!(name, "mon-1.tidepool.svc:6789");
            Ok("10.96.0.7:6789".parse().expect("address"))
        })
        .expect("parses");
        let addrs: Vec<String> = map.addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["198.18.0.11:6789", "10.96.0.7:6789", "[::1]:6789"]);
        let unresolved = MonMap::parse_with(file, |name| Err(format!("{name}: unknown")));
        assert_eq!(
            unresolved,
            Err("mon-1.tidepool.svc:6789: unknown".to_owned())
        );
        assert!(MonMap::parse(br#"{"version":1,"addrs":["nonsense"]}"#).is_err());
        assert!(MonMap::parse(br#"{"version":1,"addrs":["127.0.0.1:1","127.0.0.1:2"]}"#).is_err());
    }

    #[test]
    fn host_and_port_are_checked() {
        assert!(check_host_port("mon-0.tidepool.svc:6789").is_ok());
        assert!(check_host_port("198.18.0.11:6789").is_ok());
        for bad in ["mon-0", ":6789", "mon-0:", "mon-0:0", "mon-0:99999"] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }
}
