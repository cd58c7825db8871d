//! `tidepool bench POOL write|read|rand|cleanup`, like `rados bench`: concurrent whole-object
//! writes or reads for a number of seconds; throughput, operations per second and latency
//! percentiles. `write` leaves its objects (`bench-<n>`, and `bench-meta` with their count and
//! size) for `read` and `rand`; `cleanup` removes them.

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
    /// Read the objects `write` left, in order.
    Read,
    /// Read the objects `write` left, at random.
    Rand,
    /// Remove the objects `write` left.
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

const META: &str = "bench-meta";

fn object_name(n: u64) -> String {
    format!("bench-{n}")
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> Result<()> {
    runtime()?.block_on(async {
        let client = Arc::new(crate::objects::connect(&args.cluster).await?);
        match args.mode {
            Mode::Cleanup => cleanup(&client, &args.pool).await,
            mode => measure(client, &args, mode).await,
        }
    })
}

async fn written(client: &ObjectClient, pool: &str) -> Result<(u64, u64)> {
    let (_, outputs) = client
        .execute(pool, META, vec![ObjectOp::Read { offset: 0, len: 64 }])
        .await
        .context("no objects to read: run `tidepool bench POOL write` first")?;
    let Some(OpOutput::Data(data)) = outputs.first() else {
        bail!("{META} holds no data");
    };
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(count)), Some(Ok(size))) => Ok((count, size)),
        _ => bail!("{META} is malformed"),
    }
}

async fn cleanup(client: &ObjectClient, pool: &str) -> Result<()> {
    let (count, _) = written(client, pool).await?;
    for n in 0..count {
        let _ = client
            .execute(pool, &object_name(n), vec![ObjectOp::Remove])
            .await;
    }
    client.execute(pool, META, vec![ObjectOp::Remove]).await?;
    println!("removed {count} objects");
    Ok(())
}

async fn measure(client: Arc<ObjectClient>, args: &BenchArgs, mode: Mode) -> Result<()> {
    let (count, size) = match mode {
        Mode::Write => (0, args.size as u64),
        _ => written(&client, &args.pool).await?,
    };
    if mode != Mode::Write && count == 0 {
        bail!("no objects to read: run `tidepool bench POOL write` first");
    }
    // One buffer shared by every write, as a client writing from its own memory would.
    let data = Payload::from(
        (0..args.size)
            .map(|i| (i as u8).wrapping_mul(167))
            .collect::<Vec<u8>>(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let limit = args.objects.unwrap_or(u64::MAX);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.threads)
        .map(|worker| {
            let (client, next, data, pool) = (
                client.clone(),
                next.clone(),
                data.clone(),
                args.pool.clone(),
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
                                &object_name(n),
                                vec![ObjectOp::WriteFull(data.clone())],
                            )
                            .await
                            .map(|_| data.len() as u64),
                        _ => {
                            let index = if mode == Mode::Rand {
                                random ^= random << 13;
                                random ^= random >> 7;
                                random ^= random << 17;
                                random % count
                            } else {
                                n % count
                            };
                            client
                                .execute(
                                    &pool,
                                    &object_name(index),
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
        let written = made.min(next.load(Ordering::Relaxed));
        client
            .execute(
                &args.pool,
                META,
                vec![ObjectOp::WriteFull(
                    format!("{written} {size}").into_bytes().into(),
                )],
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
                "object_size": size,
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
                "total {label}:        {ops} of {size} bytes, {} threads",
                args.threads
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
