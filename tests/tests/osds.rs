//! Real monitor and OSD processes on loopback, a replicated pool of size 3 / min_size 2 over 4
//! OSDs: 1,000 objects of 0–8 MiB read back bit-exact; `kill -9` of an OSD under a concurrent
//! write/read workload with no errors and no wrong bytes; the OSD restarted catches up; bad
//! requests get errors and crash nothing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tidepool_client::{MonClient, ObjectClient, ObjectError};
use tidepool_messenger::{Identity, Messenger, MessengerConfig};
use tidepool_placement::{PgId, PoolId};
use tidepool_proto::osd::{ObjectOp, OpError, OpOutput, OsdRequest, OsdResponse};
use tidepool_tests::{cluster_id, run, tidepool_ok, Daemon, TempDir};

const MIB: u64 = 1 << 20;

/// The bytes of object `i`: a size from 0 to `max` and content, both from `i` alone.
fn object_bytes(i: u64, max: u64) -> Vec<u8> {
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

fn admin_identity(dir: &Path) -> Identity {
    Identity::load(dir, &cluster_id(dir), "client-admin").expect("admin identity")
}

async fn object_client(dir: &Path) -> ObjectClient {
    let identity = admin_identity(dir);
    let mon = MonClient::new(dir, &identity).expect("mon client");
    let messenger = Messenger::bind(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        &identity,
        MessengerConfig {
            body_bytes_max: 64 << 20,
            ..MessengerConfig::default()
        },
    )
    .expect("messenger");
    ObjectClient::new(messenger, mon)
        .await
        .expect("object client")
}

/// Object `name` of pool `data`, whole.
async fn read_whole(client: &ObjectClient, name: &str) -> Result<Vec<u8>, ObjectError> {
    let (_, outputs) = client
        .execute(
            "data",
            name,
            vec![ObjectOp::Read {
                offset: 0,
                len: u64::MAX,
            }],
        )
        .await?;
    match outputs.into_iter().next() {
        Some(OpOutput::Data(data)) => Ok(data.into_vec()),
        other => panic!("a read of {name} answered {other:?}"),
    }
}

struct Cluster {
    dir: TempDir,
    _mons: Vec<Daemon>,
    osds: Vec<Option<Daemon>>,
}

impl Cluster {
    fn start_osd(&self, n: usize) -> Daemon {
        let path = self.dir.path();
        let data = path.join(format!("osd-{n}"));
        Daemon::start(
            &[
                "osd",
                "--data",
                data.to_str().expect("utf-8"),
                "--cluster",
                path.to_str().expect("utf-8"),
            ],
            &path.join(format!("osd-{n}.log")),
        )
    }

    fn start() -> Cluster {
        let dir = TempDir::new("osds");
        let owned = dir.path().to_path_buf();
        let path = owned.as_path();
        let text = path.to_str().expect("utf-8").to_owned();
        let init = run(&["cluster", "init", &text, "--mons", "3"]);
        assert!(init.status.success());
        let mons = (0..3)
            .map(|rank| {
                Daemon::start(
                    &["mon", "--id", &rank.to_string(), "--data", &text],
                    &path.join(format!("mon-{rank}.log")),
                )
            })
            .collect();
        tidepool_ok(path, &["config", "set", "osd_heartbeat_grace", "3"]);
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
                "32",
                "--failure-domain",
                "osd",
            ],
        );
        let mut cluster = Cluster {
            dir,
            _mons: mons,
            osds: Vec::new(),
        };
        for n in 0..4 {
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
        cluster.wait_osds_up(4);
        cluster
    }

    fn osd_states(&self) -> Vec<(bool, bool)> {
        let dump: Value = serde_json::from_str(&tidepool_ok(
            self.dir.path(),
            &["osd", "dump", "--format", "json"],
        ))
        .expect("JSON");
        dump["osds"]
            .as_object()
            .map(|osds| {
                osds.values()
                    .map(|o| (o["up"] == true, o["is_in"] == true))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wait_osds_up(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.osd_states().iter().filter(|(up, _)| *up).count() != count {
            assert!(
                Instant::now() < deadline,
                "OSDs not up: {:?}",
                self.osd_states()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Rule: a replicated pool keeps every byte through an OSD's `kill -9` and restart, with no
/// error seen by a concurrent workload.
#[test]
fn replicated_pool_survives_an_osd_kill() {
    let mut cluster = Cluster::start();
    let path = cluster.dir.path().to_path_buf();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let client = Arc::new(runtime.block_on(object_client(&path)));

    // 1,000 objects of 0 to 8 MiB, written by 8 concurrent writers, read back bit-exact.
    let started = Instant::now();
    runtime.block_on(async {
        let next = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (client, next) = (client.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= 1000 {
                            break;
                        }
                        let data = object_bytes(i, 8 * MIB);
                        client
                            .execute("data", &format!("obj-{i}"), vec![ObjectOp::WriteFull(data)])
                            .await
                            .expect("write");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer");
        }
        let next = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let (client, next) = (client.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= 1000 {
                            break;
                        }
                        let data = read_whole(&client, &format!("obj-{i}"))
                            .await
                            .expect("read");
                        assert!(
                            data.as_slice() == object_bytes(i, 8 * MIB),
                            "obj-{i} differs"
                        );
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.await.expect("reader");
        }
    });
    eprintln!(
        "1,000 objects written and read back in {:?}",
        started.elapsed()
    );

    // A write/read workload while osd.1 is killed; every acknowledged write must read back.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let workload: Vec<_> = (0..4)
        .map(|w| {
            let (client, stop, acked, errors) =
                (client.clone(), stop.clone(), acked.clone(), errors.clone());
            runtime.spawn(async move {
                let mut i = 100_000 * (w + 1);
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if w % 2 == 0 {
                        let data = object_bytes(i, MIB);
                        match client
                            .execute("data", &format!("w-{i}"), vec![ObjectOp::WriteFull(data)])
                            .await
                        {
                            Ok(_) => acked.lock().expect("acked").push(i),
                            Err(error) => errors.lock().expect("errors").push(format!("write w-{i}: {error}")),
                        }
                    } else {
                        let j = i % 1000;
                        match client
                            .execute("data", &format!("obj-{j}"), vec![ObjectOp::Read { offset: 0, len: u64::MAX }])
                            .await
                        {
                            Ok((_, outputs)) => {
                                let ok = matches!(&outputs[0], OpOutput::Data(d) if d.as_slice() == object_bytes(j, 8 * MIB));
                                if !ok {
                                    errors.lock().expect("errors").push(format!("obj-{j} read wrong bytes"));
                                }
                            }
                            Err(error) => errors.lock().expect("errors").push(format!("read obj-{j}: {error}")),
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    cluster.osds[1].take().expect("osd.1").kill();
    let killed_at = Instant::now();
    // The monitors mark it down (peers report it within the 3 s grace).
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.osd_states().get(1).is_some_and(|(up, _)| *up) {
        assert!(Instant::now() < deadline, "osd.1 never marked down");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("osd.1 marked down {:?} after the kill", killed_at.elapsed());
    std::thread::sleep(Duration::from_secs(5));
    // It restarts, and the workload goes on while it catches up.
    cluster.osds[1] = Some(cluster.start_osd(1));
    cluster.wait_osds_up(4);
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    for task in workload {
        runtime.block_on(task).expect("workload task");
    }
    let errors = errors.lock().expect("errors").clone();
    assert!(errors.is_empty(), "the workload saw errors: {errors:?}");
    let acked = acked.lock().expect("acked").clone();
    assert!(
        acked.len() > 10,
        "the workload made progress: {} writes",
        acked.len()
    );

    runtime.block_on(async {
        // Every acknowledged write reads back.
        for &i in &acked {
            let data = read_whole(&client, &format!("w-{i}"))
                .await
                .expect("read back");
            assert!(data.as_slice() == object_bytes(i, MIB), "w-{i} differs");
        }
        // The restarted OSD caught up: for every PG it holds, its copy has the primary's
        // newest version.
        let map = client.map().await;
        let identity = admin_identity(&path);
        let messenger = Messenger::bind(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            &identity,
            MessengerConfig::default(),
        )
        .expect("messenger");
        let placement = tidepool_placement::Placement::new(&map);
        let pool = map.pool_by_name("data").expect("pool").id;
        let query = |osd: u32, pg: PgId| {
            let messenger = messenger.clone();
            let addr = map.osds[&tidepool_placement::OsdId(osd)]
                .addr
                .clone()
                .expect("addr")
                .parse()
                .expect("socket address");
            async move {
                match messenger
                    .call::<_, OsdResponse>(
                        addr,
                        &format!("osd-{osd}"),
                        &OsdRequest::PgQuery { pg },
                    )
                    .await
                {
                    Ok(OsdResponse::PgInfo(Some((info, _)))) => info.last_update,
                    other => panic!("osd.{osd} {pg}: {other:?}"),
                }
            }
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut behind = Vec::new();
            for seed in 0..32 {
                let pg = PgId { pool, seed };
                let mapping = placement
                    .map_pg(pg, &mut tidepool_placement::Scratch::default())
                    .expect("mapping");
                let acting: Vec<u32> = mapping.acting.iter().flatten().map(|o| o.0).collect();
                if !acting.contains(&1) {
                    continue;
                }
                let primary = mapping.primary.expect("primary").0;
                let (theirs, ours) = (query(1, pg).await, query(primary, pg).await);
                if theirs != ours {
                    behind.push((pg, theirs, ours));
                }
            }
            if behind.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "osd.1 did not catch up: {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // Bad requests get errors; nothing crashes.
        assert!(matches!(
            client
                .execute("no-such-pool", "x", vec![ObjectOp::Stat])
                .await,
            Err(ObjectError::NoPool(_))
        ));
        assert!(matches!(
            client
                .execute("data", "never-written", vec![ObjectOp::Stat])
                .await,
            Err(ObjectError::Op(OpError::NotFound))
        ));
        assert!(matches!(
            client.execute("data", "\0meta", vec![ObjectOp::Stat]).await,
            Err(ObjectError::Op(OpError::Invalid(_)))
        ));
        let addr: std::net::SocketAddr = map.osds[&tidepool_placement::OsdId(0)]
            .addr
            .clone()
            .expect("addr")
            .parse()
            .expect("address");
        let missing_pool = OsdRequest::Object(tidepool_proto::osd::ObjectRequest {
            epoch: map.epoch,
            pg: PgId {
                pool: PoolId(99),
                seed: 0,
            },
            name: "x".into(),
            ops: vec![ObjectOp::Stat],
            client: "test".into(),
            sequence: 1,
        });
        let answer: OsdResponse = messenger
            .call(addr, "osd-0", &missing_pool)
            .await
            .expect("answer");
        assert!(
            matches!(answer, OsdResponse::Object(Err(OpError::NoPool))),
            "{answer:?}"
        );
        let garbage = OsdRequest::Replicate {
            epoch: map.epoch,
            pg: PgId { pool, seed: 0 },
            entry: tidepool_proto::osd::LogEntry {
                version: 1,
                epoch: map.epoch,
                name: "x".into(),
                delete: false,
                reqid: None,
            },
            transaction: vec![0xc1, 0xff, 0x00],
        };
        let answer: OsdResponse = messenger
            .call(addr, "osd-0", &garbage)
            .await
            .expect("answer");
        assert!(matches!(answer, OsdResponse::Failed(_)), "{answer:?}");
    });
    cluster.wait_osds_up(4);
}
