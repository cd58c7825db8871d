//! The monitor daemon command and the admin commands that talk to the monitors.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use tidepool_client::mon::load_monmap;
use tidepool_client::MonClient;
use tidepool_messenger::Identity;
use tidepool_monitor::daemon::{self, DaemonConfig};
use tidepool_placement::{BucketType, ClusterMap, OsdId, PoolKind, Weight};
use tidepool_proto::mon::{Command, MonMap, User};

use crate::cluster::{load_cluster_id, ADMIN_ENTITY};
use crate::OutputFormat;

/// Which cluster an admin command talks to.
#[derive(Clone, Debug, Args)]
pub struct ClusterArgs {
    /// The cluster folder (default: $TIDEPOOL_CLUSTER, else ./tidepool-data).
    #[arg(long, global = true)]
    cluster: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Plain, global = true)]
    format: OutputFormat,
}

impl ClusterArgs {
    pub fn dir(&self) -> PathBuf {
        self.cluster
            .clone()
            .or_else(|| std::env::var_os("TIDEPOOL_CLUSTER").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("tidepool-data"))
    }

    pub fn client(&self) -> Result<MonClient> {
        Ok(MonClient::new(&self.dir(), &self.identity()?)?)
    }

    /// The admin certificate of the cluster folder.
    pub fn identity(&self) -> Result<Identity> {
        let dir = self.dir();
        let cluster_id = load_cluster_id(&dir)?;
        Identity::load(&dir, &cluster_id, ADMIN_ENTITY).context("loading the admin certificate")
    }

    /// The cluster folder `dir`, printing plainly.
    pub fn for_dir(dir: PathBuf) -> ClusterArgs {
        ClusterArgs {
            cluster: Some(dir),
            format: OutputFormat::Plain,
        }
    }

    /// The output format asked for.
    pub fn format(&self) -> OutputFormat {
        self.format
    }
}

/// Flags of `tidepool mon`.
#[derive(Debug, Args)]
pub struct MonArgs {
    /// The monitor's rank in the monitor map.
    #[arg(long)]
    id: Option<u8>,
    /// The cluster folder (monitor map, certificates).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where the monitor keeps its store (default: `<DATA>/mon-<ID>`).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Committed map changes kept for monitors and subscribers that lag behind (further
    /// behind, they get the whole map).
    #[arg(long, default_value_t = DaemonConfig::RETAIN_SLOTS)]
    retain: u64,
    /// Where to listen (default: its address in the monitor map). Give `0.0.0.0:PORT` where
    /// the map's address forwards to this one, as a Kubernetes service does.
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
}

struct MonRun {
    id: u8,
    data: PathBuf,
}

/// Runs a monitor until Ctrl-C or SIGTERM.
pub fn mon(args: MonArgs) -> Result<()> {
    let (Some(id), Some(data)) = (args.id, args.data) else {
        bail!("usage: tidepool mon --id N --data CLUSTER_DIR (or: tidepool mon dump)");
    };
    crate::logs::name(format!("mon.{id}"));
    let retain_slots = args.retain;
    let bind = args.bind;
    let store = args.store;
    let metrics_args = args.metrics;
    let args = MonRun { id, data };
    let cluster_id = load_cluster_id(&args.data)?;
    let entity = MonMap::entity(args.id);
    let identity = Identity::load(&args.data, &cluster_id, &entity)
        .with_context(|| format!("loading the certificate of {entity}"))?;
    let monmap = load_monmap(&args.data)?;
    if usize::from(args.id) >= monmap.addrs.len() {
        bail!(
            "--id {} is not in the monitor map ({} monitors)",
            args.id,
            monmap.addrs.len()
        );
    }
    let config = DaemonConfig {
        rank: args.id,
        cluster_dir: args.data.clone(),
        data_dir: store.unwrap_or_else(|| args.data.join(&entity)),
        identity,
        bind,
        retain_slots,
        metrics: tidepool_metrics::Registry::new(),
    };
    runtime()?.block_on(async {
        metrics_args
            .serve(&config.metrics, &args.data, &entity.replace('-', "."))
            .await?;
        daemon::run(config, crate::daemons::daemon_stopped()).await?;
        anyhow::Ok(())
    })?;
    Ok(())
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    runtime_with(None)
}

/// A runtime of `workers` threads (default: one per core).
pub fn runtime_with(workers: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers.max(1));
    }
    Ok(builder.enable_all().build()?)
}

/// `tidepool mon dump`.
pub fn mon_dump(args: ClusterArgs) -> Result<()> {
    runtime()?.block_on(async {
        let client = args.client()?;
        let statuses = client.statuses().await;
        let rows: Vec<_> = client
            .monmap()
            .addrs
            .iter()
            .zip(&statuses)
            .enumerate()
            .map(|(rank, (addr, status))| {
                json!({
                    "rank": rank,
                    "name": MonMap::entity(rank as u8),
                    "addr": addr.to_string(),
                    "up": status.is_some(),
                    "leader": status.as_ref().and_then(|s| s.leader),
                    "commit": status.as_ref().map(|s| s.commit),
                    "epoch": status.as_ref().map(|s| s.epoch.0),
                    "map_digest": status.as_ref().map(|s| format!("{:016x}", s.map_digest)),
                })
            })
            .collect();
        match args.format {
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "mons": rows }))?
            ),
            OutputFormat::Plain => {
                for row in rows {
                    println!(
                        "{}: {} {} leader {} commit {} epoch {}",
                        row["rank"],
                        row["name"].as_str().unwrap_or(""),
                        row["addr"].as_str().unwrap_or(""),
                        row["leader"],
                        row["commit"],
                        row["epoch"]
                    );
                }
            }
        }
        Ok(())
    })
}

/// `tidepool osd dump` (the whole map).
pub fn osd_dump(args: ClusterArgs) -> Result<()> {
    runtime()?.block_on(async {
        let map: ClusterMap = args.client()?.map().await?;
        match args.format {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&map_json(&map)?)?),
            OutputFormat::Plain => {
                println!("epoch {}", map.epoch.0);
                for pool in map.pools.values() {
                    println!(
                        "pool {} '{}' {:?} pg_num {} failure_domain {}",
                        pool.id.0, pool.name, pool.kind, pool.pg_num, pool.rule.failure_domain
                    );
                }
                for osd in map.osds.values() {
                    println!(
                        "{} {} {} weight {} {}{}",
                        osd.id,
                        if osd.up { "up" } else { "down" },
                        if osd.is_in { "in" } else { "out" },
                        osd.weight,
                        osd.addr.as_deref().unwrap_or("-"),
                        if osd.full { " full" } else { "" }
                    );
                }
            }
        }
        Ok(())
    })
}

/// The map as JSON. JSON keys are strings, so `pg_temp` and `pg_active` (keyed by PG) become
/// lists of `{"pg": "1.1f", "osds": [...]}` and `{"pg": "1.1f", "epoch": 12, "acting": [...]}`.
pub fn map_json(map: &ClusterMap) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(ClusterMap {
        pg_temp: Default::default(),
        pg_active: Default::default(),
        ..map.clone()
    })?;
    value["pg_temp"] = map
        .pg_temp
        .iter()
        .map(|(pg, osds)| json!({ "pg": pg.to_string(), "osds": osds }))
        .collect();
    value["pg_active"] = map
        .pg_active
        .iter()
        .map(|(pg, active)| {
            json!({ "pg": pg.to_string(), "epoch": active.epoch, "acting": active.acting })
        })
        .collect();
    Ok(value)
}

/// Pool changes.
#[derive(Debug, Subcommand)]
pub enum PoolChange {
    /// Create a replicated pool, or with `--erasure K+M` an erasure-coded one.
    Create {
        /// Its name.
        name: String,
        /// Placement groups.
        #[arg(long, default_value_t = 64)]
        pg_num: u32,
        /// Copies (replicated pool).
        #[arg(long, default_value_t = 3, conflicts_with = "erasure")]
        size: u8,
        /// Copies needed to accept writes (default: a majority of size).
        #[arg(long, conflicts_with = "erasure")]
        min_size: Option<u8>,
        /// Erasure-coded: K data and M parity shards, written K+M (writes need K+1 shards).
        #[arg(long, value_parser = crate::simulate::parse_erasure)]
        erasure: Option<(u8, u8)>,
        /// An erasure pool's bytes per stripe on each shard (default 4096).
        #[arg(long, requires = "erasure", value_parser = crate::daemons::parse_size)]
        stripe_unit: Option<u64>,
        /// No two copies (or shards) share a bucket of this type.
        #[arg(long, default_value = "host")]
        failure_domain: BucketType,
    },
    /// Remove a pool.
    Rm {
        /// Its name.
        name: String,
    },
}

/// OSD changes.
#[derive(Debug, Subcommand)]
pub enum OsdChange {
    /// Create an OSD entry in a host (it stays down until its daemon boots).
    Create {
        /// The host.
        #[arg(long, default_value = "localhost")]
        host: String,
        /// Its weight.
        #[arg(long, default_value = "1")]
        weight: Weight,
    },
    /// Mark an OSD out: its data moves to the others.
    Out {
        /// The OSD id.
        id: u32,
        /// Print what would move, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Mark an OSD in.
    In {
        /// The OSD id.
        id: u32,
        /// Print what would move, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Change an OSD's weight.
    Reweight {
        /// The OSD id.
        id: u32,
        /// Its new weight.
        weight: Weight,
        /// Print what would move, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove a down OSD; refused while it may hold the only copy of some data.
    Rm {
        /// The OSD id.
        id: u32,
        /// Remove it even if it is not safe to destroy.
        #[arg(long)]
        force: bool,
        /// Print what would move, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move an OSD into another host (or rack, zone) bucket.
    Move {
        /// The OSD id.
        id: u32,
        /// The bucket's name.
        bucket: String,
    },
}

/// Bucket changes: the failure-domain hierarchy.
#[derive(Debug, Subcommand)]
pub enum BucketChange {
    /// Add a host, rack or zone bucket.
    Add {
        /// Its unique name.
        name: String,
        /// Its level.
        #[arg(long = "type", default_value = "host")]
        kind: BucketType,
        /// The bucket it sits in (default: the root `default`).
        #[arg(long)]
        parent: Option<String>,
    },
}

impl From<BucketChange> for Command {
    fn from(change: BucketChange) -> Command {
        match change {
            BucketChange::Add { name, kind, parent } => {
                Command::BucketCreate { name, kind, parent }
            }
        }
    }
}

/// Cluster-wide options.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set an option.
    Set {
        /// The option.
        key: String,
        /// Its value.
        value: String,
    },
    /// Show an option's value.
    Get {
        /// The option.
        key: String,
    },
    /// Show every option, its value and what it means.
    Dump,
}

/// Users of the S3 gateway.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints its access key and secret key.
    Create {
        /// The user's name.
        name: String,
    },
    /// List users and their access keys.
    Ls,
    /// Remove a user.
    Rm {
        /// The user's name.
        name: String,
    },
}

impl From<PoolChange> for Command {
    fn from(change: PoolChange) -> Command {
        match change {
            PoolChange::Create {
                name,
                pg_num,
                size,
                min_size,
                erasure,
                stripe_unit,
                failure_domain,
            } => Command::PoolCreate {
                name,
                kind: match erasure {
                    // A unit past u32 is refused by the map's checks as any unit over 1 MiB.
                    Some((k, m)) => PoolKind::Erasure {
                        k,
                        m,
                        stripe_unit: stripe_unit
                            .map_or(tidepool_placement::STRIPE_UNIT_DEFAULT, |u| {
                                u32::try_from(u).unwrap_or(u32::MAX)
                            }),
                    },
                    None => PoolKind::Replicated {
                        size,
                        min_size: min_size.unwrap_or(size - size / 2).max(1),
                    },
                },
                pg_num,
                failure_domain,
            },
            PoolChange::Rm { name } => Command::PoolRemove { name },
        }
    }
}

impl OsdChange {
    /// The command, whether only to preview it, and whether to skip the safety check.
    pub fn into_command(self) -> (Command, bool, bool) {
        match self {
            OsdChange::Create { host, weight } => {
                (Command::OsdCreate { host, weight }, false, false)
            }
            OsdChange::Out { id, dry_run } => (Command::OsdOut { id: OsdId(id) }, dry_run, false),
            OsdChange::In { id, dry_run } => (Command::OsdIn { id: OsdId(id) }, dry_run, false),
            OsdChange::Reweight {
                id,
                weight,
                dry_run,
            } => (
                Command::OsdReweight {
                    id: OsdId(id),
                    weight,
                },
                dry_run,
                false,
            ),
            OsdChange::Rm { id, force, dry_run } => {
                (Command::OsdRemove { id: OsdId(id) }, dry_run, force)
            }
            OsdChange::Move { id, bucket } => (
                Command::OsdMove {
                    id: OsdId(id),
                    bucket,
                },
                false,
                false,
            ),
        }
    }
}

/// `tidepool pool ls`.
pub fn pool_ls(args: ClusterArgs) -> Result<()> {
    runtime()?.block_on(async {
        let map: ClusterMap = args.client()?.map().await?;
        match args.format {
            OutputFormat::Json => {
                let pools: Vec<_> = map
                    .pools
                    .values()
                    .map(|pool| {
                        let (raw, stored) = pool.kind.raw_ratio();
                        let mut value = serde_json::to_value(pool)?;
                        value["raw_per_stored"] = json!(f64::from(raw) / f64::from(stored));
                        value["min_size"] = json!(pool.kind.min_size());
                        anyhow::Ok(value)
                    })
                    .collect::<Result<_>>()?;
                println!("{}", serde_json::to_string_pretty(&pools)?);
            }
            OutputFormat::Plain => {
                for pool in map.pools.values() {
                    let (raw, stored) = pool.kind.raw_ratio();
                    // A replicated profile names its min_size already.
                    let min_size = match pool.kind {
                        PoolKind::Erasure { .. } => format!(" min_size {}", pool.kind.min_size()),
                        PoolKind::Replicated { .. } => String::new(),
                    };
                    println!(
                        "{} {} {}{min_size} pg_num {} failure_domain {} raw/stored {:.2}",
                        pool.id.0,
                        pool.name,
                        pool.kind,
                        pool.pg_num,
                        pool.rule.failure_domain,
                        f64::from(raw) / f64::from(stored)
                    );
                }
            }
        }
        Ok(())
    })
}

/// Sends one map change and prints its outcome.
pub fn change(args: ClusterArgs, command: Command) -> Result<()> {
    let new_pool = match &command {
        Command::PoolCreate { name, .. } => Some(name.clone()),
        _ => None,
    };
    runtime()?.block_on(async {
        let mut client = args.client()?;
        match client.command(command).await? {
            Ok(outcome) => {
                match args.format {
                    OutputFormat::Json => println!("{}", serde_json::to_string(&outcome)?),
                    OutputFormat::Plain => println!(
                        "done in epoch {}{}",
                        outcome.epoch.0,
                        outcome
                            .created
                            .map_or(String::new(), |id| format!(" (created id {id})"))
                    ),
                }
                if let Some(name) = new_pool {
                    warn_if_undersized(&mut client, &name).await;
                }
                Ok(())
            }
            Err(error) => bail!("refused: {error}"),
        }
    })
}

/// Warns when a new pool cannot keep its copies apart (a one-machine cluster and the default
/// failure domain `host`): its placement groups would stay undersized, refusing writes.
async fn warn_if_undersized(client: &mut MonClient, name: &str) {
    let Ok(map) = client.map().await else {
        return;
    };
    let Some(pool) = map.pool_by_name(name) else {
        return;
    };
    let (copies, kind) = (pool.kind.width(), pool.rule.failure_domain);
    let domains = map.failure_domains(pool.rule.root, kind);
    if domains < copies {
        eprintln!(
            "warning: pool {name} keeps {copies} copies in different {kind}s, but the cluster \
             has {domains} {kind}(s) with OSDs in: its placement groups stay undersized until \
             it has {copies} (for OSDs on one machine: --failure-domain osd)"
        );
    }
}

/// Flags of `tidepool mon bench`.
#[derive(Debug, Args)]
pub struct MonBenchArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Map changes to commit, one after another.
    #[arg(long, default_value_t = 500)]
    changes: u32,
}

/// `tidepool mon bench`: commit latency of map changes, one at a time from one client
/// (OSD weight changes on an OSD entry it creates).
pub fn mon_bench(args: MonBenchArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = args.cluster.client()?;
        let created = client
            .command(Command::OsdCreate {
                host: "bench".into(),
                weight: Weight::ONE,
            })
            .await??;
        let osd = OsdId(created.created.context("OsdCreate returns the id")?);
        let mut latencies = Vec::with_capacity(args.changes as usize);
        for i in 0..args.changes {
            let weight = Weight(Weight::ONE.raw() + (i % 1000) + 1);
            let started = std::time::Instant::now();
            client
                .command(Command::OsdReweight { id: osd, weight })
                .await??;
            latencies.push(started.elapsed());
        }
        client.command(Command::OsdRemove { id: osd }).await?.ok();
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
        match args.cluster.format {
            OutputFormat::Json => println!(
                "{}",
                json!({
                    "changes": latencies.len(),
                    "p50_ms": p50.as_secs_f64() * 1e3,
                    "p99_ms": p99.as_secs_f64() * 1e3,
                    "max_ms": max.as_secs_f64() * 1e3,
                })
            ),
            OutputFormat::Plain => println!(
                "{} changes committed one at a time: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                latencies.len(),
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            ),
        }
        Ok(())
    })
}

/// `tidepool config set|get|dump`.
pub fn config(args: ClusterArgs, command: ConfigCommand) -> Result<()> {
    use tidepool_proto::config::{check, OPTIONS};
    match command {
        ConfigCommand::Set { key, value } => {
            check(&key, &value).map_err(anyhow::Error::msg)?;
            change(args, Command::ConfigSet { key, value })
        }
        ConfigCommand::Get { key } => runtime()?.block_on(async {
            let set = args.client()?.config().await?;
            let spec = tidepool_proto::config::spec(&key)
                .with_context(|| format!("unknown option {key:?}"))?;
            let value = tidepool_proto::config::get(
                set.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                spec.name,
            );
            match args.format {
                OutputFormat::Json => println!("{}", json!({ "key": key, "value": value })),
                OutputFormat::Plain => println!("{value}"),
            }
            Ok(())
        }),
        ConfigCommand::Dump => runtime()?.block_on(async {
            let set = args.client()?.config().await?;
            let rows: Vec<_> = OPTIONS
                .iter()
                .map(|spec| {
                    let value = tidepool_proto::config::get(
                        set.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        spec.name,
                    );
                    json!({
                        "key": spec.name,
                        "value": value,
                        "default": spec.default,
                        "help": spec.help,
                    })
                })
                .collect();
            match args.format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                OutputFormat::Plain => {
                    for row in rows {
                        println!(
                            "{:<32} {:>10}  {}",
                            row["key"].as_str().unwrap_or(""),
                            row["value"],
                            row["help"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(())
        }),
    }
}

/// A random key of `len` characters from `alphabet`.
fn random_key(len: usize, alphabet: &[u8]) -> Result<String> {
    let mut bytes = vec![0u8; len];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow::anyhow!("reading the system's random source: {e}"))?;
    // 256 is not a multiple of every alphabet size; the bias is below 1 % and keys are long.
    Ok(bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect())
}

/// A new user `name` with fresh random keys.
pub fn new_user(name: String) -> Result<User> {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    Ok(User {
        name,
        access_key: format!("TP{}", random_key(18, UPPER)?),
        secret_key: random_key(40, SECRET)?,
    })
}

/// `tidepool user create|ls|rm`.
pub fn user(args: ClusterArgs, command: UserCommand) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = args.client()?;
        match command {
            UserCommand::Create { name } => {
                let user = new_user(name)?;
                if let Err(error) = client.command(Command::UserCreate(user.clone())).await? {
                    bail!("refused: {error}");
                }
                match args.format {
                    OutputFormat::Json => println!(
                        "{}",
                        json!({
                            "user": user.name,
                            "access_key": user.access_key,
                            "secret_key": user.secret_key,
                        })
                    ),
                    OutputFormat::Plain => {
                        println!("user:       {}", user.name);
                        println!("access key: {}", user.access_key);
                        println!("secret key: {}", user.secret_key);
                    }
                }
            }
            UserCommand::Ls => {
                let users = client.users().await?;
                match args.format {
                    OutputFormat::Json => {
                        let rows: Vec<_> = users
                            .iter()
                            .map(|u| json!({ "user": u.name, "access_key": u.access_key }))
                            .collect();
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    }
                    OutputFormat::Plain => {
                        for user in users {
                            println!("{} {}", user.name, user.access_key);
                        }
                    }
                }
            }
            UserCommand::Rm { name } => {
                if let Err(error) = client.command(Command::UserRemove { name }).await? {
                    bail!("refused: {error}");
                }
                if args.format == OutputFormat::Plain {
                    println!("removed");
                }
            }
        }
        Ok(())
    })
}
