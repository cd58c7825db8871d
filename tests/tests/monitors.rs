//! Real monitor processes on loopback: concurrent map changes through a leader failure, a
//! restarted monitor catching up, and a minority refusing changes with a clear error.

use std::collections::BTreeSet;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidepool_tests::{run, Daemon, TempDir};

fn start_monitors(dir: &Path, count: u8) -> Vec<Daemon> {
    let dir_text = dir.to_str().expect("utf-8 path");
    let init = run(&["cluster", "init", dir_text, "--mons", &count.to_string()]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    (0..count).map(|rank| start_monitor(dir, rank)).collect()
}

/// Starts monitor `rank`. Each keeps only the last 20 committed changes, so a monitor that was
/// down for longer catches up from a snapshot.
fn start_monitor(dir: &Path, rank: u8) -> Daemon {
    let dir_text = dir.to_str().expect("utf-8 path");
    Daemon::start(
        &[
            "mon",
            "--id",
            &rank.to_string(),
            "--data",
            dir_text,
            "--retain",
            "20",
        ],
        &dir.join(format!("mon-{rank}.log")),
    )
}

fn json(dir: &Path, args: &[&str]) -> Option<Value> {
    let mut full = args.to_vec();
    full.extend([
        "--cluster",
        dir.to_str().expect("utf-8 path"),
        "--format",
        "json",
    ]);
    let output = run(&full);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("JSON output"))
}

/// Polls `mon dump` until `check` holds, within `limit`.
fn wait_for(dir: &Path, limit: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(dump) = json(dir, &["mon", "dump"]) {
            if check(&dump) {
                return dump;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

fn leader(dump: &Value) -> Option<u64> {
    dump["mons"]
        .as_array()?
        .iter()
        .find_map(|m| m["leader"].as_u64())
}

/// Rule: with 3 monitors, 4 concurrent clients make 300 changes while the leader is killed;
/// every acknowledged change is in the final map exactly once, all monitors agree on the same
/// map at the same epoch, and the killed monitor catches up after restarting (from a snapshot:
/// the others trimmed what it missed).
#[test]
fn three_monitors_survive_a_leader_kill() {
    let dir = TempDir::new("mon3");
    let mut monitors = start_monitors(dir.path(), 3);
    let dump = wait_for(dir.path(), Duration::from_secs(30), "a leader", |d| {
        leader(d).is_some()
    });
    let first_leader = leader(&dump).expect("leader") as usize;

    let cluster = dir.path().to_path_buf();
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let cluster = cluster.clone();
            thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0..75 {
                    let name = format!("c{client}-p{i}");
                    let output = run(&[
                        "pool",
                        "create",
                        &name,
                        "--pg-num",
                        "8",
                        "--cluster",
                        cluster.to_str().expect("utf-8"),
                    ]);
                    if output.status.success() {
                        acknowledged.push(name);
                    }
                }
                acknowledged
            })
        })
        .collect();
    // Part-way through (once 40 changes have committed), kill the leader.
    wait_for(
        dir.path(),
        Duration::from_secs(120),
        "40 committed changes",
        |d| d["mons"][first_leader]["epoch"].as_u64() >= Some(40),
    );
    monitors[first_leader].kill();
    let acknowledged: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    assert!(
        acknowledged.len() >= 250,
        "most changes succeed: {}",
        acknowledged.len()
    );

    let pools = json(dir.path(), &["pool", "ls"]).expect("pool ls");
    let names: Vec<&str> = pools
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "no pool twice");
    for name in &acknowledged {
        assert!(
            unique.contains(name.as_str()),
            "acknowledged {name} is missing"
        );
    }

    // The killed monitor restarts and catches up; all agree on commit and epoch.
    monitors[first_leader] = start_monitor(dir.path(), first_leader as u8);
    wait_for(
        dir.path(),
        Duration::from_secs(30),
        "all monitors to agree",
        |d| {
            let mons = d["mons"].as_array().expect("mons");
            let views: BTreeSet<(Option<u64>, Option<u64>, String)> = mons
                .iter()
                .map(|m| {
                    let digest = m["map_digest"].as_str().unwrap_or("").to_owned();
                    (m["commit"].as_u64(), m["epoch"].as_u64(), digest)
                })
                .collect();
            mons.iter().all(|m| m["up"] == true) && views.len() == 1
        },
    );
    let log = std::fs::read_to_string(dir.path().join(format!("mon-{first_leader}.log")))
        .expect("monitor log");
    assert!(
        log.contains("installed a snapshot"),
        "the restarted monitor caught up from a snapshot"
    );
}

/// Rule: 5 monitors keep working with 2 down; with only a minority up, a change is refused
/// with a clear error after a bounded wait instead of hanging.
#[test]
fn five_monitors_and_a_minority() {
    let dir = TempDir::new("mon5");
    let mut monitors = start_monitors(dir.path(), 5);
    wait_for(dir.path(), Duration::from_secs(30), "a leader", |d| {
        leader(d).is_some()
    });
    monitors[0].kill();
    monitors[3].kill();
    let dir_text = dir.path().to_str().expect("utf-8");
    let output = run(&["pool", "create", "survives", "--cluster", dir_text]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // No OSD has joined, so no host can hold a copy: the pool is created, with a warning.
    assert!(
        stderr.contains("warning: pool survives keeps 3 copies in different hosts, but the cluster has 0 host(s)"),
        "{stderr}"
    );

    // An erasure pool needs a failure domain per shard: refused while no OSD exists, made
    // once three do, and listed with its profile.
    let ec = [
        "pool",
        "create",
        "ec",
        "--erasure",
        "2+1",
        "--failure-domain",
        "osd",
        "--cluster",
        dir_text,
    ];
    let output = run(&ec);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("erasure 2+1 puts its 3 shards in 3 different osds, and the map has 0"),
        "{stderr}"
    );
    for _ in 0..3 {
        let output = run(&["osd", "create", "--cluster", dir_text]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = run(&ec);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = run(&["pool", "ls", "--cluster", dir_text]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(" ec erasure 2+1 stripe_unit 4096 min_size 3 pg_num 64 failure_domain osd raw/stored 1.50"),
        "{listed}"
    );

    monitors[1].kill();
    let started = Instant::now();
    let output = run(&["pool", "create", "refused", "--cluster", dir_text]);
    assert!(!output.status.success(), "a minority must refuse changes");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no monitor quorum"),
        "clear error: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "bounded wait");
}
