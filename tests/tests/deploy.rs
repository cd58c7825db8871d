//! What `deploy/` ships is checked by the tools that will read it: the alert rules and the
//! Prometheus configuration by `promtool` (its syntax check and the rules' unit tests in
//! `alerts.test.yml`), and every query of the Grafana dashboard by `promtool` too, as rules.
//! That every metric these files name is one the daemons export is checked against a live
//! cluster in `up.rs`.

use std::process::Command;

use serde_json::Value;
use tidepool_tests::{project_dir, TempDir};

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(project_dir())
        .output()
        .expect("promtool runs (scripts/deps.sh installs prometheus)");
    assert!(
        output.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_alert_rules_and_the_prometheus_configuration_check() {
    promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    promtool(&["test", "rules", "deploy/prometheus/alerts.test.yml"]);
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
}

/// The Grafana dashboard's panels, parsed.
fn panels() -> Vec<Value> {
    let text = std::fs::read_to_string(project_dir().join("deploy/grafana/tidepool.json"))
        .expect("deploy/grafana/tidepool.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "tidepool-overview");
    dashboard["panels"].as_array().expect("panels").clone()
}

#[test]
fn the_grafana_dashboard_queries_are_promql() {
    let panels = panels();
    assert!(panels.len() >= 10);
    let mut ids = std::collections::BTreeSet::new();
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for panel in &panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "ids are unique"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{panel}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for (i, target) in targets.iter().enumerate() {
            let expr = target["expr"].as_str().expect("an expression");
            rules.push_str(&format!(
                "      - record: grafana:panel{}:{i}\n        expr: {}\n",
                panel["id"],
                serde_json::to_string(expr).expect("quoted")
            ));
        }
    }
    let dir = TempDir::new("grafana-rules");
    let file = dir.path().join("panels.yml");
    std::fs::write(&file, rules).expect("rules file");
    promtool(&["check", "rules", file.to_str().expect("utf-8")]);
}
