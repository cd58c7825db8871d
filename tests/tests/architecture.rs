//! The architecture invariants of docs/ARCHITECTURE.md, checked against `cargo metadata`: each
//! crate may depend only on what the house plan allows, and the pure crates pull in no async
//! runtime, network or storage engine, not even transitively.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Workspace crates each crate may depend on (normal dependencies, not dev or build).
const ALLOWED_WORKSPACE_DEPS: &[(&str, &[&str])] = &[
    ("tidepool-placement", &[]),
    ("tidepool-proto", &["tidepool-placement"]),
    ("tidepool-erasure", &[]),
    ("tidepool-messenger", &["tidepool-proto"]),
    ("tidepool-kv", &[]),
    ("tidepool-state", &["tidepool-placement", "tidepool-proto"]),
    ("tidepool-metrics", &[]),
    (
        "tidepool-monitor",
        &[
            "tidepool-placement",
            "tidepool-proto",
            "tidepool-messenger",
            "tidepool-kv",
            "tidepool-metrics",
            "tidepool-state",
        ],
    ),
    (
        "tidepool-osd",
        &[
            "tidepool-placement",
            "tidepool-proto",
            "tidepool-erasure",
            "tidepool-messenger",
            "tidepool-kv",
            "tidepool-client",
            "tidepool-metrics",
        ],
    ),
    (
        "tidepool-client",
        &["tidepool-placement", "tidepool-proto", "tidepool-messenger"],
    ),
    (
        "tidepool-buckets",
        &["tidepool-client", "tidepool-placement", "tidepool-proto"],
    ),
    (
        "tidepool-gateway",
        &[
            "tidepool-buckets",
            "tidepool-client",
            "tidepool-proto",
            "tidepool-metrics",
        ],
    ),
    (
        "tidepool-fuse",
        &[
            "tidepool-buckets",
            "tidepool-client",
            "tidepool-proto",
            "tidepool-metrics",
        ],
    ),
    (
        "tidepool",
        &[
            "tidepool-placement",
            "tidepool-proto",
            "tidepool-messenger",
            "tidepool-kv",
            "tidepool-monitor",
            "tidepool-osd",
            "tidepool-client",
            "tidepool-buckets",
            "tidepool-gateway",
            "tidepool-fuse",
            "tidepool-state",
            "tidepool-metrics",
        ],
    ),
    ("tidepool-tests", &[]),
];

/// External crates that must not appear anywhere in a crate's normal dependency closure.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // Pure crates: no IO stack at all.
    (
        "tidepool-placement",
        &["tokio", "quinn", "rustls", "librocksdb-sys", "axum", "mio"],
    ),
    (
        "tidepool-proto",
        &["tokio", "quinn", "rustls", "librocksdb-sys", "axum", "mio"],
    ),
    (
        "tidepool-erasure",
        &["tokio", "quinn", "rustls", "librocksdb-sys", "axum", "mio"],
    ),
    (
        "tidepool-state",
        &["tokio", "quinn", "rustls", "librocksdb-sys", "axum", "mio"],
    ),
    // Metrics are counted by every daemon's crate, served over HTTP by the binary alone.
    (
        "tidepool-metrics",
        &[
            "tokio",
            "quinn",
            "rustls",
            "librocksdb-sys",
            "axum",
            "hyper",
            "mio",
        ],
    ),
    // Only kv links RocksDB (used by the monitor and OSD daemons); only the gateway links axum.
    ("tidepool-messenger", &["librocksdb-sys", "axum"]),
    ("tidepool-kv", &["tokio", "quinn", "axum"]),
    ("tidepool-monitor", &["axum"]),
    ("tidepool-osd", &["axum"]),
    ("tidepool-client", &["librocksdb-sys", "axum"]),
    ("tidepool-buckets", &["librocksdb-sys", "axum", "hyper"]),
    ("tidepool-gateway", &["librocksdb-sys"]),
    // The mount talks to the cluster through the bucket layer, never through HTTP.
    ("tidepool-fuse", &["librocksdb-sys", "axum", "hyper", "s3s"]),
];

struct Graph {
    names: BTreeMap<String, String>,
    /// Package id → ids of its normal (non-dev, non-build) dependencies.
    normal_deps: BTreeMap<String, Vec<String>>,
    workspace: BTreeSet<String>,
}

/// The platform to resolve for: the one running the tests.
fn host_triple() -> String {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc reports its host")
        .to_owned()
}

fn metadata() -> &'static Graph {
    static GRAPH: std::sync::OnceLock<Graph> = std::sync::OnceLock::new();
    GRAPH.get_or_init(load_metadata)
}

fn load_metadata() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
        ])
        .arg(host_triple())
        .current_dir(manifest_dir())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let mut names = BTreeMap::new();
    for package in json["packages"].as_array().expect("packages") {
        names.insert(
            package["id"].as_str().expect("id").to_owned(),
            package["name"].as_str().expect("name").to_owned(),
        );
    }
    let workspace = json["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    let mut normal_deps = BTreeMap::new();
    for node in json["resolve"]["nodes"].as_array().expect("resolve") {
        let deps = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .expect("dep_kinds")
                    .iter()
                    .any(|kind| kind["kind"].is_null())
            })
            .map(|dep| dep["pkg"].as_str().expect("pkg").to_owned())
            .collect();
        normal_deps.insert(node["id"].as_str().expect("id").to_owned(), deps);
    }
    Graph {
        names,
        normal_deps,
        workspace,
    }
}

impl Graph {
    fn id_of(&self, name: &str) -> &str {
        self.workspace
            .iter()
            .find(|id| self.names[*id] == name)
            .unwrap_or_else(|| panic!("{name} is not a workspace member"))
    }

    fn closure(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![self.id_of(name).to_owned()];
        while let Some(id) = stack.pop() {
            for dep in &self.normal_deps[&id] {
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        seen.iter().map(|id| self.names[id].clone()).collect()
    }
}

/// Rule: dependency arrows between workspace crates point only the way the house plan allows.
#[test]
fn workspace_dependencies_follow_the_house_plan() {
    let graph = metadata();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED_WORKSPACE_DEPS.iter().copied().collect();
    for id in &graph.workspace {
        let name = graph.names[id].as_str();
        let permitted = allowed
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing from ALLOWED_WORKSPACE_DEPS"));
        for dep in &graph.normal_deps[id] {
            if graph.workspace.contains(dep) {
                let dep_name = graph.names[dep].as_str();
                assert!(
                    permitted.contains(&dep_name),
                    "{name} must not depend on {dep_name} (docs/ARCHITECTURE.md)"
                );
            }
        }
    }
}

/// Rule: pure crates pull in no runtime, network or storage engine; RocksDB and axum stay in
/// the one crate each that owns them.
#[test]
fn forbidden_crates_stay_out() {
    let graph = metadata();
    for (name, forbidden) in FORBIDDEN {
        let closure = graph.closure(name);
        for crate_name in *forbidden {
            assert!(
                !closure.contains(*crate_name),
                "{name} depends (perhaps transitively) on {crate_name}, which docs/ARCHITECTURE.md forbids"
            );
        }
    }
}

/// This package's folder, read when the test runs: a test binary built from another checkout of
/// the same tree (sharing the target folder) must still look in this one.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .expect("cargo sets CARGO_MANIFEST_DIR when it runs tests")
}
