//! What the fuzz targets share: a valid map to apply incrementals to, and placing every PG of
//! a map that decoded and validated.

use tidepool_placement::generate::{pool, Layout};
use tidepool_placement::{BucketType, ClusterMap, PgId, Placement, PoolKind, Scratch, Weight};

/// A map of 2 hosts × 3 OSDs with a replicated and an erasure pool.
pub fn base_map() -> ClusterMap {
    let mut map = Layout {
        hosts: 2,
        osds_per_host: 3,
        weight: Weight::ONE,
    }
    .build();
    for (name, kind) in [
        (
            "data",
            PoolKind::Replicated {
                size: 3,
                min_size: 2,
            },
        ),
        ("ec", PoolKind::erasure(2, 1)),
    ] {
        let made = pool(&map, name, kind, 16, BucketType::Osd).expect("pool");
        map.pools.insert(made.id, made);
    }
    map
}

/// Validates `map` and, when it is valid, places the first 256 PGs of every pool: neither may
/// panic, whatever the map holds.
pub fn validate_and_place(map: &ClusterMap) {
    if map.validate().is_err() {
        return;
    }
    let placement = Placement::new(map);
    let mut scratch = Scratch::default();
    for pool in map.pools.values() {
        for seed in 0..pool.pg_num.min(256) {
            let _ = placement.map_pg(
                PgId {
                    pool: pool.id,
                    seed,
                },
                &mut scratch,
            );
        }
    }
}
