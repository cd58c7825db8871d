//! The `tidepool` binary run as a user runs it.

use serde_json::Value;
use tidepool_tests::{run, TempDir};

fn json(args: &[&str]) -> Value {
    let output = run(args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

/// Rule: `placement simulate --format json` reports counts per OSD, their spread and the
/// movement of a change, with the documented field names.
#[test]
fn simulate_reports_counts_and_movement() {
    let report = json(&[
        "placement",
        "simulate",
        "--hosts",
        "6",
        "--osds-per-host",
        "4",
        "--pgs",
        "2048",
        "--replicas",
        "3",
        "--add-osd",
        "host6:1",
        "--format",
        "json",
    ]);
    let counts = report["pg_count_per_osd"].as_object().expect("object");
    assert_eq!(counts.len(), 24, "OSD ids count from 0: {counts:?}");
    let total: u64 = counts.values().map(|v| v.as_u64().expect("count")).sum();
    assert_eq!(total, 2048 * 3);
    assert!(report["stddev"].as_f64().expect("stddev") > 0.0);
    let moved = report["moved_replicas"].as_u64().expect("moved");
    let ideal = report["ideal_moved_replicas"].as_f64().expect("ideal");
    let fraction = report["moved_fraction_of_ideal"]
        .as_f64()
        .expect("fraction");
    assert!(moved > 0 && ideal > 0.0);
    assert!((fraction - moved as f64 / ideal).abs() < 1e-9);
    let after = report["after"]["pg_count_per_osd"]
        .as_object()
        .expect("after");
    assert!(after.contains_key("24"), "the new OSD is osd.24");
}

/// Rule: erasure pools, marking out and reweighting are all accepted, and bad flags fail with
/// a message instead of a panic.
#[test]
fn simulate_changes_and_errors() {
    let report = json(&[
        "placement",
        "simulate",
        "--hosts",
        "8",
        "--erasure",
        "4+2",
        "--out",
        "3",
        "--reweight",
        "osd.5:2",
        "--format",
        "json",
    ]);
    assert_eq!(report["kind"]["erasure"]["k"], 4);
    assert_eq!(
        report["after"]["pg_count_per_osd"].get("3"),
        None,
        "osd.3 is out"
    );

    for bad in [
        &["placement", "simulate", "--erasure", "4-2"][..],
        &["placement", "simulate", "--out", "999"],
        &["placement", "simulate", "--weight", "-1"],
        &["placement", "simulate", "--hosts", "0"],
    ] {
        let output = run(bad);
        assert!(!output.status.success(), "{bad:?} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{bad:?}: {stderr}");
        assert!(!stderr.is_empty(), "{bad:?} explains itself");
    }
}

/// Rule: `cluster init` creates a CA and certificates, and refuses to overwrite a cluster.
#[test]
fn cluster_init_creates_once() {
    let temp = TempDir::new("init");
    let dir = temp.path().join("cluster");
    let dir_text = dir.to_str().expect("utf-8 path");
    let first = run(&["cluster", "init", dir_text, "--entity", "osd-0"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for file in [
        "cluster.json",
        "ca.pem",
        "ca.key",
        "certs/client-admin.pem",
        "certs/osd-0.key",
    ] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    let second = run(&["cluster", "init", dir_text]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already holds a cluster"));
}
