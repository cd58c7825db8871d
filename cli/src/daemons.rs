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
    /// Where to listen (port 0: any free one): this host's address, which the OSD gives the
    /// monitors and its peers connect to.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// The id of an OSD made beforehand (`tidepool cluster host --osds`), for a new folder:
    /// the OSD then needs only its own certificate, not the admin's or the CA's key.
    #[arg(long)]
    id: Option<u32>,
    /// Threads that run the OSD's work (default: one per core). OSDs sharing a machine's
    /// cores do better with a share each: fewer threads to wake and hand work between.
    #[arg(long)]
    workers: Option<usize>,
    /// The OSD's size (`64GiB`, `500M`, bytes), kept in its folder; without one ever given,
    /// the size of the disk it is on.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
}

/// `osd.json` in an OSD's folder.
#[derive(Debug, Serialize, Deserialize)]
struct OsdFile {
    version: u32,
    cluster_id: String,
    id: u32,
    /// Its size in bytes, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

/// A size in bytes: a number with an optional binary unit (`K`, `M`, `G`, `T`, also written
/// `KiB`, `MB`, …, all powers of 1024, as Ceph reads them).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (such as 64GiB, 500M or 1048576)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (K, M, G or T)")),
    };
    number
        .checked_mul(1 << shift)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{text:?} is not a size this OSD can have"))
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

/// Until Ctrl-C or SIGTERM, for a daemon. From the call on, SIGHUP (a closed terminal, or a
/// paused daemon whose process group lost its leader) is logged and ignored, as daemons do:
/// it must not stop an OSD that holds data.
pub(crate) fn daemon_stopped() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP ignored: a daemon stops on SIGTERM or Ctrl-C");
                }
            });
        }
        Err(error) => tracing::warn!(%error, "SIGHUP cannot be ignored; it stops this daemon"),
    }
    signalled()
}

/// Runs an OSD. The first time, it creates itself in the map (with the admin certificate of
/// the cluster folder) and gets its own certificate `osd-<id>` from the cluster CA.
pub fn osd(cluster: ClusterArgs, args: OsdRunArgs) -> Result<()> {
    let Some(data) = args.data else {
        bail!("usage: tidepool osd --data DIR [--host H] [--weight W] (or: tidepool osd dump|create|...)");
    };
    if args.bind.ip().is_unspecified() {
        bail!(
            "--bind {}: an OSD tells the monitors the address it listens on and its peers \
             connect to it there; give this host's address (such as 198.18.0.11:0)",
            args.bind
        );
    }
    let dir = cluster.dir();
    let cluster_id = load_cluster_id(&dir)?;
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let id_file = data.join("osd.json");
    runtime_with(args.workers)?.block_on(async {
        let (id, size) = match std::fs::read(&id_file) {
            Ok(bytes) => {
                let mut file: OsdFile = serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", id_file.display()))?;
                if file.cluster_id != cluster_id {
                    bail!(
                        "{} belongs to cluster {}, not {cluster_id}",
                        data.display(),
                        file.cluster_id
                    );
                }
                if args.size.is_some() && args.size != file.size {
                    file.size = args.size;
                    std::fs::write(&id_file, serde_json::to_vec_pretty(&file)?)?;
                }
                if let Some(id) = args.id.filter(|id| *id != file.id) {
                    bail!("{} holds osd.{}, not osd.{id}", data.display(), file.id);
                }
                (OsdId(file.id), file.size)
            }
            Err(_) => {
                let id = match args.id {
                    // Made beforehand by `cluster host`, which wrote its certificate.
                    Some(id) => {
                        let entity = daemon::entity(OsdId(id));
                        if !dir.join("certs").join(format!("{entity}.pem")).exists() {
                            bail!(
                                "{} has no certificate for osd.{id}: make the OSD with \
                                 `tidepool cluster host` and copy the folder it writes",
                                dir.display()
                            );
                        }
                        id
                    }
                    None => {
                        let outcome = cluster
                            .client()?
                            .command(Command::OsdCreate {
                                host: args.host.clone(),
                                weight: args.weight,
                            })
                            .await?
                            .map_err(|e| anyhow::anyhow!("creating the OSD: {e}"))?;
                        outcome.created.context("OsdCreate names the new OSD")?
                    }
                };
                let file = OsdFile {
                    version: 1,
                    cluster_id: cluster_id.clone(),
                    id,
                    size: args.size,
                };
                std::fs::write(&id_file, serde_json::to_vec_pretty(&file)?)?;
                (OsdId(id), args.size)
            }
        };
        crate::logs::name(id.to_string());
        let entity = daemon::entity(id);
        let certs = dir.join("certs");
        if !certs.join(format!("{entity}.pem")).exists() {
            ClusterCa::load(&dir, &cluster_id)?.issue_into(&entity, &certs)?;
        }
        let identity = Identity::load(&dir, &cluster_id, &entity)?;
        let metrics = tidepool_metrics::Registry::new();
        let store = RocksStore::open(&daemon::store_dir(&data))?
            .with_capacity(size)
            .with_metrics(&metrics)?;
        let config = OsdConfig {
            id,
            identity,
            monmap: load_monmap(&dir)?,
            bind: args.bind,
            metrics,
        };
        args.metrics
            .serve(&config.metrics, &dir, &id.to_string())
            .await?;
        daemon::run(config, Arc::new(store), daemon_stopped()).await?;
        Ok(())
    })
}

/// `--metrics-addr` of the daemons `tidepool up` starts: any free loopback port.
const LOOPBACK_ANY: &str = "127.0.0.1:0";

/// How long `tidepool up` waits for the monitors to mark down an OSD whose process exited.
const MARK_DOWN_WAIT: Duration = Duration::from_secs(2);

/// Marks OSD `id` down.
async fn mark_down(cluster: &ClusterArgs, id: OsdId) -> Result<()> {
    match cluster.client()?.command(Command::OsdDown { id }).await? {
        Ok(_) => Ok(()),
        Err(error) => bail!("{error}"),
    }
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
    /// Each new OSD's size (`64GiB`, `500M`; default: an equal share of the disk's free
    /// space); OSDs keep the size they were made with unless this is given again.
    #[arg(long, value_parser = parse_size)]
    osd_size: Option<u64>,
    /// Keep S3 data in an erasure pool `K+M` (failure domain osd; first run only): at least
    /// K+M OSDs are started.
    #[arg(long, value_parser = crate::simulate::parse_erasure)]
    erasure: Option<(u8, u8)>,
}

/// Worker threads for each of `osds` OSDs on this machine: its cores shared out, at least one.
fn osd_workers(osds: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / osds.max(1)).max(1)
}

/// How long a restarted daemon must run before its restart backoff starts over.
const STEADY: Duration = Duration::from_secs(60);
/// The longest wait between two restarts of a daemon that keeps dying.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One daemon `tidepool up` runs and restarts.
struct Supervised {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    /// `None` while it waits to be restarted.
    process: Option<Child>,
    started: Instant,
    /// The wait before its next restart.
    backoff: Duration,
    /// When it is restarted, and why it stopped.
    restart: Option<(Instant, String)>,
}

/// Daemons as child processes, restarted with backoff when they die (as systemd would), and
/// stopped (SIGTERM, then SIGKILL) when dropped.
struct Children {
    daemons: Vec<Supervised>,
    /// OSDs whose process exited, not yet marked down.
    died_osds: Vec<OsdId>,
    /// `RESTARTS` in the cluster folder: one JSON line per restart, for `status` and `watch`.
    journal: PathBuf,
}

impl Children {
    fn new(dir: &Path) -> Children {
        Children {
            died_osds: Vec::new(),
            daemons: Vec::new(),
            journal: dir.join(crate::health::RESTARTS),
        }
    }

    fn start(&mut self, name: String, args: &[&str], log: &Path) -> Result<()> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let process = spawn(&name, &args, log)?;
        self.daemons.push(Supervised {
            name,
            args,
            log: log.to_owned(),
            process: Some(process),
            started: Instant::now(),
            backoff: Duration::from_secs(1),
            restart: None,
        });
        Ok(())
    }

    /// The daemons that stopped (and are not restarted yet).
    /// How many daemons it started.
    fn count(&self) -> usize {
        self.daemons.len()
    }

    fn dead(&mut self) -> Vec<String> {
        self.daemons
            .iter_mut()
            .filter_map(|d| {
                let dead = d
                    .process
                    .as_mut()
                    .is_none_or(|p| p.try_wait().ok().flatten().is_some());
                dead.then(|| d.name.clone())
            })
            .collect()
    }

    /// Restarts what died, each after its backoff; returns one line per event.
    /// Restarts the daemons that died (after their backoff); what happened, one line each.
    /// The OSDs among the dead are kept in `died_osds` for the caller to mark down.
    fn supervise(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        let now = Instant::now();
        for daemon in &mut self.daemons {
            if let Some(process) = &mut daemon.process {
                let Ok(Some(exit)) = process.try_wait() else {
                    continue;
                };
                daemon.process = None;
                if let Some(id) = daemon
                    .name
                    .strip_prefix("osd.")
                    .and_then(|id| id.parse().ok())
                {
                    self.died_osds.push(OsdId(id));
                }
                if daemon.started.elapsed() >= STEADY {
                    daemon.backoff = Duration::from_secs(1);
                }
                let why = describe_exit(exit);
                events.push(format!(
                    "{} {why}; restarting it in {} s (log: {})",
                    daemon.name,
                    daemon.backoff.as_secs(),
                    daemon.log.display()
                ));
                daemon.restart = Some((now + daemon.backoff, why));
                daemon.backoff = (daemon.backoff * 2).min(MAX_BACKOFF);
            }
            let Some((_, why)) = daemon.restart.take_if(|(at, _)| *at <= now) else {
                continue;
            };
            match spawn(&daemon.name, &daemon.args, &daemon.log) {
                Ok(process) => {
                    events.push(format!("{} restarted (pid {})", daemon.name, process.id()));
                    daemon.process = Some(process);
                    daemon.started = now;
                    let line = serde_json::json!({
                        "daemon": daemon.name,
                        "at": crate::health::unix_now(),
                        "why": why,
                    });
                    let _ = append_line(&self.journal, &line.to_string());
                }
                Err(error) => {
                    events.push(format!("{} could not be restarted: {error:#}", daemon.name));
                    daemon.restart = Some((now + daemon.backoff, why));
                    daemon.backoff = (daemon.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        events
    }

    fn pids(&self) -> Vec<u32> {
        self.daemons
            .iter()
            .filter_map(|d| d.process.as_ref().map(Child::id))
            .collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = Process::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in self.daemons.iter_mut().filter_map(|d| d.process.as_mut()) {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `tidepool ARGS` with its output appended to `log` (a restart keeps what the last
/// run wrote, and why it stopped).
fn spawn(name: &str, args: &[String], log: &Path) -> Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    Process::new(std::env::current_exe()?)
        .args(args)
        .env(SUPERVISOR, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {name}"))
}

/// Set by `tidepool up` in its children's environment: its pid.
const SUPERVISOR: &str = "TIDEPOOL_SUPERVISOR";

/// In a child of `tidepool up`: asks the kernel for SIGTERM when `up` dies, however it dies
/// (even kill -9), so that no daemon outlives the `up` that started it.
pub fn follow_supervisor() {
    let Some(supervisor) = std::env::var(SUPERVISOR)
        .ok()
        .and_then(|pid| pid.parse::<i32>().ok())
    else {
        return;
    };
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM));
    // `up` may have died before the request took effect.
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(supervisor) {
        std::process::exit(1);
    }
}

/// `exited with code 1`, `was killed by signal 9 (SIGKILL)`.
fn describe_exit(exit: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (exit.code(), exit.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                6 => " (SIGABRT)",
                9 => " (SIGKILL, or out of memory)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("was killed by signal {signal}{name}")
        }
        (None, None) => "stopped".into(),
    }
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{line}")
}

/// `up.json` in a cluster folder: held locked by the `tidepool up` that runs the cluster.
const UP_FILE: &str = "up.json";
/// `added-osds` in a cluster folder: the folders of OSDs `tidepool osd add` made, one per line.
pub const ADDED_OSDS: &str = "added-osds";

/// What a running `tidepool up` writes in its lock file, for a second one to point at it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UpFile {
    pid: u32,
    /// The S3 endpoint, once the gateway runs.
    s3: Option<SocketAddr>,
}

/// `tidepool up`: starts (and on the first run creates) a local cluster, waits until its PGs
/// are active, prints how to use it, restarts what dies, and stops everything on Ctrl-C.
pub fn up(mut args: UpArgs) -> Result<()> {
    if let Some((k, m)) = args.erasure {
        // A shard per OSD.
        args.osds = args.osds.max(u32::from(k) + u32::from(m));
    }
    let dir = args.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let Some(mut lock) = lock_folder(&dir)? else {
        return already_running(&dir);
    };
    let first_run = !dir.join("cluster.json").exists();
    if first_run {
        crate::cluster::create(&dir, crate::cluster::loopback_monitors(args.mons)?, &[])?;
    }
    let dir_text = dir
        .to_str()
        .context("the folder name must be UTF-8")?
        .to_owned();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    // Each daemon records its metrics address (the dashboard its own) again as it starts.
    let _ = std::fs::remove_dir_all(dir.join(crate::metrics::METRICS_DIR));
    let _ = std::fs::remove_file(dir.join(crate::dashboard::DASHBOARD_FILE));
    let monmap = load_monmap(&dir)?;
    let mut children = Children::new(&dir);
    for rank in 0..monmap.addrs.len() {
        children.start(
            format!("mon.{rank}"),
            &[
                "mon",
                "--id",
                &rank.to_string(),
                "--data",
                &dir_text,
                "--metrics-addr",
                LOOPBACK_ANY,
            ],
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
            // An erasure data pool needs its OSDs in the map first: it is made below.
            if args.erasure.is_none() {
                let size = args.osds.clamp(1, 3) as u8;
                let buckets = tidepool_buckets::BucketsConfig::default();
                crate::gateway::ensure_pools(&mut admin, &buckets, size, BucketType::Osd).await?;
            }
        }
        anyhow::Ok(())
    })?;
    let osds = osd_folders(&dir, args.osds);
    let workers = osd_workers(osds.len()).to_string();
    let any_new = osds.iter().any(|f| folder_osd(f).is_none());
    let size = args.osd_size.or_else(|| {
        // An equal share of the free space for each OSD made now (as BlueStore on a file has
        // a fixed size), so that together they never claim more than the disk has.
        any_new
            .then(|| free_bytes(&dir).map(|free| free / osds.len() as u64))
            .flatten()
    });
    for folder in &osds {
        let name = folder_osd(folder).map_or_else(
            || {
                folder
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            },
            |id| format!("osd-{}", id.0),
        );
        let osd_dir = folder.to_str().context("UTF-8 folder")?.to_owned();
        let mut osd_args = vec![
            "osd".to_owned(),
            "--data".to_owned(),
            osd_dir,
            "--cluster".to_owned(),
            dir_text.clone(),
            "--workers".to_owned(),
            workers.clone(),
            "--metrics-addr".to_owned(),
            LOOPBACK_ANY.to_owned(),
        ];
        if let Some(size) = size.filter(|_| args.osd_size.is_some() || folder_osd(folder).is_none())
        {
            osd_args.extend(["--size".to_owned(), size.to_string()]);
        }
        let osd_args: Vec<&str> = osd_args.iter().map(String::as_str).collect();
        children.start(
            name.replacen('-', ".", 1),
            &osd_args,
            &logs.join(format!("{name}.log")),
        )?;
        if first_run {
            // One at a time the first time, so that osd-N gets id N.
            let deadline = Instant::now() + Duration::from_secs(30);
            while folder_osd(folder).is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    if let (true, Some((k, m))) = (first_run, args.erasure) {
        rt.block_on(erasure_data_pool(&cluster, k, m, args.osds))?;
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
            "--metrics-addr",
            LOOPBACK_ANY,
        ],
        &logs.join("gateway.log"),
    )?;
    children.start(
        "dashboard".into(),
        &[
            "dashboard",
            "--cluster",
            &dir_text,
            "--bind",
            LOOPBACK_ANY,
            "--metrics-addr",
            LOOPBACK_ANY,
        ],
        &logs.join("dashboard.log"),
    )?;
    let user = rt.block_on(local_user(&cluster))?;
    wait_listening(s3_addr, Duration::from_secs(30));
    let dead = children.dead();
    if !dead.is_empty() {
        bail!("{} stopped; see {}", dead.join(", "), logs.display());
    }
    write_up_file(
        &mut lock,
        &UpFile {
            pid: std::process::id(),
            s3: Some(s3_addr),
        },
    )?;
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
    if let Some(kind) = rt.block_on(s3_data_kind(&cluster)) {
        println!("  S3 data:  {kind}");
    }
    println!("  S3:       http://{s3_addr}");
    println!("            access key {}", user.access_key);
    println!("            secret key {}", user.secret_key);
    println!("  logs:     {}", logs.display());
    let daemons = children.count();
    let deadline = Instant::now() + Duration::from_secs(5);
    while crate::metrics::endpoints(&dir).len() < daemons && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "  metrics:  {} daemons serve /metrics (`tidepool status --format json` lists them)",
        crate::metrics::endpoints(&dir).len()
    );
    if let Some(url) = crate::dashboard::recorded(&dir) {
        println!("  dashboard: {url} (log in with the access and secret key above)");
    }
    println!();
    print!("{}", try_lines(&dir, s3_addr, &user));
    println!();
    println!(
        "Ctrl-C stops the cluster; `tidepool up --dir {}` starts it again.",
        dir.display()
    );
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = signalled() => break,
                _ = tick.tick() => {
                    for event in children.supervise() {
                        println!("{event}");
                    }
                    // An OSD whose process exited is down now, not after its peers' grace
                    // (as Ceph's peers fail one fast on a refused connection). Marked before
                    // its restart, which waits for the next tick at the soonest.
                    for id in std::mem::take(&mut children.died_osds) {
                        let down = mark_down(&cluster, id);
                        if let Ok(Err(error)) = tokio::time::timeout(MARK_DOWN_WAIT, down).await {
                            tracing::debug!(%error, %id, "marking an exited OSD down");
                        }
                    }
                }
            }
        }
    });
    println!("stopping…");
    stop_added_osds(&dir, &children.pids());
    drop(children);
    drop(lock);
    let _ = std::fs::remove_file(dir.join(UP_FILE));
    println!("stopped");
    Ok(())
}

/// Makes the S3 data pool an erasure pool `k+m` (failure domain osd), once the OSDs are in
/// the map, then the bucket layer's other pools.
async fn erasure_data_pool(cluster: &ClusterArgs, k: u8, m: u8, osds: u32) -> Result<()> {
    let mut admin = cluster.client()?;
    let buckets = tidepool_buckets::BucketsConfig::default();
    let command = Command::PoolCreate {
        name: buckets.data_pool.clone(),
        kind: PoolKind::erasure(k, m),
        pg_num: 32,
        failure_domain: BucketType::Osd,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.command(command.clone()).await? {
            Ok(_) | Err(tidepool_proto::mon::CommandError::Exists(_)) => break,
            // The OSDs just made may not all be in the map yet.
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "the erasure data pool waits for its OSDs");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => bail!("creating pool {}: {error}", buckets.data_pool),
        }
    }
    let size = osds.clamp(1, 3) as u8;
    crate::gateway::ensure_pools(&mut admin, &buckets, size, BucketType::Osd).await
}

/// How the S3 data pool keeps its data, for the greeting (`None` when it cannot tell).
async fn s3_data_kind(cluster: &ClusterArgs) -> Option<String> {
    let map = cluster.client().ok()?.map().await.ok()?;
    let name = tidepool_buckets::BucketsConfig::default().data_pool;
    let pool = map.pool_by_name(&name)?;
    Some(match pool.kind {
        PoolKind::Erasure { k, m, .. } => format!(
            "{name}, erasure {k}+{m} ({:.2}x raw per byte stored)",
            f64::from(k + m) / f64::from(k)
        ),
        PoolKind::Replicated { size, .. } => format!("{name}, {size} copies"),
    })
}

/// The bytes free for unprivileged use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Takes the folder's `up` lock (`None`: another `tidepool up` holds it).
fn lock_folder(dir: &Path) -> Result<Option<std::fs::File>> {
    let path = dir.join(UP_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            write_up_file(
                &mut file,
                &UpFile {
                    pid: std::process::id(),
                    s3: None,
                },
            )?;
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("locking {}", path.display()))
        }
    }
}

fn write_up_file(file: &mut std::fs::File, up: &UpFile) -> Result<()> {
    use std::io::{Seek, Write};
    file.set_len(0)?;
    file.seek(std::io::SeekFrom::Start(0))?;
    file.write_all(&serde_json::to_vec(up)?)?;
    Ok(())
}

/// A second `tidepool up` on a running cluster's folder: says where the running one is and
/// how to reach it, and touches nothing.
fn already_running(dir: &Path) -> Result<()> {
    let up: UpFile = std::fs::read(dir.join(UP_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    println!(
        "The cluster in {} is already running (tidepool up, pid {}); nothing was started or changed.",
        dir.display(),
        up.pid
    );
    let Some(s3) = up.s3 else {
        println!("It is still starting; its greeting, in that terminal, says how to reach it.");
        return Ok(());
    };
    let cluster = ClusterArgs::for_dir(dir.to_owned());
    let user = runtime()?.block_on(async {
        let mut admin = cluster.client()?;
        let users = admin.users().await?;
        anyhow::Ok(users.into_iter().find(|u| u.name == "local"))
    });
    println!("  S3:       http://{s3}");
    match user {
        Ok(Some(user)) => {
            println!();
            print!("{}", try_lines(dir, s3, &user));
        }
        _ => println!("  keys:     tidepool user ls --cluster {}", dir.display()),
    }
    Ok(())
}

/// The greeting's commands, which run as printed in a new shell (absolute paths, and the S3
/// endpoint, keys and region as exports).
fn try_lines(dir: &Path, s3: SocketAddr, user: &tidepool_proto::mon::User) -> String {
    let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let exe = std::env::current_exe().ok();
    let bin = exe
        .as_deref()
        .and_then(Path::parent)
        .map_or_else(String::new, |p| p.display().to_string());
    // The project's own aws-cli (scripts/deps.sh puts it in .venv) when `up` runs in the
    // project (`make up`), else the one on the PATH.
    let aws = std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            cwd.ancestors()
                .map(|d| d.join(".venv/bin/aws"))
                .find(|aws| aws.exists())
        })
        .map_or_else(|| "aws".to_owned(), |p| p.display().to_string());
    let mut text = String::new();
    let mut line = |l: String| {
        if !l.is_empty() {
            text.push_str("  ");
            text.push_str(&l);
        }
        text.push('\n');
    };
    line(format!("export AWS_ACCESS_KEY_ID={}", user.access_key));
    line(format!("export AWS_SECRET_ACCESS_KEY={}", user.secret_key));
    line("export AWS_DEFAULT_REGION=us-east-1".into());
    line(format!("export AWS_ENDPOINT_URL=http://{s3}"));
    line(format!("{aws} s3 mb s3://demo"));
    line(format!("{aws} s3 cp ./README.md s3://demo/"));
    line(format!("{aws} s3 ls s3://demo"));
    line(String::new());
    line(format!("export PATH={bin}:$PATH"));
    line(format!("export TIDEPOOL_CLUSTER={}", shown.display()));
    line("tidepool status".into());
    line("tidepool object put data hello ./README.md".into());
    line("tidepool bench data write --seconds 5".into());
    format!("Try (in any shell):\n{text}")
}
/// The OSD folders to start: `osd-<n>` for the first `count`, those `tidepool osd add` made
/// in the folder since (they hold an `osd.json`), and those it made elsewhere (listed in
/// `added-osds`).
fn osd_folders(dir: &Path, count: u32) -> Vec<PathBuf> {
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
    let mut folders: Vec<PathBuf> = numbers
        .into_iter()
        .map(|n| dir.join(format!("osd-{n}")))
        .collect();
    for added in added_osds(dir) {
        let known = folders
            .iter()
            .any(|f| std::fs::canonicalize(f).ok().as_deref() == Some(added.as_path()));
        if !known && added.join("osd.json").exists() {
            folders.push(added);
        }
    }
    folders
}

/// The folders listed in `added-osds` (absolute).
fn added_osds(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(dir.join(ADDED_OSDS))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Notes an OSD folder made by `tidepool osd add` in the cluster folder's `added-osds`, so
/// that `tidepool up` starts and stops it with the cluster wherever it is.
pub fn register_added_osd(dir: &Path, folder: &Path) -> Result<()> {
    let folder = std::fs::canonicalize(folder)?;
    if !added_osds(dir).contains(&folder) {
        let path = dir.join(ADDED_OSDS);
        append_line(&path, &folder.display().to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The id of the OSD in `folder`, once it has one.
fn folder_osd(folder: &Path) -> Option<OsdId> {
    let bytes = std::fs::read(folder.join("osd.json")).ok()?;
    let file: OsdFile = serde_json::from_slice(&bytes).ok()?;
    Some(OsdId(file.id))
}

/// Stops the OSDs `tidepool osd add` started while this `up` ran (they are not its children),
/// in the folder or elsewhere: SIGTERM to the pid in their `osd.pid`, if that process is still
/// the OSD of that folder.
fn stop_added_osds(dir: &Path, ours: &[u32]) {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    folders.extend(added_osds(dir));
    for folder in folders {
        let pid_file = folder.join("osd.pid");
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if !ours.contains(&pid) && runs_osd_of(pid, &folder) {
            let _ = Process::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_file(&pid_file);
    }
}

/// Whether process `pid` is `tidepool osd --data FOLDER`.
fn runs_osd_of(pid: u32, folder: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let folder = std::fs::canonicalize(folder).ok();
    // A relative `--data` is relative to that process's working folder.
    let cwd = PathBuf::from(format!("/proc/{pid}/cwd"));
    args.windows(2).any(|pair| {
        pair[0] == b"--data"
            && std::str::from_utf8(pair[1])
                .ok()
                .and_then(|data| std::fs::canonicalize(cwd.join(data)).ok())
                == folder
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: sizes read as Ceph reads them (binary units, with or without `iB`); nonsense and
    /// zero are refused with the reason.
    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("64GiB"), Ok(64 << 30));
        assert_eq!(parse_size("2tb"), Ok(2 << 40));
        assert_eq!(parse_size("8 KiB"), Ok(8 << 10));
        for bad in ["", "G", "12X", "0", "-5M", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
