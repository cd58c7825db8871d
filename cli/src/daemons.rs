//! `tidepool osd --data DIR` (run an OSD) and `tidepool up` (a whole local cluster as child
//! processes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use tidepool_client::mon::load_monmap;
use tidepool_messenger::{ClusterCa, Identity};
use tidepool_osd::daemon::{self, OsdConfig};
use tidepool_osd::store::RocksStore;
use tidepool_placement::{BucketType, OsdId, PoolKind, Weight};
use tidepool_proto::mon::Command;

use crate::admin::{runtime, runtime_with, ClusterArgs};
use crate::cluster::load_cluster_id;

/// Flags of `tidepool osd --data DIR`.
#[derive(Debug, Args)]
pub struct OsdRunArgs {
    /// The OSD's folder (its store, and its id once it has one).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The host bucket a new OSD goes into.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// A new OSD's weight.
    #[arg(long, default_value = "1")]
    weight: Weight,
    /// Where to listen (port 0: any free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Threads that run the OSD's work (default: one per core). OSDs sharing a machine's
    /// cores do better with a share each: fewer threads to wake and hand work between.
    #[arg(long)]
    workers: Option<usize>,
}

/// `osd.json` in an OSD's folder.
#[derive(Debug, Serialize, Deserialize)]
struct OsdFile {
    version: u32,
    cluster_id: String,
    id: u32,
}

/// Until Ctrl-C or SIGTERM.
pub(crate) async fn signalled() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs an OSD. The first time, it creates itself in the map (with the admin certificate of
/// the cluster folder) and gets its own certificate `osd-<id>` from the cluster CA.
pub fn osd(cluster: ClusterArgs, args: OsdRunArgs) -> Result<()> {
    let Some(data) = args.data else {
        bail!("usage: tidepool osd --data DIR [--host H] [--weight W] (or: tidepool osd dump|create|...)");
    };
    let dir = cluster.dir();
    let cluster_id = load_cluster_id(&dir)?;
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let id_file = data.join("osd.json");
    runtime_with(args.workers)?.block_on(async {
        let id = match std::fs::read(&id_file) {
            Ok(bytes) => {
                let file: OsdFile = serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", id_file.display()))?;
                if file.cluster_id != cluster_id {
                    bail!(
                        "{} belongs to cluster {}, not {cluster_id}",
                        data.display(),
                        file.cluster_id
                    );
                }
                OsdId(file.id)
            }
            Err(_) => {
                let mut admin = cluster.client()?;
                let outcome = admin
                    .command(Command::OsdCreate {
                        host: args.host.clone(),
                        weight: args.weight,
                    })
                    .await?
                    .map_err(|e| anyhow::anyhow!("creating the OSD: {e}"))?;
                let id = outcome.created.context("OsdCreate names the new OSD")?;
                let file = OsdFile {
                    version: 1,
                    cluster_id: cluster_id.clone(),
                    id,
                };
                std::fs::write(&id_file, serde_json::to_vec_pretty(&file)?)?;
                OsdId(id)
            }
        };
        let entity = daemon::entity(id);
        let certs = dir.join("certs");
        if !certs.join(format!("{entity}.pem")).exists() {
            ClusterCa::load(&dir, &cluster_id)?.issue_into(&entity, &certs)?;
        }
        let identity = Identity::load(&dir, &cluster_id, &entity)?;
        let store = RocksStore::open(&daemon::store_dir(&data))?;
        let config = OsdConfig {
            id,
            identity,
            monmap: load_monmap(&dir)?,
            bind: args.bind,
        };
        daemon::run(config, Arc::new(store), signalled()).await?;
        Ok(())
    })
}

/// Flags of `tidepool up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The cluster folder (created on the first run, resumed after).
    #[arg(long, default_value = "tidepool-data")]
    dir: PathBuf,
    /// Monitors (first run only).
    #[arg(long, default_value_t = 3)]
    mons: u8,
    /// OSDs.
    #[arg(long, default_value_t = 4)]
    osds: u32,
    /// The S3 gateway's port on 127.0.0.1.
    #[arg(long, default_value_t = 7480)]
    s3_port: u16,
}

/// Worker threads for each of `osds` OSDs on this machine: its cores shared out, at least one.
fn osd_workers(osds: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / osds.max(1)).max(1)
}

/// Child processes, stopped (SIGTERM, then SIGKILL) when dropped.
struct Children(Vec<(String, Child)>);

impl Children {
    fn start(&mut self, name: String, args: &[&str], log: &Path) -> Result<()> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Process::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.0.push((name, child));
        Ok(())
    }

    fn dead(&mut self) -> Vec<String> {
        self.0
            .iter_mut()
            .filter_map(|(name, child)| child.try_wait().ok().flatten().map(|_| name.clone()))
            .collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &self.0 {
            let _ = Process::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, child) in &mut self.0 {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `tidepool up`: starts (and on the first run creates) a local cluster, waits until its PGs
/// are active, prints how to use it, and stops everything on Ctrl-C.
pub fn up(args: UpArgs) -> Result<()> {
    let dir = args.dir.clone();
    let first_run = !dir.join("cluster.json").exists();
    if first_run {
        std::fs::create_dir_all(&dir)?;
        crate::cluster::create(&dir, args.mons, &[])?;
    }
    let dir_text = dir
        .to_str()
        .context("the folder name must be UTF-8")?
        .to_owned();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let monmap = load_monmap(&dir)?;
    let mut children = Children(Vec::new());
    for rank in 0..monmap.addrs.len() {
        children.start(
            format!("mon.{rank}"),
            &["mon", "--id", &rank.to_string(), "--data", &dir_text],
            &logs.join(format!("mon-{rank}.log")),
        )?;
    }
    let cluster = ClusterArgs::for_dir(dir.clone());
    let rt = runtime()?;
    rt.block_on(async {
        let mut admin = cluster.client()?;
        if first_run {
            let pool = Command::PoolCreate {
                name: "data".into(),
                kind: PoolKind::Replicated {
                    size: 3,
                    min_size: 2,
                },
                pg_num: 32,
                failure_domain: BucketType::Osd,
            };
            admin
                .command(pool)
                .await?
                .map_err(|e| anyhow::anyhow!("creating pool data: {e}"))?;
            let size = args.osds.clamp(1, 3) as u8;
            crate::gateway::ensure_pools(
                &mut admin,
                &tidepool_buckets::BucketsConfig::default(),
                size,
                BucketType::Osd,
            )
            .await?;
        }
        anyhow::Ok(())
    })?;
    let osds = osd_numbers(&dir, args.osds);
    let workers = osd_workers(osds.len()).to_string();
    for &n in &osds {
        let osd_dir = dir.join(format!("osd-{n}"));
        let osd_dir = osd_dir.to_str().context("UTF-8 folder")?.to_owned();
        children.start(
            format!("osd.{n}"),
            &[
                "osd",
                "--data",
                &osd_dir,
                "--cluster",
                &dir_text,
                "--workers",
                &workers,
            ],
            &logs.join(format!("osd-{n}.log")),
        )?;
        if first_run {
            // One at a time the first time, so that osd-N gets id N.
            let id_file = dir.join(format!("osd-{n}")).join("osd.json");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !id_file.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let started = Instant::now();
    let (active, total) = rt.block_on(wait_active(&cluster, Duration::from_secs(90)))?;
    let s3_addr = SocketAddr::from(([127, 0, 0, 1], args.s3_port));
    children.start(
        "gateway".into(),
        &[
            "gateway",
            "--cluster",
            &dir_text,
            "--bind",
            &s3_addr.to_string(),
        ],
        &logs.join("gateway.log"),
    )?;
    let user = rt.block_on(local_user(&cluster))?;
    wait_listening(s3_addr, Duration::from_secs(30));
    let shown = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    let dead = children.dead();
    if !dead.is_empty() {
        bail!("{} stopped; see {}", dead.join(", "), logs.display());
    }
    println!();
    println!(
        "Tidepool is up in {} ({:.1} s):",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!("  monitors: {} at {:?}", monmap.addrs.len(), monmap.addrs);
    println!("  OSDs:     {}", osds.len());
    println!("  PGs:      {active} of {total} active");
    println!("  pool:     data (3 copies, writes need 2)");
    println!("  S3:       http://{s3_addr}");
    println!("            access key {}", user.access_key);
    println!("            secret key {}", user.secret_key);
    println!("  logs:     {}", logs.display());
    println!();
    println!("Try:");
    println!("  export AWS_ACCESS_KEY_ID={}", user.access_key);
    println!("  export AWS_SECRET_ACCESS_KEY={}", user.secret_key);
    println!("  aws --endpoint-url http://{s3_addr} s3 mb s3://demo");
    println!("  aws --endpoint-url http://{s3_addr} s3 cp ./README.md s3://demo/");
    println!("  aws --endpoint-url http://{s3_addr} s3 ls s3://demo");
    println!();
    println!("  export TIDEPOOL_CLUSTER={}", shown.display());
    println!("  tidepool status");
    println!("  tidepool object put data hello ./README.md");
    println!("  tidepool bench data write --seconds 10");
    println!();
    println!(
        "Ctrl-C stops the cluster; `tidepool up --dir {}` starts it again.",
        dir.display()
    );
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = signalled() => break,
                _ = tick.tick() => {
                    let dead = children.dead();
                    if !dead.is_empty() {
                        eprintln!("{} stopped; see {}", dead.join(", "), logs.display());
                    }
                }
            }
        }
    });
    println!("stopping…");
    stop_added_osds(&dir, &children);
    drop(children);
    println!("stopped");
    Ok(())
}

/// The OSD folders `osd-<n>` to start: the first `count`, and those `tidepool osd add` made
/// in the folder since (they hold an `osd.json`).
fn osd_numbers(dir: &Path, count: u32) -> Vec<u32> {
    let mut numbers: Vec<u32> = (0..count).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let added = name
                .to_str()
                .and_then(|n| n.strip_prefix("osd-"))
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n >= count && entry.path().join("osd.json").exists());
            numbers.extend(added);
        }
    }
    numbers.sort_unstable();
    numbers
}

/// Stops the OSDs `tidepool osd add` started in the folder while this `up` ran (they are not
/// its children): SIGTERM to the pid in `osd-<n>/osd.pid`, if that process is still an OSD of
/// that folder.
fn stop_added_osds(dir: &Path, children: &Children) {
    let ours: Vec<u32> = children.0.iter().map(|(_, c)| c.id()).collect();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let pid_file = entry.path().join("osd.pid");
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let folder = entry.file_name();
        let is_that_osd = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|arg| Path::new(arg).file_name() == Some(folder.as_os_str()));
        if !ours.contains(&pid) && is_that_osd {
            let _ = Process::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_file(&pid_file);
    }
}

/// The S3 user of a local cluster, `local`, created on the first run.
async fn local_user(cluster: &ClusterArgs) -> Result<tidepool_proto::mon::User> {
    let mut admin = cluster.client()?;
    if let Some(user) = admin.users().await?.into_iter().find(|u| u.name == "local") {
        return Ok(user);
    }
    let user = crate::admin::new_user("local".into())?;
    admin
        .command(Command::UserCreate(user.clone()))
        .await?
        .map_err(|e| anyhow::anyhow!("creating the S3 user: {e}"))?;
    Ok(user)
}

/// Waits until something accepts TCP connections at `addr` (or `limit` passes).
fn wait_listening(addr: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every PG reports active (or `limit` passes); returns (active, total).
async fn wait_active(cluster: &ClusterArgs, limit: Duration) -> Result<(usize, usize)> {
    let mut admin = cluster.client()?;
    let deadline = Instant::now() + limit;
    loop {
        let map = admin.map().await?;
        let total: usize = map.pools.values().map(|p| p.pg_num as usize).sum();
        let report = admin.report().await?;
        let active = report
            .pgs
            .iter()
            .filter(|pg| pg.epoch == map.epoch && pg.state.starts_with("active"))
            .count();
        if active >= total || Instant::now() > deadline {
            return Ok((active, total));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
