//! Every daemon's `/metrics`, read by the Prometheus project's own parser: the names the
//! design promises are there, the counters move with the work that should move them, and the
//! cluster-wide gauges come from the leading monitor alone and say what `tidepool status`
//! says.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{object_client, runtime, write_objects, Cluster};
use tidepool_tests::{scrape, sum_of, tidepool_ok, Sample};

/// Every endpoint the cluster folder records, scraped: (daemon, samples).
fn scrape_all(cluster: &Cluster) -> Vec<(String, Vec<Sample>)> {
    scrape_some(cluster, "")
}

/// The endpoints of the daemons whose names start with `prefix`, scraped.
fn scrape_some(cluster: &Cluster, prefix: &str) -> Vec<(String, Vec<Sample>)> {
    let status = cluster.json(&["status"]);
    let endpoints = status["metrics"].as_object().expect("metrics endpoints");
    endpoints
        .iter()
        .filter(|(daemon, _)| daemon.starts_with(prefix))
        .map(|(daemon, url)| (daemon.clone(), scrape(url.as_str().expect("a URL"))))
        .collect()
}

/// The sum of `name` (with `labels`) over the daemons whose name starts with `prefix`.
fn total(all: &[(String, Vec<Sample>)], prefix: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    all.iter()
        .filter(|(daemon, _)| daemon.starts_with(prefix))
        .map(|(_, samples)| sum_of(samples, name, labels))
        .sum()
}

/// The monitors that export the cluster gauges, with their samples.
fn exporters(all: &[(String, Vec<Sample>)]) -> Vec<(String, Vec<Sample>)> {
    all.iter()
        .filter(|(daemon, samples)| {
            daemon.starts_with("mon.")
                && samples.iter().any(|s| s.name == "tidepool_cluster_health")
        })
        .cloned()
        .collect()
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn metrics_parse_and_move_with_the_work() {
    let mut cluster = Cluster::start("metrics", 4, 16, &[]);
    let rt = runtime();
    let client = Arc::new(rt.block_on(object_client(cluster.path())));

    cluster.wait_clean(Duration::from_secs(60));
    let before = scrape_all(&cluster);
    let daemons: Vec<&str> = before.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(
        daemons,
        ["mon.0", "mon.1", "mon.2", "osd.0", "osd.1", "osd.2", "osd.3"],
        "every daemon records its endpoint"
    );
    for (daemon, samples) in &before {
        let want: &[&str] = if daemon.starts_with("mon.") {
            &[
                "tidepool_mon_in_quorum",
                "tidepool_mon_is_leader",
                "tidepool_mon_elections_total",
                "tidepool_mon_map_epoch",
                "tidepool_mon_commit_seconds_count",
            ]
        } else {
            &[
                "tidepool_osd_ops_total",
                "tidepool_osd_op_bytes_total",
                "tidepool_osd_op_seconds_bucket",
                "tidepool_osd_recovery_bytes_total",
                "tidepool_osd_store_bytes",
                "tidepool_osd_store_commit_seconds_count",
                "tidepool_osd_store_group_transactions_count",
                "tidepool_osd_store_file_bytes",
            ]
        };
        for name in want {
            assert!(
                samples.iter().any(|s| s.name == *name),
                "{daemon} has no {name}"
            );
        }
    }

    assert_eq!(
        total(
            &before,
            "osd.",
            "tidepool_osd_pgs",
            &[("state", "active+clean")]
        ),
        16.0,
        "each PG counted by its primary"
    );

    // One leader; it alone exports the cluster, and says what `tidepool status` says.
    wait_until(
        Duration::from_secs(20),
        "one exporter of the cluster gauges",
        || exporters(&scrape_some(&cluster, "mon.")).len() == 1,
    );
    let all = scrape_all(&cluster);
    let (leader, gauges) = exporters(&all).remove(0);
    assert_eq!(
        sum_of(&gauges, "tidepool_mon_is_leader", &[]),
        1.0,
        "{leader} exports the cluster gauges and leads"
    );
    assert_eq!(total(&all, "mon.", "tidepool_mon_is_leader", &[]), 1.0);
    let status = cluster.json(&["status"]);
    let health = match status["health"]["status"].as_str() {
        Some("HEALTH_OK") => 0.0,
        Some("HEALTH_WARN") => 1.0,
        _ => 2.0,
    };
    assert_eq!(sum_of(&gauges, "tidepool_cluster_health", &[]), health);
    assert_eq!(
        sum_of(&gauges, "tidepool_cluster_osds", &[("state", "up")]),
        4.0
    );
    assert_eq!(sum_of(&gauges, "tidepool_cluster_pgs", &[]), 16.0);
    assert_eq!(
        sum_of(&gauges, "tidepool_mon_quorum_size", &[]),
        3.0,
        "the leader's quorum"
    );

    // Writes move the OSDs' write counters: ops on the primaries, bytes as written.
    let write_ops = total(
        &before,
        "osd.",
        "tidepool_osd_ops_total",
        &[("op", "write")],
    );
    let write_bytes = total(
        &before,
        "osd.",
        "tidepool_osd_op_bytes_total",
        &[("op", "write")],
    );
    write_objects(&rt, &client, 40, 64 << 10);
    let after = scrape_all(&cluster);
    assert!(
        total(&after, "osd.", "tidepool_osd_ops_total", &[("op", "write")]) >= write_ops + 40.0,
        "40 writes counted"
    );
    assert!(
        total(
            &after,
            "osd.",
            "tidepool_osd_op_bytes_total",
            &[("op", "write")]
        ) > write_bytes,
        "written bytes counted"
    );
    assert!(
        total(
            &after,
            "osd.",
            "tidepool_osd_ops_total",
            &[("op", "replicate")]
        ) >= 80.0,
        "each write replicated to two others"
    );

    // An OSD marked out: its PGs move, and the OSDs count what they pushed.
    tidepool_ok(cluster.path(), &["osd", "out", "0"]);
    wait_until(Duration::from_secs(60), "recovery bytes counted", || {
        total(
            &scrape_all(&cluster),
            "osd.",
            "tidepool_osd_recovery_bytes_total",
            &[],
        ) > 0.0
    });
    cluster.wait_clean(Duration::from_secs(120));
    let all = scrape_all(&cluster);
    assert!(
        total(
            &all,
            "osd.",
            "tidepool_osd_throttle_wait_seconds_count",
            &[]
        ) > 0.0,
        "the recovery passed its throttles"
    );
    assert!(
        total(
            &all,
            "osd.",
            "tidepool_osd_store_group_transactions_sum",
            &[]
        ) >= total(
            &all,
            "osd.",
            "tidepool_osd_store_group_transactions_count",
            &[]
        ),
        "every group commit holds a transaction or more"
    );

    // An OSD killed: the leader's gauges show it down.
    if let Some(mut osd) = cluster.osds[3].take() {
        osd.kill();
    }
    wait_until(Duration::from_secs(30), "the dead OSD counted down", || {
        exporters(&scrape_some(&cluster, "mon."))
            .first()
            .is_some_and(|(_, g)| sum_of(g, "tidepool_cluster_osds", &[("state", "down")]) == 1.0)
    });
}
