//! `tidepool pg`: operations on placement groups: a scrub, deep scrub or repair now, of one PG
//! or of every PG of a pool, and what it found and repaired (docs/scrub.md).

use anyhow::{bail, Result};
use clap::Subcommand;
use tidepool_placement::PgId;
use tidepool_proto::scrub::{Problem, ScrubReport};

use crate::admin::{runtime, ClusterArgs};
use crate::OutputFormat;

/// What `tidepool pg` does.
#[derive(Debug, Subcommand)]
pub enum PgCommand {
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
            (Ok(pg), None) => match map.pools.get(&pg.pool) {
                Some(pool) if pg.seed < pool.pg_num => vec![pg],
                Some(pool) => bail!(
                    "pool {} has PGs 0 to {:x}, not {pg}",
                    pool.name,
                    pool.pg_num - 1
                ),
                None => bail!("there is no pool {} (tidepool pool ls)", pg.pool.0),
            },
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
        let what = match &found.problem {
            Problem::Missing => "missing".to_string(),
            Problem::Stray => "stray: the object does not exist".to_string(),
            Problem::ReadError(reason) => format!("read error: {reason}"),
            Problem::Differs(fields) => format!("differs in {fields:?}").to_lowercase(),
            Problem::Disagrees => "the holders disagree".to_string(),
        };
        text.push_str(&format!(
            "  {:?} on {}: {what}\n",
            found.object, found.holder
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
