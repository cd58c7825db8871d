//! Scrub over real processes: three OSDs with a pool of size 3 and an erasure pool 2+1, small
//! (inline) and large (blob) objects (docs/scrub.md).
//!
//! - Deep scrubs while clients write find nothing.
//! - A byte flipped in every block of one OSD's block file while it runs: a shallow scrub,
//!   which reads no data, finds nothing; a deep scrub names exactly the large objects on that
//!   OSD, in both pools; every object still reads exact, and a read that found the primary's
//!   copy bad repaired it and counted it (`osd df`, `OSD_TOO_MANY_REPAIRS`). The health says
//!   `OSD_SCRUB_ERRORS` and `PG_DAMAGED`, `pg ls --state inconsistent` and `pg
//!   list-inconsistent` name the rest, and `pg repair` repairs it: the health clears.
//! - With that OSD stopped: its block file rotted again, one object removed from its store,
//!   a stray one added, an xattr and an omap entry changed. Once it runs again every object
//!   reads exact, a scrub finds each change, and the scheduled scrubs, with automatic repair,
//!   repair all of it.
//! - Every OSD's block file rotted: the large objects have no good copy; a repair says so and
//!   changes nothing, the health names the loss, and a read fails rather than return wrong
//!   bytes.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{object_client, read_object, rot, runtime, write_objects, Cluster, Workload};
use serde_json::Value;
use tidepool_client::{ObjectClient, ObjectError};
use tidepool_proto::osd::{ObjectOp, OpError};
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

/// The large objects whose primary in `data` is not `victim` (`primaries` in `LARGE`'s order).
fn kept_names<'a>(primaries: &'a [u64], victim: u64) -> impl Iterator<Item = &'a str> + 'a {
    LARGE
        .iter()
        .zip(primaries)
        .filter(move |(_, primary)| **primary != victim)
        .map(|(name, _)| *name)
}

/// Every object of both pools reads exact (`when` says when, for a failure).
fn all_read_exact(runtime: &tokio::runtime::Runtime, client: &ObjectClient, when: &str) {
    runtime.block_on(async {
        for pool in ["data", "ec21"] {
            for (i, name) in LARGE.iter().chain(&SMALL).enumerate() {
                let data = read_object(client, pool, name).await.expect("read");
                assert!(data == bytes_of(i, name), "{pool}/{name} differs {when}");
            }
        }
    });
}

/// The codes of the failing health checks.
fn health_checks(cluster: &Cluster) -> BTreeSet<String> {
    common::health_checks(&cluster.json(&["status"]))
        .into_iter()
        .collect()
}

/// What `pg list-inconsistent` says of every PG of `pool` that `pg ls --state inconsistent`
/// lists, as (object, holder, problem kind).
fn listed_inconsistent(cluster: &Cluster, pool: &str) -> BTreeSet<(String, u64, String)> {
    let listed = cluster.json(&["pg", "ls", "--state", "inconsistent", "--pool", pool]);
    let mut found = BTreeSet::new();
    for line in listed.as_array().expect("pgs") {
        let pgid = line["pgid"].as_str().expect("pgid");
        assert!(line["scrub_errors"].as_u64() > Some(0), "{line}");
        let record = cluster.json(&["pg", "list-inconsistent", pgid]);
        for inconsistency in record["inconsistencies"].as_array().expect("list") {
            found.insert(common::kind_of(inconsistency));
        }
    }
    found
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
            let (objects, found) = cluster.scrub(kind, pool);
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
        let (_, found) = cluster.scrub("deep-scrub", "data");
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
    rot(&block);
    let rotten = |names: &mut dyn Iterator<Item = &str>| -> BTreeSet<(String, u64, String)> {
        names
            .map(|name| (name.to_string(), victim, "read_error".to_string()))
            .collect()
    };
    for pool in ["data", "ec21"] {
        let (_, found) = cluster.scrub("scrub", pool);
        assert!(
            found.is_empty(),
            "a shallow scrub of {pool} reads no data: {found:?}"
        );
        let (objects, found) = cluster.scrub("deep-scrub", pool);
        assert_eq!(objects, objects_in(pool), "objects of {pool}");
        assert_eq!(
            found,
            rotten(&mut LARGE.into_iter()),
            "a deep scrub of {pool}"
        );
    }

    // Every object reads exact: from another copy where the primary's is bad (which repairs
    // it), by decoding in the erasure pool.
    all_read_exact(&runtime, &client, "after the rot");
    // The reads counted the bad copies they found (the victim's, as primary, at least), and
    // past `mon_osd_warn_num_repaired` the health warns.
    tidepool_ok(&path, &["config", "set", "mon_osd_warn_num_repaired", "0"]);
    cluster.wait_for(Duration::from_secs(30), "the bad reads counted", || {
        let df = cluster.json(&["osd", "df"]);
        let counted = df["osds"]
            .as_array()
            .expect("osds")
            .iter()
            .any(|row| row["id"] == victim && row["bad_reads"].as_u64() > Some(0));
        counted && health_checks(&cluster).contains("OSD_TOO_MANY_REPAIRS")
    });
    // The reads repaired the copies they found bad (the primary's); the others wait for repair.
    let (_, found) = cluster.scrub("deep-scrub", "data");
    assert_eq!(
        found,
        rotten(&mut kept_names(&primaries, victim)),
        "a deep scrub after the reads"
    );

    // The health says so; `pg ls --state inconsistent` and `pg list-inconsistent` name them.
    let damaged = |checks: &BTreeSet<String>| {
        checks.contains("OSD_SCRUB_ERRORS") && checks.contains("PG_DAMAGED")
    };
    cluster.wait_for(
        Duration::from_secs(30),
        "the scrub errors in the health",
        || damaged(&health_checks(&cluster)),
    );
    for (pool, expected) in [
        ("data", rotten(&mut kept_names(&primaries, victim))),
        ("ec21", rotten(&mut LARGE.into_iter())),
    ] {
        // As the primaries report them, within a beacon or two.
        let mut listed = BTreeSet::new();
        for _ in 0..60 {
            listed = listed_inconsistent(&cluster, pool);
            if listed == expected {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(listed, expected, "{pool}");
    }

    // Repair: every bad copy rewritten from a good one; a deep scrub is then clean.
    for pool in ["data", "ec21"] {
        let (_, before) = cluster.scrub("deep-scrub", pool);
        let reports: Value = cluster.json(&["pg", "repair", pool]);
        let repaired: BTreeSet<String> = reports
            .as_array()
            .expect("reports")
            .iter()
            .flat_map(|r| r["repaired"].as_array().expect("repaired").clone())
            .map(|r| r[0].as_str().expect("object").to_owned())
            .collect();
        let (_, found) = cluster.scrub("deep-scrub", pool);
        assert!(found.is_empty(), "{pool} after its repair: {found:?}");
        let bad: BTreeSet<String> = before.into_iter().map(|(object, _, _)| object).collect();
        assert_eq!(repaired, bad, "{pool}: what was repaired");
    }
    all_read_exact(&runtime, &client, "after the repairs");

    cluster.wait_for(Duration::from_secs(30), "the health clears", || {
        !damaged(&health_checks(&cluster))
    });
    let listed: Value = cluster.json(&["pg", "ls", "--state", "inconsistent"]);
    assert_eq!(listed, Value::Array(Vec::new()));

    // The same OSD stopped: its block file rots again, and its store is changed by hand.
    let mut cluster = cluster;
    cluster.osds[victim as usize]
        .take()
        .expect("the victim runs")
        .kill();
    rot(&block);
    let osd_dir = path.join(format!("osd-{victim}"));
    // A primary that lacks an object answers that it does not exist, as Ceph's does, until
    // a scrub repairs it: the object removed is one whose primary is another OSD.
    let located = |name: &str| runtime.block_on(client.locate("data", name)).expect("data");
    let removed = SMALL
        .into_iter()
        .find(|name| located(name).1.map(|p| u64::from(p.0)) != Some(victim))
        .expect("a small object whose primary is not the victim");
    let [changed_xattr, changed_omap] = {
        let others: Vec<&str> = SMALL.into_iter().filter(|n| *n != removed).collect();
        [others[0], others[1]]
    };
    let pg_of = located(removed).0;
    let store = |args: &[&str]| {
        let mut all = vec!["osd", "store", osd_dir.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        tidepool_ok(&path, &all)
    };
    let pg_in = |name: &str| located(name).0.to_string();
    store(&["remove", &pg_in(removed), removed]);
    let stray = path.join("stray");
    std::fs::write(&stray, b"an object nobody wrote").expect("stray bytes");
    let pg_stray = pg_of.to_string();
    store(&[
        "write",
        &pg_stray,
        "stray-object",
        stray.to_str().expect("utf-8"),
    ]);
    store(&[
        "set-xattr",
        &pg_in(changed_xattr),
        changed_xattr,
        "colour",
        "green",
    ]);
    store(&[
        "set-omap",
        &pg_in(changed_omap),
        changed_omap,
        "key",
        "value",
    ]);
    let listed = store(&["list", &pg_stray]);
    assert!(listed.lines().any(|l| l == "stray-object"), "{listed}");
    assert!(!listed.lines().any(|l| l == removed), "{listed}");
    let restarted = cluster.start_osd(victim as usize);
    cluster.osds[victim as usize] = Some(restarted);
    cluster.wait_osds_up(3);
    cluster.wait_clean(Duration::from_secs(90));

    all_read_exact(&runtime, &client, "after the OSD's restart");
    // A shallow scrub finds each change to the store.
    let (_, found) = cluster.scrub("scrub", "data");
    let changed: BTreeSet<(String, u64, String)> = [
        (removed, "missing"),
        ("stray-object", "stray"),
        (changed_xattr, "differs"),
        (changed_omap, "differs"),
    ]
    .into_iter()
    .map(|(name, kind)| (name.to_string(), victim, kind.to_string()))
    .collect();
    assert_eq!(found, changed, "a scrub after the changes");

    // The scheduled scrubs (every PG due every second) repair all of it on their own: every
    // PG is deep-scrubbed again, and none has errors left.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    tidepool_ok(&path, &["config", "set", "osd_scrub_auto_repair", "1"]);
    tidepool_ok(&path, &["config", "set", "osd_scrub_interval", "1"]);
    tidepool_ok(&path, &["config", "set", "osd_deep_scrub_interval", "1"]);
    cluster.wait_for(
        Duration::from_secs(120),
        "scheduled scrubs repair every copy",
        || {
            let listed: Value = cluster.json(&["pg", "ls"]);
            listed.as_array().expect("pgs").iter().all(|line| {
                line["last_deep_scrub"].as_u64() > Some(since) && line["scrub_errors"] == 0
            })
        },
    );
    tidepool_ok(
        &path,
        &["config", "set", "osd_deep_scrub_interval", "604800"],
    );
    tidepool_ok(&path, &["config", "set", "osd_scrub_interval", "86400"]);
    for pool in ["data", "ec21"] {
        let (_, found) = cluster.scrub("deep-scrub", pool);
        assert!(
            found.is_empty(),
            "{pool} after the scheduled repairs: {found:?}"
        );
    }
    assert!(!damaged(&health_checks(&cluster)));
    // The PGs' scrub times say when they were last scrubbed.
    let listed: Value = cluster.json(&["pg", "ls", "--pool", "data"]);
    for line in listed.as_array().expect("pgs") {
        let (scrubbed, deep) = (
            line["last_scrub"].as_u64().expect("time"),
            line["last_deep_scrub"].as_u64().expect("time"),
        );
        assert!(deep > since && scrubbed >= deep, "{line}");
    }

    // Every copy rots: every OSD's block file. The large objects have no good copy left: a
    // deep scrub says so, a repair changes nothing, the health says so, and reading one
    // fails rather than return wrong bytes; the small ones (inline) still read.
    tidepool_ok(&path, &["config", "set", "osd_scrub_auto_repair", "0"]);
    // Options reach an OSD with its next beacon's answer (every 2 s): until then a scheduled
    // scrub could still repair a copy rotted before the others from one not rotted yet.
    std::thread::sleep(Duration::from_secs(5));
    cluster.wait_for(Duration::from_secs(60), "the scheduled scrubs end", || {
        let listed: Value = cluster.json(&["pg", "ls"]);
        listed.as_array().expect("pgs").iter().all(|line| {
            !line["state"]
                .as_str()
                .is_some_and(|s| s.split('+').any(|w| w == "scrubbing"))
        })
    });
    for osd in 0..3 {
        rot(&path.join(format!("osd-{osd}")).join("store").join("block"));
    }
    for pool in ["data", "ec21"] {
        let reports: Value = cluster.json(&["pg", "repair", pool]);
        let mut lost = BTreeSet::new();
        for report in reports.as_array().expect("reports") {
            assert_eq!(report["repaired"], Value::Array(Vec::new()), "{report}");
            for object in report["unrepairable"].as_array().expect("list") {
                lost.insert(object.as_str().expect("name").to_owned());
            }
        }
        let large: BTreeSet<String> = LARGE.iter().map(|n| n.to_string()).collect();
        assert_eq!(lost, large, "{pool}: no provably good copy");
    }
    cluster.wait_for(Duration::from_secs(30), "the health names the loss", || {
        let status = cluster.json(&["status"]);
        status["health"]["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| {
                c["code"] == "PG_DAMAGED"
                    && c["summary"]
                        .as_str()
                        .is_some_and(|s| s.contains("8 objects with no provably good copy"))
            })
    });
    runtime.block_on(async {
        for pool in ["data", "ec21"] {
            for (i, name) in LARGE.iter().chain(&SMALL).enumerate() {
                let read = read_object(&client, pool, name).await;
                if name.starts_with("large") {
                    assert!(
                        matches!(read, Err(ObjectError::Op(OpError::Storage(_)))),
                        "{pool}/{name} read with no good copy: {read:?}"
                    );
                } else {
                    assert!(
                        read.expect("a small object reads") == bytes_of(i, name),
                        "{pool}/{name}"
                    );
                }
            }
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
