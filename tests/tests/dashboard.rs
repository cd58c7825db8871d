//! `tidepool dashboard` in a real browser: headless Chromium driven through WebDriver
//! (Debian's `chromium` and `chromium-driver`, installed by `scripts/deps.sh`), against a
//! cluster from `tidepool up`. A wrong password is refused and every API route refuses a
//! request without a session; after logging in the page shows HEALTH_OK and every OSD; a
//! paused OSD shows as down and the health changes without a reload; a recovery throttle is
//! set and an OSD marked out through the page after its preview, and the rebalancing shows.
//! A screenshot is saved when a step fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidepool_tests::{free_port, http_request, tidepool_ok, Daemon, TempDir};

/// A WebDriver session of headless Chromium.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/deps.sh installs chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_request("GET", &format!("{base}/status"), &[], None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
        };
        let created = browser.call(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1400"],
                },
            }}})),
        );
        browser.session = created["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_owned();
        browser
    }

    /// A WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let body = body.map(|b| b.to_string());
        let (code, text) = http_request(method, &url, &[], body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(code == 200, "{method} {path}: {code} {text}");
        answer["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let found = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().expect("an element").to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.session_call(
            "POST",
            &format!("/element/{element}/clear"),
            Some(json!({})),
        );
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.session_call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// What a script returns (it runs as a function body).
    fn script(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// The text of the element `css` ("" when there is none or it is hidden).
    fn text(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({css:?}); \
             return e && !e.closest('[hidden]') ? e.textContent : '';"
        );
        self.script(&script).as_str().unwrap_or("").to_owned()
    }

    /// Waits until `done` holds of the page (polled), for at most `limit`.
    fn wait(&self, limit: Duration, what: &str, mut done: impl FnMut(&Browser) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn screenshot(&self, to: &Path) {
        use std::io::Write;
        let png = self.session_call("GET", "/screenshot", None);
        let Some(text) = png.as_str() else { return };
        let mut decoder = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("base64 runs");
        let _ = decoder
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes());
        if let Ok(output) = decoder.wait_with_output() {
            let _ = std::fs::write(to, output.stdout);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = http_request("DELETE", &url, &[], None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Sends SIGCONT to a paused process when dropped, so that no test leaves one stopped.
struct Paused(u32);

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// `tidepool up` with 4 OSDs; the process, the dashboard's URL and the printed keys.
fn up(dir: &Path, log: &Path) -> (Daemon, String, (String, String)) {
    let port = free_port().to_string();
    let daemon = Daemon::start(
        &[
            "up",
            "--dir",
            dir.to_str().expect("utf-8"),
            "--osds",
            "4",
            "--s3-port",
            &port,
        ],
        log,
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("Ctrl-C stops the cluster") {
            let field = |label: &str| {
                text.lines()
                    .find_map(|l| l.trim().strip_prefix(label))
                    .unwrap_or_else(|| panic!("no {label} in {text}"))
                    .split_whitespace()
                    .next()
                    .expect("a value")
                    .to_owned()
            };
            let url = field("dashboard:");
            return (daemon, url, (field("access key"), field("secret key")));
        }
        assert!(
            Instant::now() < deadline,
            "tidepool up did not come up: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pid of the OSD whose folder is `osd-<n>` under `dir`.
fn osd_pid(dir: &Path, n: usize) -> u32 {
    let pattern = format!("osd --data {}", dir.join(format!("osd-{n}")).display());
    let output = Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process {pattern}"))
}

fn osd_cell(browser: &Browser, osd: usize, class: &str) -> String {
    browser.text(&format!("#osd-{osd} .{class}"))
}

#[test]
fn the_dashboard_in_a_browser() {
    let dir = TempDir::new("dashboard");
    let cluster = dir.path().join("cluster");
    let (_up, url, keys) = up(&cluster, &dir.path().join("up.log"));

    // Without a session every API route says 401.
    for (method, route) in [
        ("GET", "api/state"),
        ("GET", "api/stream"),
        ("POST", "api/osd/0/out/preview"),
        ("POST", "api/osd/0/out"),
        ("POST", "api/config"),
    ] {
        let body = (method == "POST").then_some(r#"{"key":"osd_max_backfills","value":"1"}"#);
        let (code, text) =
            http_request(method, &format!("{url}{route}"), &[], body).expect("answer");
        assert_eq!(code, 401, "{method} /{route}: {text}");
        let (code, _) = http_request(
            method,
            &format!("{url}{route}"),
            &[("Cookie", "tidepool_session=forged")],
            body,
        )
        .expect("answer");
        assert_eq!(code, 401, "{method} /{route} with a forged session");
    }
    // Some data, so that marking an OSD out has bytes to move.
    tidepool_ok(&cluster, &["bench", "data", "write", "--seconds", "2"]);

    let browser = Browser::start();
    let shots = std::env::temp_dir().join(format!("tidepool-dashboard-{}", std::process::id()));
    let step = |name: &str, work: &dyn Fn()| {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
            let _ = std::fs::create_dir_all(&shots);
            let shot: PathBuf = shots.join(format!("{name}.png"));
            browser.screenshot(&shot);
            eprintln!("step {name} failed; screenshot: {}", shot.display());
            std::panic::resume_unwind(panic);
        }
    };
    let long = Duration::from_secs(60);

    step("login-refused", &|| {
        browser.open(&url);
        browser.wait(long, "the login form", |b| !b.text("#login h2").is_empty());
        browser.type_into("#access-key", &keys.0);
        browser.type_into("#secret-key", "not-the-secret");
        browser.click("#login-button");
        browser.wait(long, "the refusal", |b| {
            b.text("#login-error").contains("wrong")
        });
        assert!(
            browser.text("#health").is_empty(),
            "nothing shown before a login"
        );
    });

    step("login", &|| {
        browser.type_into("#secret-key", &keys.1);
        browser.click("#login-button");
        browser.wait(long, "HEALTH_OK", |b| b.text("#health") == "HEALTH_OK");
        browser.wait(long, "every OSD up and in", |b| {
            (0..4).all(|n| osd_cell(b, n, "osd-up") == "up" && osd_cell(b, n, "osd-in") == "in")
        });
    });

    step("osd-down", &|| {
        let pid = osd_pid(&cluster, 3);
        let paused = Paused(pid);
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        browser.wait(long, "osd.3 down", |b| osd_cell(b, 3, "osd-up") == "down");
        browser.wait(long, "the health changed", |b| {
            b.text("#health") != "HEALTH_OK"
        });
        assert!(
            browser.text("#checks").contains("OSD_DOWN"),
            "{}",
            browser.text("#checks")
        );
        // Killed outright, `tidepool up` starts it again and the page shows it back.
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        drop(paused);
        browser.wait(long, "osd.3 up again", |b| osd_cell(b, 3, "osd-up") == "up");
        browser.wait(long, "HEALTH_OK again", |b| {
            b.text("#health") == "HEALTH_OK"
        });
    });

    step("throttle", &|| {
        browser.script("window.confirm = () => true; return null;");
        browser.type_into("#throttle-value", "1048576");
        let key = browser.find("#throttle-key");
        browser.session_call(
            "POST",
            &format!("/element/{key}/value"),
            Some(json!({ "text": "osd_recovery_max_bytes_per_sec" })),
        );
        browser.click("#throttle-button");
        browser.wait(long, "the throttle set", |b| {
            b.text("#throttle-result").contains("epoch")
        });
        let options = tidepool_ok(&cluster, &["config", "dump"]);
        assert!(
            options.contains("osd_recovery_max_bytes_per_sec") && options.contains("1048576"),
            "{options}"
        );
    });

    step("osd-out", &|| {
        browser.click("#osd-0 .out-button");
        browser.wait(long, "the preview", |b| {
            b.text("#preview-text").contains("PG")
        });
        browser.click("#confirm-yes");
        browser.wait(long, "osd.0 out", |b| osd_cell(b, 0, "osd-in") == "out");
        browser.wait(long, "the rebalancing shown", |b| {
            b.text("#recovery").contains("rebalancing")
                || b.text("#events").contains("recovery finished")
        });
        browser.wait(long, "the out in the events", |b| {
            b.text("#events").contains("osd.0 out")
        });
    });

    served_over_tls(&cluster, dir.path(), &keys);
}

/// With `--tls-cert` and `--tls-key` the dashboard speaks HTTPS only, and its session cookie
/// is `Secure`.
fn served_over_tls(cluster: &Path, scratch: &Path, keys: &(String, String)) {
    let (cert, key) = (scratch.join("cert.pem"), scratch.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let bind = format!("127.0.0.1:{}", free_port());
    let _dashboard = Daemon::start(
        &[
            "dashboard",
            "--cluster",
            cluster.to_str().expect("utf-8"),
            "--bind",
            &bind,
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
        &scratch.join("dashboard-tls.log"),
    );
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-s", "-m", "10"])
            .args(args)
            .output()
            .expect("curl runs")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !curl(&["-k", "-o", "/dev/null", &format!("https://{bind}/")])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the TLS dashboard did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let body = format!(r#"{{"access_key":"{}","secret_key":"{}"}}"#, keys.0, keys.1);
    let login = curl(&[
        "-k",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &format!("https://{bind}/api/login"),
    ]);
    let head = String::from_utf8_lossy(&login.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(
        head.contains("set-cookie: tidepool_session=") && head.contains("; secure"),
        "{head}"
    );
    let plain = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{bind}/"),
    ]);
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout),
        "200",
        "no plain HTTP on a TLS port"
    );
}
