//! Incremental maps: the change from epoch N to N + 1, and the pure function that applies it.

use serde::{Deserialize, Serialize};

use crate::map::{
    Bucket, BucketId, BucketType, ClusterMap, Epoch, MapError, Osd, OsdId, PgActivation, PgId,
    Pool, PoolId, Tunables,
};
use crate::weight::Weight;

/// One change to the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Adds a bucket to the hierarchy.
    AddBucket(Bucket),
    /// Removes an empty bucket.
    RemoveBucket(BucketId),
    /// Moves a bucket under another parent.
    MoveBucket {
        /// The bucket to move.
        id: BucketId,
        /// Its new parent.
        parent: BucketId,
    },
    /// Adds an OSD.
    AddOsd(Osd),
    /// Removes an OSD and any `pg_temp` entries that name it.
    RemoveOsd(OsdId),
    /// Marks an OSD up or down.
    SetOsdUp {
        /// The OSD.
        id: OsdId,
        /// Up (true) or down (false).
        up: bool,
    },
    /// Marks an OSD in or out.
    SetOsdIn {
        /// The OSD.
        id: OsdId,
        /// In (true) or out (false).
        is_in: bool,
    },
    /// Marks an OSD's disk full or not.
    SetOsdFull {
        /// The OSD.
        id: OsdId,
        /// Full (true) or not (false).
        full: bool,
    },
    /// Changes an OSD's placement weight.
    SetOsdWeight {
        /// The OSD.
        id: OsdId,
        /// Its new weight.
        weight: Weight,
    },
    /// Moves an OSD to another bucket.
    MoveOsd {
        /// The OSD.
        id: OsdId,
        /// Its new parent.
        parent: BucketId,
    },
    /// Records where an OSD listens.
    SetOsdAddr {
        /// The OSD.
        id: OsdId,
        /// Its address, or `None` to forget it.
        addr: Option<String>,
    },
    /// Creates a pool.
    CreatePool(Pool),
    /// Removes a pool and its `pg_temp` entries.
    RemovePool(PoolId),
    /// Overrides the acting set of a placement group.
    SetPgTemp {
        /// The placement group.
        pg: PgId,
        /// Its temporary acting set.
        osds: Vec<Option<OsdId>>,
    },
    /// Drops a `pg_temp` override.
    ClearPgTemp(PgId),
    /// Records the interval in which a placement group went active.
    SetPgActive {
        /// The placement group.
        pg: PgId,
        /// The interval.
        activation: PgActivation,
    },
    /// Replaces the tunables.
    SetTunables(Tunables),
}

/// The changes that turn the map of epoch `epoch - 1` into the map of `epoch`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incremental {
    /// The epoch this incremental produces.
    pub epoch: Epoch,
    /// The changes, applied in order.
    pub changes: Vec<Change>,
}

/// Why an incremental cannot be applied. The map is left as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The incremental does not follow the map's epoch.
    #[error("incremental for {got} cannot follow map {have}")]
    WrongEpoch {
        /// The map's epoch.
        have: Epoch,
        /// The incremental's epoch.
        got: Epoch,
    },
    /// A change names an OSD that does not exist.
    #[error("{0} does not exist")]
    NoSuchOsd(OsdId),
    /// A change names a bucket that does not exist.
    #[error("{0} does not exist")]
    NoSuchBucket(BucketId),
    /// A change names a pool that does not exist.
    #[error("{0} does not exist")]
    NoSuchPool(PoolId),
    /// A change adds something whose id is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A bucket to remove still holds OSDs or buckets.
    #[error("{0} is not empty")]
    BucketNotEmpty(BucketId),
    /// The resulting map would be malformed.
    #[error(transparent)]
    Invalid(#[from] MapError),
}

impl ClusterMap {
    /// The map after `incremental`, or why it cannot be applied. Pure: `self` is unchanged.
    pub fn apply(&self, incremental: &Incremental) -> Result<ClusterMap, ApplyError> {
        if incremental.epoch != self.epoch.next() {
            return Err(ApplyError::WrongEpoch {
                have: self.epoch,
                got: incremental.epoch,
            });
        }
        let mut map = self.with_changes(&incremental.changes)?;
        map.epoch = incremental.epoch;
        Ok(map)
    }

    /// The map after `changes`, validated, at the same epoch: for building an incremental one
    /// change at a time. Pure: `self` is unchanged.
    pub fn with_changes(&self, changes: &[Change]) -> Result<ClusterMap, ApplyError> {
        let mut map = self.clone();
        for change in changes {
            map.apply_change(change)?;
        }
        map.validate()?;
        Ok(map)
    }

    fn osd_mut(&mut self, id: OsdId) -> Result<&mut Osd, ApplyError> {
        self.osds.get_mut(&id).ok_or(ApplyError::NoSuchOsd(id))
    }

    fn apply_change(&mut self, change: &Change) -> Result<(), ApplyError> {
        match change {
            Change::AddBucket(bucket) => {
                if self.buckets.contains_key(&bucket.id) {
                    return Err(ApplyError::AlreadyExists(bucket.id.to_string()));
                }
                self.buckets.insert(bucket.id, bucket.clone());
            }
            Change::RemoveBucket(id) => {
                if !self.buckets.contains_key(id) {
                    return Err(ApplyError::NoSuchBucket(*id));
                }
                let in_use = self.buckets.values().any(|b| b.parent == Some(*id))
                    || self.osds.values().any(|o| o.parent == *id)
                    || self.pools.values().any(|p| p.rule.root == *id);
                if in_use {
                    return Err(ApplyError::BucketNotEmpty(*id));
                }
                self.buckets.remove(id);
            }
            Change::MoveBucket { id, parent } => {
                if !self.buckets.contains_key(parent) {
                    return Err(ApplyError::NoSuchBucket(*parent));
                }
                let bucket = self
                    .buckets
                    .get_mut(id)
                    .ok_or(ApplyError::NoSuchBucket(*id))?;
                if bucket.kind == BucketType::Root {
                    return Err(MapError::BadRoot(*id).into());
                }
                bucket.parent = Some(*parent);
            }
            Change::AddOsd(osd) => {
                if self.osds.contains_key(&osd.id) {
                    return Err(ApplyError::AlreadyExists(osd.id.to_string()));
                }
                self.osds.insert(osd.id, osd.clone());
            }
            Change::RemoveOsd(id) => {
                self.osds.remove(id).ok_or(ApplyError::NoSuchOsd(*id))?;
                self.pg_temp
                    .retain(|_, osds| !osds.iter().flatten().any(|osd| osd == id));
            }
            Change::SetOsdUp { id, up } => self.osd_mut(*id)?.up = *up,
            Change::SetOsdIn { id, is_in } => self.osd_mut(*id)?.is_in = *is_in,
            Change::SetOsdFull { id, full } => self.osd_mut(*id)?.full = *full,
            Change::SetOsdWeight { id, weight } => self.osd_mut(*id)?.weight = *weight,
            Change::MoveOsd { id, parent } => {
                if !self.buckets.contains_key(parent) {
                    return Err(ApplyError::NoSuchBucket(*parent));
                }
                self.osd_mut(*id)?.parent = *parent;
            }
            Change::SetOsdAddr { id, addr } => self.osd_mut(*id)?.addr = addr.clone(),
            Change::CreatePool(pool) => {
                if self.pools.contains_key(&pool.id) {
                    return Err(ApplyError::AlreadyExists(pool.id.to_string()));
                }
                self.pools.insert(pool.id, pool.clone());
            }
            Change::RemovePool(id) => {
                self.pools.remove(id).ok_or(ApplyError::NoSuchPool(*id))?;
                self.pg_temp.retain(|pg, _| pg.pool != *id);
                self.pg_active.retain(|pg, _| pg.pool != *id);
            }
            Change::SetPgTemp { pg, osds } => {
                self.pg_temp.insert(*pg, osds.clone());
            }
            Change::ClearPgTemp(pg) => {
                self.pg_temp.remove(pg);
            }
            Change::SetPgActive { pg, activation } => {
                self.pg_active.insert(*pg, activation.clone());
            }
            Change::SetTunables(tunables) => self.tunables = *tunables,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{PoolKind, Rule};

    fn base() -> ClusterMap {
        let mut map = ClusterMap::default();
        let root = Bucket {
            id: BucketId(0),
            name: "default".into(),
            kind: BucketType::Root,
            parent: None,
        };
        let host = Bucket {
            id: BucketId(1),
            name: "host0".into(),
            kind: BucketType::Host,
            parent: Some(BucketId(0)),
        };
        map.buckets.insert(root.id, root);
        map.buckets.insert(host.id, host);
        map.validate().expect("valid");
        map
    }

    fn osd(id: u32) -> Osd {
        Osd {
            id: OsdId(id),
            parent: BucketId(1),
            weight: Weight::ONE,
            up: true,
            is_in: true,
            addr: None,
            full: false,
        }
    }

    fn inc(epoch: u64, changes: Vec<Change>) -> Incremental {
        Incremental {
            epoch: Epoch(epoch),
            changes,
        }
    }

    #[test]
    fn applies_in_order_and_bumps_the_epoch() {
        let map = base();
        let next = map
            .apply(&inc(
                1,
                vec![
                    Change::AddOsd(osd(0)),
                    Change::SetOsdUp {
                        id: OsdId(0),
                        up: false,
                    },
                ],
            ))
            .expect("applies");
        assert_eq!(next.epoch, Epoch(1));
        assert!(!next.osds[&OsdId(0)].up);
        assert_eq!(map.epoch, Epoch(0), "apply is pure");
    }

    #[test]
    fn refuses_gaps_and_bad_references_whole() {
        let map = base();
        assert_eq!(
            map.apply(&inc(2, vec![])),
            Err(ApplyError::WrongEpoch {
                have: Epoch(0),
                got: Epoch(2)
            })
        );
        assert_eq!(
            map.apply(&inc(
                1,
                vec![
                    Change::AddOsd(osd(0)),
                    Change::SetOsdIn {
                        id: OsdId(9),
                        is_in: false
                    }
                ]
            )),
            Err(ApplyError::NoSuchOsd(OsdId(9)))
        );
        let mut orphan = osd(1);
        orphan.parent = BucketId(7);
        assert!(matches!(
            map.apply(&inc(1, vec![Change::AddOsd(orphan)])),
            Err(ApplyError::Invalid(MapError::MissingParent { .. }))
        ));
    }

    #[test]
    fn removing_an_osd_drops_its_pg_temp() {
        let mut map = base();
        map = map
            .apply(&inc(
                1,
                vec![
                    Change::AddOsd(osd(0)),
                    Change::AddOsd(osd(1)),
                    Change::CreatePool(Pool {
                        id: PoolId(1),
                        name: "data".into(),
                        kind: PoolKind::Replicated {
                            size: 2,
                            min_size: 1,
                        },
                        pg_num: 8,
                        rule: Rule {
                            root: BucketId(0),
                            failure_domain: BucketType::Osd,
                        },
                    }),
                    Change::SetPgTemp {
                        pg: PgId {
                            pool: PoolId(1),
                            seed: 3,
                        },
                        osds: vec![Some(OsdId(1)), Some(OsdId(0))],
                    },
                ],
            ))
            .expect("applies");
        assert_eq!(map.pg_temp.len(), 1);
        let map = map
            .apply(&inc(2, vec![Change::RemoveOsd(OsdId(1))]))
            .expect("applies");
        assert!(map.pg_temp.is_empty());
    }

    #[test]
    fn a_bucket_in_use_cannot_be_removed() {
        let map = base()
            .apply(&inc(1, vec![Change::AddOsd(osd(0))]))
            .expect("applies");
        assert_eq!(
            map.apply(&inc(2, vec![Change::RemoveBucket(BucketId(1))])),
            Err(ApplyError::BucketNotEmpty(BucketId(1)))
        );
    }
}
