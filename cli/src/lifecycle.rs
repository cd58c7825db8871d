//! `tidepool lifecycle`: the buckets' lifecycle passes: `status` shows each bucket's last
//! pass (the gateways run one every `--lifecycle-interval`), `process` runs one now, like
//! `radosgw-admin lc list` and `lc process`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use tidepool_buckets::{Buckets, BucketsConfig, LifecycleProgress};

use crate::admin::{runtime, ClusterArgs};
use crate::OutputFormat;

/// What `tidepool lifecycle` takes.
#[derive(Debug, Args)]
pub struct LifecycleArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(subcommand)]
    command: LifecycleCommand,
}

#[derive(Debug, Subcommand)]
enum LifecycleCommand {
    /// Each bucket's last lifecycle pass: when, and what it did.
    Status,
    /// Apply every bucket's lifecycle rules now.
    Process {
        /// Seconds a rule's day lasts (shorter only to try rules out).
        #[arg(long, default_value_t = 86_400)]
        day: u64,
    },
}

fn describe(p: &LifecycleProgress) -> String {
    format!(
        "examined {}, expired {}, older versions removed {}, delete markers removed {}, uploads aborted {}, kept by object lock {}",
        p.examined, p.expired, p.noncurrent_removed, p.markers_removed, p.uploads_aborted, p.locked
    )
}

fn state(p: &LifecycleProgress) -> String {
    let ago = tidepool_buckets::now_ms().saturating_sub(p.started_ms) / 1000;
    match (&p.error, p.finished_ms) {
        (Some(error), _) => format!("began {ago} s ago, stopped: {error}"),
        (None, Some(end)) => format!(
            "began {ago} s ago, done in {:.1} s",
            end.saturating_sub(p.started_ms) as f64 / 1000.0
        ),
        (None, None) => format!("began {ago} s ago, under way"),
    }
}

fn json<T: serde::Serialize>(rows: impl Iterator<Item = (String, T)>) -> serde_json::Value {
    serde_json::Value::Object(
        rows.map(|(bucket, row)| (bucket, serde_json::to_value(row).unwrap_or_default()))
            .collect(),
    )
}
pub fn run(args: LifecycleArgs) -> Result<()> {
    runtime()?.block_on(async {
        let client = crate::objects::connect(&args.cluster).await?;
        let day = match args.command {
            LifecycleCommand::Process { day } => Some(day),
            LifecycleCommand::Status => None,
        };
        let buckets = Buckets::new(
            Arc::new(client),
            BucketsConfig {
                lifecycle_day: Duration::from_secs(day.unwrap_or(86_400).max(1)),
                ..BucketsConfig::default()
            },
        );
        let format = args.cluster.format();
        if day.is_some() {
            let passes = buckets.run_lifecycle().await?;
            match format {
                OutputFormat::Json => println!("{}", json(passes.into_iter())),
                OutputFormat::Plain => {
                    if passes.is_empty() {
                        println!("no bucket has enabled lifecycle rules");
                    }
                    for (bucket, pass) in passes {
                        println!("{bucket}: {}; {}", state(&pass), describe(&pass));
                    }
                }
            }
        } else {
            let status = buckets.lifecycle_status().await?;
            match format {
                OutputFormat::Json => println!("{}", json(status.into_iter())),
                OutputFormat::Plain => {
                    if status.is_empty() {
                        println!("no lifecycle pass has run yet");
                    }
                    for (bucket, s) in status {
                        println!(
                            "{bucket}: last pass {}; {}",
                            state(&s.last),
                            describe(&s.last)
                        );
                        let passes = if s.passes == 1 { "pass" } else { "passes" };
                        println!("  {} {passes} in all: {}", s.passes, describe(&s.totals));
                    }
                }
            }
        }
        anyhow::Ok(())
    })
}
