//! The chaos test's short variant: `tests/chaos/chaos.py` for 60 seconds over a real cluster
//! (3 monitors, 5 OSDs, the S3 gateway) with kill -9, SIGSTOP and partitions of its daemons,
//! checking that no acknowledged write or delete is lost and no read is stale. The seed is
//! random and printed; `CHAOS_SEED` replays one, `CHAOS_SECONDS` lengthens the run.
//! `tests/chaos/many.sh` runs many seeds.

use std::process::Command;

use tidepool_tests::{tidepool, TempDir};

#[test]
fn acknowledged_writes_survive_kills_pauses_and_partitions() {
    let dir = TempDir::new("chaos");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chaos/chaos.py");
    let cluster = dir.path().join("cluster");
    let seconds = std::env::var("CHAOS_SECONDS").unwrap_or_else(|_| "60".into());
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .args(["--tidepool", tidepool().to_str().expect("utf-8 path")])
        .args(["--dir", cluster.to_str().expect("utf-8 path")])
        .args(["--seconds", &seconds]);
    if let Ok(seed) = std::env::var("CHAOS_SEED") {
        command.args(["--seed", &seed]);
    }
    let output = command.output().expect("python3 runs the chaos script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    if !output.status.success() {
        // The daemons' logs tell what happened around the violations.
        for entry in std::fs::read_dir(&cluster).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let log = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                println!("--- {} (last lines) ---", path.display());
                for line in tail.into_iter().rev() {
                    println!("{line}");
                }
            }
        }
    }
    assert!(
        output.status.success(),
        "the chaos run failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
}
