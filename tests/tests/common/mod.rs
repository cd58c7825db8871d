//! What the tests over real monitor and OSD processes share: a cluster started in a temporary
//! folder (every process killed by PID when it is dropped), object clients, deterministic
//! object contents, and a write/read workload that records what it saw.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tidepool_client::{MonClient, ObjectClient, ObjectError};
use tidepool_messenger::{Identity, Messenger, MessengerConfig};
use tidepool_proto::osd::{ObjectOp, OpOutput};
use tidepool_tests::{cluster_id, run, tidepool_ok, Daemon, TempDir, OSD_SIZE};

pub const MIB: u64 = 1 << 20;

/// The bytes of object `i`: a size from 0 to `max` and content, both from `i` alone.
pub fn object_bytes(i: u64, max: u64) -> Vec<u8> {
    let mut state = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let size = (next() % (max + 1)) as usize;
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        data.extend_from_slice(&next().to_le_bytes());
    }
    data.truncate(size);
    data
}

pub fn admin_identity(dir: &Path) -> Identity {
    Identity::load(dir, &cluster_id(dir), "client-admin").expect("admin identity")
}

/// A messenger on a free loopback port with the admin certificate.
pub fn admin_messenger(dir: &Path) -> Messenger {
    Messenger::bind(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        &admin_identity(dir),
        MessengerConfig {
            body_bytes_max: 64 << 20,
            ..MessengerConfig::default()
        },
    )
    .expect("messenger")
}

pub async fn object_client(dir: &Path) -> ObjectClient {
    let mon = MonClient::new(dir, &admin_identity(dir)).expect("mon client");
    ObjectClient::new(admin_messenger(dir), mon)
        .await
        .expect("object client")
}

/// Object `name` of pool `data`, whole.
pub async fn read_whole(client: &ObjectClient, name: &str) -> Result<Vec<u8>, ObjectError> {
    read_object(client, "data", name).await
}

/// Object `name` of `pool`, whole.
pub async fn read_object(
    client: &ObjectClient,
    pool: &str,
    name: &str,
) -> Result<Vec<u8>, ObjectError> {
    let read = ObjectOp::Read {
        offset: 0,
        len: u64::MAX,
    };
    let (_, outputs) = client.execute(pool, name, vec![read]).await?;
    match outputs.into_iter().next() {
        Some(OpOutput::Data(data)) => Ok(data.into_vec()),
        other => panic!("a read of {pool}/{name} answered {other:?}"),
    }
}

/// The codes of the failing health checks in a `status --format json`.
pub fn health_checks(status: &serde_json::Value) -> Vec<String> {
    status["health"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["code"].as_str().map(str::to_owned))
        .collect()
}

/// An inconsistency of a scrub report in JSON as (object, holder, problem kind).
pub fn kind_of(inconsistency: &Value) -> (String, u64, String) {
    let kind = match &inconsistency["problem"] {
        Value::String(kind) => kind.clone(),
        Value::Object(map) => map.keys().next().expect("a kind").clone(),
        other => panic!("a problem {other}"),
    };
    (
        inconsistency["object"].as_str().expect("object").to_owned(),
        inconsistency["holder"].as_u64().expect("holder"),
        kind,
    )
}

/// Bit rot under an OSD: one byte flipped in every block of the block file `block`.
pub fn rot(block: &Path) {
    let mut bytes = std::fs::read(block).expect("block file");
    for at in (100..bytes.len()).step_by(4096) {
        bytes[at] ^= 0x20;
    }
    std::fs::write(block, &bytes).expect("rot");
}

/// A tokio runtime for a test's clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Waits (up to 60 s) until the monitors of `path` have a leader; shows their logs if not.
fn wait_quorum(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let cluster = path.to_str().expect("utf-8");
    loop {
        let output = run(&["status", "--format", "json", "--cluster", cluster]);
        let status: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if status["monitors"]["leader"].is_u64() {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = (0..3)
                .map(|rank| {
                    let log = std::fs::read_to_string(path.join(format!("mon-{rank}.log")))
                        .unwrap_or_default();
                    format!("mon-{rank}.log:\n{log}")
                })
                .collect();
            panic!("no monitor quorum within 60 s\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Monitors and OSDs in a temporary folder, with a pool `data` of size 3 / min_size 2 whose
/// failure domain is the OSD.
pub struct Cluster {
    pub dir: TempDir,
    _mons: Vec<Daemon>,
    pub osds: Vec<Option<Daemon>>,
}

impl Cluster {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or restarts) the OSD of folder `osd-<n>`.
    pub fn start_osd(&self, n: usize) -> Daemon {
        let path = self.dir.path();
        let data = path.join(format!("osd-{n}"));
        Daemon::start(
            &[
                "osd",
                "--data",
                data.to_str().expect("utf-8"),
                "--cluster",
                path.to_str().expect("utf-8"),
                "--size",
                OSD_SIZE,
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            &path.join(format!("osd-{n}.log")),
        )
    }

    /// Three monitors, the options `options`, a pool `data` of `pg_num` PGs, and `osds` OSDs
    /// (osd-N gets id N).
    pub fn start(name: &str, osds: usize, pg_num: u32, options: &[(&str, &str)]) -> Cluster {
        let dir = TempDir::new(name);
        let owned = dir.path().to_path_buf();
        let path = owned.as_path();
        let text = path.to_str().expect("utf-8").to_owned();
        let init = run(&["cluster", "init", &text, "--mons", "3"]);
        assert!(init.status.success());
        let mons = (0..3)
            .map(|rank| {
                Daemon::start(
                    &[
                        "mon",
                        "--id",
                        &rank.to_string(),
                        "--data",
                        &text,
                        "--metrics-addr",
                        "127.0.0.1:0",
                    ],
                    &path.join(format!("mon-{rank}.log")),
                )
            })
            .collect();
        wait_quorum(path);
        tidepool_ok(path, &["config", "set", "osd_heartbeat_grace", "3"]);
        for (key, value) in options {
            tidepool_ok(path, &["config", "set", key, value]);
        }
        let pg_num = pg_num.to_string();
        tidepool_ok(
            path,
            &[
                "pool",
                "create",
                "data",
                "--size",
                "3",
                "--min-size",
                "2",
                "--pg-num",
                &pg_num,
                "--failure-domain",
                "osd",
            ],
        );
        let mut cluster = Cluster {
            dir,
            _mons: mons,
            osds: Vec::new(),
        };
        for n in 0..osds {
            let osd = cluster.start_osd(n);
            cluster.osds.push(Some(osd));
            // One at a time, so that osd-N gets id N.
            let id_file = path.join(format!("osd-{n}")).join("osd.json");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !id_file.exists() {
                assert!(Instant::now() < deadline, "osd-{n} never created itself");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster.wait_osds_up(osds);
        cluster
    }

    /// `tidepool ARGS --format json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        serde_json::from_str(&tidepool_ok(self.path(), &full)).expect("JSON")
    }

    /// Per OSD id: (up, in).
    pub fn osd_states(&self) -> std::collections::BTreeMap<u64, (bool, bool)> {
        let dump = self.json(&["osd", "dump"]);
        dump["osds"]
            .as_object()
            .map(|osds| {
                osds.values()
                    .map(|o| {
                        (
                            o["id"].as_u64().expect("id"),
                            (o["up"] == true, o["is_in"] == true),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn wait_osds_up(&self, count: usize) {
        self.wait_for(Duration::from_secs(60), "OSDs up", || {
            self.osd_states().values().filter(|(up, _)| *up).count() == count
        });
    }

    /// Waits until `done` holds, checking every 200 ms; panics after `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `tidepool pg KIND POOL --format json` (`scrub`, `deep-scrub`, `repair`): the objects
    /// compared, and every inconsistency found as (object, holder, problem kind). Fails on an
    /// object with no provably good copy.
    pub fn scrub(&self, kind: &str, pool: &str) -> (u64, BTreeSet<(String, u64, String)>) {
        let reports: Value = self.json(&["pg", kind, pool]);
        let mut objects = 0;
        let mut found = BTreeSet::new();
        for report in reports.as_array().expect("reports") {
            objects += report["objects"].as_u64().expect("objects");
            for inconsistency in report["inconsistencies"].as_array().expect("list") {
                found.insert(kind_of(inconsistency));
            }
            assert_eq!(report["unrepairable"], Value::Array(Vec::new()), "{report}");
        }
        (objects, found)
    }

    /// Waits until every PG is active+clean and nothing is degraded or misplaced; returns
    /// how long that took.
    pub fn wait_clean(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        let deadline = started + limit;
        loop {
            let status = self.json(&["status"]);
            let total = status["pgs"]["total"].as_u64().expect("pgs.total");
            // Active and clean, whether or not a scrub runs.
            let clean = status["pgs"]["active_clean"].as_u64().unwrap_or(0);
            if total > 0
                && clean == total
                && status["recovery"]["degraded_ratio"] == 0.0
                && status["recovery"]["misplaced_ratio"] == 0.0
            {
                return started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "not clean within {limit:?}: {:#}",
                status["pgs"]
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Writers and readers over pool `data` until stopped: writers write `<prefix>-<i>` objects of
/// up to `max` bytes, readers check objects `obj-<j>` (j below `existing`) against
/// [`object_bytes`].
pub struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub max: u64,
}

impl Workload {
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        client: Arc<ObjectClient>,
        existing: (u64, u64),
        max: u64,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
        let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let (count, existing_max) = existing;
        let tasks = (0..4u64)
            .map(|w| {
                let (client, stop, acked, errors) =
                    (client.clone(), stop.clone(), acked.clone(), errors.clone());
                runtime.spawn(async move {
                    let mut i = 100_000 * (w + 1);
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        if w % 2 == 0 {
                            let data = object_bytes(i, max);
                            let name = format!("w-{i}");
                            match client
                                .execute("data", &name, vec![ObjectOp::WriteFull(data.into())])
                                .await
                            {
                                Ok(_) => acked.lock().expect("acked").push(i),
                                Err(error) => errors
                                    .lock()
                                    .expect("errors")
                                    .push(format!("write {name}: {error}")),
                            }
                        } else {
                            let j = i % count;
                            match read_whole(&client, &format!("obj-{j}")).await {
                                Ok(data) if data == object_bytes(j, existing_max) => {}
                                Ok(_) => errors
                                    .lock()
                                    .expect("errors")
                                    .push(format!("obj-{j} read wrong bytes")),
                                Err(error) => errors
                                    .lock()
                                    .expect("errors")
                                    .push(format!("read obj-{j}: {error}")),
                            }
                        }
                    }
                })
            })
            .collect();
        Workload {
            stop,
            acked,
            errors,
            tasks,
            max,
        }
    }

    /// Waits (up to 60 s) until it has acknowledged `writes` writes.
    pub fn wait_acked(&self, writes: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked.lock().expect("acked").len() < writes {
            assert!(Instant::now() < deadline, "the workload made no progress");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it; the writes it had acknowledged, and the errors it saw.
    pub fn stop(self, runtime: &tokio::runtime::Runtime) -> (Vec<u64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            runtime.block_on(task).expect("workload task");
        }
        let acked = self.acked.lock().expect("acked").clone();
        let errors = self.errors.lock().expect("errors").clone();
        (acked, errors)
    }
}

/// Runs `each(client, i)` for every `i` below `count`, 8 at a time.
fn for_each_object<F, Fut>(
    runtime: &tokio::runtime::Runtime,
    client: &Arc<ObjectClient>,
    count: u64,
    each: F,
) where
    F: Fn(Arc<ObjectClient>, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    runtime.block_on(async {
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (client, next, each) = (client.clone(), next.clone(), each.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        each(client.clone(), i).await;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("worker");
        }
    });
}

/// Writes `obj-0` … `obj-<count - 1>` of up to `max` bytes, 8 at a time.
pub fn write_objects(
    runtime: &tokio::runtime::Runtime,
    client: &Arc<ObjectClient>,
    count: u64,
    max: u64,
) {
    for_each_object(runtime, client, count, move |client, i| async move {
        client
            .execute(
                "data",
                &format!("obj-{i}"),
                vec![ObjectOp::WriteFull(object_bytes(i, max).into())],
            )
            .await
            .expect("write");
    });
}

/// Reads `obj-0` … `obj-<count - 1>` back, 8 at a time, and checks every byte.
pub fn check_objects(
    runtime: &tokio::runtime::Runtime,
    client: &Arc<ObjectClient>,
    count: u64,
    max: u64,
) {
    for_each_object(runtime, client, count, move |client, i| async move {
        let data = read_whole(&client, &format!("obj-{i}"))
            .await
            .expect("read");
        assert!(data == object_bytes(i, max), "obj-{i} differs");
    });
}

/// Checks that every acknowledged workload write reads back.
pub fn check_acked(
    runtime: &tokio::runtime::Runtime,
    client: &ObjectClient,
    acked: &[u64],
    max: u64,
) {
    runtime.block_on(async {
        for &i in acked {
            let data = read_whole(client, &format!("w-{i}"))
                .await
                .expect("read back");
            assert!(data == object_bytes(i, max), "w-{i} differs");
        }
    });
}
