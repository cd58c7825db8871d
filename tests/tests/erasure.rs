//! Erasure pools over real processes: a 2+1 and a 4+2 pool on six OSDs; objects of every
//! awkward size written, read back whole and by ranges, overwritten at offsets; reads that
//! decode while m OSDs are killed (-9), and a clear failure, never wrong bytes, with m+1;
//! streams of overwrites while OSDs are killed and restarted, after which every object is
//! one of the versions its writes could make, never a mix; then a deep scrub finds nothing,
//! and with m OSDs' block files rotten every object still reads exact, a deep scrub names
//! exactly the bad shards, and a repair rebuilds them; a parity shard rewritten by hand
//! with good checksums is named by the parity check of a deep scrub, and not repaired.

mod common;

use std::time::Duration;

use common::{health_checks, kind_of, object_client, rot, runtime, Cluster};
use serde_json::Value;
use tidepool_client::{ObjectClient, ObjectError};
use tidepool_proto::osd::{ObjectOp, OpError, OpOutput};
use tidepool_tests::{pattern, tidepool_ok};

/// Objects written, by name, with their bytes.
type Objects = Vec<(String, Vec<u8>)>;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Messages stay under the messenger's 64 MiB frame: larger objects move in pieces.
const PIECE: usize = 16 * MIB;

async fn read(client: &ObjectClient, pool: &str, name: &str, offset: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let at = offset + out.len() as u64;
        let want = (len - out.len() as u64).min(PIECE as u64);
        let piece = try_read(client, pool, name, at, want)
            .await
            .unwrap_or_else(|e| panic!("read {pool}/{name}: {e}"));
        let short = (piece.len() as u64) < want;
        out.extend(piece);
        if short || out.len() as u64 == len {
            return out;
        }
    }
}

async fn try_read(
    client: &ObjectClient,
    pool: &str,
    name: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, ObjectError> {
    let (_, outputs) = client
        .execute(pool, name, vec![ObjectOp::Read { offset, len }])
        .await?;
    match outputs.into_iter().next() {
        Some(OpOutput::Data(data)) => Ok(data.into_vec()),
        other => panic!("a read of {name} answered {other:?}"),
    }
}

async fn write(client: &ObjectClient, pool: &str, name: &str, ops: Vec<ObjectOp>) {
    client
        .execute(pool, name, ops)
        .await
        .unwrap_or_else(|e| panic!("write {pool}/{name}: {e}"));
}

/// Every object of `objects` reads back exact, whole and by a few ranges.
async fn check(client: &ObjectClient, pool: &str, objects: &Objects) {
    for (name, data) in objects {
        assert!(
            read(client, pool, name, 0, u64::MAX).await == *data,
            "{pool}/{name}: whole read differs"
        );
        let len = data.len() as u64;
        for (offset, count) in [
            (1, 5000),
            (len / 3, len / 2 + 1),
            (len.saturating_sub(7), 100),
        ] {
            let start = offset.min(len) as usize;
            let end = (offset + count).min(len) as usize;
            assert!(
                read(client, pool, name, offset, count).await == data[start..end],
                "{pool}/{name}: range {offset}+{count} differs"
            );
        }
    }
}

/// Rule: erasure pools keep every byte: objects of 0 B to 64 MiB and overwrites at any offset
/// read back exact, whole and by ranges, through the loss of m OSDs; with m+1 lost, reads
/// fail with a clear message rather than return other bytes; with the OSDs back, all is exact;
/// a holder that missed writes gets its shards rebuilt, exact.
#[test]
fn erasure_pools_read_back_exact_through_m_failures() {
    // Repairs are the operator's here: reads of rotten shards ask for none of their own.
    let mut cluster = Cluster::start(
        "erasure",
        6,
        8,
        &[
            ("mon_osd_down_out_interval", "600"),
            ("osd_scrub_auto_repair", "0"),
        ],
    );
    let path = cluster.path().to_path_buf();
    for (pool, profile) in [("ec21", "2+1"), ("ec42", "4+2")] {
        tidepool_ok(
            &path,
            &[
                "pool",
                "create",
                pool,
                "--erasure",
                profile,
                "--pg-num",
                "8",
                "--failure-domain",
                "osd",
            ],
        );
    }
    cluster.wait_clean(Duration::from_secs(90));
    let runtime = runtime();
    let mut client = runtime.block_on(object_client(&path));
    client.deadline = Duration::from_secs(30);

    let stripe = 4 * 4096;
    let sizes = [
        0,
        1,
        stripe - 1,
        stripe + 1,
        4 * MIB + 17,
        64 * MIB,
        2 * 4096 - 1,
    ];
    let mut pools: Vec<(&str, Objects)> = Vec::new();
    runtime.block_on(async {
        for pool in ["ec21", "ec42"] {
            let mut objects = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                let name = format!("obj-{i}");
                let data = pattern(i as u64 + 1, *size);
                let mut pieces = data.chunks(PIECE);
                let first = pieces.next().unwrap_or_default();
                write(
                    &client,
                    pool,
                    &name,
                    vec![ObjectOp::WriteFull(first.to_vec().into())],
                )
                .await;
                for piece in pieces {
                    write(
                        &client,
                        pool,
                        &name,
                        vec![ObjectOp::Append(piece.to_vec().into())],
                    )
                    .await;
                }
                objects.push((name, data));
            }
            // Overwrites inside and across stripes, an append and a truncate.
            let (_, data) = &mut objects[4];
            for (offset, len) in [(10, 100), (stripe - 3, 2 * stripe + 5), (3 * MIB, 1)] {
                let bytes = pattern(offset as u64 + 99, len);
                data[offset..offset + len].copy_from_slice(&bytes);
                write(
                    &client,
                    pool,
                    "obj-4",
                    vec![ObjectOp::Write {
                        offset: offset as u64,
                        data: bytes.into(),
                    }],
                )
                .await;
            }
            let tail = pattern(7, 5000);
            data.extend_from_slice(&tail);
            write(&client, pool, "obj-4", vec![ObjectOp::Append(tail.into())]).await;
            let (_, data) = &mut objects[3];
            data.truncate(stripe / 2);
            write(
                &client,
                pool,
                "obj-3",
                vec![ObjectOp::Truncate((stripe / 2) as u64)],
            )
            .await;
            check(&client, pool, &objects).await;
            // Omap stays on replicated pools.
            let refused = client
                .execute(pool, "obj-1", vec![ObjectOp::OmapGet(Vec::new())])
                .await;
            assert!(
                matches!(refused, Err(ObjectError::Op(OpError::NotSupported(_)))),
                "{refused:?}"
            );
            pools.push((pool, objects));
        }
    });

    // m OSDs killed: every object still reads exact, by decoding.
    let killed = [1usize, 4];
    cluster.osds[killed[0]].take().expect("osd").kill();
    cluster.wait_for(Duration::from_secs(60), "one OSD marked down", || {
        cluster.osd_states().values().filter(|(up, _)| *up).count() == 5
    });
    runtime.block_on(check(&client, "ec21", &pools[0].1));
    cluster.osds[killed[1]].take().expect("osd").kill();
    cluster.wait_for(Duration::from_secs(60), "two OSDs marked down", || {
        cluster.osd_states().values().filter(|(up, _)| *up).count() == 4
    });
    runtime.block_on(check(&client, "ec42", &pools[1].1));

    // m+1 killed: a clear failure, never other bytes.
    cluster.osds[2].take().expect("osd").kill();
    cluster.wait_for(Duration::from_secs(60), "three OSDs marked down", || {
        cluster.osd_states().values().filter(|(up, _)| *up).count() == 3
    });
    client.deadline = Duration::from_secs(8);
    let failed = runtime.block_on(try_read(&client, "ec42", "obj-4", 0, u64::MAX));
    match failed {
        Err(error) => eprintln!("with m+1 OSDs down, a read fails: {error}"),
        Ok(data) => panic!("a read with m+1 OSDs down answered {} bytes", data.len()),
    }

    // Back: every object exact again.
    for n in [1, 2, 4] {
        cluster.osds[n] = Some(cluster.start_osd(n));
    }
    cluster.wait_osds_up(6);
    client.deadline = Duration::from_secs(60);
    for (pool, objects) in &pools {
        runtime.block_on(check(&client, pool, objects));
    }

    // A holder misses writes while it is down; back, its shards are rebuilt from the others:
    // with two other OSDs then down, every read needs its shards, and all are exact.
    cluster.wait_clean(Duration::from_secs(90));
    cluster.osds[3].take().expect("osd").kill();
    cluster.wait_for(Duration::from_secs(60), "osd.3 marked down", || {
        cluster.osd_states().values().filter(|(up, _)| *up).count() == 5
    });
    let objects = &mut pools[1].1;
    runtime.block_on(async {
        for i in 0..12u64 {
            let name = format!("late-{i}");
            let data = pattern(100 + i, (i as usize * 77_777) % (3 * MIB));
            write(
                &client,
                "ec42",
                &name,
                vec![ObjectOp::WriteFull(data.clone().into())],
            )
            .await;
            objects.push((name, data));
        }
        let (_, data) = &mut objects[4];
        let bytes = pattern(5, 70_000);
        data[1000..71_000].copy_from_slice(&bytes);
        write(
            &client,
            "ec42",
            "obj-4",
            vec![ObjectOp::Write {
                offset: 1000,
                data: bytes.into(),
            }],
        )
        .await;
    });
    cluster.osds[3] = Some(cluster.start_osd(3));
    cluster.wait_osds_up(6);
    let took = cluster.wait_clean(Duration::from_secs(120));
    eprintln!("osd.3's shards rebuilt in {took:?}");
    for n in [0, 5] {
        cluster.osds[n].take().expect("osd").kill();
    }
    cluster.wait_for(
        Duration::from_secs(60),
        "osd.0 and osd.5 marked down",
        || cluster.osd_states().values().filter(|(up, _)| *up).count() == 4,
    );
    runtime.block_on(check(&client, "ec42", &pools[1].1));

    // Overwrites flow while OSDs are killed (-9) and restarted, one at a time: each OSD holds
    // a shard of every PG, so each kill takes some PGs' primary and a holder of the others.
    for n in [0, 5] {
        cluster.osds[n] = Some(cluster.start_osd(n));
    }
    cluster.wait_osds_up(6);
    cluster.wait_clean(Duration::from_secs(120));
    let client = std::sync::Arc::new(client);
    let size = 5 * stripe + 1234;
    let names: Vec<String> = (0..6).map(|i| format!("busy-{i}")).collect();
    let start: Vec<Vec<u8>> = (0..names.len())
        .map(|i| pattern(500 + i as u64, size))
        .collect();
    runtime.block_on(async {
        for (name, data) in names.iter().zip(&start) {
            write(
                &client,
                "ec42",
                name,
                vec![ObjectOp::WriteFull(data.clone().into())],
            )
            .await;
        }
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (client, stop, name) = (client.clone(), stop.clone(), name.clone());
            runtime.spawn(overwrites(client, stop, name, i as u64, size, stripe))
        })
        .collect();
    for round in 0..6usize {
        std::thread::sleep(Duration::from_millis(1500));
        let n = (round * 5 + 1) % 6;
        cluster.osds[n].take().expect("osd").kill();
        std::thread::sleep(Duration::from_millis(1500 + 300 * round as u64));
        cluster.osds[n] = Some(cluster.start_osd(n));
        cluster.wait_osds_up(6);
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let histories: Vec<History> = writers
        .into_iter()
        .map(|w| runtime.block_on(w).expect("writer"))
        .collect();
    cluster.wait_clean(Duration::from_secs(120));
    let (mut acked, mut unknown) = (0, 0);
    for ((name, data), history) in names.iter().zip(&start).zip(&histories) {
        let now = runtime.block_on(read(&client, "ec42", name, 0, u64::MAX));
        acked += history.iter().filter(|w| w.acked).count();
        unknown += history.iter().filter(|w| !w.acked).count();
        assert!(
            one_of_the_versions(data, history, &now),
            "ec42/{name} is no version its writes could make: {} writes, {} not acknowledged",
            history.len(),
            history.iter().filter(|w| !w.acked).count()
        );
    }
    eprintln!("overwrites under kills: {acked} acknowledged, {unknown} failed; all objects whole");
    assert!(acked > 50, "the writers got almost nothing done: {acked}");

    // Scrub after all that: a deep scrub of the 4+2 pool finds nothing. Then m = 2 OSDs' block
    // files rot, so every large object has two bad shards: it still reads exact, a deep scrub
    // names exactly those shards, and a repair rebuilds them from the four good ones.
    let (objects, found) = cluster.scrub("deep-scrub", "ec42");
    assert!(
        objects > 0 && found.is_empty(),
        "ec42 after the kills: {found:?}"
    );
    let mut now: Objects = pools
        .iter()
        .find(|(pool, _)| *pool == "ec42")
        .map(|(_, objects)| objects.clone())
        .expect("ec42");
    for name in &names {
        now.push((
            name.clone(),
            runtime.block_on(read(&client, "ec42", name, 0, u64::MAX)),
        ));
    }
    let rotten = [0u64, 3];
    for osd in rotten {
        rot(&path.join(format!("osd-{osd}")).join("store").join("block"));
    }
    runtime.block_on(check(&client, "ec42", &now));
    let (_, found) = cluster.scrub("deep-scrub", "ec42");
    let holders: std::collections::BTreeSet<u64> = found.iter().map(|f| f.1).collect();
    assert!(
        !found.is_empty(),
        "a deep scrub after the rot found nothing"
    );
    assert!(
        holders.iter().all(|h| rotten.contains(h)) && found.iter().all(|f| f.2 == "read_error"),
        "a deep scrub names other shards than the rotten ones: {found:?}"
    );
    let large: Vec<&String> = now
        .iter()
        .filter(|(_, data)| data.len() >= 4 * MIB)
        .map(|(name, _)| name)
        .collect();
    for name in &large {
        for osd in rotten {
            assert!(
                found.contains(&(name.to_string(), osd, "read_error".to_string())),
                "ec42/{name} on osd.{osd}: {found:?}"
            );
        }
    }
    cluster.scrub("repair", "ec42");
    let (_, found) = cluster.scrub("deep-scrub", "ec42");
    assert!(found.is_empty(), "ec42 after its repair: {found:?}");
    runtime.block_on(check(&client, "ec42", &now));

    // One parity shard rewritten by hand, its checksums good: only the parity check of a deep
    // scrub sees it. It names that holder alone (the other five agree without it), repairs
    // nothing (the shard is not provably bad), and the health says so.
    let (name, data) = now
        .iter()
        .find(|(_, data)| (4 * MIB..PIECE).contains(&data.len()))
        .expect("a large object");
    let pg = runtime
        .block_on(client.locate("ec42", name))
        .expect("ec42")
        .0
        .to_string();
    let listed: Value = cluster.json(&["pg", "ls", "--pool", "ec42"]);
    let line = listed
        .as_array()
        .expect("pgs")
        .iter()
        .find(|line| line["pgid"] == pg.as_str())
        .unwrap_or_else(|| panic!("{pg} in {listed}"));
    let holder = line["acting"][5].as_u64().expect("a holder at position 5");
    cluster.osds[holder as usize]
        .take()
        .expect("the holder runs")
        .kill();
    let shard_len = (data.len() as u64).div_ceil(stripe as u64) * 4096;
    let other = path.join("other-shard");
    std::fs::write(&other, pattern(7, shard_len as usize)).expect("shard bytes");
    let osd_dir = path.join(format!("osd-{holder}"));
    let store = ["osd", "store", osd_dir.to_str().expect("utf-8")];
    tidepool_ok(
        &path,
        &[
            &store[..],
            &["write", &pg, name, other.to_str().expect("utf-8")],
        ]
        .concat(),
    );
    cluster.osds[holder as usize] = Some(cluster.start_osd(holder as usize));
    cluster.wait_osds_up(6);
    cluster.wait_clean(Duration::from_secs(90));
    runtime.block_on(check(&client, "ec42", &now));
    let (_, shallow) = cluster.scrub("scrub", "ec42");
    assert!(
        shallow.is_empty(),
        "a shallow scrub reads no bytes: {shallow:?}"
    );
    for kind in ["deep-scrub", "repair"] {
        let reports: Value = cluster.json(&["pg", kind, &pg]);
        let report = &reports[0];
        let found: Vec<_> = report["inconsistencies"]
            .as_array()
            .expect("list")
            .iter()
            .map(kind_of)
            .collect();
        assert_eq!(
            found,
            [(name.clone(), holder, "parity".to_string())],
            "{kind}: {report}"
        );
        assert_eq!(
            report["unrepairable"],
            serde_json::json!([name]),
            "{kind}: {report}"
        );
        assert_eq!(
            report["repaired"],
            serde_json::json!([]),
            "{kind}: {report}"
        );
    }
    cluster.wait_for(Duration::from_secs(30), "the health names it", || {
        health_checks(&cluster.json(&["status"])).contains(&"PG_DAMAGED".to_string())
    });
    // Written again by a client, the object is one code word again.
    runtime.block_on(write(
        &client,
        "ec42",
        name,
        vec![ObjectOp::WriteFull(data.clone().into())],
    ));
    let (_, found) = cluster.scrub("deep-scrub", "ec42");
    assert!(found.is_empty(), "ec42 after the rewrite: {found:?}");
}

/// One overwrite: where, what, and whether it was acknowledged (one that failed may or may
/// not have been made).
struct Overwrite {
    offset: usize,
    bytes: Vec<u8>,
    acked: bool,
}

type History = Vec<Overwrite>;

/// Overwrites of `name` one after another, each within and across stripes, until `stop`.
async fn overwrites(
    client: std::sync::Arc<ObjectClient>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    name: String,
    seed: u64,
    size: usize,
    stripe: usize,
) -> History {
    let mut history = Vec::new();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = 1 + (state % (2 * stripe as u64 + 100)) as usize;
        let offset = ((state >> 20) % (size - len) as u64) as usize;
        let bytes = pattern(state, len);
        let result = client
            .execute(
                "ec42",
                &name,
                vec![ObjectOp::Write {
                    offset: offset as u64,
                    data: bytes.clone().into(),
                }],
            )
            .await;
        history.push(Overwrite {
            offset,
            bytes,
            acked: result.is_ok(),
        });
    }
    history
}

/// Whether `now` is `start` with every acknowledged overwrite of `history` made, in order, and
/// each failed one made whole or not at all.
fn one_of_the_versions(start: &[u8], history: &History, now: &[u8]) -> bool {
    let failed: Vec<usize> = (0..history.len()).filter(|&i| !history[i].acked).collect();
    assert!(
        failed.len() <= 16,
        "{} overwrites failed: too many to check every version",
        failed.len()
    );
    (0u32..1 << failed.len()).any(|made| {
        let mut data = start.to_vec();
        for (i, write) in history.iter().enumerate() {
            let bit = failed.iter().position(|&f| f == i);
            if bit.is_none_or(|b| made & (1 << b) != 0) {
                data[write.offset..write.offset + write.bytes.len()].copy_from_slice(&write.bytes);
            }
        }
        data == now
    })
}
