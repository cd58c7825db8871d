//! The `tidepool` binary: daemons, local clusters and admin commands.

mod admin;
mod bench;
mod classes;
mod cluster;
mod daemons;
mod dashboard;
mod gateway;
mod gc;
mod health;
mod lifecycle;
mod logs;
mod metrics;
mod mount;
mod objects;
mod operate;
mod pgs;
mod simulate;
mod store_tool;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

/// jemalloc for every daemon: per-thread caches and size classes instead of glibc's shared
/// arenas, whose bins an OSD's mix of small, short-lived buffers fragments (and slows) within
/// minutes, and no mmap and munmap per large buffer.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tidepool: a distributed object store.
#[derive(Debug, Parser)]
#[command(name = "tidepool", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Placement tools.
    Placement {
        #[command(subcommand)]
        command: PlacementCommand,
    },
    /// Cluster setup.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Run a monitor (`tidepool mon --id N --data DIR`), or inspect the monitors.
    #[command(args_conflicts_with_subcommands = true)]
    Mon {
        #[command(subcommand)]
        command: Option<MonCommand>,
        #[command(flatten)]
        run: admin::MonArgs,
    },
    /// The cluster at a glance, in the shape of `ceph -s`.
    Status(admin::ClusterArgs),
    /// The status, redrawn live, with a line per event (OSDs up/down/in/out, PG states,
    /// recovery finished).
    Watch {
        #[command(flatten)]
        cluster: admin::ClusterArgs,
        /// Seconds between redraws.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many redraws (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Run an OSD (`tidepool osd --data DIR`), or inspect and change OSDs.
    Osd {
        #[command(flatten)]
        cluster: admin::ClusterArgs,
        #[command(subcommand)]
        command: Option<OsdCommand>,
        #[command(flatten)]
        run: daemons::OsdRunArgs,
    },
    /// Objects of a pool: put, get, stat, rm, ls.
    Object {
        #[command(flatten)]
        cluster: admin::ClusterArgs,
        #[command(subcommand)]
        command: objects::ObjectCommand,
    },
    /// Start a local cluster (created on the first run): monitors and OSDs as child processes.
    Up(daemons::UpArgs),
    /// Serve S3 over the cluster (default 127.0.0.1:7480).
    Gateway(gateway::GatewayArgs),
    /// Serve the web dashboard: health, OSDs, pools, PGs, I/O and events, live; operator actions
    Dashboard(dashboard::DashboardArgs),
    /// Mount a bucket as a file system (FUSE); in the background unless --foreground.
    Mount(mount::MountArgs),
    /// Unmount a mounted bucket (its open files are flushed first).
    Umount(mount::UmountArgs),
    /// Measure object writes or reads on a pool, like `rados bench`.
    Bench(bench::BenchArgs),
    /// The failure-domain hierarchy: hosts, racks, zones.
    Bucket {
        #[command(flatten)]
        cluster: admin::ClusterArgs,
        #[command(subcommand)]
        command: admin::BucketChange,
    },
    /// Cluster-wide options.
    Config {
        #[command(flatten)]
        cluster: admin::ClusterArgs,
        #[command(subcommand)]
        command: admin::ConfigCommand,
    },
    /// Users of the S3 gateway and their keys.
    User {
        #[command(flatten)]
        cluster: admin::ClusterArgs,
        #[command(subcommand)]
        command: admin::UserCommand,
    },
    /// Remove the stripes of replaced and deleted objects that are due now (or all of them).
    Gc(gc::GcArgs),
    /// Lifecycle rules: each bucket's last pass, or a pass now.
    Lifecycle(lifecycle::LifecycleArgs),
    /// S3 storage classes and the data pool of each.
    StorageClass {
        #[command(flatten)]
        cluster: admin::ClusterArgs,
        #[command(subcommand)]
        command: classes::ClassCommand,
    },
    /// Pools: list, create, remove.
    Pool {
        #[command(flatten)]
        cluster: admin::ClusterArgs,
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Placement groups: list, scrub, deep-scrub and repair, and what the scrubs found.
    Pg {
        #[command(flatten)]
        cluster: admin::ClusterArgs,
        #[command(subcommand)]
        command: pgs::PgCommand,
    },
}

#[derive(Debug, Subcommand)]
enum MonCommand {
    /// Show every monitor, its address and its view.
    Dump(admin::ClusterArgs),
    /// Measure the commit latency of map changes.
    Bench(admin::MonBenchArgs),
}

#[derive(Debug, Subcommand)]
enum OsdCommand {
    /// Show the cluster map: pools and OSDs.
    Dump,
    /// The failure-domain hierarchy with each OSD's weight and state.
    Tree,
    /// Per OSD: size, use, PGs and utilisation variance.
    Df,
    /// Create, start and place a new OSD (`--dry-run`: what would move to it).
    Add(operate::AddArgs),
    /// Whether an OSD can be removed without losing data or redundancy.
    SafeToDestroy {
        /// The OSD id.
        id: u32,
    },
    /// A stopped OSD's store, looked at and changed by hand (like `ceph-objectstore-tool`).
    Store {
        /// The OSD's folder (its `--data`).
        dir: std::path::PathBuf,
        #[command(subcommand)]
        action: store_tool::StoreAction,
    },
    #[command(flatten)]
    Change(admin::OsdChange),
}

#[derive(Debug, Subcommand)]
enum PoolCommand {
    /// List pools.
    Ls,
    #[command(flatten)]
    Change(admin::PoolChange),
}

#[derive(Debug, Subcommand)]
enum PlacementCommand {
    /// Compute placement over a map (like `crushtool --test`) and what a change would move.
    Simulate(simulate::SimulateArgs),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Create a cluster folder: cluster id, cluster CA, and certificates for daemons and admin.
    Init(cluster::InitArgs),
    /// Write the folder one host of the cluster needs (monitor map, CA certificate, the
    /// certificates of its daemons) and make its OSDs in the map.
    Host(cluster::HostArgs),
}

/// How a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Plain,
    /// For programs.
    Json,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    logs::init();
    daemons::follow_supervisor();
    match Cli::parse().command {
        Command::Placement {
            command: PlacementCommand::Simulate(args),
        } => simulate::run(args),
        Command::Cluster {
            command: ClusterCommand::Init(args),
        } => cluster::init(args),
        Command::Cluster {
            command: ClusterCommand::Host(args),
        } => cluster::host(args),
        Command::Mon {
            command: Some(MonCommand::Dump(args)),
            ..
        } => admin::mon_dump(args),
        Command::Mon {
            command: Some(MonCommand::Bench(args)),
            ..
        } => admin::mon_bench(args),
        Command::Mon { command: None, run } => admin::mon(run),
        Command::Status(args) => health::status_command(args),
        Command::Watch {
            cluster,
            interval,
            count,
        } => health::watch_command(
            cluster,
            std::time::Duration::from_secs_f64(interval.max(0.1)),
            count,
        ),
        Command::Gateway(args) => gateway::gateway(args),
        Command::Dashboard(args) => dashboard::dashboard(args),
        Command::Mount(args) => mount::mount(args),
        Command::Umount(args) => mount::umount(args),
        Command::Osd {
            cluster,
            command: Some(OsdCommand::Dump),
            ..
        } => admin::osd_dump(cluster),
        Command::Osd {
            cluster,
            command: Some(OsdCommand::Change(change)),
            ..
        } => {
            let (command, dry_run, force) = change.into_command();
            operate::change(cluster, command, dry_run, force)
        }
        Command::Osd {
            cluster,
            command: Some(OsdCommand::Tree),
            ..
        } => health::tree_command(cluster),
        Command::Osd {
            cluster,
            command: Some(OsdCommand::Df),
            ..
        } => health::df_command(cluster),
        Command::Osd {
            cluster,
            command: Some(OsdCommand::Add(add)),
            ..
        } => operate::add(cluster, add),
        Command::Osd {
            cluster,
            command: Some(OsdCommand::SafeToDestroy { id }),
            ..
        } => operate::safe_to_destroy(cluster, id),
        Command::Osd {
            command: Some(OsdCommand::Store { dir, action }),
            ..
        } => store_tool::run(dir, action),
        Command::Osd {
            cluster,
            command: None,
            run,
        } => daemons::osd(cluster, run),
        Command::Object { cluster, command } => objects::run(cluster, command),
        Command::Up(args) => daemons::up(args),
        Command::Bench(args) => bench::run(args),
        Command::Pool {
            cluster,
            command: PoolCommand::Ls,
        } => admin::pool_ls(cluster),
        Command::Pool {
            cluster,
            command: PoolCommand::Change(change),
        } => admin::change(cluster, change.into()),
        Command::Bucket { cluster, command } => admin::change(cluster, command.into()),
        Command::Config { cluster, command } => admin::config(cluster, command),
        Command::User { cluster, command } => admin::user(cluster, command),
        Command::StorageClass { cluster, command } => classes::run(cluster, command),
        Command::Gc(args) => gc::run(args),
        Command::Lifecycle(args) => lifecycle::run(args),
        Command::Pg { cluster, command } => pgs::run(cluster, command),
    }
}
