//! `tidepool placement simulate`: what placement does to a map, and what a change would move.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use tidepool_placement::analysis::{movement, pg_counts, Movement};
use tidepool_placement::generate::{add_osd, next, pool, Layout};
use tidepool_placement::{
    BucketType, Change, ClusterMap, OsdId, Placement, PoolId, PoolKind, Weight,
};

use crate::OutputFormat;

/// Flags of `tidepool placement simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Read the map from this file (JSON, or the binary map encoding) instead of generating one.
    #[arg(long, conflicts_with_all = ["hosts", "osds_per_host", "weight"])]
    map: Option<PathBuf>,
    /// Simulate this pool of the map file (default: a new pool from the flags below).
    #[arg(long, requires = "map")]
    pool: Option<String>,
    /// Hosts in a generated map (named host0, host1, ...).
    #[arg(long, default_value_t = 8)]
    hosts: u32,
    /// OSDs per host in a generated map (ids count from 0, host by host).
    #[arg(long, default_value_t = 4)]
    osds_per_host: u32,
    /// Weight of each generated OSD.
    #[arg(long, default_value = "1")]
    weight: Weight,
    /// Placement groups in the pool.
    #[arg(long, default_value_t = 1024)]
    pgs: u32,
    /// Copies per placement group (a replicated pool).
    #[arg(long, conflicts_with = "erasure")]
    replicas: Option<u8>,
    /// An erasure-coded pool with K data and M parity shards, written K+M.
    #[arg(long, value_parser = parse_erasure)]
    erasure: Option<(u8, u8)>,
    /// No two copies share a bucket of this type (osd, host, rack, zone).
    #[arg(long, default_value = "host")]
    failure_domain: BucketType,
    /// Change: add an OSD with WEIGHT to HOST (created when new). Repeatable.
    #[arg(long, value_name = "HOST:WEIGHT")]
    add_osd: Vec<String>,
    /// Change: mark this OSD out. Repeatable.
    #[arg(long, value_name = "OSD")]
    out: Vec<u32>,
    /// Change: set this OSD's weight. Repeatable.
    #[arg(long, value_name = "OSD:WEIGHT")]
    reweight: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Plain)]
    format: OutputFormat,
}

pub(crate) fn parse_erasure(text: &str) -> Result<(u8, u8), String> {
    let parse = |s: &str| s.trim().parse::<u8>().map_err(|e| format!("{s:?}: {e}"));
    let (k, m) = text
        .split_once('+')
        .ok_or_else(|| format!("{text:?} is not K+M, e.g. 4+2"))?;
    Ok((parse(k)?, parse(m)?))
}

/// PG counts of one map.
#[derive(Debug, Serialize)]
struct Distribution {
    pg_count_per_osd: BTreeMap<u32, u64>,
    mean: f64,
    stddev: f64,
    min: u64,
    max: u64,
}

impl Distribution {
    fn of(placement: &Placement, pool: PoolId) -> Distribution {
        let counts: BTreeMap<u32, u64> = pg_counts(placement, pool)
            .into_iter()
            .map(|(osd, n)| (osd.0, n))
            .collect();
        let n = counts.len().max(1) as f64;
        let mean = counts.values().sum::<u64>() as f64 / n;
        let variance = counts
            .values()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        Distribution {
            min: counts.values().copied().min().unwrap_or(0),
            max: counts.values().copied().max().unwrap_or(0),
            pg_count_per_osd: counts,
            mean,
            stddev: variance.sqrt(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Flow {
    from: Option<u32>,
    to: Option<u32>,
    replicas: u64,
}

/// The whole report, as printed with `--format json`.
#[derive(Debug, Serialize)]
struct Report {
    epoch: u64,
    pool: String,
    pgs: u32,
    kind: PoolKind,
    failure_domain: BucketType,
    #[serde(flatten)]
    before: Distribution,
    after: Option<Distribution>,
    moved_replicas: u64,
    ideal_moved_replicas: f64,
    moved_fraction_of_ideal: f64,
    pgs_changed: u64,
    flows: Vec<Flow>,
}

/// Runs the simulation and prints the report.
pub fn run(args: SimulateArgs) -> Result<()> {
    let (map, pool_id) = build(&args)?;
    let changes = changes(&args, &map)?;
    let before = Placement::new(&map);
    let pool = &map.pools[&pool_id];
    let mut report = Report {
        epoch: map.epoch.0,
        pool: pool.name.clone(),
        pgs: pool.pg_num,
        kind: pool.kind,
        failure_domain: pool.rule.failure_domain,
        before: Distribution::of(&before, pool_id),
        after: None,
        moved_replicas: 0,
        ideal_moved_replicas: 0.0,
        moved_fraction_of_ideal: 0.0,
        pgs_changed: 0,
        flows: Vec::new(),
    };
    // Host names come from the latest map, which knows OSDs the change added.
    let mut latest = map.clone();
    if !changes.is_empty() {
        let changed = map
            .apply(&next(&map, changes))
            .context("the change does not apply to the map")?;
        let after = Placement::new(&changed);
        let moved = movement(&before, &after, pool_id);
        report.ideal_moved_replicas = ideal_moved(&map, &changed, pool_id, &moved);
        report.moved_replicas = moved.moved;
        report.moved_fraction_of_ideal = if report.ideal_moved_replicas > 0.0 {
            moved.moved as f64 / report.ideal_moved_replicas
        } else {
            0.0
        };
        report.pgs_changed = moved.pgs_changed;
        let mut flows: Vec<Flow> = moved
            .flows
            .iter()
            .map(|(&(from, to), &replicas)| Flow {
                from: from.map(|o| o.0),
                to: to.map(|o| o.0),
                replicas,
            })
            .collect();
        flows.sort_by(|a, b| b.replicas.cmp(&a.replicas).then(a.from.cmp(&b.from)));
        report.flows = flows;
        report.after = Some(Distribution::of(&after, pool_id));
        report.epoch = changed.epoch.0;
        latest = changed;
    }
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Plain => print_plain(&report, &latest),
    }
    Ok(())
}

fn build(args: &SimulateArgs) -> Result<(ClusterMap, PoolId)> {
    let mut map = match &args.map {
        Some(path) => read_map(path)?,
        None => {
            if args.hosts == 0 || args.osds_per_host == 0 {
                bail!("--hosts and --osds-per-host must be at least 1");
            }
            Layout {
                hosts: args.hosts,
                osds_per_host: args.osds_per_host,
                weight: args.weight,
            }
            .build()
        }
    };
    if let Some(name) = &args.pool {
        let pool = map
            .pool_by_name(name)
            .with_context(|| format!("the map has no pool named {name:?}"))?;
        return Ok((map.clone(), pool.id));
    }
    let kind = match (args.replicas, args.erasure) {
        (_, Some((k, m))) => PoolKind::erasure(k, m),
        (replicas, None) => {
            let size = replicas.unwrap_or(3);
            PoolKind::Replicated {
                size,
                min_size: size.div_ceil(2).max(1),
            }
        }
    };
    let name = (0..)
        .map(|i| format!("simulated{i}"))
        .find(|n| map.pool_by_name(n).is_none())
        .unwrap_or_default();
    let pool = pool(&map, &name, kind, args.pgs, args.failure_domain)
        .context("the map has no root bucket named \"default\"; pass --pool")?;
    let id = pool.id;
    map = map
        .apply(&next(&map, vec![Change::CreatePool(pool)]))
        .context("invalid pool")?;
    Ok((map, id))
}

fn read_map(path: &PathBuf) -> Result<ClusterMap> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let map: ClusterMap = if bytes.first() == Some(&b'{') {
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?
    } else {
        tidepool_placement::encoding::decode(&bytes)
            .with_context(|| format!("decoding {}", path.display()))?
    };
    map.validate()
        .with_context(|| format!("{} is not a valid map", path.display()))?;
    Ok(map)
}

fn changes(args: &SimulateArgs, map: &ClusterMap) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    // Each added OSD must see the ones added before it to get a fresh id.
    let mut scratch_map = map.clone();
    for spec in &args.add_osd {
        let (host, weight) = spec
            .rsplit_once(':')
            .with_context(|| format!("--add-osd {spec:?} is not HOST:WEIGHT"))?;
        let weight: Weight = weight.parse()?;
        let (_, added) = add_osd(&scratch_map, host, weight);
        scratch_map = scratch_map
            .apply(&next(&scratch_map, added.clone()))
            .with_context(|| format!("--add-osd {spec:?}"))?;
        changes.extend(added);
    }
    for &osd in &args.out {
        changes.push(Change::SetOsdIn {
            id: OsdId(osd),
            is_in: false,
        });
    }
    for spec in &args.reweight {
        let (osd, weight) = spec
            .split_once(':')
            .with_context(|| format!("--reweight {spec:?} is not OSD:WEIGHT"))?;
        let osd: u32 = osd
            .trim_start_matches("osd.")
            .parse()
            .with_context(|| format!("--reweight {spec:?}: bad OSD id"))?;
        changes.push(Change::SetOsdWeight {
            id: OsdId(osd),
            weight: weight.parse()?,
        });
    }
    Ok(changes)
}

/// The least movement any placement could achieve: for each OSD, the growth of its
/// weight-proportional share of the pool's copies, summed.
fn ideal_moved(before: &ClusterMap, after: &ClusterMap, pool: PoolId, moved: &Movement) -> f64 {
    let shares = |map: &ClusterMap| -> BTreeMap<OsdId, f64> {
        let root = map.pools[&pool].rule.root;
        let eligible: Vec<_> = map
            .osds
            .values()
            .filter(|o| o.is_in && map.is_under(o.id, root))
            .collect();
        let total: f64 = eligible.iter().map(|o| f64::from(o.weight.raw())).sum();
        eligible
            .iter()
            .map(|o| (o.id, f64::from(o.weight.raw()) / total.max(1.0)))
            .collect()
    };
    let (old, new) = (shares(before), shares(after));
    let copies = moved.placed_after as f64;
    new.iter()
        .map(|(osd, share)| (share - old.get(osd).copied().unwrap_or(0.0)).max(0.0) * copies)
        .sum()
}

fn print_plain(report: &Report, map: &ClusterMap) {
    let host_of = |osd: u32| {
        map.osds
            .get(&OsdId(osd))
            .and_then(|o| map.buckets.get(&o.parent))
            .map_or("-".to_owned(), |b| b.name.clone())
    };
    println!(
        "pool {} ({}), {} placement groups, failure domain {}",
        report.pool, report.kind, report.pgs, report.failure_domain
    );
    let after = report.after.as_ref();
    println!(
        "{:>8}  {:<12} {:>8} {:>8}",
        "OSD",
        "HOST",
        "PGS",
        if after.is_some() { "AFTER" } else { "" }
    );
    let mut osds: Vec<u32> = report.before.pg_count_per_osd.keys().copied().collect();
    if let Some(after) = after {
        osds.extend(after.pg_count_per_osd.keys());
        osds.sort_unstable();
        osds.dedup();
    }
    for osd in osds {
        let before = report.before.pg_count_per_osd.get(&osd).copied();
        let show = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
        println!(
            "{:>8}  {:<12} {:>8} {:>8}",
            format!("osd.{osd}"),
            host_of(osd),
            show(before),
            after.map_or(String::new(), |a| show(
                a.pg_count_per_osd.get(&osd).copied()
            ))
        );
    }
    let spread = |d: &Distribution| {
        format!(
            "mean {:.1}, stddev {:.2} ({:.2} x sqrt(mean)), min {}, max {}",
            d.mean,
            d.stddev,
            d.stddev / d.mean.sqrt().max(f64::MIN_POSITIVE),
            d.min,
            d.max
        )
    };
    println!("spread: {}", spread(&report.before));
    if let Some(after) = after {
        println!("after:  {}", spread(after));
        println!(
            "moved {} copies in {} placement groups; ideal {:.1}; {:.3} x ideal",
            report.moved_replicas,
            report.pgs_changed,
            report.ideal_moved_replicas,
            report.moved_fraction_of_ideal
        );
        let osd = |o: Option<u32>| o.map_or("(none)".to_owned(), |o| format!("osd.{o}"));
        for flow in report.flows.iter().take(20) {
            println!(
                "  {:>8} -> {:<8} {}",
                osd(flow.from),
                osd(flow.to),
                flow.replicas
            );
        }
        if report.flows.len() > 20 {
            println!(
                "  ... {} more pairs (--format json lists all)",
                report.flows.len() - 20
            );
        }
    }
}
