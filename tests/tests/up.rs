//! `tidepool up`, as the README's `make up` runs it: a local cluster that starts, serves
//! objects, stops every process on Ctrl-C, and resumes its data on the next run.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidepool_tests::{free_port, run, tidepool_ok, venv_bin, Daemon, TempDir};

/// Starts `tidepool up` with S3 on `port` and waits until it says it is up; the process and
/// the S3 access and secret keys it printed.
fn start(dir: &Path, port: u16, log: &Path) -> (Daemon, (String, String)) {
    let port = port.to_string();
    let daemon = Daemon::start(
        &[
            "up",
            "--dir",
            dir.to_str().expect("utf-8"),
            "--osds",
            "3",
            "--s3-port",
            &port,
        ],
        log,
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("Ctrl-C stops the cluster") {
            // Pools data (32 PGs), buckets.index (8) and buckets.data (32).
            assert!(text.contains("PGs:      72 of 72 active"), "{text}");
            assert!(
                text.contains(&format!("S3:       http://127.0.0.1:{port}")),
                "{text}"
            );
            let key = |label: &str| {
                text.lines()
                    .find_map(|l| l.trim().strip_prefix(label))
                    .expect("printed keys")
                    .trim()
                    .to_owned()
            };
            return (daemon, (key("access key"), key("secret key")));
        }
        assert!(
            Instant::now() < deadline,
            "tidepool up did not come up: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// aws-cli against the gateway on `port` with `keys`.
fn aws(port: u16, keys: &(String, String), args: &[&str]) -> std::process::Output {
    std::process::Command::new(venv_bin("aws"))
        .args(["--endpoint-url", &format!("http://127.0.0.1:{port}")])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &keys.0)
        .env("AWS_SECRET_ACCESS_KEY", &keys.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("aws runs")
}

/// The cluster's daemons still running (by their command lines naming `dir`).
fn running(dir: &Path) -> Vec<String> {
    let output = std::process::Command::new("pgrep")
        .args(["-af", &dir.display().to_string()])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// OSDs up, as `tidepool status` says.
fn osds_up(cluster: &str) -> u64 {
    let output = run(&["status", "--format", "json", "--cluster", cluster]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status JSON");
    status["osds"]["up"].as_u64().expect("osds.up")
}

/// Rule: `tidepool up` starts a working cluster with S3 and a ready user, an OSD added with
/// `tidepool osd add` joins it, Ctrl-C stops every process (the added OSD too), and a second
/// run starts them all again and serves the same objects, through S3 too.
#[test]
fn up_starts_stops_and_resumes() {
    let dir = TempDir::new("up");
    let cluster = dir.path().join("cluster");
    let text = cluster.to_str().expect("utf-8").to_owned();
    let port = free_port();
    let (mut up, keys) = start(&cluster, port, &dir.path().join("up-1.log"));
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
    let file_text = file.to_str().expect("utf-8");
    for args in [
        &["s3", "mb", "s3://demo"][..],
        &["s3", "cp", file_text, "s3://demo/hello.txt"],
    ] {
        let output = aws(port, &keys, args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // An OSD added to the running cluster joins it, and stops with it.
    let added = cluster.join("osd-3");
    let add = run(&[
        "osd",
        "add",
        "--data",
        added.to_str().expect("utf-8"),
        "--cluster",
        &text,
    ]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    assert_eq!(osds_up(&text), 4);
    assert!(
        up.interrupt(Duration::from_secs(30)),
        "Ctrl-C stops tidepool up"
    );
    assert!(
        running(&cluster).is_empty(),
        "left running: {:?}",
        running(&cluster)
    );

    let (mut up, keys_again) = start(&cluster, port, &dir.path().join("up-2.log"));
    assert_eq!(keys_again, keys, "the second run keeps the user");
    assert_eq!(osds_up(&text), 4, "the second run starts the added OSD too");
    let output = aws(port, &keys, &["s3", "cp", "s3://demo/hello.txt", "-"]);
    assert_eq!(
        output.stdout,
        b"hello from tidepool up",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let get = run(&["object", "get", "data", "hello", "-", "--cluster", &text]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(get.stdout, b"hello from tidepool up");
    bench_writes_new_objects_reads_each_once_and_cleans_up(&cluster);
    assert!(up.interrupt(Duration::from_secs(30)));
    assert!(
        running(&cluster).is_empty(),
        "left running: {:?}",
        running(&cluster)
    );
}

/// `tidepool bench`, as `rados bench` works: every write creates new objects (it never
/// overwrites an earlier run's), a sequential read reads each object of the last write once,
/// and cleanup removes the objects of every run.
fn bench_writes_new_objects_reads_each_once_and_cleans_up(cluster: &Path) {
    let bench = |args: &[&str]| -> Value {
        let mut full = vec!["bench", "data"];
        full.extend(args);
        full.extend(["--threads", "4", "--format", "json"]);
        serde_json::from_str(&tidepool_ok(cluster, &full)).expect("bench prints JSON")
    };
    let bench_objects = || {
        tidepool_ok(cluster, &["object", "ls", "data"])
            .lines()
            .filter(|name| name.starts_with("bench-"))
            .count()
    };
    for _ in 0..2 {
        let wrote = bench(&["write", "--objects", "20", "--size", "65536"]);
        assert_eq!(wrote["operations"], 20, "{wrote}");
    }
    assert_eq!(
        bench_objects(),
        2 * 20 + 1,
        "two runs' objects and bench-meta"
    );
    let read = bench(&["read", "--seconds", "60"]);
    assert_eq!(
        read["operations"], 20,
        "each object of the last run once: {read}"
    );
    assert_eq!(read["bytes"], 20 * 65536, "{read}");
    let random = bench(&["rand", "--seconds", "1"]);
    assert_eq!(
        random["bytes"],
        random["operations"].as_u64().unwrap() * 65536
    );
    let removed = tidepool_ok(cluster, &["bench", "data", "cleanup"]);
    assert_eq!(removed.trim(), "removed 41 objects");
    assert_eq!(bench_objects(), 0);
}
