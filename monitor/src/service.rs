//! The map service's replicated state machine: the commands of each committed slot, applied in
//! order on every monitor, turn the cluster map of epoch N into epoch N + 1.
//!
//! Pure and deterministic: every monitor applies the same slots and reaches the same map. A
//! command that cannot apply (a pool that exists, an OSD that does not) fails alone and changes
//! nothing; the others in the slot still apply. Requests carry a client id and a sequence
//! number, so a client that resends after a leader change gets the first answer back instead of
//! a second change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tidepool_placement::generate::ROOT_NAME;
use tidepool_placement::{
    Bucket, BucketType, Change, ClusterMap, Epoch, Incremental, Osd, OsdId, Pool, PoolId, PoolKind,
    Rule, Weight,
};

use crate::paxos::Proposal;

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
    /// An OSD started and listens at `addr`: it is marked up.
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

impl Request {
    /// Encodes the request as a consensus proposal.
    pub fn to_proposal(&self) -> Proposal {
        Proposal(rmp_serde::to_vec_named(self).expect("requests always encode"))
    }
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
    /// A pool or bucket of that name exists.
    #[error("{0} already exists")]
    Exists(String),
    /// No pool, bucket or OSD of that name or id.
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

/// The replicated state: the map and the answers already given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapState {
    /// The current cluster map.
    pub map: ClusterMap,
    /// The last sequence number applied per client, with its answer.
    pub answered: BTreeMap<String, (u64, Result<Outcome, CommandError>)>,
}

impl MapState {
    /// The state before the first slot: epoch 0, an empty root `default`.
    pub fn genesis() -> MapState {
        let mut map = ClusterMap::default();
        let root = Bucket {
            id: tidepool_placement::BucketId(0),
            name: ROOT_NAME.to_owned(),
            kind: BucketType::Root,
            parent: None,
        };
        map.buckets.insert(root.id, root);
        MapState {
            map,
            answered: BTreeMap::new(),
        }
    }

    /// Applies one committed slot: returns the incremental it produced (none when nothing
    /// changed) and one answer per proposal, in order.
    pub fn apply_slot(
        &mut self,
        proposals: &[Proposal],
    ) -> (Option<Incremental>, Vec<Result<Outcome, CommandError>>) {
        let epoch = self.map.epoch.next();
        let mut working = self.map.clone();
        let mut changes = Vec::new();
        let mut answers = Vec::with_capacity(proposals.len());
        for proposal in proposals {
            let Ok(request) = rmp_serde::from_slice::<Request>(&proposal.0) else {
                answers.push(Err(CommandError::Malformed));
                continue;
            };
            if let Some((sequence, answer)) = self.answered.get(&request.client) {
                if request.sequence <= *sequence {
                    // A resend of something already applied: the first answer stands (older
                    // ones than the last are not kept and are answered as the last).
                    answers.push(answer.clone());
                    continue;
                }
            }
            let answer = plan(&working, &request.command).and_then(|(new_changes, created)| {
                let next = working
                    .with_changes(&new_changes)
                    .map_err(|e| CommandError::Invalid(e.to_string()))?;
                working = next;
                changes.extend(new_changes);
                Ok(Outcome { epoch, created })
            });
            self.answered
                .insert(request.client, (request.sequence, answer.clone()));
            answers.push(answer);
        }
        if changes.is_empty() {
            return (None, answers);
        }
        let incremental = Incremental { epoch, changes };
        working.epoch = epoch;
        self.map = working;
        (Some(incremental), answers)
    }
}

/// The changes a command makes to `map`, and the id it creates.
fn plan(map: &ClusterMap, command: &Command) -> Result<(Vec<Change>, Option<u32>), CommandError> {
    let osd = |id: OsdId| -> Result<&Osd, CommandError> {
        map.osds
            .get(&id)
            .ok_or_else(|| CommandError::Missing(id.to_string()))
    };
    let bucket = |name: &str| -> Result<&Bucket, CommandError> {
        map.bucket_by_name(name)
            .ok_or_else(|| CommandError::Missing(format!("bucket {name:?}")))
    };
    let root = || bucket(ROOT_NAME).map(|b| b.id);
    Ok(match command {
        Command::PoolCreate {
            name,
            kind,
            pg_num,
            failure_domain,
        } => {
            if map.pool_by_name(name).is_some() {
                return Err(CommandError::Exists(format!("pool {name:?}")));
            }
            let id: PoolId = map.next_pool_id();
            let pool = Pool {
                id,
                name: name.clone(),
                kind: *kind,
                pg_num: *pg_num,
                rule: Rule {
                    root: root()?,
                    failure_domain: *failure_domain,
                },
            };
            (vec![Change::CreatePool(pool)], Some(id.0))
        }
        Command::PoolRemove { name } => {
            let pool = map
                .pool_by_name(name)
                .ok_or_else(|| CommandError::Missing(format!("pool {name:?}")))?;
            (vec![Change::RemovePool(pool.id)], None)
        }
        Command::BucketCreate { name, kind, parent } => {
            if map.bucket_by_name(name).is_some() {
                return Err(CommandError::Exists(format!("bucket {name:?}")));
            }
            let parent = match parent {
                Some(parent) => bucket(parent)?.id,
                None => root()?,
            };
            let id = map.next_bucket_id();
            let new = Bucket {
                id,
                name: name.clone(),
                kind: *kind,
                parent: Some(parent),
            };
            (vec![Change::AddBucket(new)], Some(id.0))
        }
        Command::OsdCreate { host, weight } => {
            let (id, mut changes) = tidepool_placement::generate::add_osd(map, host, *weight);
            for change in &mut changes {
                if let Change::AddOsd(osd) = change {
                    osd.up = false;
                }
            }
            (changes, Some(id.0))
        }
        Command::OsdBoot { id, addr } => {
            osd(*id)?;
            let changes = vec![
                Change::SetOsdAddr {
                    id: *id,
                    addr: Some(addr.clone()),
                },
                Change::SetOsdUp { id: *id, up: true },
            ];
            (changes, None)
        }
        Command::OsdDown { id } => {
            osd(*id)?;
            (vec![Change::SetOsdUp { id: *id, up: false }], None)
        }
        Command::OsdOut { id } | Command::OsdIn { id } => {
            osd(*id)?;
            let is_in = matches!(command, Command::OsdIn { .. });
            (vec![Change::SetOsdIn { id: *id, is_in }], None)
        }
        Command::OsdReweight { id, weight } => {
            osd(*id)?;
            let change = Change::SetOsdWeight {
                id: *id,
                weight: *weight,
            };
            (vec![change], None)
        }
        Command::OsdMove { id, bucket: name } => {
            osd(*id)?;
            let parent = bucket(name)?.id;
            (vec![Change::MoveOsd { id: *id, parent }], None)
        }
        Command::OsdRemove { id } => {
            if osd(*id)?.up {
                return Err(CommandError::OsdUp(id.0));
            }
            (vec![Change::RemoveOsd(*id)], None)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(client: &str, sequence: u64, command: Command) -> Proposal {
        Request {
            client: client.to_owned(),
            sequence,
            command,
        }
        .to_proposal()
    }

    fn pool(name: &str) -> Command {
        Command::PoolCreate {
            name: name.to_owned(),
            kind: PoolKind::Replicated {
                size: 3,
                min_size: 2,
            },
            pg_num: 64,
            failure_domain: BucketType::Osd,
        }
    }

    /// Rule: a slot's commands apply in order into one new epoch; a failing command changes
    /// nothing and does not stop the others.
    #[test]
    fn a_slot_makes_one_epoch() {
        let mut state = MapState::genesis();
        let (incremental, answers) = state.apply_slot(&[
            request("a", 1, pool("data")),
            request("b", 1, pool("data")),
            request(
                "c",
                1,
                Command::OsdCreate {
                    host: "host0".into(),
                    weight: Weight::ONE,
                },
            ),
            Proposal(vec![0xc1]),
        ]);
        assert_eq!(incremental.expect("changes").epoch, Epoch(1));
        assert_eq!(state.map.epoch, Epoch(1));
        assert_eq!(
            answers[0],
            Ok(Outcome {
                epoch: Epoch(1),
                created: Some(1)
            })
        );
        assert!(matches!(answers[1], Err(CommandError::Exists(_))));
        assert_eq!(answers[2].as_ref().expect("osd").created, Some(0));
        assert_eq!(answers[3], Err(CommandError::Malformed));
        assert!(
            !state.map.osds[&OsdId(0)].up,
            "a new OSD is down until it boots"
        );

        let (nothing, answers) = state.apply_slot(&[request("d", 1, pool("data"))]);
        assert!(
            nothing.is_none(),
            "a slot that changes nothing makes no epoch"
        );
        assert_eq!(state.map.epoch, Epoch(1));
        assert!(answers[0].is_err());
    }

    /// Rule: a resent request gets its first answer and changes nothing again.
    #[test]
    fn resends_apply_once() {
        let mut state = MapState::genesis();
        let first = state.apply_slot(&[request("a", 1, pool("data"))]).1;
        let (again, second) = state.apply_slot(&[request("a", 1, pool("data"))]);
        assert!(again.is_none());
        assert_eq!(first, second);
        assert_eq!(state.map.pools.len(), 1);
    }

    /// Rule: an OSD is removed only when down; boot marks it up at its address.
    #[test]
    fn osd_lifecycle() {
        let mut state = MapState::genesis();
        let create = Command::OsdCreate {
            host: "host0".into(),
            weight: Weight::ONE,
        };
        state.apply_slot(&[request("a", 1, create)]);
        let boot = Command::OsdBoot {
            id: OsdId(0),
            addr: "127.0.0.1:6800".into(),
        };
        state.apply_slot(&[request("osd", 1, boot)]);
        assert!(state.map.osds[&OsdId(0)].up);
        let refused = state.apply_slot(&[request("a", 2, Command::OsdRemove { id: OsdId(0) })]);
        assert_eq!(refused.1[0], Err(CommandError::OsdUp(0)));
        state.apply_slot(&[request("mon", 1, Command::OsdDown { id: OsdId(0) })]);
        let removed = state.apply_slot(&[request("a", 3, Command::OsdRemove { id: OsdId(0) })]);
        assert!(removed.1[0].is_ok());
        assert!(state.map.osds.is_empty());
    }

    /// Rule: every monitor applying the same slots reaches the same map (determinism).
    #[test]
    fn same_slots_same_map() {
        let slots = vec![
            vec![request("a", 1, pool("data")), request("b", 1, pool("meta"))],
            vec![request(
                "a",
                2,
                Command::BucketCreate {
                    name: "rack1".into(),
                    kind: BucketType::Rack,
                    parent: None,
                },
            )],
        ];
        let run = || {
            let mut state = MapState::genesis();
            for slot in &slots {
                state.apply_slot(slot);
            }
            state
        };
        assert_eq!(run(), run());
        assert_eq!(run().map.epoch, Epoch(2));
    }
}
