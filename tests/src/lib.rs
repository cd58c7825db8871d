//! Helpers for the black-box tests in `tests/`: the `tidepool` binary, and child processes
//! that are always killed when the test ends (by PID, even on panic).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// Builds the `tidepool` binary once per test process and returns its path.
/// The size every test OSD reports (`tidepool osd --size`): fullness then follows what the
/// test wrote, not how full the machine's disk is with everything else on it.
pub const OSD_SIZE: &str = "32G";

pub fn tidepool() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args(["build", "-q", "-p", "tidepool", "--message-format=json"])
            .current_dir(manifest_dir())
            .output()
            .expect("cargo build runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find_map(|message| {
                (message["target"]["name"] == "tidepool")
                    .then(|| message["executable"].as_str().map(PathBuf::from))
                    .flatten()
            })
            .expect("cargo reports the tidepool executable")
    })
}

/// Runs `tidepool` with `args` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(tidepool())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("tidepool runs")
}

/// Runs `tidepool ARGS --cluster DIR`, which must succeed; returns its standard output.
pub fn tidepool_ok(dir: &Path, args: &[&str]) -> String {
    let mut full = args.to_vec();
    full.extend(["--cluster", dir.to_str().expect("utf-8 path")]);
    let output = run(&full);
    assert!(
        output.status.success(),
        "tidepool {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The cluster id of the cluster folder `dir`.
pub fn cluster_id(dir: &Path) -> String {
    let bytes = std::fs::read(dir.join("cluster.json")).expect("cluster.json");
    let cluster: serde_json::Value = serde_json::from_slice(&bytes).expect("cluster.json is JSON");
    cluster["cluster_id"]
        .as_str()
        .expect("cluster id")
        .to_owned()
}

/// A long-running `tidepool` process, stopped (by PID) when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
}

impl Daemon {
    /// Starts `tidepool` with `args`, its output in `log`.
    pub fn start(args: &[&str], log: &Path) -> Daemon {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(tidepool())
            .args(args)
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("tidepool starts");
        Daemon { child }
    }

    /// Sends SIGINT (as Ctrl-C does) and waits up to `limit` for the process to exit; whether
    /// it did.
    pub fn interrupt(&mut self, limit: std::time::Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }

    /// Kills the process at once (`kill -9`) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so that a process with children of its own (`tidepool up`) stops them;
    /// SIGKILL after 12 s.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(12);
            while std::time::Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None))
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        self.kill();
    }
}

/// A temporary folder removed when dropped (kept when `TIDEPOOL_KEEP_TEST_DIRS` is set).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh folder named after `name` and this process.
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("tidepool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    /// Removes the folder, unless `TIDEPOOL_KEEP_TEST_DIRS` is set (to read the logs of a
    /// failed test).
    fn drop(&mut self) {
        if std::env::var_os("TIDEPOOL_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The project's folder (the workspace root).
pub fn project_dir() -> PathBuf {
    manifest_dir()
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_owned()
}

/// A program of the project's Python venv (`.venv/bin/NAME`, made by `scripts/deps.sh`).
pub fn venv_bin(name: &str) -> PathBuf {
    let path = manifest_dir()
        .join("..")
        .join(".venv")
        .join("bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/deps.sh (make test does)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound once and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Bytes `len` long from `seed` alone (xorshift), for data compared after a round trip.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// This package's folder, read when the test runs: a test binary built from another checkout of
/// the same tree (sharing the target folder) must still look in this one.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .expect("cargo sets CARGO_MANIFEST_DIR when it runs tests")
}

/// One sample of a Prometheus scrape: the metric's name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// `GET url` (`http://HOST:PORT/PATH`) over plain HTTP/1.1: the status code and the body.
pub fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    http_request("GET", url, &[], None)
}

/// `method url` with `headers` and a JSON `body`, over plain HTTP/1.1 (one request per
/// connection): the status code and the body.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_exchange(method, url, headers, body).map(|(code, _, body)| (code, body))
}

/// An answer's headers: names in lower case, in order.
pub type Headers = Vec<(String, String)>;

/// As [`http_request`], with the answer's headers too.
pub fn http_exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, Headers, String)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut request = format!("{method} /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (mut length, mut chunked) = (None, false);
    let mut answer_headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            answer_headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut out = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size =
                usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            out.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        out.resize(length, 0);
        reader.read_exact(&mut out)?;
    } else if code != 401 {
        reader.read_to_end(&mut out)?;
    }
    Ok((
        code,
        answer_headers,
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// The samples of the Prometheus text at `url`, parsed by the Prometheus project's own
/// Python client (`prometheus_client.parser`, in the venv); panics when it does not parse.
pub fn scrape(url: &str) -> Vec<Sample> {
    use std::io::Write;
    let (code, text) = http_get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(code, 200, "GET {url}: {text}");
    const PARSE: &str = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let mut child = Command::new(venv_bin("python"))
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("text to the parser");
    let output = child.wait_with_output().expect("the parser ends");
    assert!(
        output.status.success(),
        "{url} is not Prometheus text: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Vec<(String, std::collections::BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&output.stdout).expect("the parser's JSON");
    parsed
        .into_iter()
        .map(|(name, labels, value)| Sample {
            name,
            labels,
            value,
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include every pair of `labels`.
pub fn sum_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}
