//! `tidepool pg`: placement groups: their list with state, usage and scrub times (`pg ls`); a
//! scrub, deep scrub or repair now, of one PG or of every PG of a pool, and what it found and
//! repaired; what the last scrubs found and left (`pg list-inconsistent`). See docs/scrub.md.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde::Serialize;
use tidepool_placement::{ClusterMap, OsdId, PgId};
use tidepool_proto::scrub::{Inconsistency, Problem, ScrubRecord, ScrubReport};

use crate::admin::{runtime, ClusterArgs};
use crate::OutputFormat;

/// What `tidepool pg` does.
#[derive(Debug, Subcommand)]
pub enum PgCommand {
    /// Every PG with its state, objects, bytes, holders and last scrub times, as its primary
    /// last reported it.
    Ls {
        /// Only PGs whose state has this word (`inconsistent`, `degraded`, `scrubbing`, …).
        #[arg(long)]
        state: Option<String>,
        /// Only the PGs of this pool.
        #[arg(long)]
        pool: Option<String>,
    },
    /// What the last scrubs of a PG found and is not repaired: each object, the holder, and
    /// what is wrong with its copy.
    ListInconsistent {
        /// A PG id (`1.1f`).
        pgid: String,
    },
    /// Compare the objects and metadata of every holder of a PG now, and show what differs.
    Scrub {
        /// A PG id (`1.1f`), or a pool name for every PG of the pool.
        target: String,
    },
    /// Like `scrub`, and also read every byte through its checksums and compare the copies'
    /// digests.
    DeepScrub {
        /// A PG id (`1.1f`), or a pool name for every PG of the pool.
        target: String,
    },
    /// A deep scrub, then the repair of every inconsistency that has a provably good copy
    /// (a copy that fails its checksums, a missing, stray or diverged one).
    Repair {
        /// A PG id (`1.1f`), or a pool name for every PG of the pool.
        target: String,
    },
}

pub fn run(cluster: ClusterArgs, command: PgCommand) -> Result<()> {
    let (target, deep, repair) = match command {
        PgCommand::Ls { state, pool } => return list(cluster, state, pool),
        PgCommand::ListInconsistent { pgid } => return list_inconsistent(cluster, pgid),
        PgCommand::Scrub { target } => (target, false, false),
        PgCommand::DeepScrub { target } => (target, true, false),
        PgCommand::Repair { target } => (target, true, true),
    };
    runtime()?.block_on(async {
        let client = crate::objects::connect(&cluster).await?;
        let map = client.map().await;
        let pgs: Vec<PgId> = match (target.parse::<PgId>(), map.pool_by_name(&target)) {
            (_, Some(pool)) => (0..pool.pg_num)
                .map(|seed| PgId {
                    pool: pool.id,
                    seed,
                })
                .collect(),
            (Ok(pg), None) => vec![existing(&map, pg)?],
            (Err(reason), None) => bail!("{reason}, nor a pool (tidepool pool ls)"),
        };
        let mut reports = Vec::with_capacity(pgs.len());
        for pg in pgs {
            let report = client.scrub(pg, deep, repair).await?;
            if cluster.format() == OutputFormat::Plain {
                print!("{}", describe(&report));
            }
            reports.push(report);
        }
        if cluster.format() == OutputFormat::Json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        }
        anyhow::Ok(())
    })
}

/// `pg` when the map has it.
fn existing(map: &ClusterMap, pg: PgId) -> Result<PgId> {
    match map.pools.get(&pg.pool) {
        Some(pool) if pg.seed < pool.pg_num => Ok(pg),
        Some(pool) => bail!(
            "pool {} has PGs 0 to {:x}, not {pg}",
            pool.name,
            pool.pg_num - 1
        ),
        None => bail!("there is no pool {} (tidepool pool ls)", pg.pool.0),
    }
}

/// One line of `pg ls`.
#[derive(Debug, Serialize)]
struct PgLine {
    pgid: String,
    state: String,
    objects: u64,
    bytes: u64,
    degraded: u64,
    misplaced: u64,
    up: Vec<OsdId>,
    acting: Vec<OsdId>,
    /// Seconds since the Unix epoch (0: not reported).
    last_scrub: u64,
    last_deep_scrub: u64,
    scrub_errors: u64,
}

/// `tidepool pg ls`.
fn list(cluster: ClusterArgs, state: Option<String>, pool: Option<String>) -> Result<()> {
    let snapshot = runtime()?.block_on(crate::health::fetch(&cluster))?;
    let Some(map) = &snapshot.map else {
        bail!("no quorum of monitors answered");
    };
    let pool = match pool {
        Some(name) => match map.pool_by_name(&name) {
            Some(pool) => Some(pool.id),
            None => bail!("there is no pool {name:?} (tidepool pool ls)"),
        },
        None => None,
    };
    let reported: std::collections::BTreeMap<PgId, &tidepool_proto::mon::PgStat> =
        snapshot.report.pgs.iter().map(|s| (s.pg, s)).collect();
    let lines: Vec<PgLine> = tidepool_state::pg_states(map, &snapshot.report)
        .into_iter()
        .filter(|(pg, _)| pool.is_none_or(|p| pg.pool == p))
        .filter(|(_, s)| {
            state
                .as_deref()
                .is_none_or(|want| tidepool_state::state_has(s, want))
        })
        .map(|(pg, state)| {
            let stat = reported.get(&pg).filter(|s| s.state == state);
            let field = |f: fn(&tidepool_proto::mon::PgStat) -> u64| stat.map_or(0, |s| f(s));
            PgLine {
                pgid: pg.to_string(),
                objects: field(|s| s.objects),
                bytes: field(|s| s.bytes),
                degraded: field(|s| s.degraded),
                misplaced: field(|s| s.misplaced),
                up: stat.map(|s| s.up.clone()).unwrap_or_default(),
                acting: stat.map(|s| s.acting.clone()).unwrap_or_default(),
                last_scrub: field(|s| s.last_scrub),
                last_deep_scrub: field(|s| s.last_deep_scrub),
                scrub_errors: field(|s| s.scrub_errors),
                state,
            }
        })
        .collect();
    if cluster.format() == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    println!(
        "{:<8} {:>8} {:>9} {:>9} {:>10}  {:<28} {:<12} {:<12} {:<20} {:<20} {:>6}",
        "PG",
        "OBJECTS",
        "DEGRADED",
        "MISPLACED",
        "BYTES",
        "STATE",
        "UP",
        "ACTING",
        "SCRUB_STAMP",
        "DEEP_SCRUB_STAMP",
        "ERRORS"
    );
    let osds = |list: &[OsdId]| {
        let ids: Vec<String> = list.iter().map(|o| o.0.to_string()).collect();
        format!("[{}]", ids.join(","))
    };
    let stamp = |at: u64| {
        if at == 0 {
            "-".to_string()
        } else {
            tidepool_state::timestamp(at)
        }
    };
    for line in &lines {
        println!(
            "{:<8} {:>8} {:>9} {:>9} {:>10}  {:<28} {:<12} {:<12} {:<20} {:<20} {:>6}",
            line.pgid,
            line.objects,
            line.degraded,
            line.misplaced,
            tidepool_state::bytes(line.bytes),
            line.state,
            osds(&line.up),
            osds(&line.acting),
            stamp(line.last_scrub),
            stamp(line.last_deep_scrub),
            line.scrub_errors
        );
    }
    Ok(())
}

/// `tidepool pg list-inconsistent PGID`, as data.
#[derive(Debug, Serialize)]
struct InconsistentList {
    pgid: String,
    last_scrub: u64,
    last_deep_scrub: u64,
    inconsistencies: Vec<Inconsistency>,
    unrepairable: Vec<String>,
}

/// `tidepool pg list-inconsistent PGID`.
fn list_inconsistent(cluster: ClusterArgs, pgid: String) -> Result<()> {
    let pg: PgId = pgid.parse().map_err(anyhow::Error::msg)?;
    let record: ScrubRecord = runtime()?.block_on(async {
        let client = crate::objects::connect(&cluster).await?;
        existing(&client.map().await, pg)?;
        anyhow::Ok(client.scrub_record(pg).await?)
    })?;
    if cluster.format() == OutputFormat::Json {
        let list = InconsistentList {
            pgid: pg.to_string(),
            last_scrub: record.last_scrub,
            last_deep_scrub: record.last_deep_scrub,
            inconsistencies: record.inconsistencies,
            unrepairable: record.unrepairable,
        };
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let never = |at: u64| {
        if at == 0 {
            "never".to_string()
        } else {
            tidepool_state::timestamp(at)
        }
    };
    println!(
        "{pg}: last scrub {}, last deep scrub {}: {} inconsistent",
        never(record.last_scrub),
        never(record.last_deep_scrub),
        record.inconsistencies.len()
    );
    for found in &record.inconsistencies {
        println!(
            "  {:?} on {}: {}",
            found.object,
            found.holder,
            problem(&found.problem)
        );
    }
    for object in &record.unrepairable {
        println!("  {object:?}: no provably good copy");
    }
    Ok(())
}

/// What is wrong with a copy, in words.
fn problem(problem: &Problem) -> String {
    match problem {
        Problem::Missing => "missing".to_string(),
        Problem::Stray => "stray: the object does not exist".to_string(),
        Problem::ReadError(reason) => format!("read error: {reason}"),
        Problem::Differs(fields) => format!("differs in {fields:?}").to_lowercase(),
        Problem::Disagrees => "the holders disagree".to_string(),
        Problem::Parity => "the shards' parity does not agree".to_string(),
    }
}

/// A report in lines: the PG, then each inconsistency.
fn describe(report: &ScrubReport) -> String {
    let kind = if report.deep { "deep-scrub" } else { "scrub" };
    let found = match report.inconsistencies.len() {
        0 => "clean".to_string(),
        n => format!("{n} inconsistent"),
    };
    let holders: Vec<String> = report.holders.iter().map(|o| o.to_string()).collect();
    let mut text = format!(
        "{:<8} {kind:<10} {} objects on {}: {found}\n",
        report.pg.to_string(),
        report.objects,
        holders.join(", ")
    );
    for found in &report.inconsistencies {
        text.push_str(&format!(
            "  {:?} on {}: {}\n",
            found.object,
            found.holder,
            problem(&found.problem)
        ));
    }
    for object in &report.unrepairable {
        text.push_str(&format!("  {object:?}: no provably good copy\n"));
    }
    for (object, on) in &report.repaired {
        let on: Vec<String> = on.iter().map(|o| o.to_string()).collect();
        text.push_str(&format!("  {object:?}: repaired on {}\n", on.join(", ")));
    }
    text
}
