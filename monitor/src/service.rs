//! The map service's replicated state machine: the commands of each committed slot, applied in
//! order on every monitor, turn the cluster map of epoch N into epoch N + 1.
//!
//! Pure and deterministic: every monitor applies the same slots and reaches the same map. A
//! command that cannot apply (a pool that exists, an OSD that does not) fails alone and changes
//! nothing; the others in the slot still apply. Requests carry a client id and a sequence
//! number, so a client that resends after a leader change gets the first answer back instead of
//! a second change.

use std::collections::BTreeMap;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tidepool_placement::generate::ROOT_NAME;
use tidepool_placement::{
    Bucket, BucketType, Change, ClusterMap, Incremental, Osd, OsdId, Placement, Pool, PoolId,
    PoolKind, Rule, Scratch,
};
pub use tidepool_proto::mon::{Command, CommandError, Outcome, Request, User};

use crate::paxos::Proposal;

/// The proposal that carries `request` through consensus.
pub fn proposal(request: &Request) -> Proposal {
    Proposal(rmp_serde::to_vec_named(request).expect("requests always encode"))
}

/// The replicated state: the map, what lives beside it, and the answers already given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapState {
    /// The current cluster map.
    pub map: ClusterMap,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Cluster-wide options that were set, by name (checked by `tidepool_proto::config`).
    pub config: BTreeMap<String, String>,
    /// OSDs the failure policy marked out; they come back in when they boot.
    pub auto_out: BTreeSet<OsdId>,
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
            users: BTreeMap::new(),
            config: BTreeMap::new(),
            auto_out: BTreeSet::new(),
            answered: BTreeMap::new(),
        }
    }

    /// The value of option `name` (its default when not set).
    pub fn option(&self, name: &str) -> u64 {
        tidepool_proto::config::get(
            self.config.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            name,
        )
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
            let answer =
                plan(self, &working, &request.command).and_then(|(new_changes, created)| {
                    let next = working
                        .with_changes(&new_changes)
                        .map_err(|e| CommandError::Invalid(e.to_string()))?;
                    working = next;
                    changes.extend(new_changes);
                    self.record(&request.command);
                    Ok(Outcome { epoch, created })
                });
            self.answered
                .insert(request.client, (request.sequence, answer.clone()));
            answers.push(answer);
        }
        if changes.is_empty() {
            // Users and options change beside the map: no new epoch.
            return (None, answers);
        }
        let incremental = Incremental { epoch, changes };
        working.epoch = epoch;
        self.map = working;
        (Some(incremental), answers)
    }

    /// Records what a command that applied changes beside the map.
    fn record(&mut self, command: &Command) {
        match command {
            Command::UserCreate(user) => {
                self.users.insert(user.name.clone(), user.clone());
            }
            Command::UserRemove { name } => {
                self.users.remove(name);
            }
            Command::ConfigSet { key, value } => {
                self.config.insert(key.clone(), value.clone());
            }
            Command::OsdAutoOut { id } => {
                self.auto_out.insert(*id);
            }
            Command::OsdBoot { id, .. }
            | Command::OsdIn { id }
            | Command::OsdOut { id }
            | Command::OsdRemove { id } => {
                self.auto_out.remove(id);
            }
            _ => {}
        }
    }
}

/// The changes `command` makes to `map` (the working map of the slot), and the id it creates;
/// checks what lives beside the map in `state` too.
fn plan(
    state: &MapState,
    map: &ClusterMap,
    command: &Command,
) -> Result<(Vec<Change>, Option<u32>), CommandError> {
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
            if let PoolKind::Erasure { k, m, .. } = kind {
                // Each shard in a failure domain of its own, as placement will put them.
                let domains: std::collections::BTreeSet<_> = map
                    .osds
                    .values()
                    .filter(|o| o.is_in)
                    .filter_map(|o| map.ancestor(o.id, *failure_domain))
                    .collect();
                let need = usize::from(*k) + usize::from(*m);
                if domains.len() < need {
                    return Err(CommandError::Invalid(format!(
                        "erasure {k}+{m} puts its {need} shards in {need} different {}s, and the map has {} (in); add OSDs or choose a smaller profile or another failure domain",
                        failure_domain.name(),
                        domains.len()
                    )));
                }
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
            let mut changes = vec![
                Change::SetOsdAddr {
                    id: *id,
                    addr: Some(addr.clone()),
                },
                Change::SetOsdUp { id: *id, up: true },
            ];
            if state.auto_out.contains(id) {
                changes.push(Change::SetOsdIn {
                    id: *id,
                    is_in: true,
                });
            }
            (changes, None)
        }
        Command::OsdDown { id } => {
            osd(*id)?;
            (vec![Change::SetOsdUp { id: *id, up: false }], None)
        }
        Command::OsdFull { id, full } => {
            osd(*id)?;
            (
                vec![Change::SetOsdFull {
                    id: *id,
                    full: *full,
                }],
                None,
            )
        }
        Command::OsdOut { id } | Command::OsdAutoOut { id } | Command::OsdIn { id } => {
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
        Command::UserCreate(user) => {
            if state.users.contains_key(&user.name) {
                return Err(CommandError::Exists(format!("user {:?}", user.name)));
            }
            if state
                .users
                .values()
                .any(|u| u.access_key == user.access_key)
            {
                return Err(CommandError::Exists(format!(
                    "access key {:?}",
                    user.access_key
                )));
            }
            let valid = |key: &str| {
                (16..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
            };
            if user.name.is_empty() || !valid(&user.access_key) || !valid(&user.secret_key) {
                return Err(CommandError::Invalid(
                    "a user needs a name and keys of 16 to 128 printable characters".into(),
                ));
            }
            (Vec::new(), None)
        }
        Command::UserRemove { name } => {
            if !state.users.contains_key(name) {
                return Err(CommandError::Missing(format!("user {name:?}")));
            }
            (Vec::new(), None)
        }
        Command::ConfigSet { key, value } => {
            tidepool_proto::config::check(key, value).map_err(CommandError::Invalid)?;
            (Vec::new(), None)
        }
        Command::PgTemp(entries) => {
            let mut changes = Vec::new();
            let mut placement: Option<Placement> = None;
            for (pg, osds) in entries {
                let pool = map
                    .pools
                    .get(&pg.pool)
                    .filter(|pool| pg.seed < pool.pg_num)
                    .ok_or_else(|| CommandError::Missing(format!("PG {pg}")))?;
                for id in osds {
                    osd(*id)?;
                }
                let distinct: BTreeSet<_> = osds.iter().collect();
                if distinct.len() != osds.len() || osds.len() > pool.kind.width() {
                    return Err(CommandError::Invalid(format!(
                        "pg_temp for {pg} must name at most {} distinct OSDs",
                        pool.kind.width()
                    )));
                }
                let wanted: Vec<Option<OsdId>> = match pool.kind {
                    // Positional: an erasure PG's shards differ per position, so each OSD
                    // named keeps its place in the PG's placement, and a position whose OSD
                    // is not named (it is backfilling) is left empty.
                    PoolKind::Erasure { .. } if !osds.is_empty() => placement
                        .get_or_insert_with(|| Placement::new(map))
                        .map_pg(*pg, &mut Scratch::default())
                        .map(|mapping| mapping.raw)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|slot| slot.filter(|o| osds.contains(o)))
                        .collect(),
                    _ => osds.iter().map(|&o| Some(o)).collect(),
                };
                match (map.pg_temp.get(pg), osds.is_empty()) {
                    (None, true) => {}
                    (Some(_), true) => changes.push(Change::ClearPgTemp(*pg)),
                    (Some(current), false) if *current == wanted => {}
                    (_, false) => changes.push(Change::SetPgTemp {
                        pg: *pg,
                        osds: wanted,
                    }),
                }
            }
            (changes, None)
        }
        Command::PgActive(entries) => {
            let placement = Placement::new(map);
            let mut scratch = Scratch::default();
            let changes: Vec<Change> = entries
                .iter()
                .filter(|(pg, activation)| {
                    let current = placement
                        .map_pg(*pg, &mut scratch)
                        .map(|m| m.acting.into_iter().flatten().collect::<Vec<OsdId>>());
                    let newer = map
                        .pg_active
                        .get(pg)
                        .is_none_or(|recorded| recorded.epoch < activation.epoch);
                    current.as_ref() == Some(&activation.acting)
                        && newer
                        && activation.epoch <= map.epoch
                })
                .map(|(pg, activation)| Change::SetPgActive {
                    pg: *pg,
                    activation: activation.clone(),
                })
                .collect();
            if changes.is_empty() {
                return Err(CommandError::Invalid(
                    "no activation applies: the PGs' acting sets changed".into(),
                ));
            }
            (changes, None)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidepool_placement::{Epoch, PoolKind, Weight};

    fn request(client: &str, sequence: u64, command: Command) -> Proposal {
        Request {
            client: client.to_owned(),
            sequence,
            command,
        }
        .to_proposal()
    }

    trait ToProposal {
        fn to_proposal(&self) -> Proposal;
    }

    impl ToProposal for Request {
        fn to_proposal(&self) -> Proposal {
            proposal(self)
        }
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

    /// Rule: the pg_temp of an erasure PG is positional: each OSD named keeps its place in the
    /// PG's placement, and the position of an OSD not named is left empty.
    #[test]
    fn erasure_pg_temp_keeps_positions() {
        let mut state = MapState::genesis();
        let mut setup = Vec::new();
        for n in 0..4 {
            setup.push(request(
                "s",
                n + 1,
                Command::OsdCreate {
                    host: "host0".into(),
                    weight: Weight::ONE,
                },
            ));
        }
        setup.push(request(
            "s",
            5,
            Command::PoolCreate {
                name: "ec".into(),
                kind: PoolKind::erasure(2, 1),
                pg_num: 8,
                failure_domain: BucketType::Osd,
            },
        ));
        state.apply_slot(&setup);
        let pool = state.map.pool_by_name("ec").expect("pool").id;
        let pg = tidepool_placement::PgId { pool, seed: 3 };
        let raw = Placement::new(&state.map)
            .map_pg(pg, &mut Scratch::default())
            .expect("mapping")
            .raw;
        let named: Vec<OsdId> = raw.iter().flatten().rev().take(2).copied().collect();
        let (_, answers) =
            state.apply_slot(&[request("p", 1, Command::PgTemp(vec![(pg, named.clone())]))]);
        assert!(answers[0].is_ok());
        let want: Vec<Option<OsdId>> = raw
            .iter()
            .map(|slot| slot.filter(|o| named.contains(o)))
            .collect();
        assert_eq!(state.map.pg_temp.get(&pg), Some(&want));
        assert_eq!(want.iter().filter(|s| s.is_none()).count(), 1);
        assert_eq!(want[0], None, "the first position was not named");
    }

    /// Rule: one pg_temp command sets and clears many PGs in one epoch; asking again for what
    /// is set changes nothing; a bad entry refuses the whole command.
    #[test]
    fn pg_temp_sets_and_clears_in_one_epoch() {
        let mut state = MapState::genesis();
        let mut setup = vec![request("s", 1, pool("data"))];
        for n in 0..4 {
            setup.push(request(
                "s",
                n + 2,
                Command::OsdCreate {
                    host: "host0".into(),
                    weight: Weight::ONE,
                },
            ));
        }
        state.apply_slot(&setup);
        let pool_id = state.map.pool_by_name("data").expect("pool").id;
        let pg = |seed| tidepool_placement::PgId {
            pool: pool_id,
            seed,
        };
        let set = Command::PgTemp(vec![
            (pg(0), vec![OsdId(1), OsdId(2), OsdId(3)]),
            (pg(1), vec![OsdId(0), OsdId(2)]),
        ]);
        let epoch = state.map.epoch;
        let (incremental, answers) = state.apply_slot(&[request("p", 1, set.clone())]);
        assert!(answers[0].is_ok());
        assert_eq!(incremental.expect("changes").epoch, epoch.next());
        assert_eq!(state.map.pg_temp.len(), 2);
        let (again, _) = state.apply_slot(&[request("p", 2, set)]);
        assert!(again.is_none(), "the same pg_temp again is no change");
        let clear = Command::PgTemp(vec![(pg(0), vec![]), (pg(1), vec![]), (pg(2), vec![])]);
        let (_, answers) = state.apply_slot(&[request("p", 3, clear)]);
        assert!(answers[0].is_ok());
        assert!(state.map.pg_temp.is_empty());
        let bad = Command::PgTemp(vec![
            (pg(0), vec![OsdId(1)]),
            (pg(1), vec![OsdId(1), OsdId(1)]),
        ]);
        let (_, answers) = state.apply_slot(&[request("p", 4, bad)]);
        assert!(matches!(answers[0], Err(CommandError::Invalid(_))));
        assert!(
            state.map.pg_temp.is_empty(),
            "nothing of a refused command applies"
        );
        let missing = Command::PgTemp(vec![(pg(999), vec![OsdId(1)])]);
        let (_, answers) = state.apply_slot(&[request("p", 5, missing)]);
        assert!(matches!(answers[0], Err(CommandError::Missing(_))));
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
    /// Rule: an erasure pool is created only when the map has a failure domain of the chosen
    /// type for each of its `k + m` shards; otherwise the refusal says how many it needs and
    /// has. A nonsensical profile is refused by the map's checks.
    #[test]
    fn erasure_pools_need_a_failure_domain_per_shard() {
        let mut state = MapState::genesis();
        let mut setup = Vec::new();
        for (n, host) in ["host0", "host0", "host1", "host1"].into_iter().enumerate() {
            setup.push(request(
                "s",
                n as u64 + 1,
                Command::OsdCreate {
                    host: host.into(),
                    weight: Weight::ONE,
                },
            ));
        }
        state.apply_slot(&setup);
        let ec = |name: &str, k, m, unit, domain| Command::PoolCreate {
            name: name.into(),
            kind: PoolKind::Erasure {
                k,
                m,
                stripe_unit: unit,
            },
            pg_num: 8,
            failure_domain: domain,
        };
        let answers = state
            .apply_slot(&[
                request("e", 1, ec("wide", 4, 2, 4096, BucketType::Osd)),
                request("e", 2, ec("hosts", 2, 1, 4096, BucketType::Host)),
                request("e", 3, ec("fits", 2, 1, 4096, BucketType::Osd)),
                request("e", 4, ec("odd-unit", 2, 1, 1000, BucketType::Osd)),
                request("e", 5, ec("k1", 1, 1, 4096, BucketType::Osd)),
            ])
            .1;
        match &answers[0] {
            Err(CommandError::Invalid(why)) => assert!(
                why.contains("6 shards in 6 different osds, and the map has 4"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&answers[1], Err(CommandError::Invalid(why)) if why.contains("different hosts, and the map has 2"))
        );
        assert!(answers[2].is_ok(), "{:?}", answers[2]);
        assert!(matches!(answers[3], Err(CommandError::Invalid(_))));
        assert!(matches!(answers[4], Err(CommandError::Invalid(_))));
        let fits = state.map.pool_by_name("fits").expect("created");
        assert_eq!(fits.kind.min_size(), 3);
        assert_eq!(fits.kind.raw_ratio(), (3, 2));
    }

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
