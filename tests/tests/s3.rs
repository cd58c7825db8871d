//! The S3 gateway under real clients: aws-cli (`s3` and `s3api`), s3cmd and rclone against a
//! cluster of real processes (1 monitor, 3 OSDs, the gateway), hostile keys, and requests that
//! must be refused with S3's error and change nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use tidepool_tests::{free_port, pattern, run, tidepool_ok, venv_bin, Daemon, TempDir, OSD_SIZE};

const MIB: usize = 1 << 20;

/// A cluster with an S3 gateway and one user.
struct S3Cluster {
    dir: TempDir,
    _daemons: Vec<Daemon>,
    endpoint: String,
    access_key: String,
    secret_key: String,
}

impl S3Cluster {
    fn start(name: &str) -> S3Cluster {
        S3Cluster::start_with(name, &[])
    }

    /// A cluster whose gateway takes `gateway_args` besides the usual ones.
    fn start_with(name: &str, gateway_args: &[&str]) -> S3Cluster {
        let dir = TempDir::new(name);
        let path = dir.path().to_path_buf();
        let text = path.to_str().expect("utf-8").to_owned();
        assert!(run(&["cluster", "init", &text, "--mons", "1"])
            .status
            .success());
        let mut daemons = vec![Daemon::start(
            &["mon", "--id", "0", "--data", &text],
            &path.join("mon-0.log"),
        )];
        for n in 0..3 {
            let data = path.join(format!("osd-{n}"));
            daemons.push(Daemon::start(
                &[
                    "osd",
                    "--data",
                    data.to_str().expect("utf-8"),
                    "--cluster",
                    &text,
                    "--size",
                    OSD_SIZE,
                ],
                &path.join(format!("osd-{n}.log")),
            ));
            // One at a time, so that the map holds all three before the gateway sizes its pools.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !data.join("osd.json").exists() {
                assert!(Instant::now() < deadline, "osd-{n} never created itself");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let mut args = vec![
            "gateway",
            "--cluster",
            &text,
            "--bind",
            &bind,
            "--gc-delay",
            "1",
            "--gc-interval",
            "1",
        ];
        args.extend_from_slice(gateway_args);
        daemons.push(Daemon::start(&args, &path.join("gateway.log")));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&bind).is_err() {
            assert!(Instant::now() < deadline, "the gateway never listened");
            std::thread::sleep(Duration::from_millis(100));
        }
        let user: Value = serde_json::from_str(&tidepool_ok(
            &path,
            &["user", "create", "alice", "--format", "json"],
        ))
        .expect("JSON");
        let access_key = user["access_key"].as_str().expect("key").to_owned();
        let secret_key = user["secret_key"].as_str().expect("secret").to_owned();
        // Profile `v4` presigns with SigV4 (aws-cli's presign uses SigV2 by default).
        std::fs::write(
            path.join("aws-config"),
            format!(
                "[default]\nregion = us-east-1\naws_access_key_id = {access_key}\n\
                 aws_secret_access_key = {secret_key}\n\n[profile v4]\nregion = us-east-1\n\
                 aws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n\
                 s3 =\n    signature_version = s3v4\n"
            ),
        )
        .expect("aws config");
        S3Cluster {
            dir,
            _daemons: daemons,
            endpoint: format!("http://{bind}"),
            access_key,
            secret_key,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// aws-cli with `keys` (access, secret) against the gateway.
    fn aws_as(&self, keys: (&str, &str), args: &[&str]) -> Output {
        Command::new(venv_bin("aws"))
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", keys.0)
            .env("AWS_SECRET_ACCESS_KEY", keys.1)
            .env("AWS_CONFIG_FILE", self.file("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("aws runs")
    }

    fn aws(&self, args: &[&str]) -> Output {
        self.aws_as((&self.access_key, &self.secret_key), args)
    }

    /// Runs aws-cli, which must succeed; its standard output.
    fn aws_ok(&self, args: &[&str]) -> String {
        let started = Instant::now();
        let output = self.aws(args);
        if started.elapsed() > Duration::from_secs(5) {
            eprintln!("slow: aws {args:?} took {:?}", started.elapsed());
        }
        assert!(
            output.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `aws s3api`, which must succeed; its JSON answer (`null` when it prints none).
    fn s3api(&self, args: &[&str]) -> Value {
        let mut full = vec!["s3api"];
        full.extend_from_slice(args);
        let text = self.aws_ok(&full);
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
        }
    }

    /// Runs `aws s3api`, which must fail with S3 error `code`.
    fn s3api_fails(&self, code: &str, args: &[&str]) {
        let mut full = vec!["s3api"];
        full.extend_from_slice(args);
        expect_error(&self.aws(&full), code, args);
    }

    /// How many keys of bucket `bkt` begin with `prefix`.
    fn key_count(&self, prefix: &str) -> u64 {
        let listing = self.s3api(&["list-objects-v2", "--bucket", "bkt", "--prefix", prefix]);
        keys_of(&listing).len() as u64
    }

    /// Runs the boto3 suite `tests/s3/NAME.py` with `users` (name, access key, secret key;
    /// the first owns its buckets); it must pass.
    fn boto3_suite(&self, name: &str, users: &[(&str, &str, &str)]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("s3/{name}.py"));
        let users: Vec<String> = users
            .iter()
            .map(|(user, access, secret)| format!("{user}:{access}:{secret}"))
            .collect();
        let started = Instant::now();
        let output = Command::new(venv_bin("python"))
            .arg(script)
            .env("S3_ENDPOINT", &self.endpoint)
            .env("USERS", users.join(","))
            .env("BUCKET_PREFIX", name.replace('_', "-"))
            .output()
            .expect("python runs");
        eprintln!(
            "{name}.py ({:?}):\n{}",
            started.elapsed(),
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(
            output.status.success(),
            "{name}.py: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn raw_request(&self, key: &str, case: &str) -> Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("s3/raw_requests.py");
        let output = Command::new(venv_bin("python"))
            .arg(script)
            .args([
                &self.endpoint,
                &self.access_key,
                &self.secret_key,
                "bkt",
                key,
                case,
            ])
            .output()
            .expect("python runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON")
    }

    /// A plain HTTP GET of `url` (no signature of its own): status and body.
    fn plain_get(&self, url: &str) -> (u16, Vec<u8>) {
        let script = "import sys, urllib.request, urllib.error\n\
            try:\n    r = urllib.request.urlopen(sys.argv[1]); status, body = r.status, r.read()\n\
            except urllib.error.HTTPError as e:\n    status, body = e.code, e.read()\n\
            sys.stdout.write(str(status) + '\\n'); sys.stdout.flush(); sys.stdout.buffer.write(body)\n";
        let output = Command::new(venv_bin("python"))
            .args(["-c", script, url])
            .output()
            .expect("python runs");
        let text = output.stdout;
        let newline = text
            .iter()
            .position(|b| *b == b'\n')
            .expect("a status line");
        let status = std::str::from_utf8(&text[..newline])
            .expect("utf-8")
            .parse()
            .expect("a status");
        (status, text[newline + 1..].to_vec())
    }
}

/// Asserts that a client's run failed with S3 error `code`.
fn expect_error(output: &Output, code: &str, what: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains(code),
        "{what:?} should fail with {code}: status {:?}, stderr {stderr}",
        output.status
    );
}

/// `s3api put-object` of file `body` as `key` of bucket `bkt`.
fn put_object_args<'a>(key: &'a str, body: &'a str) -> Vec<&'a str> {
    vec![
        "put-object",
        "--bucket",
        "bkt",
        "--key",
        key,
        "--body",
        body,
    ]
}

fn keys_of(listing: &Value) -> Vec<String> {
    listing["Contents"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|o| o["Key"].as_str().expect("key").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

/// Sends `size` bytes (a pattern of `seed`) to `key` of `bkt` with `aws s3 cp` (in `class`
/// when one is given), fetches them back the same way and checks them; returns the object's
/// HEAD, whose length it checks.
fn up_and_down(s3: &S3Cluster, key: &str, size: usize, seed: u64, class: Option<&str>) -> Value {
    let data = pattern(seed, size);
    let file = key.replace('/', "-");
    let (up, down) = (
        s3.file(&format!("{file}.up")),
        s3.file(&format!("{file}.down")),
    );
    write(&up, &data);
    let target = format!("s3://bkt/{key}");
    let mut send = vec!["s3", "cp", "--only-show-errors"];
    if let Some(class) = class {
        send.extend(["--storage-class", class]);
    }
    send.extend([up.to_str().unwrap(), &target]);
    s3.aws_ok(&send);
    s3.aws_ok(&[
        "s3",
        "cp",
        "--only-show-errors",
        &target,
        down.to_str().unwrap(),
    ]);
    assert!(read(&down) == data, "{key} came back different");
    let head = s3.s3api(&["head-object", "--bucket", "bkt", "--key", key]);
    assert_eq!(head["ContentLength"], size as u64, "{key}");
    head
}

/// Rule: aws-cli's everyday commands work: buckets made and removed, objects of 1 byte to
/// 100 MiB (multipart) up and down bit-exact, a 200-file tree synced, listed and removed,
/// and presigned URLs readable with plain HTTP until they expire.
#[test]
fn aws_cli_s3_commands() {
    let started = Instant::now();
    let s3 = S3Cluster::start("s3-cli");
    eprintln!("cluster up in {:?}", started.elapsed());
    s3.aws_ok(&["s3", "mb", "s3://bkt"]);
    eprintln!("bucket made at {:?}", started.elapsed());
    assert!(s3.aws_ok(&["s3", "ls"]).contains("bkt"));
    for (name, size) in [("one", 1), ("seven", 7 * MIB), ("hundred", 100 * MIB)] {
        let head = up_and_down(&s3, &format!("sizes/{name}"), size, size as u64, None);
        let etag = head["ETag"].as_str().expect("etag");
        assert_eq!(etag.contains('-'), size > 8 * MIB, "{name}: ETag {etag}");
    }

    eprintln!("sizes done at {:?}", started.elapsed());
    storage_classes(&s3);
    eprintln!("storage classes done at {:?}", started.elapsed());
    // A tree of 200 files: sync up, list, sync down, remove.
    let tree = s3.file("tree");
    for i in 0..200 {
        let dir = tree.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&dir).expect("mkdir");
        write(
            &dir.join(format!("f{i}.txt")),
            &pattern(i, (i as usize * 37) % 5000),
        );
    }
    s3.aws_ok(&[
        "s3",
        "sync",
        "--only-show-errors",
        tree.to_str().unwrap(),
        "s3://bkt/tree",
    ]);
    let listing = s3.aws_ok(&["s3", "ls", "--recursive", "s3://bkt/tree/"]);
    assert_eq!(listing.lines().count(), 200, "{listing}");
    assert_eq!(s3.key_count("tree/"), 200);
    let back = s3.file("tree-back");
    s3.aws_ok(&[
        "s3",
        "sync",
        "--only-show-errors",
        "s3://bkt/tree",
        back.to_str().unwrap(),
    ]);
    for i in 0..200 {
        let relative = format!("d{}/f{i}.txt", i % 7);
        assert!(
            read(&back.join(&relative)) == read(&tree.join(&relative)),
            "{relative}"
        );
    }
    // A second sync finds nothing to send.
    let again = s3.aws_ok(&["s3", "sync", tree.to_str().unwrap(), "s3://bkt/tree"]);
    assert!(again.trim().is_empty(), "{again}");
    s3.aws_ok(&[
        "s3",
        "rm",
        "--recursive",
        "--only-show-errors",
        "s3://bkt/tree",
    ]);
    assert_eq!(s3.key_count("tree/"), 0);

    eprintln!("tree done at {:?}", started.elapsed());
    // Presigned URLs, SigV2 (aws-cli's default for presign) and SigV4, read by plain HTTP.
    let data = read(&s3.file("sizes-one.up"));
    for profile in ["default", "v4"] {
        let url = s3.aws_ok(&["--profile", profile, "s3", "presign", "s3://bkt/sizes/one"]);
        assert_eq!(url.contains("X-Amz-Signature"), profile == "v4", "{url}");
        let (status, body) = s3.plain_get(url.trim());
        assert_eq!((status, body), (200, data.clone()), "{profile}");
        let tampered = url.trim().replacen("bkt/sizes/one", "bkt/sizes/seven", 1);
        assert_eq!(s3.plain_get(&tampered).0, 403, "{profile}: another key");
        let short = s3.aws_ok(&[
            "--profile",
            profile,
            "s3",
            "presign",
            "s3://bkt/sizes/one",
            "--expires-in",
            "1",
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = s3.plain_get(short.trim());
            if status == 403 {
                assert!(String::from_utf8_lossy(&body).contains("AccessDenied"));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{profile}: the URL never expired"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    // Presigned PUTs (SigV2 and SigV4), made by botocore and sent as plain HTTP PUTs.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("s3/presign_put.py");
    let output = Command::new(venv_bin("python"))
        .arg(script)
        .args([&s3.endpoint, &s3.access_key, &s3.secret_key])
        .args(["bkt", "presigned-put", "sent by URL"])
        .output()
        .expect("python runs");
    let statuses = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        statuses.split_whitespace().collect::<Vec<_>>(),
        ["200", "200"],
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    s3.aws_ok(&[
        "s3",
        "cp",
        "s3://bkt/presigned-put",
        s3.file("put.back").to_str().unwrap(),
    ]);
    assert_eq!(read(&s3.file("put.back")), b"sent by URL");

    expect_error(
        &s3.aws(&["s3", "rb", "s3://bkt"]),
        "BucketNotEmpty",
        &["rb"],
    );
    s3.aws_ok(&["s3", "rm", "--recursive", "--only-show-errors", "s3://bkt"]);
    s3.aws_ok(&["s3", "rb", "s3://bkt"]);
    assert!(!s3.aws_ok(&["s3", "ls"]).contains("bkt"));
}

/// A storage class mapped to an erasure pool (2+1 over the three OSDs): objects of 1 B, 7 MiB
/// and 100 MiB (multipart) written with it come back exact, HEAD and LIST name their class,
/// their stripes are in that pool, a copy takes the class it asks for (else STANDARD), and an
/// unknown class is refused.
fn storage_classes(s3: &S3Cluster) {
    tidepool_ok(
        s3.path(),
        &[
            "pool",
            "create",
            "cold",
            "--erasure",
            "2+1",
            "--pg-num",
            "8",
            "--failure-domain",
            "osd",
        ],
    );
    tidepool_ok(
        s3.path(),
        &["storage-class", "set", "STANDARD_IA", "--pool", "cold"],
    );
    let classes = tidepool_ok(s3.path(), &["storage-class", "ls", "--format", "json"]);
    assert!(
        classes.contains("STANDARD_IA") && classes.contains("cold"),
        "{classes}"
    );
    for (name, size) in [("one", 1), ("seven", 7 * MIB), ("hundred", 100 * MIB)] {
        let class = Some("STANDARD_IA");
        let head = up_and_down(s3, &format!("cold/{name}"), size, size as u64 + 5, class);
        assert_eq!(head["StorageClass"], "STANDARD_IA", "{head}");
    }
    let head = s3.s3api(&["head-object", "--bucket", "bkt", "--key", "sizes/seven"]);
    assert!(
        head.get("StorageClass").is_none(),
        "STANDARD is not shown: {head}"
    );
    let listing = s3.s3api(&["list-objects-v2", "--bucket", "bkt", "--prefix", "cold/"]);
    let listed: Vec<&str> = listing["Contents"]
        .as_array()
        .expect("contents")
        .iter()
        .map(|o| o["StorageClass"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(listed, ["STANDARD_IA"; 3], "{listing}");
    // 7 MiB is two stripes, 100 MiB at least 25: all in the erasure pool.
    let stripes = tidepool_ok(s3.path(), &["object", "ls", "cold"]);
    assert!(stripes.lines().count() >= 27, "stripes in cold: {stripes}");
    // Copies: the class asked for, else STANDARD; the bytes either way.
    s3.aws_ok(&[
        "s3",
        "cp",
        "--only-show-errors",
        "s3://bkt/cold/seven",
        "s3://bkt/warm/seven",
    ]);
    let head = s3.s3api(&["head-object", "--bucket", "bkt", "--key", "warm/seven"]);
    assert!(head.get("StorageClass").is_none(), "{head}");
    s3.aws_ok(&[
        "s3",
        "cp",
        "--only-show-errors",
        "--storage-class",
        "STANDARD_IA",
        "s3://bkt/sizes/seven",
        "s3://bkt/cold/copied",
    ]);
    let head = s3.s3api(&["head-object", "--bucket", "bkt", "--key", "cold/copied"]);
    assert_eq!(head["StorageClass"], "STANDARD_IA", "{head}");
    let back = s3.file("copied.down");
    s3.aws_ok(&[
        "s3",
        "cp",
        "--only-show-errors",
        "s3://bkt/cold/copied",
        back.to_str().unwrap(),
    ]);
    assert!(
        read(&back) == pattern(7 * MIB as u64, 7 * MIB),
        "the copy differs"
    );
    // A class that maps to no pool.
    expect_error(
        &s3.aws(&[
            "s3",
            "cp",
            "--storage-class",
            "GLACIER",
            s3.file("sizes-one.up").to_str().unwrap(),
            "s3://bkt/glacier",
        ]),
        "InvalidStorageClass",
        &["cp"],
    );
}

/// Rule: each S3 operation aws-cli's `s3api` exposes answers as S3 does, keys of any shape
/// round-trip, and what another client does next sees a change at once.
/// The suites that drive boto3 from one process each (see `tests/s3/s3check.py`).
#[test]
fn boto3_suites() {
    // Lifecycle days of two seconds, and a pass every second.
    let s3 = S3Cluster::start_with(
        "s3-boto3",
        &["--lifecycle-day", "2", "--lifecycle-interval", "1"],
    );
    let owner = ("alice", s3.access_key.as_str(), s3.secret_key.as_str());
    s3.boto3_suite("object_lock", &[owner]);
    s3.boto3_suite("behaviours", &[owner]);
    let others: Vec<(String, String, String)> = ["bob", "carol"]
        .iter()
        .map(|name| {
            let user: Value = serde_json::from_str(&tidepool_ok(
                s3.path(),
                &["user", "create", name, "--format", "json"],
            ))
            .expect("JSON");
            let key = |field: &str| user[field].as_str().expect("a key").to_owned();
            (name.to_string(), key("access_key"), key("secret_key"))
        })
        .collect();
    let mut users = vec![owner];
    users.extend(
        others
            .iter()
            .map(|(n, a, s)| (n.as_str(), a.as_str(), s.as_str())),
    );
    s3.boto3_suite("access", &users);
    s3.boto3_suite("post_object", &users);
    s3.boto3_suite("lifecycle", &[owner]);
    // Each pass's progress is visible.
    let status: Value = serde_json::from_str(&tidepool_ok(
        s3.path(),
        &["lifecycle", "status", "--format", "json"],
    ))
    .expect("JSON");
    let passes = status.as_object().expect("buckets");
    let total = |field: &str| -> u64 {
        passes
            .values()
            .map(|p| p["totals"][field].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(passes
        .values()
        .all(|p| p["passes"].as_u64() > Some(0) && p["last"]["finished_ms"].as_u64().is_some()));
    assert!(total("expired") >= 3, "{status}");
    assert!(total("noncurrent_removed") >= 2, "{status}");
    assert!(total("markers_removed") >= 1, "{status}");
    assert!(total("uploads_aborted") >= 1, "{status}");
    assert!(total("locked") >= 1, "{status}");
    let plain = tidepool_ok(s3.path(), &["lifecycle", "status"]);
    assert!(plain.contains("expired"), "{plain}");
}

#[test]
fn aws_s3api_operations() {
    let s3 = S3Cluster::start("s3-api");
    s3.s3api(&["create-bucket", "--bucket", "bkt"]);
    s3.s3api_fails(
        "BucketAlreadyOwnedByYou",
        &["create-bucket", "--bucket", "bkt"],
    );
    s3.s3api_fails(
        "InvalidBucketName",
        &["create-bucket", "--bucket", "Bad_Name"],
    );
    s3.s3api(&["head-bucket", "--bucket", "bkt"]);
    s3.s3api(&["get-bucket-location", "--bucket", "bkt"]);
    let buckets = s3.s3api(&["list-buckets"]);
    assert_eq!(buckets["Buckets"][0]["Name"], "bkt");
    s3.s3api_fails("404", &["head-bucket", "--bucket", "nothere"]);

    // Objects with metadata and content headers.
    let body = s3.file("body");
    write(&body, b"0123456789");
    let body = body.to_str().unwrap();
    let put = s3.s3api(&[
        "put-object",
        "--bucket",
        "bkt",
        "--key",
        "doc",
        "--body",
        body,
        "--content-type",
        "text/x-test",
        "--cache-control",
        "max-age=60",
        "--content-disposition",
        "attachment",
        "--metadata",
        "color=blue,size=10",
    ]);
    let etag = put["ETag"].as_str().expect("etag").to_owned();
    assert_eq!(
        etag, "\"781e5e245d69b566979b86e28d23f2c7\"",
        "the MD5 of the body"
    );
    let head = s3.s3api(&["head-object", "--bucket", "bkt", "--key", "doc"]);
    assert_eq!(head["ContentType"], "text/x-test");
    assert_eq!(head["CacheControl"], "max-age=60");
    assert_eq!(head["ContentDisposition"], "attachment");
    assert_eq!(head["Metadata"]["color"], "blue");
    assert_eq!(head["ETag"], etag.as_str());
    let out = s3.file("out");
    let out_text = out.to_str().unwrap();
    let got = s3.s3api(&[
        "get-object",
        "--bucket",
        "bkt",
        "--key",
        "doc",
        "--range",
        "bytes=2-5",
        "--response-content-type",
        "application/x-other",
        out_text,
    ]);
    assert_eq!(read(&out), b"2345");
    assert_eq!(got["ContentRange"], "bytes 2-5/10");
    assert_eq!(got["ContentType"], "application/x-other");
    s3.s3api(&[
        "get-object",
        "--bucket",
        "bkt",
        "--key",
        "doc",
        "--range",
        "bytes=-3",
        out_text,
    ]);
    assert_eq!(read(&out), b"789");
    s3.s3api_fails(
        "InvalidRange",
        &[
            "get-object",
            "--bucket",
            "bkt",
            "--key",
            "doc",
            "--range",
            "bytes=10-20",
            out_text,
        ],
    );
    s3.s3api_fails(
        "NoSuchKey",
        &["get-object", "--bucket", "bkt", "--key", "nope", out_text],
    );

    // Checksums of every algorithm: checked on arrival, kept, returned when asked for.
    for algorithm in ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"] {
        let key = format!("sum-{algorithm}");
        let put = s3.s3api(&[
            "put-object",
            "--bucket",
            "bkt",
            "--key",
            &key,
            "--body",
            body,
            "--checksum-algorithm",
            algorithm,
        ]);
        let field = format!("Checksum{algorithm}");
        let sent = put[&field]
            .as_str()
            .unwrap_or_else(|| panic!("{algorithm}: {put}"))
            .to_owned();
        let head = s3.s3api(&[
            "head-object",
            "--bucket",
            "bkt",
            "--key",
            &key,
            "--checksum-mode",
            "ENABLED",
        ]);
        assert_eq!(head[&field], sent.as_str(), "{algorithm}");
        let plain = s3.s3api(&["head-object", "--bucket", "bkt", "--key", &key]);
        assert!(plain[&field].is_null(), "returned only when asked for");
    }

    // Conditional reads.
    let get_if = |flag: &str, value: &str| {
        s3.aws(&[
            "s3api",
            "get-object",
            "--bucket",
            "bkt",
            "--key",
            "doc",
            flag,
            value,
            out_text,
        ])
    };
    assert!(get_if("--if-match", &etag).status.success());
    expect_error(
        &get_if("--if-match", "\"0000\""),
        "PreconditionFailed",
        &["if-match"],
    );
    expect_error(&get_if("--if-none-match", &etag), "304", &["if-none-match"]);
    assert!(get_if("--if-none-match", "\"0000\"").status.success());
    expect_error(
        &get_if("--if-modified-since", "2100-01-01T00:00:00Z"),
        "304",
        &["ims"],
    );
    assert!(get_if("--if-modified-since", "2000-01-01T00:00:00Z")
        .status
        .success());
    expect_error(
        &get_if("--if-unmodified-since", "2000-01-01T00:00:00Z"),
        "PreconditionFailed",
        &["ius"],
    );

    // Conditional writes.
    let put_args = |key| put_object_args(key, body);
    let mut args = put_args("doc");
    args.extend(["--if-none-match", "*"]);
    s3.s3api_fails("PreconditionFailed", &args);
    let mut args = put_args("fresh");
    args.extend(["--if-none-match", "*"]);
    s3.s3api(&args);
    let mut args = put_args("doc");
    args.extend(["--if-match", "\"0000\""]);
    s3.s3api_fails("PreconditionFailed", &args);
    let mut args = put_args("doc");
    args.extend(["--if-match", &etag]);
    s3.s3api(&args);

    // Copies: metadata kept (COPY) or replaced (REPLACE); a copy onto itself must change it.
    s3.s3api(&[
        "copy-object",
        "--bucket",
        "bkt",
        "--key",
        "copy1",
        "--copy-source",
        "bkt/doc",
    ]);
    let head = s3.s3api(&["head-object", "--bucket", "bkt", "--key", "copy1"]);
    assert_eq!(head["ContentLength"], 10);
    s3.s3api(&[
        "copy-object",
        "--bucket",
        "bkt",
        "--key",
        "copy2",
        "--copy-source",
        "bkt/doc",
        "--metadata-directive",
        "REPLACE",
        "--metadata",
        "color=red",
        "--content-type",
        "text/y",
    ]);
    let head = s3.s3api(&["head-object", "--bucket", "bkt", "--key", "copy2"]);
    assert_eq!(head["Metadata"]["color"], "red");
    assert_eq!(head["ContentType"], "text/y");
    s3.s3api_fails(
        "InvalidRequest",
        &[
            "copy-object",
            "--bucket",
            "bkt",
            "--key",
            "doc",
            "--copy-source",
            "bkt/doc",
        ],
    );

    // Listings: v1 and v2, prefix, delimiter, markers, pages, URL encoding.
    for key in ["dir/a", "dir/b", "dir/sub/c", "dir/sub/d", "top"] {
        s3.s3api(&put_args(key));
    }
    let v2 = s3.s3api(&[
        "list-objects-v2",
        "--bucket",
        "bkt",
        "--prefix",
        "dir/",
        "--delimiter",
        "/",
    ]);
    assert_eq!(keys_of(&v2), ["dir/a", "dir/b"]);
    assert_eq!(v2["CommonPrefixes"][0]["Prefix"], "dir/sub/");
    let page = s3.s3api(&[
        "list-objects-v2",
        "--bucket",
        "bkt",
        "--prefix",
        "dir/",
        "--max-keys",
        "2",
        "--no-paginate",
    ]);
    assert_eq!(keys_of(&page), ["dir/a", "dir/b"]);
    assert_eq!(page["IsTruncated"], true);
    let token = page["NextContinuationToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let rest = s3.s3api(&[
        "list-objects-v2",
        "--bucket",
        "bkt",
        "--prefix",
        "dir/",
        "--continuation-token",
        &token,
        "--no-paginate",
    ]);
    assert_eq!(keys_of(&rest), ["dir/sub/c", "dir/sub/d"]);
    let after = s3.s3api(&[
        "list-objects-v2",
        "--bucket",
        "bkt",
        "--prefix",
        "dir/",
        "--start-after",
        "dir/b",
    ]);
    assert_eq!(keys_of(&after), ["dir/sub/c", "dir/sub/d"]);
    let v1 = s3.s3api(&[
        "list-objects",
        "--bucket",
        "bkt",
        "--prefix",
        "dir/",
        "--marker",
        "dir/a",
        "--max-keys",
        "2",
        "--no-paginate",
    ]);
    assert_eq!(keys_of(&v1), ["dir/b", "dir/sub/c"]);
    assert_eq!(v1["IsTruncated"], true);
    let v1_grouped = s3.s3api(&["list-objects", "--bucket", "bkt", "--delimiter", "/"]);
    assert_eq!(v1_grouped["CommonPrefixes"][0]["Prefix"], "dir/");

    // Keys of every shape, written, listed (URL-encoded on request) and read back.
    // With the `h/` prefix, 1,024 bytes: the longest key S3 accepts.
    let long_key = "k".repeat(1022);
    let hostile = [
        "with space",
        "plus+sign",
        "percent%20sign",
        "unicode-ü-日本",
        "double//slash",
        "../dotdot",
        "question?mark",
        "amp&ersand",
        long_key.as_str(),
    ];
    for (i, key) in hostile.iter().enumerate() {
        let file = s3.file(&format!("hostile-{i}"));
        write(&file, key.as_bytes());
        s3.s3api(&[
            "put-object",
            "--bucket",
            "bkt",
            "--key",
            &format!("h/{key}"),
            "--body",
            file.to_str().unwrap(),
        ]);
        s3.s3api(&[
            "get-object",
            "--bucket",
            "bkt",
            "--key",
            &format!("h/{key}"),
            out_text,
        ]);
        assert_eq!(read(&out), key.as_bytes(), "{key}");
    }
    let mut expected: Vec<String> = hostile.iter().map(|k| format!("h/{k}")).collect();
    expected.sort();
    assert_eq!(
        keys_of(&s3.s3api(&["list-objects-v2", "--bucket", "bkt", "--prefix", "h/"])),
        expected
    );
    let encoded = s3.s3api(&[
        "list-objects-v2",
        "--bucket",
        "bkt",
        "--prefix",
        "h/with",
        "--encoding-type",
        "url",
    ]);
    assert_eq!(keys_of(&encoded), ["h/with%20space"]);
    let too_long = "k".repeat(1025);
    let mut args = put_args("x");
    args[4] = too_long.as_str();
    expect_error(
        &s3.aws(&[&["s3api"], &args[..]].concat()),
        "KeyTooLongError",
        &["1,025 bytes"],
    );

    // Deletes: one, and several at once (absent keys count as deleted, as in S3).
    s3.s3api(&["delete-object", "--bucket", "bkt", "--key", "copy1"]);
    s3.s3api(&["delete-object", "--bucket", "bkt", "--key", "copy1"]);
    let deleted = s3.s3api(&[
        "delete-objects",
        "--bucket",
        "bkt",
        "--delete",
        "Objects=[{Key=copy2},{Key=fresh},{Key=never}]",
    ]);
    assert_eq!(deleted["Deleted"].as_array().map(Vec::len), Some(3));
    s3.s3api_fails("404", &["head-object", "--bucket", "bkt", "--key", "copy2"]);

    // Multipart: upload, copy a range as a part, list, complete; bad completions refused.
    let source = pattern(7, 6 * MIB);
    let source_file = s3.file("source");
    write(&source_file, &source);
    s3.s3api(&[
        "put-object",
        "--bucket",
        "bkt",
        "--key",
        "source",
        "--body",
        source_file.to_str().unwrap(),
    ]);
    let upload = s3.s3api(&[
        "create-multipart-upload",
        "--bucket",
        "bkt",
        "--key",
        "multi",
    ]);
    let id = upload["UploadId"].as_str().expect("upload id").to_owned();
    let part1 = pattern(1, 5 * MIB);
    let part3 = pattern(3, MIB);
    let (p1, p3) = (s3.file("p1"), s3.file("p3"));
    write(&p1, &part1);
    write(&p3, &part3);
    fn upload_args<'a>(id: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["--bucket", "bkt", "--key", "multi", "--upload-id", id];
        args.extend_from_slice(extra);
        args
    }
    let e1 = s3.s3api(
        &[
            &["upload-part"],
            &upload_args(&id, &["--part-number", "1", "--body", p1.to_str().unwrap()])[..],
        ]
        .concat(),
    )["ETag"]
        .clone();
    let e2 = s3.s3api(
        &[
            &["upload-part-copy"],
            &upload_args(
                &id,
                &[
                    "--part-number",
                    "2",
                    "--copy-source",
                    "bkt/source",
                    "--copy-source-range",
                    "bytes=0-5242879",
                ],
            )[..],
        ]
        .concat(),
    )["CopyPartResult"]["ETag"]
        .clone();
    let e3 = s3.s3api(
        &[
            &["upload-part"],
            &upload_args(&id, &["--part-number", "3", "--body", p3.to_str().unwrap()])[..],
        ]
        .concat(),
    )["ETag"]
        .clone();
    let parts = s3.s3api(&[&["list-parts"], &upload_args(&id, &[])[..]].concat());
    assert_eq!(parts["Parts"].as_array().map(Vec::len), Some(3));
    let uploads = s3.s3api(&["list-multipart-uploads", "--bucket", "bkt"]);
    assert_eq!(uploads["Uploads"][0]["UploadId"], id.as_str());
    let nested = s3.s3api(&[
        "create-multipart-upload",
        "--bucket",
        "bkt",
        "--key",
        "in/side",
    ]);
    let grouped = s3.s3api(&[
        "list-multipart-uploads",
        "--bucket",
        "bkt",
        "--delimiter",
        "/",
    ]);
    assert_eq!(grouped["CommonPrefixes"][0]["Prefix"], "in/", "{grouped}");
    assert_eq!(
        grouped["Uploads"].as_array().map(Vec::len),
        Some(1),
        "{grouped}"
    );
    s3.s3api(&[
        "abort-multipart-upload",
        "--bucket",
        "bkt",
        "--key",
        "in/side",
        "--upload-id",
        nested["UploadId"].as_str().expect("id"),
    ]);
    let completion = |parts: &[(u32, &Value)]| {
        let list: Vec<String> = parts
            .iter()
            .map(|(n, e)| format!("{{\"PartNumber\":{n},\"ETag\":{e}}}"))
            .collect();
        format!("{{\"Parts\":[{}]}}", list.join(","))
    };
    let wrong = Value::String("\"00000000000000000000000000000000\"".into());
    s3.s3api_fails(
        "InvalidPart",
        &[
            &["complete-multipart-upload"],
            &upload_args(
                &id,
                &["--multipart-upload", &completion(&[(1, &e1), (2, &wrong)])],
            )[..],
        ]
        .concat(),
    );
    s3.s3api_fails(
        "InvalidPartOrder",
        &[
            &["complete-multipart-upload"],
            &upload_args(
                &id,
                &["--multipart-upload", &completion(&[(2, &e2), (1, &e1)])],
            )[..],
        ]
        .concat(),
    );
    s3.s3api_fails(
        "EntityTooSmall",
        &[
            &["complete-multipart-upload"],
            &upload_args(
                &id,
                &["--multipart-upload", &completion(&[(3, &e3), (4, &e3)])],
            )[..],
        ]
        .concat(),
    );
    let done = s3.s3api(
        &[
            &["complete-multipart-upload"],
            &upload_args(
                &id,
                &[
                    "--multipart-upload",
                    &completion(&[(1, &e1), (2, &e2), (3, &e3)]),
                ],
            )[..],
        ]
        .concat(),
    );
    assert!(
        done["ETag"].as_str().expect("etag").ends_with("-3\""),
        "{done}"
    );
    s3.s3api(&["get-object", "--bucket", "bkt", "--key", "multi", out_text]);
    let mut expected = part1.clone();
    expected.extend_from_slice(&source[..5 * MIB]);
    expected.extend_from_slice(&part3);
    assert!(
        read(&out) == expected,
        "the completed object is its parts in order"
    );
    let part = s3.s3api(&[
        "get-object",
        "--bucket",
        "bkt",
        "--key",
        "multi",
        "--part-number",
        "2",
        out_text,
    ]);
    assert_eq!(part["PartsCount"], 3);
    assert!(read(&out) == source[..5 * MIB], "part 2 alone");
    let head = s3.s3api(&["head-object", "--bucket", "bkt", "--key", "multi"]);
    assert!(
        head["PartsCount"].is_null(),
        "the count comes with partNumber only"
    );
    s3.s3api_fails(
        "InvalidPartNumber",
        &[
            "get-object",
            "--bucket",
            "bkt",
            "--key",
            "multi",
            "--part-number",
            "4",
            out_text,
        ],
    );
    s3.s3api_fails(
        "NoSuchUpload",
        &[&["list-parts"], &upload_args(&id, &[])[..]].concat(),
    );

    let aborted = s3.s3api(&[
        "create-multipart-upload",
        "--bucket",
        "bkt",
        "--key",
        "gone",
    ]);
    let aborted_id = aborted["UploadId"].as_str().expect("id").to_owned();
    s3.s3api(&[
        "upload-part",
        "--bucket",
        "bkt",
        "--key",
        "gone",
        "--upload-id",
        &aborted_id,
        "--part-number",
        "1",
        "--body",
        p3.to_str().unwrap(),
    ]);
    s3.s3api(&[
        "abort-multipart-upload",
        "--bucket",
        "bkt",
        "--key",
        "gone",
        "--upload-id",
        &aborted_id,
    ]);
    s3.s3api_fails(
        "NoSuchUpload",
        &[
            "list-parts",
            "--bucket",
            "bkt",
            "--key",
            "gone",
            "--upload-id",
            &aborted_id,
        ],
    );
    let uploads = s3.s3api(&["list-multipart-uploads", "--bucket", "bkt"]);
    assert!(
        uploads["Uploads"].as_array().is_none_or(Vec::is_empty),
        "{uploads}"
    );

    // Strong consistency: each aws run is a new client, and sees the write before it at once.
    for i in 0..5 {
        let key = format!("consistent-{i}");
        let file = s3.file(&key);
        write(&file, &pattern(100 + i, 100 + i as usize));
        s3.s3api(&[
            "put-object",
            "--bucket",
            "bkt",
            "--key",
            &key,
            "--body",
            file.to_str().unwrap(),
        ]);
        let head = s3.s3api(&["head-object", "--bucket", "bkt", "--key", &key]);
        assert_eq!(head["ContentLength"], 100 + i);
        s3.s3api(&["get-object", "--bucket", "bkt", "--key", &key, out_text]);
        assert!(read(&out) == read(&file));
        let listed = s3.s3api(&["list-objects-v2", "--bucket", "bkt", "--prefix", &key]);
        assert_eq!(keys_of(&listed), std::slice::from_ref(&key));
        s3.s3api(&["delete-object", "--bucket", "bkt", "--key", &key]);
        s3.s3api_fails("404", &["head-object", "--bucket", "bkt", "--key", &key]);
    }
    versioning(&s3);
    tagging(&s3);
    cors(&s3);
}

/// The value of header `name` in `headers`.
fn header_value<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Rule: a bucket's CORS rules as S3 keeps and applies them: set, read and removed with
/// aws-cli; a browser's preflight (`OPTIONS`, unsigned) is answered by the first rule that
/// allows its origin, method and headers, refused with 403 otherwise or without rules; a
/// signed request from an allowed origin gets `Access-Control-Allow-Origin`.
fn cors(s3: &S3Cluster) {
    let url = format!("{}/bkt/tagged", s3.endpoint);
    let preflight = |origin: &str, method: &str, headers: Option<&str>| {
        let mut asked = vec![
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
        ];
        if let Some(headers) = headers {
            asked.push(("Access-Control-Request-Headers", headers));
        }
        tidepool_tests::http_exchange("OPTIONS", &url, &asked, None).expect("the gateway answers")
    };
    let (status, _, body) = preflight("https://app.example.com", "GET", None);
    assert_eq!(status, 403, "no rules yet: {body}");
    assert!(body.contains("CORSResponse"), "{body}");
    s3.s3api_fails(
        "NoSuchCORSConfiguration",
        &["get-bucket-cors", "--bucket", "bkt"],
    );
    let rules = r#"{"CORSRules":[
        {"AllowedOrigins":["https://*.example.com"],"AllowedMethods":["GET","PUT"],
         "AllowedHeaders":["content-type","x-amz-*"],"ExposeHeaders":["ETag"],"MaxAgeSeconds":600},
        {"AllowedOrigins":["*"],"AllowedMethods":["GET"]}]}"#;
    s3.s3api(&[
        "put-bucket-cors",
        "--bucket",
        "bkt",
        "--cors-configuration",
        rules,
    ]);
    let stored = s3.s3api(&["get-bucket-cors", "--bucket", "bkt"]);
    assert_eq!(
        stored["CORSRules"].as_array().map(Vec::len),
        Some(2),
        "{stored}"
    );
    assert_eq!(stored["CORSRules"][0]["MaxAgeSeconds"], 600);

    let (status, headers, body) = preflight(
        "https://app.example.com",
        "PUT",
        Some("Content-Type, X-Amz-Date"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header_value(&headers, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header_value(&headers, "access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        header_value(&headers, "access-control-allow-headers"),
        Some("content-type, x-amz-date")
    );
    assert_eq!(
        header_value(&headers, "access-control-max-age"),
        Some("600")
    );
    assert_eq!(
        header_value(&headers, "access-control-expose-headers"),
        Some("ETag")
    );
    // Any origin may GET, by the second rule; none may DELETE, nor send other headers.
    let (status, headers, _) = preflight("https://elsewhere.test", "GET", None);
    assert_eq!(status, 200);
    assert_eq!(
        header_value(&headers, "access-control-allow-origin"),
        Some("*")
    );
    assert_eq!(preflight("https://elsewhere.test", "DELETE", None).0, 403);
    assert_eq!(
        preflight("https://app.example.com", "PUT", Some("authorization")).0,
        403
    );
    assert_eq!(preflight("http://app.example.com", "PUT", None).0, 403);
    let (status, _, _) = tidepool_tests::http_exchange(
        "OPTIONS",
        &url,
        &[("Origin", "https://a.example.com")],
        None,
    )
    .expect("answers");
    assert_eq!(status, 400, "a preflight without its method");

    // A signed GET from an allowed origin: aws-cli cannot add Origin, so a presigned URL does.
    let presigned = s3.aws_ok(&["--profile", "v4", "s3", "presign", "s3://bkt/tagged"]);
    let (status, headers, _) = tidepool_tests::http_exchange(
        "GET",
        presigned.trim(),
        &[("Origin", "https://app.example.com")],
        None,
    )
    .expect("answers");
    assert_eq!(status, 200);
    assert_eq!(
        header_value(&headers, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    s3.s3api(&["delete-bucket-cors", "--bucket", "bkt"]);
    assert_eq!(preflight("https://app.example.com", "GET", None).0, 403);
}

/// The tags of `key` in bucket `bkt` (of version `version`), as `(key, value)` pairs.
fn tags_of(
    s3: &S3Cluster,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> Vec<(String, String)> {
    let mut args = vec!["get-object-tagging", "--bucket", bucket, "--key", key];
    if let Some(version) = version {
        args.extend(["--version-id", version]);
    }
    s3.s3api(&args)["TagSet"]
        .as_array()
        .expect("a tag set")
        .iter()
        .map(|t| {
            (
                t["Key"].as_str().expect("key").to_owned(),
                t["Value"].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Rule: object and bucket tags as S3 keeps them: set with `x-amz-tagging` on PUT, copy (by
/// the tagging directive) and multipart uploads, replaced and removed by the tagging calls
/// (of one version, in a versioned bucket), counted by GET, and refused when S3 refuses them.
fn tagging(s3: &S3Cluster) {
    let body = s3.file("tagged");
    write(&body, b"tagged bytes");
    let body = body.to_str().unwrap();
    s3.s3api(&[
        "put-object",
        "--bucket",
        "bkt",
        "--key",
        "tagged",
        "--body",
        body,
        "--tagging",
        "a=1&b%20c=x%2Fy",
    ]);
    assert_eq!(
        tags_of(s3, "bkt", "tagged", None),
        pairs(&[("a", "1"), ("b c", "x/y")])
    );
    let got = s3.s3api(&[
        "get-object",
        "--bucket",
        "bkt",
        "--key",
        "tagged",
        "/dev/null",
    ]);
    assert_eq!(got["TagCount"], 2);
    s3.s3api(&[
        "put-object-tagging",
        "--bucket",
        "bkt",
        "--key",
        "tagged",
        "--tagging",
        "TagSet=[{Key=x,Value=y}]",
    ]);
    assert_eq!(tags_of(s3, "bkt", "tagged", None), pairs(&[("x", "y")]));
    // The bytes and the ETag are the object's still.
    let head = s3.s3api(&["head-object", "--bucket", "bkt", "--key", "tagged"]);
    assert_eq!(head["ContentLength"], 12);

    // Copies keep the source's tags unless told to replace them.
    s3.s3api(&[
        "copy-object",
        "--bucket",
        "bkt",
        "--key",
        "tagged-copy",
        "--copy-source",
        "bkt/tagged",
    ]);
    assert_eq!(
        tags_of(s3, "bkt", "tagged-copy", None),
        pairs(&[("x", "y")])
    );
    s3.s3api(&[
        "copy-object",
        "--bucket",
        "bkt",
        "--key",
        "tagged-copy",
        "--copy-source",
        "bkt/tagged",
        "--tagging-directive",
        "REPLACE",
        "--tagging",
        "c=3",
    ]);
    assert_eq!(
        tags_of(s3, "bkt", "tagged-copy", None),
        pairs(&[("c", "3")])
    );
    let upload = s3.s3api(&[
        "create-multipart-upload",
        "--bucket",
        "bkt",
        "--key",
        "tagged-multi",
        "--tagging",
        "m=1",
    ]);
    let upload_id = upload["UploadId"].as_str().expect("upload id");
    let part_etag = s3.s3api(&[
        "upload-part",
        "--bucket",
        "bkt",
        "--key",
        "tagged-multi",
        "--upload-id",
        upload_id,
        "--part-number",
        "1",
        "--body",
        body,
    ])["ETag"]
        .as_str()
        .expect("etag")
        .to_owned();
    let parts = format!("{{\"Parts\":[{{\"PartNumber\":1,\"ETag\":{part_etag:?}}}]}}");
    s3.s3api(&[
        "complete-multipart-upload",
        "--bucket",
        "bkt",
        "--key",
        "tagged-multi",
        "--upload-id",
        upload_id,
        "--multipart-upload",
        &parts,
    ]);
    assert_eq!(
        tags_of(s3, "bkt", "tagged-multi", None),
        pairs(&[("m", "1")])
    );
    // GetObjectAttributes names what it is asked for, the parts of a multipart object too.
    let attributes = s3.s3api(&[
        "get-object-attributes",
        "--bucket",
        "bkt",
        "--key",
        "tagged-multi",
        "--object-attributes",
        "ETag",
        "ObjectSize",
        "ObjectParts",
        "StorageClass",
    ]);
    assert_eq!(attributes["ObjectSize"], 12, "{attributes}");
    assert_eq!(attributes["StorageClass"], "STANDARD", "{attributes}");
    assert_eq!(
        attributes["ObjectParts"]["TotalPartsCount"], 1,
        "{attributes}"
    );
    assert_eq!(
        attributes["ObjectParts"]["Parts"][0]["Size"], 12,
        "{attributes}"
    );
    assert!(
        attributes["ETag"]
            .as_str()
            .is_some_and(|e| e.trim_matches('"').ends_with("-1")),
        "{attributes}"
    );
    let attributes = s3.s3api(&[
        "get-object-attributes",
        "--bucket",
        "bkt",
        "--key",
        "tagged",
        "--object-attributes",
        "ObjectSize",
    ]);
    assert_eq!(attributes["ObjectSize"], 12, "{attributes}");
    assert!(
        attributes.get("ETag").is_none(),
        "only what was asked: {attributes}"
    );

    s3.s3api(&[
        "delete-object-tagging",
        "--bucket",
        "bkt",
        "--key",
        "tagged",
    ]);
    assert!(tags_of(s3, "bkt", "tagged", None).is_empty());
    let eleven: Vec<String> = (0..11).map(|i| format!("{{Key=k{i},Value=v}}")).collect();
    let eleven = format!("TagSet=[{}]", eleven.join(","));
    s3.s3api_fails(
        "BadRequest",
        &[
            "put-object-tagging",
            "--bucket",
            "bkt",
            "--key",
            "tagged",
            "--tagging",
            &eleven,
        ],
    );
    s3.s3api_fails(
        "InvalidTag",
        &[
            "put-object-tagging",
            "--bucket",
            "bkt",
            "--key",
            "tagged",
            "--tagging",
            "TagSet=[{Key=k,Value=1},{Key=k,Value=2}]",
        ],
    );
    s3.s3api_fails(
        "NoSuchKey",
        &[
            "put-object-tagging",
            "--bucket",
            "bkt",
            "--key",
            "absent",
            "--tagging",
            "TagSet=[]",
        ],
    );
    assert!(tags_of(s3, "bkt", "tagged", None).is_empty());

    // Bucket tags.
    s3.s3api_fails("NoSuchTagSet", &["get-bucket-tagging", "--bucket", "bkt"]);
    s3.s3api(&[
        "put-bucket-tagging",
        "--bucket",
        "bkt",
        "--tagging",
        "TagSet=[{Key=team,Value=storage},{Key=cost,Value=42}]",
    ]);
    let listed = s3.s3api(&["get-bucket-tagging", "--bucket", "bkt"]);
    assert_eq!(
        listed["TagSet"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    s3.s3api(&["delete-bucket-tagging", "--bucket", "bkt"]);
    s3.s3api_fails("NoSuchTagSet", &["get-bucket-tagging", "--bucket", "bkt"]);
}

/// `s3api get-object` of `key` (of version `version`) in bucket `ver`: its bytes.
fn get_version(s3: &S3Cluster, key: &str, version: Option<&str>) -> Vec<u8> {
    let out = s3.file("version-out");
    let mut args = vec!["get-object", "--bucket", "ver", "--key", key];
    if let Some(version) = version {
        args.extend(["--version-id", version]);
    }
    args.push(out.to_str().unwrap());
    s3.s3api(&args);
    read(&out)
}

/// `s3api put-object` of `data` as `key` of bucket `ver`: its answer.
fn put_version(s3: &S3Cluster, key: &str, data: &[u8]) -> Value {
    let file = s3.file(&format!("version-in-{key}"));
    write(&file, data);
    s3.s3api(&[
        "put-object",
        "--bucket",
        "ver",
        "--key",
        key,
        "--body",
        file.to_str().unwrap(),
    ])
}

/// The versions and delete markers of bucket `ver` under `prefix`: (key, version id, is
/// latest, is a delete marker), in listing order (markers after versions).
fn versions_of(s3: &S3Cluster, prefix: &str) -> Vec<(String, String, bool, bool)> {
    let listing = s3.s3api(&[
        "list-object-versions",
        "--bucket",
        "ver",
        "--prefix",
        prefix,
    ]);
    let mut out = Vec::new();
    for (field, marker) in [("Versions", false), ("DeleteMarkers", true)] {
        for v in listing[field].as_array().into_iter().flatten() {
            out.push((
                v["Key"].as_str().expect("key").to_owned(),
                v["VersionId"].as_str().expect("version id").to_owned(),
                v["IsLatest"].as_bool().expect("is latest"),
                marker,
            ));
        }
    }
    out
}

/// Rule: versioning as S3 has it, through aws-cli: `ListObjectVersions` on a bucket that never
/// had versioning (`null` versions), every PUT of an enabled bucket a new version (concurrent
/// ones too), reads and copies by version id, delete markers and their removal, permanent
/// deletes that make the next newest current, the one `null` version under `Suspended`,
/// multipart uploads, paging by key and version markers, stripes of old versions kept through
/// garbage collection, and a bucket that holds versions refused deletion until they go.
fn versioning(s3: &S3Cluster) {
    s3.s3api(&["create-bucket", "--bucket", "ver"]);
    let status = s3.s3api(&["get-bucket-versioning", "--bucket", "ver"]);
    assert!(status.get("Status").is_none(), "{status}");
    put_version(s3, "doc", b"zero");
    assert_eq!(
        versions_of(s3, "doc"),
        [("doc".into(), "null".into(), true, false)]
    );
    // Another user's bucket's versions are not for this one.
    s3.s3api_fails(
        "NoSuchBucket",
        &["list-object-versions", "--bucket", "nothere"],
    );

    s3.s3api(&[
        "put-bucket-versioning",
        "--bucket",
        "ver",
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    let status = s3.s3api(&["get-bucket-versioning", "--bucket", "ver"]);
    assert_eq!(status["Status"], "Enabled");
    let one = put_version(s3, "doc", b"one")["VersionId"]
        .as_str()
        .expect("a version id")
        .to_owned();
    let two = put_version(s3, "doc", b"two")["VersionId"]
        .as_str()
        .expect("a version id")
        .to_owned();
    assert!(one != two && one != "null" && two != "null");
    assert_eq!(
        versions_of(s3, "doc"),
        [
            ("doc".into(), two.clone(), true, false),
            ("doc".into(), one.clone(), false, false),
            ("doc".into(), "null".into(), false, false),
        ]
    );
    assert_eq!(get_version(s3, "doc", None), b"two");
    assert_eq!(get_version(s3, "doc", Some(&one)), b"one");
    assert_eq!(get_version(s3, "doc", Some("null")), b"zero");
    let head = s3.s3api(&["head-object", "--bucket", "ver", "--key", "doc"]);
    assert_eq!(head["VersionId"], two.as_str());
    s3.s3api_fails(
        "NoSuchVersion",
        &[
            "get-object",
            "--bucket",
            "ver",
            "--key",
            "doc",
            "--version-id",
            "00000000000000ff",
            "/dev/null",
        ],
    );
    s3.s3api_fails(
        "InvalidArgument",
        &[
            "get-object",
            "--bucket",
            "ver",
            "--key",
            "doc",
            "--version-id",
            "bogus",
            "/dev/null",
        ],
    );

    // A delete makes a delete marker; removing the marker brings the object back.
    let deleted = s3.s3api(&["delete-object", "--bucket", "ver", "--key", "doc"]);
    assert_eq!(deleted["DeleteMarker"], true);
    let marker = deleted["VersionId"].as_str().expect("marker id").to_owned();
    s3.s3api_fails("404", &["head-object", "--bucket", "ver", "--key", "doc"]);
    let listed = versions_of(s3, "doc");
    assert_eq!(listed.len(), 4);
    assert!(listed.contains(&("doc".into(), marker.clone(), true, true)));
    assert!(listed.iter().filter(|v| v.2).count() == 1, "{listed:?}");
    s3.s3api_fails(
        "MethodNotAllowed",
        &[
            "get-object",
            "--bucket",
            "ver",
            "--key",
            "doc",
            "--version-id",
            &marker,
            "/dev/null",
        ],
    );
    assert_eq!(get_version(s3, "doc", Some(&two)), b"two");
    let removed = s3.s3api(&[
        "delete-object",
        "--bucket",
        "ver",
        "--key",
        "doc",
        "--version-id",
        &marker,
    ]);
    assert_eq!(removed["DeleteMarker"], true);
    assert_eq!(get_version(s3, "doc", None), b"two");
    // Removing the current version for good makes the next newest current.
    s3.s3api(&[
        "delete-object",
        "--bucket",
        "ver",
        "--key",
        "doc",
        "--version-id",
        &two,
    ]);
    assert_eq!(get_version(s3, "doc", None), b"one");
    s3.s3api_fails(
        "NoSuchVersion",
        &[
            "get-object",
            "--bucket",
            "ver",
            "--key",
            "doc",
            "--version-id",
            &two,
            "/dev/null",
        ],
    );

    // Copies and multipart uploads by version.
    let copied = s3.s3api(&[
        "copy-object",
        "--bucket",
        "ver",
        "--key",
        "copy",
        "--copy-source",
        "ver/doc?versionId=null",
    ]);
    assert_eq!(copied["CopySourceVersionId"], "null");
    assert!(copied["VersionId"].as_str().is_some_and(|v| v != "null"));
    assert_eq!(get_version(s3, "copy", None), b"zero");
    let upload = s3.s3api(&[
        "create-multipart-upload",
        "--bucket",
        "ver",
        "--key",
        "multi",
    ]);
    let upload_id = upload["UploadId"].as_str().expect("upload id");
    let part = s3.file("version-part");
    write(&part, &pattern(7, 300_000));
    let part_etag = s3.s3api(&[
        "upload-part",
        "--bucket",
        "ver",
        "--key",
        "multi",
        "--upload-id",
        upload_id,
        "--part-number",
        "1",
        "--body",
        part.to_str().unwrap(),
    ])["ETag"]
        .as_str()
        .expect("etag")
        .to_owned();
    let parts = format!("{{\"Parts\":[{{\"PartNumber\":1,\"ETag\":{part_etag:?}}}]}}");
    let completed = s3.s3api(&[
        "complete-multipart-upload",
        "--bucket",
        "ver",
        "--key",
        "multi",
        "--upload-id",
        upload_id,
        "--multipart-upload",
        &parts,
    ]);
    assert!(completed["VersionId"].as_str().is_some_and(|v| v != "null"));

    // Old versions' stripes outlive garbage collection.
    let big_one = pattern(11, 200_000);
    let big_two = pattern(12, 200_000);
    let first = put_version(s3, "big", &big_one)["VersionId"]
        .as_str()
        .expect("id")
        .to_owned();
    put_version(s3, "big", &big_two);
    // A pass that does not wait for due times: whatever is garbage goes now.
    tidepool_ok(s3.path(), &["gc", "--include-all"]);
    assert!(get_version(s3, "big", Some(&first)) == big_one);
    assert!(get_version(s3, "big", None) == big_two);

    // Concurrent writers: each PUT one version, every one readable by its id.
    let ids: Vec<(Vec<u8>, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|n| {
                scope.spawn(move || {
                    let data = format!("writer {n}").into_bytes();
                    let file = s3.file(&format!("version-writer-{n}"));
                    write(&file, &data);
                    let put = s3.s3api(&[
                        "put-object",
                        "--bucket",
                        "ver",
                        "--key",
                        "race",
                        "--body",
                        file.to_str().unwrap(),
                    ]);
                    (data, put["VersionId"].as_str().expect("id").to_owned())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });
    let raced = versions_of(s3, "race");
    assert_eq!(raced.len(), 6, "{raced:?}");
    for (data, id) in &ids {
        assert!(raced.iter().any(|v| &v.1 == id));
        assert_eq!(&get_version(s3, "race", Some(id)), data);
    }
    let latest = raced.iter().find(|v| v.2).expect("a latest");
    let (latest_data, _) = ids
        .iter()
        .find(|(_, id)| *id == latest.1)
        .expect("one of ours");
    assert_eq!(&get_version(s3, "race", None), latest_data);

    // Paging by key and version markers gives every version once.
    let mut seen = Vec::new();
    let mut markers: Option<(String, String)> = None;
    loop {
        let mut args = vec![
            "list-object-versions",
            "--bucket",
            "ver",
            "--max-keys",
            "2",
            "--no-paginate",
        ];
        if let Some((key, version)) = &markers {
            args.extend(["--key-marker", key, "--version-id-marker", version]);
        }
        let page = s3.s3api(&args);
        for field in ["Versions", "DeleteMarkers"] {
            for v in page[field].as_array().into_iter().flatten() {
                seen.push(format!(
                    "{}@{}",
                    v["Key"].as_str().unwrap(),
                    v["VersionId"].as_str().unwrap()
                ));
            }
        }
        if page["IsTruncated"] != true {
            break;
        }
        markers = Some((
            page["NextKeyMarker"]
                .as_str()
                .expect("key marker")
                .to_owned(),
            page["NextVersionIdMarker"]
                .as_str()
                .expect("version marker")
                .to_owned(),
        ));
    }
    let all: Vec<String> = versions_of(s3, "")
        .into_iter()
        .map(|(k, v, _, _)| format!("{k}@{v}"))
        .collect();
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    sorted_seen.dedup();
    assert_eq!(
        sorted_seen.len(),
        seen.len(),
        "a version listed twice: {seen:?}"
    );
    let mut sorted_all = all.clone();
    sorted_all.sort();
    assert_eq!(sorted_seen, sorted_all);

    // Suspended: writes replace the one null version; other versions stay.
    s3.s3api(&[
        "put-bucket-versioning",
        "--bucket",
        "ver",
        "--versioning-configuration",
        "Status=Suspended",
    ]);
    assert_eq!(
        s3.s3api(&["get-bucket-versioning", "--bucket", "ver"])["Status"],
        "Suspended"
    );
    put_version(s3, "doc", b"three");
    put_version(s3, "doc", b"four");
    assert_eq!(
        versions_of(s3, "doc"),
        [
            ("doc".into(), "null".into(), true, false),
            ("doc".into(), one.clone(), false, false),
        ]
    );
    assert_eq!(get_version(s3, "doc", Some("null")), b"four");
    assert_eq!(get_version(s3, "doc", Some(&one)), b"one");
    // Tags of one version change that version only, and make no new one.
    let tagged = s3.s3api(&[
        "put-object-tagging",
        "--bucket",
        "ver",
        "--key",
        "doc",
        "--version-id",
        &one,
        "--tagging",
        "TagSet=[{Key=old,Value=yes}]",
    ]);
    assert_eq!(tagged["VersionId"], one.as_str());
    assert_eq!(
        tags_of(s3, "ver", "doc", Some(&one)),
        pairs(&[("old", "yes")])
    );
    assert!(tags_of(s3, "ver", "doc", None).is_empty());
    assert_eq!(versions_of(s3, "doc").len(), 2);

    // A bucket with versions is not empty; deleting every version empties it.
    s3.s3api_fails("BucketNotEmpty", &["delete-bucket", "--bucket", "ver"]);
    let everything = versions_of(s3, "");
    let objects: Vec<Value> = everything
        .iter()
        .map(|(k, v, _, _)| serde_json::json!({"Key": k, "VersionId": v}))
        .collect();
    let request = serde_json::json!({ "Objects": objects }).to_string();
    let result = s3.s3api(&["delete-objects", "--bucket", "ver", "--delete", &request]);
    assert_eq!(
        result["Deleted"].as_array().map(Vec::len),
        Some(everything.len()),
        "{result}"
    );
    assert!(versions_of(s3, "").is_empty());
    s3.s3api(&["delete-bucket", "--bucket", "ver"]);
}

/// Rule: a request with a bad signature, an unknown key, a tampered chunk, a wrong checksum,
/// a body shorter than declared, or no signature at all gets S3's error and changes nothing;
/// so does removing a bucket that holds objects, and reaching another user's bucket; an
/// object with no good copy left is never served as whole.
#[test]
fn refused_requests_change_nothing() {
    let s3 = S3Cluster::start("s3-refused");
    s3.s3api(&["create-bucket", "--bucket", "bkt"]);
    let body = s3.file("body");
    write(&body, &pattern(1, 100_000));
    let body = body.to_str().unwrap();
    s3.s3api(&[
        "put-object",
        "--bucket",
        "bkt",
        "--key",
        "kept",
        "--body",
        body,
    ]);
    let absent =
        |key: &str| s3.s3api_fails("404", &["head-object", "--bucket", "bkt", "--key", key]);

    let put = [
        "s3api",
        "put-object",
        "--bucket",
        "bkt",
        "--key",
        "bad",
        "--body",
        body,
    ];
    let wrong_secret = "x".repeat(40);
    expect_error(
        &s3.aws_as((&s3.access_key, &wrong_secret), &put),
        "SignatureDoesNotMatch",
        &["bad secret"],
    );
    expect_error(
        &s3.aws_as(("TPUNKNOWNKEY00000000", &wrong_secret), &put),
        "InvalidAccessKeyId",
        &["unknown key"],
    );
    let mut anonymous = put.to_vec();
    anonymous.push("--no-sign-request");
    expect_error(&s3.aws(&anonymous), "AccessDenied", &["anonymous"]);
    let mut wrong_sum = put.to_vec();
    wrong_sum.extend(["--checksum-crc32", "AAAAAA=="]);
    expect_error(&s3.aws(&wrong_sum), "BadDigest", &["wrong checksum"]);
    let mut wrong_md5 = put.to_vec();
    wrong_md5.extend(["--content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="]);
    expect_error(&s3.aws(&wrong_md5), "BadDigest", &["wrong MD5"]);
    absent("bad");

    assert_eq!(s3.raw_request("chunks", "signed-chunks")["status"], 200);
    assert_eq!(s3.raw_request("trailer", "unsigned-trailer")["status"], 200);
    let head = s3.s3api(&[
        "head-object",
        "--bucket",
        "bkt",
        "--key",
        "trailer",
        "--checksum-mode",
        "ENABLED",
    ]);
    assert!(
        head["ChecksumCRC32"].is_string(),
        "the trailing checksum is kept: {head}"
    );
    let wrong = s3.raw_request("wrong", "wrong-trailer");
    assert_eq!(wrong["code"], "BadDigest", "{wrong}");
    absent("wrong");
    let tampered = s3.raw_request("tampered", "tampered-chunk");
    assert_eq!(tampered["code"], "SignatureDoesNotMatch", "{tampered}");
    absent("tampered");
    let short = s3.raw_request("short", "short-body");
    assert_ne!(short["status"], 200, "{short}");
    absent("short");
    // 200 valid uploads and XML bodies, each damaged at random: every one gets a clear
    // answer (never an internal error), the gateway serves on, and the object holds one of
    // the valid bodies whole, or nothing.
    let damaged = s3.raw_request("damaged", "damaged-7");
    let statuses = damaged["statuses"].as_object().expect("statuses");
    assert!(
        statuses.keys().all(|status| status.as_str() < "500"),
        "{damaged}"
    );
    match damaged["get_status"].as_u64() {
        Some(404) => {}
        Some(200) => assert_ne!(damaged["stored"], "other", "{damaged}"),
        _ => panic!("the gateway stopped serving: {damaged}"),
    }

    s3.s3api_fails("BucketNotEmpty", &["delete-bucket", "--bucket", "bkt"]);
    s3.s3api(&["head-object", "--bucket", "bkt", "--key", "kept"]);

    let other: Value = serde_json::from_str(&tidepool_ok(
        s3.path(),
        &["user", "create", "mallory", "--format", "json"],
    ))
    .expect("JSON");
    let keys = (
        other["access_key"].as_str().expect("key"),
        other["secret_key"].as_str().expect("secret"),
    );
    let get = [
        "s3api",
        "get-object",
        "--bucket",
        "bkt",
        "--key",
        "kept",
        "/dev/null",
    ];
    expect_error(&s3.aws_as(keys, &get), "AccessDenied", &["another user"]);
    let listing = s3.aws_as(keys, &["s3api", "list-buckets"]);
    assert!(!String::from_utf8_lossy(&listing.stdout).contains("\"bkt\""));
    s3.s3api(&["head-object", "--bucket", "bkt", "--key", "kept"]);

    no_good_copy(&s3);
}

/// A digest of each 4 KiB block of every OSD's block file.
fn block_digests(s3: &S3Cluster) -> Vec<Vec<u64>> {
    use std::hash::{Hash, Hasher};
    (0..3)
        .map(|n| {
            let block = s3.file(&format!("osd-{n}/store/block"));
            let bytes = std::fs::read(block).expect("block file");
            bytes
                .chunks(4096)
                .map(|b| {
                    let mut hasher = std::collections::hash_map::DefaultHasher::new();
                    b.hash(&mut hasher);
                    hasher.finish()
                })
                .collect()
        })
        .collect()
}

/// Bit rot in every 4 KiB block of every OSD's block file written since `before`.
fn rot_written_since(s3: &S3Cluster, before: &[Vec<u64>]) {
    let after = block_digests(s3);
    for (n, (old, new)) in before.iter().zip(&after).enumerate() {
        let block = s3.file(&format!("osd-{n}/store/block"));
        let mut bytes = std::fs::read(&block).expect("block file");
        let mut rotten = 0;
        for (i, digest) in new.iter().enumerate() {
            if old.get(i) != Some(digest) {
                bytes[i * 4096 + 100] ^= 0x20;
                rotten += 1;
            }
        }
        assert!(rotten > 0, "nothing was written to osd-{n}");
        std::fs::write(&block, &bytes).expect("rot");
    }
}

/// A presigned GET of `key` read by plain HTTP: the status, and the body's length when the
/// connection delivered all of it (`None` when it broke off).
fn get_outcome(s3: &S3Cluster, key: &str) -> (u16, Option<usize>, String) {
    let url = s3.aws_ok(&["s3", "presign", &format!("s3://bkt/{key}")]);
    let script = "import sys, http.client, urllib.request, urllib.error\n\
        try:\n    r = urllib.request.urlopen(sys.argv[1]); status = r.status\n\
        except urllib.error.HTTPError as e:\n    print(e.code, -1, e.read().decode()); sys.exit()\n\
        try:\n    print(status, len(r.read()), '')\n\
        except http.client.IncompleteRead as e:\n    print(status, -2, repr(e))\n";
    let output = Command::new(venv_bin("python"))
        .args(["-c", script, url.trim()])
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut words = text.splitn(3, ' ');
    let status = words.next().and_then(|w| w.parse().ok());
    let len: Option<i64> = words.next().and_then(|w| w.parse().ok());
    let (Some(status), Some(len)) = (status, len) else {
        panic!(
            "GET {key}: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let rest = words.next().unwrap_or_default().to_owned();
    (status, usize::try_from(len).ok(), rest)
}

/// Rule: an object with no good copy left is never served as if whole. With every copy of its
/// first stripe bad, a GET gets S3's `InternalError` before any `200 OK`; with every copy of
/// a later stripe bad, the answer begins and the connection ends before the body is whole, so
/// HTTP clients and aws-cli fail rather than keep a short file.
fn no_good_copy(s3: &S3Cluster) {
    let first = pattern(11, 2 * MIB);
    let (part1, part2) = (pattern(12, 5 * MIB), pattern(13, MIB));
    for (name, bytes) in [("first", &first), ("part1", &part1), ("part2", &part2)] {
        write(&s3.file(name), bytes);
    }
    let object = ["--bucket", "bkt", "--key", "late-bad"];
    let upload = s3.s3api(&[&["create-multipart-upload"], &object[..]].concat());
    let id = upload["UploadId"].as_str().expect("upload id").to_owned();
    let in_upload = |args: &[&str]| {
        let head = [&args[..1], &object[..], &["--upload-id", &id]].concat();
        s3.s3api(&[&head[..], &args[1..]].concat())
    };
    let part = |n: &str, file: &str| {
        let body = s3.file(file);
        in_upload(&[
            "upload-part",
            "--part-number",
            n,
            "--body",
            body.to_str().unwrap(),
        ])["ETag"]
            .clone()
    };
    let e1 = part("1", "part1");
    // What is written from here on rots: the second part, and the whole of `first-bad`.
    let before = block_digests(s3);
    let e2 = part("2", "part2");
    let parts = format!(
        "{{\"Parts\":[{{\"PartNumber\":1,\"ETag\":{e1}}},{{\"PartNumber\":2,\"ETag\":{e2}}}]}}"
    );
    in_upload(&["complete-multipart-upload", "--multipart-upload", &parts]);
    s3.s3api(&[
        "put-object",
        "--bucket",
        "bkt",
        "--key",
        "first-bad",
        "--body",
        s3.file("first").to_str().unwrap(),
    ]);
    let whole = [part1.clone(), part2.clone()].concat();
    assert_eq!(get_outcome(s3, "late-bad").1, Some(whole.len()));
    assert_eq!(get_outcome(s3, "first-bad").1, Some(first.len()));
    rot_written_since(s3, &before);

    let (status, len, body) = get_outcome(s3, "first-bad");
    assert_eq!((status, len), (500, None), "{body}");
    assert!(body.contains("<Code>InternalError</Code>"), "{body}");
    let (status, len, broke) = get_outcome(s3, "late-bad");
    assert_eq!(
        (status, len),
        (200, None),
        "a short body taken as whole: {broke}"
    );
    let out = s3.file("late-bad.out");
    let get = |extra: &[&str]| {
        let key = [
            "s3api",
            "get-object",
            "--bucket",
            "bkt",
            "--key",
            "late-bad",
        ];
        s3.aws(&[&key[..], extra, &[out.to_str().unwrap()]].concat())
    };
    assert!(
        !get(&[]).status.success(),
        "aws-cli took a short body as whole"
    );
    // The first part still reads, by range.
    let range = format!("bytes=0-{}", part1.len() - 1);
    assert!(get(&["--range", &range]).status.success());
    assert!(read(&out) == part1, "the first part by range");
}

/// Rule: s3cmd and rclone upload (multipart included), list, download and delete; once
/// everything is deleted, the garbage collector leaves no stripe behind.
#[test]
fn s3cmd_and_rclone() {
    let s3 = S3Cluster::start("s3-tools");
    let host = s3.endpoint.trim_start_matches("http://").to_owned();
    let config = s3.file("s3cfg");
    std::fs::write(
        &config,
        format!(
            "[default]\naccess_key = {}\nsecret_key = {}\nhost_base = {host}\nhost_bucket = {host}\n\
             use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n",
            s3.access_key, s3.secret_key
        ),
    )
    .expect("s3cfg");
    let s3cmd = |args: &[&str]| -> String {
        let output = Command::new(venv_bin("s3cmd"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("s3cmd runs");
        assert!(
            output.status.success(),
            "s3cmd {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let rclone = |args: &[&str]| -> String {
        let output = Command::new("rclone")
            .args(args)
            // A CA bundle for AWS's HTTPS endpoints means nothing to a plain-HTTP gateway, and
            // rclone refuses to start with one.
            .env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", s3.file("rclone.conf"))
            .env("RCLONE_CONFIG_TP_TYPE", "s3")
            .env("RCLONE_CONFIG_TP_PROVIDER", "Other")
            .env("RCLONE_CONFIG_TP_ACCESS_KEY_ID", &s3.access_key)
            .env("RCLONE_CONFIG_TP_SECRET_ACCESS_KEY", &s3.secret_key)
            .env("RCLONE_CONFIG_TP_ENDPOINT", &s3.endpoint)
            .env("RCLONE_CONFIG_TP_FORCE_PATH_STYLE", "true")
            .output()
            .expect("rclone runs (installed by scripts/deps.sh)");
        assert!(
            output.status.success(),
            "rclone {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    // s3cmd: a bucket, a small file and a 20 MiB one (multipart at s3cmd's 15 MiB chunks).
    s3cmd(&["mb", "s3://bkt"]);
    let small = s3.file("small");
    let large = s3.file("large");
    write(&small, b"small file\n");
    write(&large, &pattern(20, 20 * MIB));
    for file in [&small, &large] {
        s3cmd(&["put", file.to_str().unwrap(), "s3://bkt/s3cmd/"]);
    }
    let listing = s3cmd(&["ls", "s3://bkt/s3cmd/"]);
    assert_eq!(listing.lines().count(), 2, "{listing}");
    let back = s3.file("large.back");
    s3cmd(&["get", "s3://bkt/s3cmd/large", back.to_str().unwrap()]);
    assert!(read(&back) == read(&large));
    s3cmd(&["del", "s3://bkt/s3cmd/small", "s3://bkt/s3cmd/large"]);
    assert!(s3cmd(&["ls", "s3://bkt/s3cmd/"]).trim().is_empty());

    // rclone: a tree copied up, listed, copied down, deleted.
    write(&s3.file("rclone.conf"), b"");
    let tree = s3.file("tree");
    for i in 0..30u64 {
        let dir = tree.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&dir).expect("mkdir");
        write(&dir.join(format!("f{i}")), &pattern(i, (i as usize) * 1000));
    }
    write(&tree.join("big"), &pattern(99, 9 * MIB));
    rclone(&["copy", tree.to_str().unwrap(), "tp:bkt/rclone"]);
    let stripes = tidepool_ok(s3.path(), &["object", "ls", "buckets.data"]);
    assert!(
        stripes.lines().count() >= 3,
        "9 MiB takes 3 stripes: {stripes}"
    );
    let listed = rclone(&["lsf", "-R", "--files-only", "tp:bkt/rclone"]);
    assert_eq!(listed.lines().count(), 31, "{listed}");
    let down = s3.file("tree.back");
    rclone(&["copy", "tp:bkt/rclone", down.to_str().unwrap()]);
    rclone(&["check", tree.to_str().unwrap(), down.to_str().unwrap()]);
    assert!(read(&down.join("big")) == read(&tree.join("big")));
    rclone(&["delete", "tp:bkt/rclone"]);
    assert!(rclone(&["lsf", "-R", "tp:bkt/rclone"]).trim().is_empty());

    // Everything written is deleted: the collector (1 s delay here) removes every stripe.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stripes = tidepool_ok(s3.path(), &["object", "ls", "buckets.data"]);
        if stripes.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stripes left: {}",
            stripes.lines().count()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    s3cmd(&["rb", "s3://bkt"]);
}
