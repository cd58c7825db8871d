//! Placement throughput: PG → 3 OSDs on a 1,000-OSD / 50-host map (failure domain host), the
//! map `bench/placement-vs-crushtool.sh` also gives crushtool.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tidepool_placement::generate::{next, pool, Layout};
use tidepool_placement::{BucketType, Change, PgId, Placement, PoolKind, Scratch, Weight};

fn placement(hosts: u32, osds_per_host: u32, kind: PoolKind, weights_vary: bool) -> Placement {
    let mut map = Layout {
        hosts,
        osds_per_host,
        weight: Weight::ONE,
    }
    .build();
    let pool = pool(&map, "bench", kind, 1 << 20, BucketType::Host).expect("root");
    let mut changes = vec![Change::CreatePool(pool)];
    if weights_vary {
        // Mixed disk sizes take the general (non-uniform) comparison path.
        for (i, id) in map.osds.keys().enumerate() {
            changes.push(Change::SetOsdWeight {
                id: *id,
                weight: Weight(Weight::ONE.raw() / 2 + (i as u32 % 7) * 9000),
            });
        }
    }
    map = map.apply(&next(&map, changes)).expect("applies");
    Placement::new(&map)
}

fn mapping(c: &mut Criterion) {
    const BATCH: u32 = 10_000;
    let mut group = c.benchmark_group("pg_to_osds");
    group.throughput(Throughput::Elements(u64::from(BATCH)));
    let cases = [
        (
            "replicated3_1000osd_50host",
            PoolKind::Replicated {
                size: 3,
                min_size: 2,
            },
            false,
        ),
        (
            "replicated3_1000osd_50host_mixed_weights",
            PoolKind::Replicated {
                size: 3,
                min_size: 2,
            },
            true,
        ),
        ("erasure4+2_1000osd_50host", PoolKind::erasure(4, 2), false),
    ];
    for (name, kind, weights_vary) in cases {
        let placement = placement(50, 20, kind, weights_vary);
        let pool = placement.map().pools.keys().next().copied().expect("pool");
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        let mut next_seed = 0u32;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    let pg = PgId {
                        pool,
                        seed: next_seed & ((1 << 20) - 1),
                    };
                    next_seed = next_seed.wrapping_add(1);
                    placement.raw_into(pg, &mut scratch, &mut out);
                    std::hint::black_box(&out);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, mapping);
criterion_main!(benches);
