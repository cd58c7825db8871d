//! The cluster map: the desired state of the cluster, one value with an epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::weight::Weight;

/// The version of the cluster map; grows by one on every change.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    pub const fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u32);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// A storage daemon (one per disk).
    OsdId,
    "osd."
);
id_type!(
    /// A bucket of the placement hierarchy (a root, zone, rack or host).
    BucketId,
    "bucket."
);
id_type!(
    /// A pool.
    PoolId,
    "pool."
);

/// A placement group: the unit of placement, replication and recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PgId {
    /// The pool it belongs to.
    pub pool: PoolId,
    /// Its index in the pool, `0..pg_num`.
    pub seed: u32,
}

impl fmt::Display for PgId {
    /// Ceph's notation: pool, a dot, the seed in hex (`1.1f`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:x}", self.pool.0, self.seed)
    }
}

impl std::str::FromStr for PgId {
    type Err = String;

    /// Ceph's notation, as [`PgId`]'s `Display` writes it (`1.1f`).
    fn from_str(text: &str) -> Result<PgId, String> {
        let bad = || format!("{text:?} is not a PG id (a pool id, a dot, a hex seed: 1.1f)");
        let (pool, seed) = text.split_once('.').ok_or_else(bad)?;
        // The number parsers take a leading `+`; the notation has none.
        if text.contains('+') {
            return Err(bad());
        }
        let pool = pool.parse().map_err(|_| bad())?;
        let seed = u32::from_str_radix(seed, 16).map_err(|_| bad())?;
        Ok(PgId {
            pool: PoolId(pool),
            seed,
        })
    }
}

/// The levels of the placement hierarchy, from a single disk up to the whole cluster. A bucket's
/// parent is always of a higher level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketType {
    /// A single OSD. Only meaningful as a failure domain.
    Osd,
    /// A machine.
    Host,
    /// A rack of machines.
    Rack,
    /// A zone (a room, a building, a data centre).
    Zone,
    /// The top of a hierarchy.
    Root,
}

impl BucketType {
    /// Every level, from the lowest.
    pub const ALL: [BucketType; 5] = [
        BucketType::Osd,
        BucketType::Host,
        BucketType::Rack,
        BucketType::Zone,
        BucketType::Root,
    ];

    /// The lowercase name (`host`).
    pub const fn name(self) -> &'static str {
        match self {
            BucketType::Osd => "osd",
            BucketType::Host => "host",
            BucketType::Rack => "rack",
            BucketType::Zone => "zone",
            BucketType::Root => "root",
        }
    }
}

impl fmt::Display for BucketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BucketType {
    type Err = String;

    fn from_str(text: &str) -> Result<BucketType, String> {
        BucketType::ALL
            .into_iter()
            .find(|t| t.name() == text)
            .ok_or_else(|| format!("unknown bucket type {text:?} (osd, host, rack, zone, root)"))
    }
}

/// One storage daemon as the map sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Osd {
    /// Its id.
    pub id: OsdId,
    /// The bucket it sits in (normally a host).
    pub parent: BucketId,
    /// Its placement weight; zero means it is never chosen.
    pub weight: Weight,
    /// Whether it is running and reachable. A down OSD keeps its place but serves nothing.
    pub up: bool,
    /// Whether it takes part in placement. An out OSD is given no data.
    pub is_in: bool,
    /// Where it listens, once it has booted.
    pub addr: Option<String>,
    /// Whether its disk is full (used past `mon_osd_full_ratio`): PGs it holds take no
    /// writes that add data until it is not.
    #[serde(default)]
    pub full: bool,
}

/// A node of the placement hierarchy above the OSDs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Its id.
    pub id: BucketId,
    /// Its unique name (`host0`, `rack-a`, `default`).
    pub name: String,
    /// Its level.
    pub kind: BucketType,
    /// The bucket it sits in; `None` only for roots.
    pub parent: Option<BucketId>,
}

/// How a pool keeps its data redundant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// `size` full copies; writes need `min_size` of them up.
    Replicated {
        /// Number of copies.
        size: u8,
        /// Copies that must be up to accept writes.
        min_size: u8,
    },
    /// `k` data shards and `m` parity shards; any `k` rebuild the object.
    Erasure {
        /// Data shards.
        k: u8,
        /// Parity shards.
        m: u8,
        /// Bytes of each stripe on each shard (a stripe holds `k` of them).
        #[serde(default = "default_stripe_unit")]
        stripe_unit: u32,
    },
}

/// The stripe unit of erasure pools unless given (Ceph's default too).
pub const STRIPE_UNIT_DEFAULT: u32 = 4096;

fn default_stripe_unit() -> u32 {
    STRIPE_UNIT_DEFAULT
}

impl fmt::Display for PoolKind {
    /// `replicated size 3 min_size 2` or `erasure 4+2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolKind::Replicated { size, min_size } => {
                write!(f, "replicated size {size} min_size {min_size}")
            }
            PoolKind::Erasure { k, m, stripe_unit } => {
                write!(f, "erasure {k}+{m} stripe_unit {stripe_unit}")
            }
        }
    }
}

impl PoolKind {
    /// An erasure profile `k+m` with the default stripe unit.
    pub const fn erasure(k: u8, m: u8) -> PoolKind {
        PoolKind::Erasure {
            k,
            m,
            stripe_unit: STRIPE_UNIT_DEFAULT,
        }
    }

    /// How many OSDs hold each placement group.
    pub const fn width(self) -> usize {
        match self {
            PoolKind::Replicated { size, .. } => size as usize,
            PoolKind::Erasure { k, m, .. } => k as usize + m as usize,
        }
    }

    /// How many holders a placement group needs to take writes: `min_size` of a replicated
    /// pool, `k + 1` of an erasure pool (as Ceph: one shard lost after an acknowledged write
    /// still leaves `k` to rebuild it).
    pub const fn min_size(self) -> usize {
        match self {
            PoolKind::Replicated { min_size, .. } => min_size as usize,
            PoolKind::Erasure { k, .. } => k as usize + 1,
        }
    }

    /// How many holders rebuild every object: 1 for a replicated pool (each copy is whole),
    /// `k` for an erasure pool.
    pub const fn rebuild_from(self) -> usize {
        match self {
            PoolKind::Replicated { .. } => 1,
            PoolKind::Erasure { k, .. } => k as usize,
        }
    }

    /// Raw bytes stored per byte of data, as a fraction (numerator, denominator): the
    /// copies, or `(k + m) / k`.
    pub const fn raw_ratio(self) -> (u32, u32) {
        match self {
            PoolKind::Replicated { size, .. } => (size as u32, 1),
            PoolKind::Erasure { k, m, .. } => (k as u32 + m as u32, k as u32),
        }
    }
}

/// Where a pool's placement groups go: under which root, across which failure domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// The root of the subtree to place in.
    pub root: BucketId,
    /// No two copies (or shards) of a placement group share a bucket of this type.
    pub failure_domain: BucketType,
}

/// A pool: a namespace of objects with one redundancy scheme.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Its id.
    pub id: PoolId,
    /// Its unique name.
    pub name: String,
    /// Replication or erasure coding.
    pub kind: PoolKind,
    /// Number of placement groups.
    pub pg_num: u32,
    /// Where its placement groups go.
    pub rule: Rule,
}

/// Settings that change placement results; a new behaviour gets a new version so that upgrading
/// the software never moves data silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunables {
    /// The placement algorithm's version. Only version 1 exists.
    pub version: u16,
    /// How many rounds an erasure-coded placement group retries positions whose choice collided
    /// or had no usable OSD before leaving them empty.
    pub erasure_rounds_max: u16,
}

impl Default for Tunables {
    fn default() -> Tunables {
        Tunables {
            version: 1,
            erasure_rounds_max: 20,
        }
    }
}

/// Upper bounds that keep a map (and every computation over it) bounded.
pub mod limits {
    /// Most placement groups in one pool.
    pub const PG_NUM_MAX: u32 = 1 << 20;
    /// Most OSDs (and most buckets) in one map.
    pub const ITEMS_MAX: usize = 1 << 16;
    /// Widest placement group (replicas, or k + m).
    pub const WIDTH_MAX: usize = 32;
    /// Longest bucket or pool name, in bytes.
    pub const NAME_BYTES_MAX: usize = 256;
}

/// The desired state of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Its version.
    pub epoch: Epoch,
    /// Placement behaviour.
    pub tunables: Tunables,
    /// Every OSD.
    pub osds: BTreeMap<OsdId, Osd>,
    /// The hierarchy above the OSDs.
    pub buckets: BTreeMap<BucketId, Bucket>,
    /// Every pool.
    pub pools: BTreeMap<PoolId, Pool>,
    /// Temporary acting sets that override computed placement (while a new holder backfills).
    /// A `None` entry is an empty erasure position.
    pub pg_temp: BTreeMap<PgId, Vec<Option<OsdId>>>,
    /// Per placement group, the newest interval that went active: a primary records it before
    /// the PG serves anything, so peering knows whose copies hold every acknowledged write
    /// (the last interval that could have acknowledged one).
    #[serde(default)]
    pub pg_active: BTreeMap<PgId, PgActivation>,
}

/// The interval in which a placement group last went active.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgActivation {
    /// The epoch its primary peered under.
    pub epoch: Epoch,
    /// Its acting set then, primary first.
    pub acting: Vec<OsdId>,
}

/// Why a map is not well formed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// An OSD or bucket names a parent that does not exist.
    #[error("{child} names parent {parent}, which does not exist")]
    MissingParent {
        /// The child (`osd.3` or `bucket.2`).
        child: String,
        /// The missing parent.
        parent: BucketId,
    },
    /// A parent is not of a higher level than its child.
    #[error("{child} ({child_kind}) cannot sit in {parent} ({parent_kind})")]
    BadNesting {
        /// The child.
        child: String,
        /// The child's level.
        child_kind: BucketType,
        /// The parent.
        parent: BucketId,
        /// The parent's level.
        parent_kind: BucketType,
    },
    /// A bucket without a parent that is not a root, or a root with a parent.
    #[error("bucket {0} must be a root exactly when it has no parent")]
    BadRoot(BucketId),
    /// A bucket's level is `osd`.
    #[error("bucket {0} cannot be of type osd")]
    OsdTypedBucket(BucketId),
    /// Two buckets or two pools share a name.
    #[error("name {0:?} is used twice")]
    DuplicateName(String),
    /// A name is empty or too long.
    #[error("name {0:?} must be 1 to 256 bytes")]
    BadName(String),
    /// A map key disagrees with the id stored in its value.
    #[error("entry keyed {key} holds id {id}")]
    KeyMismatch {
        /// The key.
        key: String,
        /// The id inside.
        id: String,
    },
    /// A pool's rule names a bucket that is missing or not a root.
    #[error("pool {pool} places under {root}, which is not a root")]
    BadRuleRoot {
        /// The pool.
        pool: PoolId,
        /// The named root.
        root: BucketId,
    },
    /// A pool's sizes make no sense.
    #[error("pool {pool}: {reason}")]
    BadPool {
        /// The pool.
        pool: PoolId,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `pg_temp` entry names a missing pool or OSD, or has the wrong width.
    #[error("pg_temp for {0} is invalid")]
    BadPgTemp(PgId),
    /// Too many OSDs or buckets.
    #[error("more than {} OSDs or buckets", limits::ITEMS_MAX)]
    TooManyItems,
}

impl ClusterMap {
    /// Checks every structural invariant the placement function relies on.
    pub fn validate(&self) -> Result<(), MapError> {
        if self.osds.len() > limits::ITEMS_MAX || self.buckets.len() > limits::ITEMS_MAX {
            return Err(MapError::TooManyItems);
        }
        let mut names = BTreeSet::new();
        for (&key, bucket) in &self.buckets {
            if key != bucket.id {
                return Err(MapError::KeyMismatch {
                    key: key.to_string(),
                    id: bucket.id.to_string(),
                });
            }
            check_name(&bucket.name)?;
            if !names.insert(bucket.name.as_str()) {
                return Err(MapError::DuplicateName(bucket.name.clone()));
            }
            if bucket.kind == BucketType::Osd {
                return Err(MapError::OsdTypedBucket(bucket.id));
            }
            match bucket.parent {
                None if bucket.kind == BucketType::Root => {}
                None => return Err(MapError::BadRoot(bucket.id)),
                Some(_) if bucket.kind == BucketType::Root => {
                    return Err(MapError::BadRoot(bucket.id))
                }
                Some(parent) => {
                    self.check_parent(bucket.id.to_string(), bucket.kind, parent)?;
                }
            }
        }
        for (&key, osd) in &self.osds {
            if key != osd.id {
                return Err(MapError::KeyMismatch {
                    key: key.to_string(),
                    id: osd.id.to_string(),
                });
            }
            self.check_parent(osd.id.to_string(), BucketType::Osd, osd.parent)?;
        }
        let mut pool_names = BTreeSet::new();
        for (&key, pool) in &self.pools {
            if key != pool.id {
                return Err(MapError::KeyMismatch {
                    key: key.to_string(),
                    id: pool.id.to_string(),
                });
            }
            check_name(&pool.name)?;
            if !pool_names.insert(pool.name.as_str()) {
                return Err(MapError::DuplicateName(pool.name.clone()));
            }
            validate_pool(pool)?;
            match self.buckets.get(&pool.rule.root) {
                Some(root) if root.kind == BucketType::Root => {}
                _ => {
                    return Err(MapError::BadRuleRoot {
                        pool: pool.id,
                        root: pool.rule.root,
                    })
                }
            }
        }
        for (&pg, osds) in &self.pg_temp {
            let pool = self.pools.get(&pg.pool).ok_or(MapError::BadPgTemp(pg))?;
            let valid = pg.seed < pool.pg_num
                && osds.len() <= pool.kind.width()
                && osds.iter().flatten().all(|osd| self.osds.contains_key(osd));
            if !valid {
                return Err(MapError::BadPgTemp(pg));
            }
        }
        Ok(())
    }

    fn check_parent(
        &self,
        child: String,
        child_kind: BucketType,
        parent: BucketId,
    ) -> Result<(), MapError> {
        let Some(parent_bucket) = self.buckets.get(&parent) else {
            return Err(MapError::MissingParent { child, parent });
        };
        if parent_bucket.kind <= child_kind {
            return Err(MapError::BadNesting {
                child,
                child_kind,
                parent,
                parent_kind: parent_bucket.kind,
            });
        }
        Ok(())
    }

    /// The bucket with this name.
    pub fn bucket_by_name(&self, name: &str) -> Option<&Bucket> {
        self.buckets.values().find(|b| b.name == name)
    }

    /// The pool with this name.
    pub fn pool_by_name(&self, name: &str) -> Option<&Pool> {
        self.pools.values().find(|p| p.name == name)
    }

    /// The ancestor of `osd` of the given level (the OSD's own id, as a pseudo-bucket, for
    /// [`BucketType::Osd`]). `None` when the OSD does not sit under such a bucket.
    pub fn ancestor(&self, osd: OsdId, kind: BucketType) -> Option<Ancestor> {
        let entry = self.osds.get(&osd)?;
        if kind == BucketType::Osd {
            return Some(Ancestor::Osd(osd));
        }
        let mut current = self.buckets.get(&entry.parent)?;
        loop {
            if current.kind == kind {
                return Some(Ancestor::Bucket(current.id));
            }
            if current.kind > kind {
                return None;
            }
            current = self.buckets.get(&current.parent?)?;
        }
    }

    /// Whether `osd` sits (at any depth) under `bucket`.
    pub fn is_under(&self, osd: OsdId, bucket: BucketId) -> bool {
        let Some(entry) = self.osds.get(&osd) else {
            return false;
        };
        let mut current = Some(entry.parent);
        while let Some(id) = current {
            if id == bucket {
                return true;
            }
            current = self.buckets.get(&id).and_then(|b| b.parent);
        }
        false
    }

    /// How many buckets of `kind` under `root` hold an OSD that is in and weighted: the most
    /// copies of a placement group that a rule with this root and failure domain keeps apart.
    pub fn failure_domains(&self, root: BucketId, kind: BucketType) -> usize {
        self.osds
            .values()
            .filter(|osd| osd.is_in && osd.weight.raw() > 0 && self.is_under(osd.id, root))
            .filter_map(|osd| self.ancestor(osd.id, kind))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The sum of the weights of the OSDs under `bucket`.
    pub fn bucket_weight(&self, bucket: BucketId) -> u64 {
        self.osds
            .values()
            .filter(|osd| self.is_under(osd.id, bucket))
            .map(|osd| u64::from(osd.weight.raw()))
            .sum()
    }

    /// The smallest OSD id not in use.
    pub fn next_osd_id(&self) -> OsdId {
        OsdId(
            (0..)
                .find(|id| !self.osds.contains_key(&OsdId(*id)))
                .unwrap_or(0),
        )
    }

    /// The smallest bucket id not in use.
    pub fn next_bucket_id(&self) -> BucketId {
        BucketId(
            (0..)
                .find(|id| !self.buckets.contains_key(&BucketId(*id)))
                .unwrap_or(0),
        )
    }

    /// The smallest pool id not in use (pool ids start at 1, as in Ceph).
    pub fn next_pool_id(&self) -> PoolId {
        PoolId(
            (1..)
                .find(|id| !self.pools.contains_key(&PoolId(*id)))
                .unwrap_or(1),
        )
    }
}

/// A failure domain that an OSD belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ancestor {
    /// The OSD is its own failure domain.
    Osd(OsdId),
    /// A bucket above the OSD.
    Bucket(BucketId),
}

fn check_name(name: &str) -> Result<(), MapError> {
    if name.is_empty() || name.len() > limits::NAME_BYTES_MAX {
        return Err(MapError::BadName(name.to_owned()));
    }
    Ok(())
}

fn validate_pool(pool: &Pool) -> Result<(), MapError> {
    let bad = |reason| MapError::BadPool {
        pool: pool.id,
        reason,
    };
    if pool.pg_num == 0 || pool.pg_num > limits::PG_NUM_MAX {
        return Err(bad("pg_num must be between 1 and 1048576"));
    }
    match pool.kind {
        PoolKind::Replicated { size, min_size } => {
            if size == 0 || min_size == 0 || min_size > size {
                return Err(bad("replicated pools need 1 <= min_size <= size"));
            }
        }
        PoolKind::Erasure { k, m, stripe_unit } => {
            if k < 2 || m < 1 {
                return Err(bad("erasure pools need k >= 2 and m >= 1"));
            }
            if stripe_unit == 0 || stripe_unit % 512 != 0 || stripe_unit > 1 << 20 {
                return Err(bad(
                    "an erasure pool's stripe unit is a multiple of 512 bytes up to 1 MiB",
                ));
            }
        }
    }
    if pool.kind.width() > limits::WIDTH_MAX {
        return Err(bad("a placement group can span at most 32 OSDs"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::Layout;

    /// Rule: a rule keeps copies apart in as many buckets of its failure domain as hold an OSD
    /// that is in and weighted.
    #[test]
    fn failure_domains_count_buckets_with_usable_osds() {
        let mut map = Layout {
            hosts: 2,
            osds_per_host: 3,
            weight: Weight::ONE,
        }
        .build();
        let root = BucketId(0);
        assert_eq!(map.failure_domains(root, BucketType::Host), 2);
        assert_eq!(map.failure_domains(root, BucketType::Osd), 6);
        assert_eq!(map.failure_domains(root, BucketType::Root), 1);
        assert_eq!(map.failure_domains(BucketId(1), BucketType::Host), 1);
        for id in 3..6 {
            map.osds.get_mut(&OsdId(id)).expect("osd").is_in = false;
        }
        assert_eq!(map.failure_domains(root, BucketType::Host), 1);
        map.osds.get_mut(&OsdId(0)).expect("osd").weight = Weight::ZERO;
        assert_eq!(map.failure_domains(root, BucketType::Osd), 2);
    }

    /// Rule: a PG id reads back from the notation it prints, and nothing else reads as one.
    #[test]
    fn pg_ids_parse_as_they_print() {
        for pg in [
            PgId {
                pool: PoolId(1),
                seed: 0x1f,
            },
            PgId {
                pool: PoolId(12),
                seed: 0,
            },
            PgId {
                pool: PoolId(0),
                seed: u32::MAX,
            },
        ] {
            assert_eq!(pg.to_string().parse::<PgId>(), Ok(pg));
        }
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "a.1",
            "1.g",
            "1.+1",
            "+1.1",
            "-1.1",
            "1.1.1",
            "1.100000000",
        ] {
            assert!(bad.parse::<PgId>().is_err(), "{bad:?}");
        }
    }
}
