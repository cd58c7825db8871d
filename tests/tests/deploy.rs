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

/// What a command line of `deploy/` asks of `tidepool`: its subcommand's words and the flags
/// it passes. `tidepool cluster init DIR --mon A` gives ([`cluster`, `init`, `DIR`],
/// [`--mon`]).
fn tidepool_flags(words: &[&str]) -> Option<(Vec<String>, Vec<String>)> {
    let start = (0..words.len()).find(|&i| {
        (words[i] == "tidepool" || words[i].ends_with("bin/tidepool"))
            && (i == 0 || words[i - 1] == "exec" || !words[i - 1].starts_with('-'))
    })?;
    let rest = &words[start + 1..];
    let first_flag = rest
        .iter()
        .position(|w| w.starts_with("--"))
        .unwrap_or(rest.len());
    let subcommand = rest[..first_flag].iter().map(|w| w.to_string()).collect();
    let flags = rest[first_flag..]
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap_or(w).to_owned())
        .collect();
    Some((subcommand, flags))
}

/// Every flag `deploy/` gives a `tidepool` subcommand is one the subcommand has.
fn check_flags(origin: &str, command_line: &str) {
    let words: Vec<&str> = command_line.split_whitespace().collect();
    let Some((subcommand, flags)) = tidepool_flags(&words) else {
        return;
    };
    let mut args: Vec<&str> = subcommand.iter().map(String::as_str).collect();
    args.push("--help");
    let help = tidepool_tests::run(&args);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in flags {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{origin}: `tidepool {}` has no flag {flag}:\n{help}",
            subcommand.join(" ")
        );
    }
}

#[test]
fn the_systemd_units_verify() {
    let units = project_dir().join("deploy/systemd");
    let work = TempDir::new("systemd-units");
    let binary = tidepool_tests::tidepool().display().to_string();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).expect("deploy/systemd") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("unit");
        for line in text.lines().filter(|l| l.starts_with("ExecStart=")) {
            check_flags(&name, line);
        }
        // `verify` checks that the program exists: point it at the one this test built.
        std::fs::write(
            work.path().join(&name),
            text.replace("/usr/local/bin/tidepool", &binary),
        )
        .expect("copy");
        // Templates are verified as an instance.
        names.push(name.replace("@.", "@0."));
    }
    names.sort();
    assert_eq!(
        names,
        [
            "tidepool-gateway.service",
            "tidepool-mon@0.service",
            "tidepool-osd@0.service",
            "tidepool.target"
        ]
    );
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(&names)
        .current_dir(work.path())
        .output()
        .expect("systemd-analyze runs (scripts/deps.sh installs systemd)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // It warns about what it ignores without failing: a warning fails here too.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{}{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn the_kubernetes_manifests_match_the_api_schemas() {
    let folder = project_dir().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    // The oldest Kubernetes still supported and the newest the validator knows.
    for version in ["1.30.0", "1.37.0"] {
        let output = Command::new(tidepool_tests::venv_bin("kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", version])
            .args(&files)
            .output()
            .expect("kubernetes-validate runs");
        assert!(
            output.status.success(),
            "kubernetes-validate {version}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Each container's command line, as `tidepool` reads it, and the kinds made.
    let script = "import json, sys, yaml\n\
        for path in sys.argv[1:]:\n\
        \x20   for doc in yaml.safe_load_all(open(path)):\n\
        \x20       spec = doc.get('spec', {})\n\
        \x20       pod = spec.get('template', {}).get('spec', {})\n\
        \x20       for c in pod.get('initContainers', []) + pod.get('containers', []):\n\
        \x20           print(json.dumps([doc['kind'], c.get('command', []) + c.get('args', [])]))\n\
        \x20       if not pod:\n\
        \x20           print(json.dumps([doc['kind'], []]))\n";
    let output = Command::new(tidepool_tests::venv_bin("python"))
        .args(["-c", script])
        .args(&files)
        .output()
        .expect("python reads the manifests");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut kinds = std::collections::BTreeSet::new();
    let mut daemons = std::collections::BTreeSet::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (kind, command): (String, Vec<String>) = serde_json::from_str(line).expect("JSON");
        // `sh -c "exec tidepool mon ..."` or `tidepool osd ...`.
        let command_line = command.join(" ");
        check_flags(&format!("{kind} in deploy/kubernetes"), &command_line);
        let words: Vec<&str> = command_line.split_whitespace().collect();
        if let Some((subcommand, _)) = tidepool_flags(&words) {
            daemons.insert(subcommand[0].clone());
        }
        kinds.insert(kind);
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "Deployment",
            "Job",
            "Namespace",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "StatefulSet"
        ]
    );
    assert_eq!(
        daemons.into_iter().collect::<Vec<_>>(),
        ["cluster", "gateway", "mon", "osd"]
    );
}
