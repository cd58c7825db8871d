//! Scrub over real processes: three OSDs with a pool of size 3 and an erasure pool 2+1, small
//! (inline) and large (blob) objects; deep scrubs while clients write, which find nothing; a
//! byte flipped in every block of one OSD's block file while it runs. A shallow scrub, which reads no data, finds nothing; a deep scrub names
//! exactly the large objects on that OSD, in both pools; every object still reads exact, a
//! read that found the primary's copy bad repaired it, and `pg repair` repairs the rest
//! (docs/scrub.md).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{object_client, runtime, write_objects, Cluster, Workload};
use serde_json::Value;
use tidepool_proto::osd::{ObjectOp, OpOutput};
use tidepool_tests::{pattern, tidepool_ok};

/// Objects of each pool: large ones (their bytes in the block file) and small ones (inline
/// in RocksDB).
const LARGE: [&str; 4] = ["large-0", "large-1", "large-2", "large-3"];
const SMALL: [&str; 3] = ["small-0", "small-1", "small-2"];

/// The bytes of the `i`-th object, `name`, of a pool.
fn bytes_of(i: usize, name: &str) -> Vec<u8> {
    let size = if name.starts_with("large") {
        200_000 + i
    } else {
        100 + i
    };
    pattern(i as u64, size)
}

/// `tidepool pg SCRUB POOL --format json`: per PG, its objects and its inconsistencies as
/// (object, holder, problem kind).
fn scrub(cluster: &Cluster, kind: &str, pool: &str) -> (u64, BTreeSet<(String, u64, String)>) {
    let reports: Value = cluster.json(&["pg", kind, pool]);
    let mut objects = 0;
    let mut found = BTreeSet::new();
    for report in reports.as_array().expect("reports") {
        objects += report["objects"].as_u64().expect("objects");
        for inconsistency in report["inconsistencies"].as_array().expect("list") {
            let problem = &inconsistency["problem"];
            let kind = match problem {
                Value::String(kind) => kind.clone(),
                Value::Object(map) => map.keys().next().expect("a kind").clone(),
                other => panic!("a problem {other}"),
            };
            found.insert((
                inconsistency["object"].as_str().expect("object").to_owned(),
                inconsistency["holder"].as_u64().expect("holder"),
                kind,
            ));
        }
        assert_eq!(report["unrepairable"], Value::Array(Vec::new()), "{report}");
    }
    (objects, found)
}

#[test]
fn a_deep_scrub_finds_every_rotten_copy_and_nothing_else() {
    let cluster = Cluster::start("scrub", 3, 4, &[]);
    let path = cluster.path().to_path_buf();
    tidepool_ok(
        &path,
        &[
            "pool",
            "create",
            "ec21",
            "--erasure",
            "2+1",
            "--pg-num",
            "4",
            "--failure-domain",
            "osd",
        ],
    );
    // Repairs here are asked for; the automatic ones are tested below.
    tidepool_ok(&path, &["config", "set", "osd_scrub_auto_repair", "0"]);
    cluster.wait_clean(Duration::from_secs(90));
    let runtime = runtime();
    let client = runtime.block_on(object_client(&path));
    runtime.block_on(async {
        for pool in ["data", "ec21"] {
            for (i, name) in LARGE.iter().chain(&SMALL).enumerate() {
                let ops = vec![ObjectOp::WriteFull(bytes_of(i, name).into())];
                client.execute(pool, name, ops).await.expect("write");
            }
        }
    });
    for pool in ["data", "ec21"] {
        for kind in ["scrub", "deep-scrub"] {
            let (objects, found) = scrub(&cluster, kind, pool);
            assert_eq!(objects, 7, "{kind} of {pool}");
            assert!(
                found.is_empty(),
                "{kind} of {pool} before any rot: {found:?}"
            );
        }
    }

    // Deep scrubs while clients write and read `data`: never a false inconsistency. The
    // objects are small (inline in RocksDB), so the rot below leaves them alone.
    let shared = Arc::new(runtime.block_on(object_client(&path)));
    write_objects(&runtime, &shared, 8, 20_000);
    let workload = Workload::start(&runtime, shared, (8, 20_000), 20_000);
    workload.wait_acked(5);
    for _ in 0..3 {
        let (_, found) = scrub(&cluster, "deep-scrub", "data");
        assert!(found.is_empty(), "a deep scrub under writes: {found:?}");
    }
    let (acked, errors) = workload.stop(&runtime);
    assert!(errors.is_empty(), "the workload: {errors:?}");
    let in_data = 7 + 8 + acked.len() as u64;
    let objects_in = |pool: &str| if pool == "data" { in_data } else { 7 };

    // Rot: one byte flipped in every block of the block file of large-0's primary in `data`,
    // under the running OSD. Every OSD holds a copy or a shard of every object.
    let primaries: Vec<u64> = runtime.block_on(async {
        let mut primaries = Vec::new();
        for name in LARGE {
            let (_, primary) = client.locate("data", name).await.expect("pool data");
            primaries.push(u64::from(primary.expect("a primary").0));
        }
        primaries
    });
    let victim = primaries[0];
    let block = path
        .join(format!("osd-{victim}"))
        .join("store")
        .join("block");
    let mut bytes = std::fs::read(&block).expect("block file");
    for at in (100..bytes.len()).step_by(4096) {
        bytes[at] ^= 0x20;
    }
    std::fs::write(&block, &bytes).expect("rot");
    let rotten = |names: &mut dyn Iterator<Item = &str>| -> BTreeSet<(String, u64, String)> {
        names
            .map(|name| (name.to_string(), victim, "read_error".to_string()))
            .collect()
    };
    for pool in ["data", "ec21"] {
        let (_, found) = scrub(&cluster, "scrub", pool);
        assert!(
            found.is_empty(),
            "a shallow scrub of {pool} reads no data: {found:?}"
        );
        let (objects, found) = scrub(&cluster, "deep-scrub", pool);
        assert_eq!(objects, objects_in(pool), "objects of {pool}");
        assert_eq!(
            found,
            rotten(&mut LARGE.into_iter()),
            "a deep scrub of {pool}"
        );
    }

    // Every object reads exact: from another copy where the primary's is bad (which repairs
    // it), by decoding in the erasure pool.
    runtime.block_on(async {
        for pool in ["data", "ec21"] {
            for (i, name) in LARGE.iter().chain(&SMALL).enumerate() {
                let ops = vec![ObjectOp::Read {
                    offset: 0,
                    len: u64::MAX,
                }];
                let (_, outputs) = client.execute(pool, name, ops).await.expect("read");
                match &outputs[..] {
                    [OpOutput::Data(data)] => {
                        assert!(data[..] == bytes_of(i, name)[..], "{pool}/{name} differs")
                    }
                    other => panic!("{pool}/{name}: {other:?}"),
                }
            }
        }
    });
    // The reads repaired the copies they found bad (the primary's); the others wait for repair.
    let (_, found) = scrub(&cluster, "deep-scrub", "data");
    let mut kept = LARGE
        .iter()
        .zip(&primaries)
        .filter(|(_, primary)| **primary != victim)
        .map(|(name, _)| *name);
    assert_eq!(found, rotten(&mut kept), "a deep scrub after the reads");

    // Repair: every bad copy rewritten from a good one; a deep scrub is then clean.
    for pool in ["data", "ec21"] {
        let (_, before) = scrub(&cluster, "deep-scrub", pool);
        let reports: Value = cluster.json(&["pg", "repair", pool]);
        let repaired: BTreeSet<String> = reports
            .as_array()
            .expect("reports")
            .iter()
            .flat_map(|r| r["repaired"].as_array().expect("repaired").clone())
            .map(|r| r[0].as_str().expect("object").to_owned())
            .collect();
        let (_, found) = scrub(&cluster, "deep-scrub", pool);
        assert!(found.is_empty(), "{pool} after its repair: {found:?}");
        let bad: BTreeSet<String> = before.into_iter().map(|(object, _, _)| object).collect();
        assert_eq!(repaired, bad, "{pool}: what was repaired");
    }
    runtime.block_on(async {
        for (i, name) in LARGE.iter().enumerate() {
            let ops = vec![ObjectOp::Read {
                offset: 0,
                len: u64::MAX,
            }];
            let (_, outputs) = client.execute("ec21", name, ops).await.expect("read");
            assert!(
                matches!(&outputs[..], [OpOutput::Data(d)] if d[..] == bytes_of(i, name)[..]),
                "ec21/{name} after its repair"
            );
        }
    });

    // One PG by its id; a PG that does not exist and a name that is neither are refused.
    let reports: Value = cluster.json(&["pg", "scrub", "data"]);
    let pool = reports[0]["pg"]["pool"].as_u64().expect("pool id");
    let one: Value = cluster.json(&["pg", "scrub", &format!("{pool}.3")]);
    assert_eq!(one.as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one[0]["pg"]["seed"], 3, "{one}");
    for bad in [format!("{pool}.ff"), "nopool".to_string()] {
        let out = tidepool_tests::run(&[
            "pg",
            "scrub",
            &bad,
            "--cluster",
            path.to_str().expect("utf-8"),
        ]);
        assert!(!out.status.success(), "{bad} was taken");
    }
}
