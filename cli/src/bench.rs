//! `tidepool bench POOL write|read|rand|cleanup`, like `rados bench`: concurrent whole-object
//! writes or reads for a number of seconds; throughput, operations per second and latency
//! percentiles. Each `write` creates new objects, named after its process
//! (`bench-<pid>-<n>`), and leaves them with `bench-meta` (their count, size and prefix) for
//! `read`, which reads each of them once, and `rand`, which reads them at random until the time
//! is up; `cleanup` removes every `bench-` object.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;
use tidepool_client::ObjectClient;
use tidepool_proto::osd::{ObjectOp, OpOutput};
use tidepool_proto::Payload;

use crate::admin::{runtime, ClusterArgs};
use crate::OutputFormat;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Write new objects.
    Write,
    /// Read each object the last `write` left once, in order.
    Read,
    /// Read the objects the last `write` left, at random, until the time is up.
    Rand,
    /// Remove every object a `write` left.
    Cleanup,
}

/// Flags of `tidepool bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The pool.
    pool: String,
    /// What to measure.
    mode: Mode,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Object size in bytes (write).
    #[arg(long, default_value_t = 4 << 20)]
    size: usize,
    /// Stop after this many operations, even before `--seconds` (to write a fixed data set).
    #[arg(long)]
    objects: Option<u64>,
}

/// The start of every object name `tidepool bench` writes.
const PREFIX: &str = "bench-";
const META: &str = "bench-meta";

/// What the last `write` left: `count` objects of `size` bytes named `<prefix><n>`.
struct Written {
    count: u64,
    size: u64,
    prefix: String,
}

impl Written {
    fn name(&self, n: u64) -> String {
        format!("{}{n}", self.prefix)
    }
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> Result<()> {
    runtime()?.block_on(async {
        let client = Arc::new(crate::objects::connect(&args.cluster).await?);
        match args.mode {
            Mode::Cleanup => cleanup(client, &args.pool, args.threads).await,
            mode => measure(client, &args, mode).await,
        }
    })
}

async fn written(client: &ObjectClient, pool: &str) -> Result<Written> {
    let (_, outputs) = client
        .execute(pool, META, vec![ObjectOp::Read { offset: 0, len: 64 }])
        .await
        .context("no objects to read: run `tidepool bench POOL write` first")?;
    let Some(OpOutput::Data(data)) = outputs.first() else {
        bail!("{META} holds no data");
    };
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split_whitespace();
    match (
        parts.next().map(str::parse),
        parts.next().map(str::parse),
        parts.next(),
    ) {
        (Some(Ok(count)), Some(Ok(size)), Some(prefix)) if prefix.starts_with(PREFIX) => {
            Ok(Written {
                count,
                size,
                prefix: prefix.to_owned(),
            })
        }
        _ => bail!("{META} is malformed: run `tidepool bench POOL write` again"),
    }
}

/// Removes every object a `write` left (all of them, like `rados cleanup`, not only the last
/// run's), `threads` at a time.
async fn cleanup(client: Arc<ObjectClient>, pool: &str, threads: usize) -> Result<()> {
    let names: Vec<String> = client
        .list(pool)
        .await?
        .into_iter()
        .filter(|name| name.starts_with(PREFIX))
        .collect();
    let removed = names.len();
    let names = Arc::new(names);
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (client, names, next, pool) =
                (client.clone(), names.clone(), next.clone(), pool.to_owned());
            tokio::spawn(async move {
                while let Some(name) = names.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                    client.execute(&pool, name, vec![ObjectOp::Remove]).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    println!("removed {removed} objects");
    Ok(())
}

async fn measure(client: Arc<ObjectClient>, args: &BenchArgs, mode: Mode) -> Result<()> {
    let written = Arc::new(match mode {
        // New names for every run, as `rados bench` names its objects after its process: a
        // write creates objects, it does not overwrite the last run's.
        Mode::Write => Written {
            count: 0,
            size: args.size as u64,
            prefix: format!("{PREFIX}{}-", std::process::id()),
        },
        _ => written(&client, &args.pool).await?,
    });
    if mode != Mode::Write && written.count == 0 {
        bail!("no objects to read: run `tidepool bench POOL write` first");
    }
    // A write stops at `--objects`, a sequential read once it has read every object once.
    let limit = match mode {
        Mode::Write => args.objects.unwrap_or(u64::MAX),
        Mode::Read => written.count,
        Mode::Rand | Mode::Cleanup => u64::MAX,
    };
    // One buffer shared by every write, as a client writing from its own memory would.
    let data = Payload::from(
        (0..args.size)
            .map(|i| (i as u8).wrapping_mul(167))
            .collect::<Vec<u8>>(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.threads)
        .map(|worker| {
            let (client, next, data, pool, written) = (
                client.clone(),
                next.clone(),
                data.clone(),
                args.pool.clone(),
                written.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut bytes = 0u64;
                let mut random = (worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= limit {
                        break;
                    }
                    let op_started = Instant::now();
                    let result = match mode {
                        Mode::Write => client
                            .execute(
                                &pool,
                                &written.name(n),
                                vec![ObjectOp::WriteFull(data.clone())],
                            )
                            .await
                            .map(|_| data.len() as u64),
                        _ => {
                            let index = if mode == Mode::Rand {
                                random ^= random << 13;
                                random ^= random >> 7;
                                random ^= random << 17;
                                random % written.count
                            } else {
                                n
                            };
                            client
                                .execute(
                                    &pool,
                                    &written.name(index),
                                    vec![ObjectOp::Read {
                                        offset: 0,
                                        len: u64::MAX,
                                    }],
                                )
                                .await
                                .map(|(_, outputs)| match outputs.first() {
                                    Some(OpOutput::Data(d)) => d.len() as u64,
                                    _ => 0,
                                })
                        }
                    };
                    let got = result?;
                    latencies.push(op_started.elapsed());
                    bytes += got;
                }
                anyhow::Ok((latencies, bytes))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut bytes = 0;
    for worker in workers {
        let (mut l, b) = worker.await??;
        latencies.append(&mut l);
        bytes += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if mode == Mode::Write {
        let made = latencies.len() as u64;
        // The highest numbers handed out may not all have been written: keep the prefix that was.
        let count = made.min(next.load(Ordering::Relaxed));
        let meta = format!("{count} {} {}", written.size, written.prefix);
        client
            .execute(
                &args.pool,
                META,
                vec![ObjectOp::WriteFull(meta.into_bytes().into())],
            )
            .await?;
    }
    latencies.sort();
    let ops = latencies.len();
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        latencies[((ops - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
    };
    let mib_s = bytes as f64 / elapsed / f64::from(1 << 20);
    let iops = ops as f64 / elapsed;
    let label = match mode {
        Mode::Write => "writes",
        _ => "reads",
    };
    match args.cluster.format() {
        OutputFormat::Json => println!(
            "{}",
            json!({
                "mode": format!("{mode:?}").to_lowercase(),
                "seconds": elapsed,
                "threads": args.threads,
                "object_size": written.size,
                "operations": ops,
                "bytes": bytes,
                "mib_per_second": mib_s,
                "ops_per_second": iops,
                "latency_ms": { "p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": at(1.0) },
            })
        ),
        OutputFormat::Plain => {
            println!("total time run:      {elapsed:.2} s");
            println!(
                "total {label}:        {ops} of {} bytes, {} threads",
                written.size, args.threads
            );
            println!("bandwidth:           {mib_s:.2} MiB/s");
            println!("operations:          {iops:.1} per second");
            println!(
                "latency (ms):        p50 {:.2}, p95 {:.2}, p99 {:.2}, max {:.2}",
                at(0.5),
                at(0.95),
                at(0.99),
                at(1.0)
            );
        }
    }
    Ok(())
}
