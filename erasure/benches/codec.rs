//! Encoding and decoding throughput of the erasure codec on one core: 4 MiB objects in 2+1,
//! 4+2 and 8+3 with the default 4 KiB stripe unit, encoded whole, and rebuilt with `m` shards
//! lost (a degraded read of the whole object). Throughput counts object bytes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tidepool_erasure::{Codec, Layout};

const OBJECT: usize = 4 << 20;

fn codec(c: &mut Criterion) {
    let data: Vec<u8> = (0..OBJECT).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut group = c.benchmark_group("erasure");
    group.throughput(Throughput::Bytes(OBJECT as u64));
    for (k, m) in [(2, 1), (4, 2), (8, 3)] {
        let codec = Codec::new(Layout::new(k, m, 4096).expect("valid"));
        let profile = format!("{k}+{m}");
        group.bench_with_input(BenchmarkId::new("encode", &profile), &data, |b, data| {
            b.iter(|| codec.encode(data))
        });
        let shards = codec.encode(&data);
        group.bench_with_input(
            BenchmarkId::new("rebuild-m-lost", &profile),
            &shards,
            |b, shards| {
                b.iter(|| {
                    let mut kept: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
                    for lost in kept.iter_mut().take(m) {
                        *lost = None;
                    }
                    codec.reconstruct(&mut kept).expect("k shards");
                    kept
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
