//! Maps for the tests of this crate and of the crates that use it.

use tidepool_placement::ClusterMap;

/// One host of 4 equal OSDs and a pool `data` of size 3 over `pg_num` PGs.
pub fn four_osd_map(pg_num: u32) -> ClusterMap {
    use tidepool_placement::generate::{pool, Layout};
    use tidepool_placement::{BucketType, PoolKind, Weight};
    let mut map = Layout {
        hosts: 1,
        osds_per_host: 4,
        weight: Weight::ONE,
    }
    .build();
    let data = pool(
        &map,
        "data",
        PoolKind::Replicated {
            size: 3,
            min_size: 2,
        },
        pg_num,
        BucketType::Osd,
    )
    .expect("pool");
    map.pools.insert(data.id, data);
    map
}
