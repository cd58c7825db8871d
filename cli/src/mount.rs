//! `tidepool mount BUCKET DIR` and `tidepool umount DIR`: a bucket as a file system (FUSE),
//! over the bucket layer (docs/mount.md). The mount runs in the background by default and
//! logs to a file; SIGTERM, or `tidepool umount`, flushes every open file and unmounts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use tidepool_buckets::{BucketError, Buckets, BucketsConfig};
use tidepool_fuse::attrs::Owner;
use tidepool_fuse::metrics::MountMetrics;
use tidepool_fuse::{Core, MountOptions, Mounting};

use crate::admin::{runtime, ClusterArgs};

/// Flags of `tidepool mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The bucket to mount.
    bucket: String,
    /// The empty directory to mount it on.
    dir: PathBuf,
    /// Stay in the foreground, logging to standard error.
    #[arg(long)]
    foreground: bool,
    /// Mount read-only.
    #[arg(long)]
    read_only: bool,
    /// Let other users use the mount (they are still checked against modes and owners).
    #[arg(long)]
    allow_other: bool,
    /// Owner of entries whose metadata names none (default: the user running the mount).
    #[arg(long)]
    uid: Option<u32>,
    /// Group of entries whose metadata names none (default: the user's group).
    #[arg(long)]
    gid: Option<u32>,
    /// Seconds the kernel may keep attributes and names before asking again.
    #[arg(long, default_value_t = 1.0)]
    attr_timeout: f64,
    /// The log file of a mount in the background (default: mount-BUCKET.log in the cluster
    /// folder).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Options as /etc/fstab gives them: ro, rw, allow_other, uid=N, gid=N,
    /// attr_timeout=S, foreground.
    #[arg(short = 'o', value_delimiter = ',')]
    options: Vec<String>,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
}

impl MountArgs {
    /// Folds the `-o` options into the flags.
    fn with_options(mut self) -> Result<MountArgs> {
        for option in std::mem::take(&mut self.options) {
            let (name, value) = option.split_once('=').unwrap_or((&option, ""));
            let number = |what: &str| -> Result<u32> {
                value
                    .parse()
                    .with_context(|| format!("{what} needs a number, not {value:?}"))
            };
            match name {
                "ro" => self.read_only = true,
                "rw" => self.read_only = false,
                "allow_other" => self.allow_other = true,
                "uid" => self.uid = Some(number("uid")?),
                "gid" => self.gid = Some(number("gid")?),
                "attr_timeout" => {
                    self.attr_timeout = value
                        .parse()
                        .with_context(|| format!("attr_timeout needs seconds, not {value:?}"))?
                }
                "foreground" => self.foreground = true,
                // What mount(8) passes on and means nothing here.
                "defaults" | "auto" | "noauto" | "user" | "nouser" | "_netdev" | "nofail" => {}
                other => bail!("unknown mount option {other:?}"),
            }
        }
        Ok(self)
    }
}

/// Runs `tidepool mount`.
pub fn mount(args: MountArgs) -> Result<()> {
    let args = args.with_options()?;
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    if !(0.0..=3600.0).contains(&args.attr_timeout) {
        bail!("--attr-timeout must be between 0 and 3600 seconds");
    }
    let dir = std::fs::canonicalize(&args.dir)?;
    if is_mounted(&dir)? {
        bail!("{} is already a mount point", dir.display());
    }
    if args.foreground {
        return serve(args, &dir);
    }
    let log = args.log.clone().unwrap_or_else(|| {
        args.cluster
            .dir()
            .join(format!("mount-{}.log", args.bucket))
    });
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening the log {}", log.display()))?;
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child
        .args(std::env::args_os().skip(1))
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // Its own process group: a closed terminal or Ctrl-C here does not reach it.
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    let mut child = child
        .spawn()
        .context("starting the mount in the background")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if is_mounted(&dir)? {
            println!(
                "mounted {} at {} (pid {}, log {})",
                args.bucket,
                dir.display(),
                child.id(),
                log.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("the mount stopped ({status}):\n{}", tail.join("\n"));
        }
        if Instant::now() > deadline {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&dir)
                .status();
            let _ = child.kill();
            bail!(
                "the mount did not appear within 60 s (log {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The mount itself, in this process.
fn serve(args: MountArgs, dir: &Path) -> Result<()> {
    crate::logs::name(format!("mount {}", args.bucket));
    let cluster = args.cluster.dir();
    let identity = args.cluster.identity()?;
    let owner = Owner {
        uid: args
            .uid
            .unwrap_or_else(|| rustix::process::getuid().as_raw()),
        gid: args
            .gid
            .unwrap_or_else(|| rustix::process::getgid().as_raw()),
    };
    runtime()?.block_on(async {
        let client = crate::objects::object_client(&cluster, &identity).await?;
        let mon = tidepool_client::MonClient::new(&cluster, &identity)?;
        let buckets = Buckets::new(Arc::new(client), BucketsConfig::default());
        let info = match buckets.lookup(&args.bucket, true).await {
            Ok(info) => info,
            Err(BucketError::NoSuchBucket) => bail!(
                "there is no bucket {:?} (make one with an S3 client first, e.g. aws s3 mb)",
                args.bucket
            ),
            Err(other) => return Err(other.into()),
        };
        let finished = buckets.finish_renames(&args.bucket).await?;
        if finished > 0 {
            tracing::info!(
                finished,
                "renames a crash interrupted were completed or undone"
            );
        }
        let options = MountOptions {
            bucket: args.bucket.clone(),
            owner,
            attr_timeout: Duration::from_secs_f64(args.attr_timeout),
            read_only: args.read_only,
        };
        let registry = tidepool_metrics::Registry::new();
        let metrics = Arc::new(MountMetrics::new(&registry)?);
        args.metrics
            .serve(&registry, &cluster, &format!("mount.{}", args.bucket))
            .await?;
        let core = Arc::new(Core::new(buckets, mon, info, options, metrics));
        let mounting = Mounting {
            allow_other: args.allow_other,
            read_only: args.read_only,
        };
        tidepool_fuse::serve(core, dir, mounting, crate::daemons::daemon_stopped())
            .await
            .with_context(|| format!("mounting {} at {}", args.bucket, dir.display()))
    })
}

/// Flags of `tidepool umount`.
#[derive(Debug, Args)]
pub struct UmountArgs {
    /// Taken as every command takes it; the mount point alone says which mount.
    #[command(flatten)]
    _cluster: ClusterArgs,
    /// The mount point.
    dir: PathBuf,
}

/// Runs `tidepool umount DIR`: the kernel lets go of the mount once nothing uses it, and the
/// mount process, having flushed every file at its close, ends.
pub fn umount(args: UmountArgs) -> Result<()> {
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("{} does not exist", args.dir.display()))?;
    if !is_mounted(&dir)? {
        bail!("{} is not a Tidepool mount", dir.display());
    }
    let unmounted = Command::new("fusermount3")
        .arg("-u")
        .arg(&dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        || Command::new("umount")
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !unmounted {
        bail!("{} could not be unmounted (is it in use?)", dir.display());
    }
    Ok(())
}

/// Whether `dir` is the mount point of a Tidepool mount: a FUSE file system (`fuse`, or
/// `fuse.tidepool` when mounted through fusermount) whose source is `tidepool:BUCKET`.
fn is_mounted(dir: &Path) -> Result<bool> {
    let table =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading the mount table")?;
    let dir = dir.to_string_lossy();
    Ok(table.lines().any(|line| {
        let point = line.split(' ').nth(4);
        let mut rest = line.split(" - ").nth(1).unwrap_or("").split(' ');
        let (fs_type, source) = (rest.next(), rest.next());
        point == Some(&*dir)
            && matches!(fs_type, Some("fuse" | "fuse.tidepool"))
            && source.is_some_and(|s| s.starts_with("tidepool:"))
    }))
}
