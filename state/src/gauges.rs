//! The cluster-wide Prometheus gauges, as values: computed from a [`Status`] like everything
//! else here, exported by the leading monitor only (docs/observability.md).

use crate::Status;

/// One gauge sample: `name{label="value"} number`, or `name number` without a label.
#[derive(Clone, Debug, PartialEq)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub label: Option<(&'static str, String)>,
    pub value: f64,
}

/// The health as a number: 0 `HEALTH_OK`, 1 `HEALTH_WARN`, 2 `HEALTH_ERR`.
pub fn health_code(status: &str) -> f64 {
    match status {
        "HEALTH_OK" => 0.0,
        "HEALTH_WARN" => 1.0,
        _ => 2.0,
    }
}

/// The cluster's gauges for `status`.
pub fn cluster_gauges(status: &Status) -> Vec<Gauge> {
    let one = |name, help, value: f64| Gauge {
        name,
        help,
        label: None,
        value,
    };
    let labelled = |name, help, label, key: &str, value: f64| Gauge {
        name,
        help,
        label: Some((label, key.to_owned())),
        value,
    };
    const HEALTH: &str = "The cluster's health: 0 HEALTH_OK, 1 HEALTH_WARN, 2 HEALTH_ERR";
    const OSDS: &str = "OSDs in the map, up, down, in and out";
    const PGS: &str = "PGs by state";
    const OBJECTS: &str = "Object copies degraded (missing somewhere) or misplaced";
    const BYTES: &str = "Raw capacity: total, used and available bytes";
    let mut gauges = vec![one(
        "tidepool_cluster_health",
        HEALTH,
        health_code(&status.health.status),
    )];
    for check in &status.health.checks {
        gauges.push(labelled(
            "tidepool_cluster_health_check",
            "Failing health checks by code: 1 HEALTH_WARN, 2 HEALTH_ERR",
            "code",
            &check.code,
            health_code(&check.severity),
        ));
    }
    let osds = &status.osds;
    for (state, n) in [
        ("total", osds.total),
        ("up", osds.up),
        ("down", osds.total - osds.up.min(osds.total)),
        ("in", osds.is_in),
        ("out", osds.total - osds.is_in.min(osds.total)),
    ] {
        gauges.push(labelled(
            "tidepool_cluster_osds",
            OSDS,
            "state",
            state,
            n as f64,
        ));
    }
    for (state, n) in &status.pgs.by_state {
        gauges.push(labelled(
            "tidepool_cluster_pgs",
            PGS,
            "state",
            state,
            *n as f64,
        ));
    }
    for (kind, n) in [
        ("degraded", status.recovery.degraded_objects),
        ("misplaced", status.recovery.misplaced_objects),
    ] {
        gauges.push(labelled(
            "tidepool_cluster_objects",
            OBJECTS,
            "kind",
            kind,
            n as f64,
        ));
    }
    for (kind, n) in [
        ("total", status.data.total_bytes),
        ("used", status.data.used_bytes),
        ("available", status.data.available_bytes),
    ] {
        gauges.push(labelled(
            "tidepool_cluster_bytes",
            BYTES,
            "kind",
            kind,
            n as f64,
        ));
    }
    gauges.push(one(
        "tidepool_cluster_map_epoch",
        "The cluster map's epoch",
        status.epoch as f64,
    ));
    gauges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauges_say_what_status_says() {
        let snapshot = crate::tests::snapshot();
        let status = crate::status(&snapshot);
        let gauges = cluster_gauges(&status);
        let find = |name: &str, key: Option<&str>| {
            gauges
                .iter()
                .find(|g| g.name == name && g.label.as_ref().map(|(_, v)| v.as_str()) == key)
                .map(|g| g.value)
        };
        assert_eq!(
            find("tidepool_cluster_health", None),
            Some(health_code(&status.health.status))
        );
        assert_eq!(
            find("tidepool_cluster_osds", Some("up")),
            Some(status.osds.up as f64)
        );
        assert_eq!(
            find("tidepool_cluster_osds", Some("down")),
            Some((status.osds.total - status.osds.up) as f64)
        );
        let pgs: f64 = gauges
            .iter()
            .filter(|g| g.name == "tidepool_cluster_pgs")
            .map(|g| g.value)
            .sum();
        assert_eq!(pgs as usize, status.pgs.by_state.values().sum::<usize>());
        for check in &status.health.checks {
            assert!(find("tidepool_cluster_health_check", Some(&check.code)).is_some());
        }
    }
}
