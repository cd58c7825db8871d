//! `tidepool up`, as the README's `make up` runs it: a local cluster that starts, serves
//! objects, stops every process on Ctrl-C, and resumes its data on the next run.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidepool_tests::{
    free_port, project_dir, run, scrape, sum_of, tidepool_ok, venv_bin, Daemon, Sample, TempDir,
};

/// Starts `tidepool up` with S3 on `port` and waits until it says it is up; the process and
/// the S3 access and secret keys it printed.
fn start(dir: &Path, port: u16, log: &Path, extra: &[&str]) -> (Daemon, (String, String)) {
    let (daemon, keys, _) = start_greeted(dir, port, log, extra);
    (daemon, keys)
}

/// [`start`], and the greeting it printed.
fn start_greeted(
    dir: &Path,
    port: u16,
    log: &Path,
    extra: &[&str],
) -> (Daemon, (String, String), String) {
    let port = port.to_string();
    let mut args = vec![
        "up",
        "--dir",
        dir.to_str().expect("utf-8"),
        "--osds",
        "3",
        "--s3-port",
        &port,
    ];
    args.extend(extra);
    let daemon = Daemon::start(&args, log);
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
            return (daemon, (key("access key"), key("secret key")), text);
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

/// Rule: `tidepool up` serves every daemon's metrics and its greeting says so; the gateway
/// counts each S3 request by operation and status class, and the bytes it received.
fn the_gateway_counts_requests(
    cluster: &Path,
    port: u16,
    keys: &(String, String),
    greeting: &str,
    scratch: &Path,
) {
    assert!(
        greeting.contains("metrics:  8 daemons serve /metrics"),
        "{greeting}"
    );
    let status: Value =
        serde_json::from_str(&tidepool_ok(cluster, &["status", "--format", "json"])).expect("JSON");
    let url = status["metrics"]["gateway"]
        .as_str()
        .expect("the gateway's metrics endpoint")
        .to_owned();
    let count = |samples: &[Sample], op: &str, class: &str| {
        sum_of(
            samples,
            "tidepool_s3_requests_total",
            &[("op", op), ("status", class)],
        )
    };
    let osd_writes = || -> f64 {
        status["metrics"]
            .as_object()
            .expect("endpoints")
            .iter()
            .filter(|(daemon, _)| daemon.starts_with("osd."))
            .map(|(_, url)| {
                let samples = scrape(url.as_str().expect("a URL"));
                sum_of(&samples, "tidepool_osd_ops_total", &[("op", "write")])
            })
            .sum()
    };
    let writes_before = osd_writes();
    let before = scrape(&url);
    let file = scratch.join("counted.bin");
    std::fs::write(&file, vec![7u8; 12_345]).expect("file");
    let put = aws(
        port,
        keys,
        &[
            "s3",
            "cp",
            file.to_str().expect("utf-8"),
            "s3://demo/counted.bin",
        ],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let wrong = (keys.0.clone(), "not-the-secret".to_owned());
    let refused = aws(
        port,
        &wrong,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "demo",
            "--key",
            "counted.bin",
        ],
    );
    assert!(!refused.status.success());
    let after = scrape(&url);
    assert_eq!(
        count(&after, "PutObject", "2xx"),
        count(&before, "PutObject", "2xx") + 1.0
    );
    assert!(count(&after, "HeadObject", "4xx") >= count(&before, "HeadObject", "4xx") + 1.0);
    let received = |s: &[Sample]| sum_of(s, "tidepool_s3_bytes_total", &[("direction", "in")]);
    assert!(received(&after) >= received(&before) + 12_345.0);
    assert_eq!(sum_of(&after, "tidepool_s3_requests_in_flight", &[]), 0.0);
    // The PUT reached the OSDs' write counters (a small object: one index write, its bytes
    // inline).
    assert!(osd_writes() > writes_before);
}

/// Rule: every metric the alert rules and the Grafana dashboard under `deploy/` name is one
/// the daemons export (histograms by their series' names).
fn the_deploy_files_name_real_metrics(cluster: &Path) {
    let status: Value =
        serde_json::from_str(&tidepool_ok(cluster, &["status", "--format", "json"])).expect("JSON");
    let mut exported = std::collections::BTreeSet::new();
    for url in status["metrics"].as_object().expect("endpoints").values() {
        for sample in scrape(url.as_str().expect("a URL")) {
            exported.insert(sample.name);
        }
    }
    // Present only while a health check fails.
    exported.insert("tidepool_cluster_health_check".to_owned());
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/tidepool.json",
    ] {
        let text = std::fs::read_to_string(project_dir().join(file)).expect(file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("tidepool_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            rest = &rest[at + name.len()..];
            if name.ends_with('_') {
                continue; // a family named in prose, as `tidepool_cluster_*`
            }
            assert!(
                exported.contains(&name),
                "{file} names {name}, which no daemon exports"
            );
        }
    }
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

/// The commands of the greeting's "Try" block, as printed.
fn greeting_commands(greeting: &str) -> String {
    greeting
        .lines()
        .skip_while(|l| !l.starts_with("Try (in any shell):"))
        .skip(1)
        .take_while(|l| !l.starts_with("Ctrl-C"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the greeting's commands in a new shell in the project folder, with nothing of this
/// test's environment but the PATH and a fresh home (no AWS settings of the machine's).
fn greeting_runs_as_printed(greeting: &str, home: &Path) {
    let script = greeting_commands(greeting);
    assert!(script.contains("s3 mb s3://demo"), "{greeting}");
    std::fs::create_dir_all(home).expect("home");
    let output = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(project_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "the greeting's commands fail:\n{script}\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("README.md"), "aws s3 ls lists it: {stdout}");
    assert!(stdout.contains("health:"), "tidepool status: {stdout}");
}

/// The pid of the daemon of `cluster` whose command line contains `what`.
fn pid_of(cluster: &Path, what: &str) -> u32 {
    running(cluster)
        .iter()
        .find(|line| line.contains(what))
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no daemon {what}: {:?}", running(cluster)))
}

/// Waits (up to `limit`) until `tidepool status` says `HEALTH_OK`; its JSON.
fn health_ok(cluster: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let output = run(&["status", "--format", "json", "--cluster", cluster]);
        let status: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        if status["health"]["status"] == "HEALTH_OK" {
            return status;
        }
        assert!(Instant::now() < deadline, "not HEALTH_OK: {status}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Rule: a daemon of `tidepool up` that dies (kill -9) is restarted, the restart is logged and
/// shown by `status`, and the cluster returns to `HEALTH_OK` without anyone touching it.
fn a_killed_daemon_comes_back(cluster: &Path, up_log: &Path) {
    let text = cluster.to_str().expect("utf-8");
    let osd = cluster.join("osd-1");
    let pid = pid_of(cluster, &format!("--data {}", osd.display()));
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(up_log)
        .unwrap_or_default()
        .contains("osd.1 restarted")
    {
        assert!(Instant::now() < deadline, "osd.1 was not restarted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(up_log).unwrap_or_default();
    assert!(
        log.contains("osd.1 was killed by signal 9"),
        "up says why: {log}"
    );
    let status = health_ok(text, Duration::from_secs(90));
    assert_eq!(status["restarts"][0]["daemon"], "osd.1", "{status}");
    assert_ne!(pid_of(cluster, &format!("--data {}", osd.display())), pid);
}

/// Rule: a second `tidepool up` on the folder of a running cluster says so, says how to reach
/// it, and starts and touches nothing.
fn a_second_up_points_at_the_first(cluster: &Path, port: u16) {
    let before = running(cluster);
    let output = run(&[
        "up",
        "--dir",
        cluster.to_str().expect("utf-8"),
        "--osds",
        "3",
        "--s3-port",
        &port.to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("is already running (tidepool up, pid "),
        "{stdout}"
    );
    assert!(
        stdout.contains("nothing was started or changed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("export AWS_ENDPOINT_URL=http://127.0.0.1:{port}")),
        "{stdout}"
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(running(cluster), before, "nothing started or stopped");
}

/// Rule: daemons' log files have no terminal escape codes, and every log line names its
/// daemon.
fn logs_are_plain_and_named(cluster: &Path) {
    for (file, name) in [
        ("mon-0.log", "mon.0"),
        ("osd-2.log", "osd.2"),
        ("gateway.log", "gateway"),
    ] {
        let path = cluster.join("logs").join(file);
        let bytes = std::fs::read(&path).expect("log file");
        assert!(
            !bytes.contains(&0x1b),
            "{} has escape codes",
            path.display()
        );
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("20")).collect();
        assert!(!lines.is_empty(), "{} has log lines", path.display());
        for line in lines {
            assert!(
                line.split_whitespace().nth(1) == Some(name),
                "{}: {line}",
                path.display()
            );
        }
    }
}

/// Rule: `tidepool up` starts a working cluster with S3 and a ready user whose greeting runs
/// as printed; a daemon that dies comes back; a second `up` on the folder touches nothing; an
/// OSD added with `tidepool osd add`, even outside the folder, joins it; Ctrl-C stops every
/// process (the added OSD too), and a second run starts them all again and serves the same
/// objects, through S3 too; a `tidepool up` killed with kill -9 leaves no daemon behind.
#[test]
fn up_starts_stops_and_resumes() {
    let dir = TempDir::new("up");
    let cluster = dir.path().join("cluster");
    let text = cluster.to_str().expect("utf-8").to_owned();
    let port = free_port();
    let up_log = dir.path().join("up-1.log");
    let (mut up, keys, greeting) = start_greeted(&cluster, port, &up_log, &[]);
    greeting_runs_as_printed(&greeting, &dir.path().join("home"));
    the_gateway_counts_requests(&cluster, port, &keys, &greeting, dir.path());
    the_deploy_files_name_real_metrics(&cluster);
    tidepool_ok(&cluster, &["bench", "data", "cleanup"]);
    a_second_up_points_at_the_first(&cluster, port);
    a_killed_daemon_comes_back(&cluster, &up_log);
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
    // The greeting made bucket demo.
    let output = aws(port, &keys, &["s3", "cp", file_text, "s3://demo/hello.txt"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // An OSD added to the running cluster, outside its folder, joins it, and stops with it.
    let added = dir.path().join("elsewhere").join("osd");
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

    // The second run gives every OSD a small size, to fill it.
    let (mut up, keys_again) = start(
        &cluster,
        port,
        &dir.path().join("up-2.log"),
        &["--osd-size", "192M"],
    );
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
    logs_are_plain_and_named(&cluster);
    a_full_cluster_refuses_writes_and_keeps_what_it_has(&cluster, port, &keys, dir.path());
    // However `up` dies, its daemons do not outlive it.
    up.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running(&cluster).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running after kill -9 of up: {:?}",
            running(&cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Rule: OSDs of a given size count their data against it; once one is full (past
/// `mon_osd_full_percent`), the next write is refused with a clear error (S3: 507
/// `XTidepoolStorageFull`, which aws-cli shows), everything written before reads back exact,
/// and deletes still pass.
fn a_full_cluster_refuses_writes_and_keeps_what_it_has(
    cluster: &Path,
    port: u16,
    keys: &(String, String),
    scratch: &Path,
) {
    let df: Value = serde_json::from_str(&tidepool_ok(cluster, &["osd", "df", "--format", "json"]))
        .expect("df JSON");
    for row in df["osds"].as_array().expect("osds") {
        assert_eq!(row["size_bytes"], 192 << 20, "{row}");
    }
    let object = |i: usize| -> Vec<u8> {
        (0..16usize << 20)
            .map(|b| (b.wrapping_mul(31) ^ i.wrapping_mul(7919)) as u8)
            .collect()
    };
    let file = scratch.join("fill.bin");
    let mut written = Vec::new();
    let mut refusal = None;
    for i in 0..40 {
        std::fs::write(&file, object(i)).expect("file");
        let target = format!("s3://demo/fill-{i}");
        let output = aws(
            port,
            keys,
            &["s3", "cp", file.to_str().expect("utf-8"), &target],
        );
        if output.status.success() {
            written.push(i);
        } else {
            refusal = Some(String::from_utf8_lossy(&output.stderr).into_owned());
            break;
        }
    }
    let refusal = refusal.expect("40 × 16 MiB never fit in 4 OSDs of 192 MiB");
    assert!(
        refusal.contains("XTidepoolStorageFull") && refusal.contains("The cluster is full"),
        "{refusal}"
    );
    assert!(written.len() >= 4, "filled too early: {written:?}");
    // The first refusal may come from a primary whose disk had no room for 16 MiB more
    // while still under the full ratio: smaller writes then fill it until the map marks it
    // full, after which every write that needs space is refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        let map: Value =
            serde_json::from_str(&tidepool_ok(cluster, &["osd", "dump", "--format", "json"]))
                .expect("map JSON");
        let osds = map["osds"].as_object().expect("osds");
        if osds.values().any(|osd| osd["full"] == true) {
            break;
        }
        assert!(Instant::now() < deadline, "no OSD marked full: {map}");
        std::fs::write(&file, &object(100 + i)[..1 << 20]).expect("file");
        let target = format!("s3://demo/top-{i}");
        aws(
            port,
            keys,
            &["s3", "cp", file.to_str().expect("utf-8"), &target],
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The next write too, however small.
    std::fs::write(&file, b"small").expect("file");
    let output = aws(
        port,
        keys,
        &["s3", "cp", file.to_str().expect("utf-8"), "s3://demo/small"],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("XTidepoolStorageFull"));
    let status: Value =
        serde_json::from_str(&tidepool_ok(cluster, &["status", "--format", "json"]))
            .expect("status JSON");
    assert!(
        status["health"]["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["code"] == "OSD_FULL"),
        "{status}"
    );
    for i in &written {
        let output = aws(
            port,
            keys,
            &["s3", "cp", &format!("s3://demo/fill-{i}"), "-"],
        );
        assert!(output.stdout == object(*i), "fill-{i} reads back exact");
    }
    let output = aws(port, keys, &["s3", "rm", "s3://demo/fill-0"]);
    assert!(
        output.status.success(),
        "a delete passes: {}",
        String::from_utf8_lossy(&output.stderr)
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
