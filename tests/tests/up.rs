//! `tidepool up`, as the README's `make up` runs it: a local cluster that starts, serves
//! objects, stops every process on Ctrl-C, and resumes its data on the next run.

use std::path::Path;
use std::time::{Duration, Instant};

use tidepool_tests::{run, Daemon, TempDir};

fn start(dir: &Path, log: &Path) -> Daemon {
    let daemon = Daemon::start(
        &["up", "--dir", dir.to_str().expect("utf-8"), "--osds", "3"],
        log,
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("Tidepool is up") {
            assert!(text.contains("PGs:      32 of 32 active"), "{text}");
            return daemon;
        }
        assert!(
            Instant::now() < deadline,
            "tidepool up did not come up: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cluster's daemons still running (by their command lines naming `dir`).
fn running(dir: &Path) -> Vec<String> {
    let output = std::process::Command::new("pgrep")
        .args(["-af", &format!("--data {}", dir.display())])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Rule: `tidepool up` starts a working cluster, Ctrl-C stops every process it started, and a
/// second run serves the same objects.
#[test]
fn up_starts_stops_and_resumes() {
    let dir = TempDir::new("up");
    let cluster = dir.path().join("cluster");
    let text = cluster.to_str().expect("utf-8").to_owned();
    let mut up = start(&cluster, &dir.path().join("up-1.log"));
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, b"hello from tidepool up").expect("file");
    let put = run(&[
        "object",
        "put",
        "data",
        "hello",
        file.to_str().expect("utf-8"),
        "--cluster",
        &text,
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(
        up.interrupt(Duration::from_secs(30)),
        "Ctrl-C stops tidepool up"
    );
    assert!(
        running(&cluster).is_empty(),
        "left running: {:?}",
        running(&cluster)
    );

    let mut up = start(&cluster, &dir.path().join("up-2.log"));
    let get = run(&["object", "get", "data", "hello", "-", "--cluster", &text]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(get.stdout, b"hello from tidepool up");
    assert!(up.interrupt(Duration::from_secs(30)));
    assert!(
        running(&cluster).is_empty(),
        "left running: {:?}",
        running(&cluster)
    );
}
