//! Seeing the cluster from the CLI: `tidepool status` (in the shape of `ceph -s`), `tidepool
//! watch`, `tidepool osd tree` and `tidepool osd df`. What they show is computed by
//! `tidepool-state` from a [`Snapshot`]; here a snapshot is gathered and the answers printed.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tidepool_state::{
    df, events, render_df, render_status, render_tree, status, time_of_day, tree, Restart, Snapshot,
};

use crate::admin::{runtime, ClusterArgs};
use crate::OutputFormat;

/// `logs/restarts.jsonl` in a cluster folder: one [`Restart`] per line, written by `tidepool up`.
pub const RESTARTS: &str = "logs/restarts.jsonl";

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The restarts of the last hour in the cluster folder `dir`.
fn recent_restarts(dir: &std::path::Path) -> Vec<Restart> {
    let since = unix_now().saturating_sub(3600);
    std::fs::read_to_string(dir.join(RESTARTS))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Restart>(line).ok())
        .filter(|r| r.at >= since)
        .collect()
}

/// What the monitors say now.
pub async fn fetch(args: &ClusterArgs) -> Result<Snapshot> {
    let mut client = args.client()?;
    Ok(fetch_with(&mut client, &args.dir()).await)
}

/// What the monitors say now, asked through `client` (kept by a caller that asks often), with
/// what the cluster folder `dir` records.
pub async fn fetch_with(
    client: &mut tidepool_client::MonClient,
    dir: &std::path::Path,
) -> Snapshot {
    let mons = client.statuses().await;
    let quorum = mons.iter().flatten().count() > mons.len() / 2;
    let map = if quorum {
        client.map().await.ok()
    } else {
        None
    };
    let (report, config) = if map.is_some() {
        (
            client.report().await.unwrap_or_default(),
            client.config().await.unwrap_or_default(),
        )
    } else {
        Default::default()
    };
    Snapshot {
        id: crate::cluster::load_cluster_id(dir).unwrap_or_default(),
        mons,
        map,
        report,
        restarts: recent_restarts(dir),
        config,
        at: unix_now(),
        metrics: crate::metrics::endpoints(dir),
    }
}

fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `tidepool status`.
pub fn status_command(args: ClusterArgs) -> Result<()> {
    let snapshot = runtime()?.block_on(fetch(&args))?;
    let status = status(&snapshot);
    match args.format() {
        OutputFormat::Json => print_json(&status),
        OutputFormat::Plain => {
            print!("{}", render_status(&status));
            Ok(())
        }
    }
}

/// `tidepool osd df`.
pub fn df_command(args: ClusterArgs) -> Result<()> {
    let snapshot = runtime()?.block_on(fetch(&args))?;
    let df = df(&snapshot);
    match args.format() {
        OutputFormat::Json => print_json(&df),
        OutputFormat::Plain => {
            print!("{}", render_df(&df));
            Ok(())
        }
    }
}

/// `tidepool osd tree`.
pub fn tree_command(args: ClusterArgs) -> Result<()> {
    let map = runtime()?.block_on(async { anyhow::Ok(args.client()?.map().await?) })?;
    let nodes = tree(&map);
    match args.format() {
        OutputFormat::Json => print_json(&serde_json::json!({ "nodes": nodes })),
        OutputFormat::Plain => {
            print!("{}", render_tree(&nodes));
            Ok(())
        }
    }
}

/// `tidepool watch`: the status, redrawn in place every `interval`, with a line per event;
/// with `--format json`, one JSON object per line and interval. Stops on Ctrl-C, or after
/// `count` redraws.
pub fn watch_command(args: ClusterArgs, interval: Duration, count: Option<u64>) -> Result<()> {
    runtime()?.block_on(async {
        let mut previous: Option<Snapshot> = None;
        let mut log: Vec<String> = Vec::new();
        let mut drawn = 0u64;
        let mut client = args.client()?;
        let dir = args.dir();
        loop {
            let snapshot = fetch_with(&mut client, &dir).await;
            let now = chrono_like_now();
            let new_events: Vec<String> = previous
                .as_ref()
                .map(|p| events(p, &snapshot))
                .unwrap_or_default()
                .into_iter()
                .map(|e| format!("{now} {e}"))
                .collect();
            let current = status(&snapshot);
            match args.format() {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string(&serde_json::json!({
                        "time": now,
                        "status": current,
                        "events": new_events,
                    }))?
                ),
                OutputFormat::Plain => {
                    log.extend(new_events);
                    let keep = log.len().saturating_sub(12);
                    log.drain(..keep);
                    // Home, clear the screen, then draw.
                    print!("\x1b[H\x1b[2J{}", render_status(&current));
                    if !log.is_empty() {
                        println!();
                        println!("  events:");
                        for line in &log {
                            println!("    {line}");
                        }
                    }
                }
            }
            previous = Some(snapshot);
            drawn += 1;
            if count.is_some_and(|c| drawn >= c) {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = crate::daemons::signalled() => return Ok(()),
            }
        }
    })
}

/// The wall-clock time of day in UTC, `HH:MM:SS`.
fn chrono_like_now() -> String {
    time_of_day(unix_now())
}
