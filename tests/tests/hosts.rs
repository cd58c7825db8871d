//! A cluster across several hosts, each a network namespace of its own, deployed with the
//! commands of docs/operating.md, and faults between the hosts: a host's link down, a
//! one-way partition, lost packets, a monitor cut off from the quorum; then every daemon
//! restarted in turn, as an upgrade does, one monitor with its store gone; a host's OSD
//! removed and a new one added, as docs/operating.md tells. `tests/hosts/hosts.py`
//! does the work (namespaces, deployment, an S3 client writing through the gateway, every
//! acknowledged write read back at the end of each fault); it always deletes what it made.
//! A second cluster runs over `linksim`, a switch in user space, for a host whose link delays
//! and loses packets (what `tc netem` does, which this kernel lacks).

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidepool_tests::{project_dir, tidepool, venv_bin, TempDir};

/// The whole run: deployment, four faults and a rolling restart take about three minutes.
const LIMIT: Duration = Duration::from_secs(600);

/// Runs `hosts.py` with `env` and its arguments, bounded by [`LIMIT`]; what it printed.
fn hosts_py(env: &[(&str, &str)], args: &[&str]) -> String {
    let work = TempDir::new("hosts");
    let mut child = Command::new("python3")
        .arg(project_dir().join("tests/hosts/hosts.py"))
        .args(args)
        .env("TIDEPOOL", tidepool())
        .env("LINKSIM", env!("CARGO_BIN_EXE_linksim"))
        .env("PYTHON", venv_bin("python"))
        .env("WORK", work.path().join("run"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs tests/hosts/hosts.py");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for hosts.py") {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SIGTERM: it stops its daemons and deletes its namespaces before it exits.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = reader.join().expect("reader").unwrap_or_default();
    println!("{output}");
    let status = status.unwrap_or_else(|| panic!("hosts.py ran past {LIMIT:?}"));
    assert!(status.success(), "hosts.py {args:?} failed: {status}");
    output
}

#[test]
fn a_cluster_across_hosts_survives_faults_between_them() {
    // On a bridge: a host's link down, a one-way partition, lost packets, a monitor cut off,
    // a rolling restart, a host's OSD removed and a new one added.
    let output = hosts_py(&[], &[]);
    for scenario in [
        "link down",
        "asymmetric",
        "lossy",
        "monitor cut off",
        "rolling restart",
        "replace host",
    ] {
        assert!(
            output.contains(&format!("{scenario}: ")),
            "scenario {scenario} did not finish"
        );
    }
    // On linksim, whose links can be slowed while they run: a slow, lossy host.
    let output = hosts_py(&[("DELAY_US", "0")], &["slow_host"]);
    assert!(
        output.contains("slow host: "),
        "the slow host scenario did not finish"
    );
}
