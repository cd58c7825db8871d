//! Adding and removing disks while traffic flows, over real monitor and OSD processes: a new
//! OSD fills while a workload runs and sees no error; an OSD marked out drains and is removed;
//! a killed OSD is marked down, then out, and redundancy returns without anyone acting; a
//! stale replica converges from the log when the log covers its gap, by backfill otherwise.
//! The scenarios run one at a time: each is a whole cluster on a 2-core machine.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    check_acked, check_objects, object_bytes, object_client, read_whole, write_objects, Cluster,
    Workload,
};
use tidepool_client::MonClient;
use tidepool_placement::{ClusterMap, OsdId, Placement, Scratch};
use tidepool_proto::mon::Report;
use tidepool_proto::osd::ObjectOp;
use tidepool_tests::{run, tidepool_ok, venv_bin, OSD_SIZE};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const KIB: u64 = 1024;

/// The map and the latest reports, from the monitors.
fn map_and_report(path: &Path) -> (ClusterMap, Report) {
    common::runtime().block_on(async {
        let mut mon = MonClient::new(path, &common::admin_identity(path)).expect("mon client");
        (
            mon.map().await.expect("map"),
            mon.report().await.expect("report"),
        )
    })
}

/// A process started elsewhere (by `tidepool osd add`), killed by PID when dropped.
struct Pid(u32);

impl Pid {
    fn signal(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([signal, &self.0.to_string()])
            .status();
    }
}

impl Drop for Pid {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}

/// Lines of the OSD logs other than `except`'s, from byte `from` of each, without colours.
fn osd_log_lines(path: &Path, except: usize, from: &BTreeMap<usize, usize>) -> Vec<String> {
    let mut lines = Vec::new();
    for n in 0..8 {
        if n == except {
            continue;
        }
        let Ok(text) = std::fs::read(path.join(format!("osd-{n}.log"))) else {
            continue;
        };
        let start = from.get(&n).copied().unwrap_or(0).min(text.len());
        let text = String::from_utf8_lossy(&text[start..]).into_owned();
        lines.extend(text.lines().map(strip_colours));
    }
    lines
}

fn log_sizes(path: &Path) -> BTreeMap<usize, usize> {
    (0..8)
        .filter_map(|n| {
            let len = std::fs::metadata(path.join(format!("osd-{n}.log")))
                .ok()?
                .len();
            Some((n, len as usize))
        })
        .collect()
}

fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks `value` against the JSON schema `docs/schemas/<schema>` (with Python's jsonschema from
/// the project's venv).
fn check_schema(value: &serde_json::Value, schema: &str, scratch: &Path) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/schemas")
        .join(schema);
    let file = scratch.join("value.json");
    std::fs::write(&file, value.to_string()).expect("value file");
    let output = std::process::Command::new(venv_bin("python"))
        .args([
            "-c",
            "import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))",
            file.to_str().expect("utf-8"),
            schema.to_str().expect("utf-8"),
        ])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{} does not match {}: {}",
        value,
        schema.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Rule: a fifth OSD added under traffic fills with its share and no more, the workload sees
/// no error, and every byte reads back; marked out, it drains, is safe to destroy, holds
/// nothing, and is removed.
#[test]
fn grow_and_shrink_while_traffic_flows() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Deep scrubs run all along (every PG due every second) and repair nothing, so that any
    // inconsistency they report, true or false, stays on record.
    let cluster = Cluster::start(
        "grow",
        4,
        128,
        &[
            ("osd_scrub_interval", "1"),
            ("osd_deep_scrub_interval", "1"),
            ("osd_scrub_auto_repair", "0"),
        ],
    );
    let path = cluster.path().to_path_buf();
    let runtime = common::runtime();
    let client = Arc::new(runtime.block_on(object_client(&path)));
    write_objects(&runtime, &client, 2000, 64 * KIB);
    cluster.wait_clean(Duration::from_secs(60));
    let (before, _) = map_and_report(&path);

    let workload = Workload::start(&runtime, client.clone(), (2000, 64 * KIB), 64 * KIB);
    workload.wait_acked(20);
    let data = path.join("osd-4");
    let added = cluster.json(&[
        "osd",
        "add",
        "--data",
        data.to_str().expect("utf-8"),
        "--size",
        OSD_SIZE,
    ]);
    let new_osd = Pid(added["pid"].as_u64().expect("pid") as u32);
    assert_eq!(added["osd"], 4);
    // While data moves: the outputs keep their schemas, and watch reports the change.
    check_schema(&cluster.json(&["status"]), "status.schema.json", &path);
    check_schema(&cluster.json(&["osd", "df"]), "osd-df.schema.json", &path);
    check_schema(
        &cluster.json(&["osd", "tree"]),
        "osd-tree.schema.json",
        &path,
    );
    let watched = tidepool_ok(
        &path,
        &[
            "watch",
            "--count",
            "3",
            "--interval",
            "0.5",
            "--format",
            "json",
        ],
    );
    let frames: Vec<serde_json::Value> = watched
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line per redraw"))
        .collect();
    assert_eq!(frames.len(), 3, "{watched}");
    for frame in &frames {
        check_schema(&frame["status"], "status.schema.json", &path);
    }
    let took = cluster.wait_clean(Duration::from_secs(180));
    eprintln!("clean {took:?} after osd add");
    no_scrub_errors(&cluster);
    std::thread::sleep(Duration::from_secs(1));
    let (acked, errors) = workload.stop(&runtime);
    assert!(errors.is_empty(), "the workload saw errors: {errors:?}");
    assert!(
        acked.len() > 10,
        "the workload wrote {} objects",
        acked.len()
    );

    // What moved, and what the new OSD holds, against its weight's share (1 of 5).
    let (after, report) = map_and_report(&path);
    let objects: BTreeMap<_, u64> = report.pgs.iter().map(|s| (s.pg, s.objects)).collect();
    let (old, new) = (Placement::new(&before), Placement::new(&after));
    let (mut copies, mut moved, mut held) = (0u64, 0u64, 0u64);
    for (&pg, &count) in &objects {
        let up = |p: &Placement| -> Vec<OsdId> {
            p.map_pg(pg, &mut Scratch::default())
                .map(|m| m.up.into_iter().flatten().collect())
                .unwrap_or_default()
        };
        let (was, now) = (up(&old), up(&new));
        copies += count * now.len() as u64;
        moved += count * now.iter().filter(|o| !was.contains(o)).count() as u64;
        if now.contains(&OsdId(4)) {
            held += count;
        }
    }
    let ideal = copies as f64 / 5.0;
    eprintln!("moved {moved} object copies, osd.4 holds {held}, ideal share {ideal:.0}");
    assert!(
        moved as f64 <= 1.2 * ideal,
        "moved {moved} copies for an ideal {ideal}"
    );
    assert!(
        (held as f64 / ideal - 1.0).abs() <= 0.15,
        "osd.4 holds {held} copies for an ideal {ideal}"
    );
    check_objects(&runtime, &client, 2000, 64 * KIB);
    check_acked(&runtime, &client, &acked, 64 * KIB);
    for (args, schema) in [
        (&["status"][..], "status.schema.json"),
        (&["osd", "df"], "osd-df.schema.json"),
        (&["osd", "tree"], "osd-tree.schema.json"),
    ] {
        check_schema(&cluster.json(args), schema, &path);
    }

    // Shrink: out, clean, safe to destroy with nothing left on it, stopped, removed.
    let dry = tidepool_ok(&path, &["osd", "out", "4", "--dry-run"]);
    assert!(dry.contains("from osd.4"), "{dry}");
    assert_eq!(
        cluster.osd_states()[&4],
        (true, true),
        "the dry run changed nothing"
    );
    tidepool_ok(&path, &["osd", "out", "4"]);
    cluster.wait_clean(Duration::from_secs(180));
    cluster.wait_for(Duration::from_secs(30), "osd.4 safe to destroy", || {
        let cluster_dir = path.to_str().expect("utf-8");
        run(&["osd", "safe-to-destroy", "4", "--cluster", cluster_dir])
            .status
            .success()
    });
    let df = cluster.json(&["osd", "df"]);
    let row = df["osds"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["id"] == 4)
        .expect("osd.4 row")
        .clone();
    assert_eq!(row["pgs_held"], 0, "{row}");
    assert_eq!(row["used_bytes"], 0, "{row}");
    new_osd.signal("-TERM");
    cluster.wait_for(Duration::from_secs(30), "osd.4 down", || {
        cluster.osd_states().get(&4).is_some_and(|(up, _)| !*up)
    });
    tidepool_ok(&path, &["osd", "rm", "4"]);
    assert!(!cluster.osd_states().contains_key(&4));
    check_objects(&runtime, &client, 2000, 64 * KIB);
    no_scrub_errors(&cluster);
}

/// The scrubs that ran while clients wrote and data moved found nothing: no PG has a scrub
/// error on record, and deep scrubs did run (the OSDs' logs say so).
fn no_scrub_errors(cluster: &Cluster) {
    let listed = cluster.json(&["pg", "ls"]);
    let errors: Vec<&serde_json::Value> = listed
        .as_array()
        .expect("pgs")
        .iter()
        .filter(|p| p["scrub_errors"] != 0)
        .collect();
    if !errors.is_empty() {
        // What each holder's copy differed in, and what the OSDs logged of those PGs.
        let details: Vec<String> = errors
            .iter()
            .map(|p| {
                let pgid = p["pgid"].as_str().unwrap_or_default();
                let found = cluster.json(&["pg", "list-inconsistent", pgid]);
                let needle = format!("{pgid} ");
                let logs: Vec<String> = (0..5)
                    .flat_map(|n| {
                        let log =
                            std::fs::read_to_string(cluster.path().join(format!("osd-{n}.log")))
                                .unwrap_or_default();
                        let lines: Vec<String> = log
                            .lines()
                            .filter(|l| l.contains(&needle) || l.ends_with(pgid))
                            .map(|l| format!("osd.{n}: {l}"))
                            .collect();
                        let skip = lines.len().saturating_sub(100);
                        lines.into_iter().skip(skip)
                    })
                    .collect();
                format!("{pgid}: {found}\n{}", logs.join("\n"))
            })
            .collect();
        panic!(
            "scrubs under rebalancing reported errors: {errors:?}\n{}",
            details.join("\n")
        );
    }
    let status = cluster.json(&["status"]);
    assert!(
        !common::health_checks(&status)
            .iter()
            .any(|c| c == "OSD_SCRUB_ERRORS"),
        "{status}"
    );
    let deep_scrubs: usize = (0..5)
        .map(|n| {
            std::fs::read_to_string(cluster.path().join(format!("osd-{n}.log")))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("scrubbed") && l.contains("deep=true"))
                .count()
        })
        .sum();
    assert!(deep_scrubs > 0, "no deep scrub ran");
    eprintln!("{deep_scrubs} deep scrubs, none found an inconsistency");
}

/// Rule: a killed OSD left down is marked down, then out after the interval, and the cluster
/// restores every copy on its own; back, it rejoins and the cluster ends clean, nothing lost.
#[test]
fn a_failed_osd_is_replaced_without_anyone_acting() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = Cluster::start("fail", 4, 32, &[("mon_osd_down_out_interval", "5")]);
    let path = cluster.path().to_path_buf();
    let runtime = common::runtime();
    let client = Arc::new(runtime.block_on(object_client(&path)));
    write_objects(&runtime, &client, 300, 256 * KIB);
    cluster.wait_clean(Duration::from_secs(60));

    cluster.osds[1].take().expect("osd.1").kill();
    cluster.wait_for(Duration::from_secs(60), "osd.1 down", || {
        cluster.osd_states()[&1] == (false, true)
    });
    let status = cluster.json(&["status"]);
    assert_eq!(status["health"]["status"], "HEALTH_WARN");
    let checks = common::health_checks(&status);
    assert!(checks.iter().any(|c| c == "OSD_DOWN"), "{checks:?}");
    cluster.wait_for(Duration::from_secs(60), "osd.1 out", || {
        cluster.osd_states()[&1] == (false, false)
    });
    let took = cluster.wait_clean(Duration::from_secs(120));
    eprintln!("redundancy restored {took:?} after osd.1 went out");
    check_objects(&runtime, &client, 300, 256 * KIB);

    cluster.osds[1] = Some(cluster.start_osd(1));
    cluster.wait_for(Duration::from_secs(60), "osd.1 up and in", || {
        cluster.osd_states()[&1] == (true, true)
    });
    cluster.wait_clean(Duration::from_secs(120));
    // Healthy but for the disk, which the machine shares with others.
    let status = cluster.json(&["status"]);
    let mut checks = common::health_checks(&status);
    checks.retain(|code| !code.ends_with("FULL"));
    assert!(checks.is_empty(), "{checks:?}");
    check_objects(&runtime, &client, 300, 256 * KIB);
}

/// Rule: an OSD that missed a few changes catches up from the log (no backfill to it); one
/// that missed more than the log keeps is backfilled; both end bit-exact.
#[test]
fn stale_replicas_converge_by_log_then_by_backfill() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = Cluster::start("stale", 4, 8, &[("osd_pg_log_entries", "40")]);
    let path = cluster.path().to_path_buf();
    let runtime = common::runtime();
    let client = Arc::new(runtime.block_on(object_client(&path)));
    write_objects(&runtime, &client, 200, 16 * KIB);
    cluster.wait_clean(Duration::from_secs(60));
    // Expected contents: the seed of object_bytes, or None once removed.
    let mut expected: BTreeMap<String, Option<u64>> =
        (0..200).map(|i| (format!("obj-{i}"), Some(i))).collect();
    let mut round = 0;
    let mut change = |count: u64, expected: &mut BTreeMap<String, Option<u64>>| {
        round += 1;
        runtime.block_on(async {
            for i in 0..count {
                let name = format!("obj-{}", (i * 7 + round) % 200);
                let op = if i % 10 == 9 {
                    expected.insert(name.clone(), None);
                    ObjectOp::Remove
                } else {
                    let seed = 1_000_000 * round + i;
                    expected.insert(name.clone(), Some(seed));
                    ObjectOp::WriteFull(object_bytes(seed, 16 * KIB).into())
                };
                let result = client.execute("data", &name, vec![op]).await;
                assert!(
                    result.is_ok() || matches!(result, Err(tidepool_client::ObjectError::Op(_))),
                    "{name}: {result:?}"
                );
            }
        });
    };
    let check = |expected: &BTreeMap<String, Option<u64>>| {
        runtime.block_on(async {
            for (name, seed) in expected {
                let read = read_whole(&client, name).await;
                match seed {
                    Some(seed) => assert!(
                        read.as_deref().ok() == Some(object_bytes(*seed, 16 * KIB).as_slice()),
                        "{name} differs"
                    ),
                    None => assert!(read.is_err(), "{name} was removed but reads"),
                }
            }
        });
    };

    // A short absence: a few changes per PG, well inside the 40 entries each keeps.
    cluster.osds[2].take().expect("osd.2").kill();
    cluster.wait_for(Duration::from_secs(60), "osd.2 down", || {
        !cluster.osd_states()[&2].0
    });
    change(40, &mut expected);
    let logs = log_sizes(&path);
    cluster.osds[2] = Some(cluster.start_osd(2));
    cluster.wait_osds_up(4);
    cluster.wait_clean(Duration::from_secs(120));
    let lines = osd_log_lines(&path, 2, &logs);
    let to2 = |what: &str| {
        lines
            .iter()
            .filter(|l| l.contains(what) && l.contains("to=2"))
            .count()
    };
    assert!(
        to2("recovering from the log") > 0,
        "no log recovery to osd.2"
    );
    assert_eq!(
        to2("backfilling") + to2("copying the whole PG"),
        0,
        "osd.2 was backfilled"
    );
    check(&expected);

    // A long absence: more changes per PG than the log keeps.
    cluster.osds[2].take().expect("osd.2").kill();
    cluster.wait_for(Duration::from_secs(60), "osd.2 down", || {
        !cluster.osd_states()[&2].0
    });
    change(8 * 60, &mut expected);
    let logs = log_sizes(&path);
    cluster.osds[2] = Some(cluster.start_osd(2));
    cluster.wait_osds_up(4);
    cluster.wait_clean(Duration::from_secs(120));
    let lines = osd_log_lines(&path, 2, &logs);
    let backfilled = lines
        .iter()
        .filter(|l| {
            (l.contains("backfilling") || l.contains("copying the whole PG")) && l.contains("to=2")
        })
        .count();
    assert!(backfilled > 0, "osd.2 was not backfilled");
    check(&expected);
}
