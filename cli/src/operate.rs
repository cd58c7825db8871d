//! Operator commands that move data: `osd add`, `osd out|in|reweight|rm` (each with
//! `--dry-run`, which prints what would move before anything does) and
//! `osd safe-to-destroy`. A preview applies the command to a copy of the map with the
//! monitors' own state machine, then compares where each PG lives now (acting) with where
//! placement will put it (up).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Serialize;
use tidepool_monitor::service::{proposal, MapState};
use tidepool_placement::{ClusterMap, OsdId, PgId, Placement, Scratch, Weight};
use tidepool_proto::mon::{Command, Report, Request};

use crate::admin::{runtime, ClusterArgs};
use crate::OutputFormat;
use tidepool_state::{is_active_clean, pg_states, Snapshot};

/// `map` after `commands`, as the monitors would make it; refused commands are errors.
pub fn preview(map: &ClusterMap, commands: &[Command]) -> Result<ClusterMap> {
    let mut state = MapState::genesis();
    state.map = map.clone();
    for (n, command) in commands.iter().enumerate() {
        let request = Request {
            client: "preview".into(),
            sequence: n as u64 + 1,
            command: command.clone(),
        };
        let (_, answers) = state.apply_slot(&[proposal(&request)]);
        if let Some(Err(refused)) = answers.into_iter().next() {
            bail!("refused: {refused}");
        }
    }
    Ok(state.map)
}

/// A new OSD as the map will have it once it boots: the map after creating and booting it.
pub fn preview_add(map: &ClusterMap, host: &str, weight: Weight) -> Result<(OsdId, ClusterMap)> {
    let created = preview(
        map,
        &[Command::OsdCreate {
            host: host.into(),
            weight,
        }],
    )?;
    let id = created
        .osds
        .keys()
        .find(|id| !map.osds.contains_key(id))
        .copied()
        .context("the preview created no OSD")?;
    let booted = preview(
        &created,
        &[Command::OsdBoot {
            id,
            addr: "127.0.0.1:0".into(),
        }],
    )?;
    Ok((id, booted))
}

/// One PG that would move.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PgMove {
    pub pg: String,
    /// Where it is served now.
    pub from: Vec<u32>,
    /// Where it will be.
    pub to: Vec<u32>,
    /// Bytes to copy (one copy's bytes per new holder).
    pub bytes: u64,
}

/// Copies and bytes leaving or reaching one OSD.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Flow {
    pub copies: u64,
    pub bytes: u64,
}

/// What a change would move.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Movement {
    pub pgs_total: usize,
    pub pgs_moving: usize,
    pub copies: u64,
    pub bytes: u64,
    pub from: BTreeMap<String, Flow>,
    pub to: BTreeMap<String, Flow>,
    pub moves: Vec<PgMove>,
}

/// The PG copies that move from `before` (where PGs are served) to `after` (where placement
/// puts them), with bytes from the PGs' reports.
pub fn movement(before: &ClusterMap, after: &ClusterMap, report: &Report) -> Movement {
    let bytes_of: BTreeMap<PgId, u64> = report.pgs.iter().map(|s| (s.pg, s.bytes)).collect();
    let (old, new) = (Placement::new(before), Placement::new(after));
    let mut scratch = Scratch::default();
    let mut result = Movement {
        pgs_total: 0,
        pgs_moving: 0,
        copies: 0,
        bytes: 0,
        from: BTreeMap::new(),
        to: BTreeMap::new(),
        moves: Vec::new(),
    };
    for pool in after.pools.values() {
        for seed in 0..pool.pg_num {
            let pg = PgId {
                pool: pool.id,
                seed,
            };
            result.pgs_total += 1;
            let now: Vec<OsdId> = old
                .map_pg(pg, &mut scratch)
                .map(|m| m.acting.into_iter().flatten().collect())
                .unwrap_or_default();
            let then: Vec<OsdId> = new
                .map_pg(pg, &mut scratch)
                .map(|m| m.up.into_iter().flatten().collect())
                .unwrap_or_default();
            let arriving: Vec<OsdId> = then.iter().filter(|o| !now.contains(o)).copied().collect();
            if arriving.is_empty() {
                continue;
            }
            let leaving: Vec<OsdId> = now.iter().filter(|o| !then.contains(o)).copied().collect();
            // A copy of a replicated PG holds its bytes; a shard of an erasure PG 1/k of them.
            let shards = pool.kind.rebuild_from() as u64;
            let per_copy = bytes_of.get(&pg).copied().unwrap_or(0) / shards;
            for osd in &arriving {
                let flow = result.to.entry(osd.to_string()).or_default();
                flow.copies += 1;
                flow.bytes += per_copy;
            }
            for osd in &leaving {
                let flow = result.from.entry(osd.to_string()).or_default();
                flow.copies += 1;
                flow.bytes += per_copy;
            }
            result.pgs_moving += 1;
            result.copies += arriving.len() as u64;
            result.bytes += per_copy * arriving.len() as u64;
            result.moves.push(PgMove {
                pg: pg.to_string(),
                from: now.iter().map(|o| o.0).collect(),
                to: then.iter().map(|o| o.0).collect(),
                bytes: per_copy * arriving.len() as u64,
            });
        }
    }
    result
}

/// A movement as text.
pub fn render_movement(m: &Movement) -> String {
    use tidepool_state::bytes;
    let mut out = String::new();
    if m.pgs_moving == 0 {
        let _ = writeln!(
            out,
            "nothing would move ({} PGs stay where they are)",
            m.pgs_total
        );
        return out;
    }
    let _ = writeln!(
        out,
        "would move {} of {} PGs: {} PG copies, {}",
        m.pgs_moving,
        m.pgs_total,
        m.copies,
        bytes(m.bytes)
    );
    for (osd, flow) in &m.from {
        let _ = writeln!(
            out,
            "  from {osd}: {} copies, {}",
            flow.copies,
            bytes(flow.bytes)
        );
    }
    for (osd, flow) in &m.to {
        let _ = writeln!(
            out,
            "  to   {osd}: {} copies, {}",
            flow.copies,
            bytes(flow.bytes)
        );
    }
    for mv in &m.moves {
        let _ = writeln!(
            out,
            "  {:<7} {:?} -> {:?}  {}",
            mv.pg,
            mv.from,
            mv.to,
            bytes(mv.bytes)
        );
    }
    out
}

fn print_movement(args: &ClusterArgs, movement: &Movement) -> Result<()> {
    match args.format() {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(movement)?),
        OutputFormat::Plain => {
            print!("{}", render_movement(movement));
            println!("nothing was changed (--dry-run)");
        }
    }
    Ok(())
}

/// Why `osd` cannot be destroyed yet (empty: it can).
pub fn destroy_blockers(snapshot: &Snapshot, osd: OsdId) -> Vec<String> {
    let Some(map) = &snapshot.map else {
        return vec!["the monitors have no quorum".into()];
    };
    let Some(entry) = map.osds.get(&osd) else {
        return vec![format!("{osd} does not exist")];
    };
    let mut blockers = Vec::new();
    let placement = Placement::new(map);
    let mut scratch = Scratch::default();
    let mut placed = 0;
    for pool in map.pools.values() {
        for seed in 0..pool.pg_num {
            if let Some(m) = placement.map_pg(
                PgId {
                    pool: pool.id,
                    seed,
                },
                &mut scratch,
            ) {
                if m.up.contains(&Some(osd)) || m.acting.contains(&Some(osd)) {
                    placed += 1;
                }
            }
        }
    }
    if placed > 0 {
        blockers.push(format!(
            "{placed} PGs are still placed on {osd} (mark it out and wait for active+clean)"
        ));
    }
    let held = snapshot
        .report
        .osds
        .iter()
        .find(|(id, _)| *id == osd)
        .map_or(0, |(_, s)| s.pgs);
    if entry.up {
        if held > 0 {
            blockers.push(format!(
                "{osd} still holds {held} PG copies (they go once their PGs are clean elsewhere)"
            ));
        }
    } else {
        // What a down OSD holds is unknown: every PG must be whole elsewhere.
        let unclean = pg_states(map, &snapshot.report)
            .values()
            .filter(|s| !is_active_clean(s))
            .count();
        if unclean > 0 {
            blockers.push(format!(
                "{unclean} PGs are not active+clean, and {osd} is down so its copies cannot be checked"
            ));
        }
    }
    blockers
}

/// `tidepool osd safe-to-destroy ID`: exits with an error when it is not.
pub fn safe_to_destroy(args: ClusterArgs, id: u32) -> Result<()> {
    let snapshot = runtime()?.block_on(crate::health::fetch(&args))?;
    let osd = OsdId(id);
    let blockers = destroy_blockers(&snapshot, osd);
    match args.format() {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({ "osd": id, "safe_to_destroy": blockers.is_empty(), "reasons": blockers })
        ),
        OutputFormat::Plain if blockers.is_empty() => {
            println!("{osd} is safe to destroy without reducing data durability")
        }
        OutputFormat::Plain => {
            println!("{osd} is not safe to destroy:");
            for reason in &blockers {
                println!("  {reason}");
            }
        }
    }
    if blockers.is_empty() {
        Ok(())
    } else {
        bail!("{osd} is not safe to destroy")
    }
}

/// A change to an OSD, previewed with `dry_run`, otherwise sent; `osd rm` is checked first
/// unless forced.
pub fn change(args: ClusterArgs, command: Command, dry_run: bool, force: bool) -> Result<()> {
    let snapshot = runtime()?.block_on(crate::health::fetch(&args))?;
    let map = snapshot
        .map
        .as_ref()
        .ok_or_else(|| anyhow!("the monitors have no quorum"))?;
    if dry_run {
        let after = preview(map, std::slice::from_ref(&command))?;
        return print_movement(&args, &movement(map, &after, &snapshot.report));
    }
    if let Command::OsdRemove { id } = &command {
        let blockers = destroy_blockers(&snapshot, *id);
        if !blockers.is_empty() && !force {
            bail!(
                "refusing to remove {id}: {} (--force removes it anyway)",
                blockers.join("; ")
            );
        }
    }
    crate::admin::change(args, command)
}

/// Flags of `tidepool osd add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The new OSD's folder (created; its store, id and log live there).
    #[arg(long)]
    data: PathBuf,
    /// The host bucket it goes into.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Its weight.
    #[arg(long, default_value = "1")]
    weight: Weight,
    /// Its size (`64GiB`, `500M`; default: the size of the disk it is on).
    #[arg(long, value_parser = crate::daemons::parse_size)]
    size: Option<u64>,
    /// Print what would move, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `tidepool osd add`: creates the OSD, starts its daemon in the background (its pid in
/// `DATA/osd.pid`, its log in `DATA/osd.log`) and waits until the map has it up.
pub fn add(args: ClusterArgs, add: AddArgs) -> Result<()> {
    let snapshot = runtime()?.block_on(crate::health::fetch(&args))?;
    let map = snapshot
        .map
        .as_ref()
        .ok_or_else(|| anyhow!("the monitors have no quorum"))?;
    if add.dry_run {
        let (id, after) = preview_add(map, &add.host, add.weight)?;
        if args.format() == OutputFormat::Plain {
            println!(
                "a new OSD would be {id} in host {} with weight {}",
                add.host, add.weight
            );
        }
        return print_movement(&args, &movement(map, &after, &snapshot.report));
    }
    if add.data.join("osd.json").exists() {
        bail!(
            "{} already holds an OSD; start it with `tidepool osd --data {}`",
            add.data.display(),
            add.data.display()
        );
    }
    std::fs::create_dir_all(&add.data)
        .with_context(|| format!("creating {}", add.data.display()))?;
    // `tidepool up` starts it with the cluster from now on, and stops it with the cluster.
    crate::daemons::register_added_osd(&args.dir(), &add.data)?;
    let log_path = add.data.join("osd.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let cluster_dir = args.dir();
    let child = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(std::env::current_exe()?)
            .arg("osd")
            .arg("--data")
            .arg(&add.data)
            .arg("--cluster")
            .arg(&cluster_dir)
            .arg("--host")
            .arg(&add.host)
            .arg("--weight")
            .arg(add.weight.to_string())
            .args(add.size.map(|size| format!("--size={size}")))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: it outlives this command and the terminal's Ctrl-C.
            .process_group(0)
            .spawn()
            .context("starting the OSD daemon")?
    };
    let pid = child.id();
    std::fs::write(add.data.join("osd.pid"), format!("{pid}\n"))?;
    let id_file = add.data.join("osd.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        if let Ok(bytes) = std::fs::read(&id_file) {
            let file: serde_json::Value = serde_json::from_slice(&bytes)?;
            if let Some(id) = file["id"].as_u64() {
                break OsdId(id as u32);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the OSD did not create itself within 60 s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    runtime()?.block_on(async {
        let mut client = args.client()?;
        loop {
            if client.map().await?.osds.get(&id).is_some_and(|o| o.up) {
                return anyhow::Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{id} did not come up within 60 s; see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })?;
    match args.format() {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({ "osd": id.0, "pid": pid, "data": add.data, "log": log_path })
        ),
        OutputFormat::Plain => {
            println!(
                "{id} is up (host {}, weight {}), pid {pid}, log {}",
                add.host,
                add.weight,
                log_path.display()
            );
            println!("data moves to it now; watch with `tidepool watch`");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ClusterMap {
        tidepool_state::testing::four_osd_map(128)
    }

    /// Rule: adding a fifth OSD moves about a fifth of the copies, all of them to it, and
    /// nothing moves for a change that changes nothing.
    #[test]
    fn adding_an_osd_moves_its_share_to_it() {
        let before = map();
        let (id, after) = preview_add(&before, "localhost", Weight::ONE).expect("preview");
        assert_eq!(id, OsdId(4));
        let moved = movement(&before, &after, &Report::default());
        assert_eq!(moved.to.keys().collect::<Vec<_>>(), ["osd.4"]);
        let share = moved.copies as f64 / (128.0 * 3.0);
        assert!(
            (0.15..=0.25).contains(&share),
            "moved {share} of the copies"
        );
        let same = preview(&before, &[Command::OsdIn { id: OsdId(0) }]).expect("preview");
        assert_eq!(movement(&before, &same, &Report::default()).pgs_moving, 0);
        let text = render_movement(&moved);
        assert!(text.starts_with("would move "), "{text}");
    }

    /// Rule: a shard of an erasure PG that moves carries 1/k of the PG's bytes; a copy of a
    /// replicated PG all of them.
    #[test]
    fn moving_shards_count_a_kth_of_the_bytes() {
        use tidepool_placement::generate::pool;
        use tidepool_placement::{BucketType, PoolKind};
        let mut before = map();
        let ec = pool(&before, "ec", PoolKind::erasure(2, 1), 16, BucketType::Osd).expect("pool");
        let ec_id = ec.id;
        before.pools.insert(ec.id, ec);
        let after = preview(&before, &[Command::OsdOut { id: OsdId(1) }]).expect("preview");
        let mut report = Report::default();
        for pool in before.pools.values() {
            for seed in 0..pool.pg_num {
                report.pgs.push(tidepool_proto::mon::PgStat {
                    pg: PgId {
                        pool: pool.id,
                        seed,
                    },
                    state: "active+clean".into(),
                    objects: 1,
                    bytes: 6_000,
                    degraded: 0,
                    misplaced: 0,
                    up: Vec::new(),
                    acting: Vec::new(),
                    epoch: before.epoch,
                    waiting_for: Vec::new(),
                    last_scrub: 0,
                    last_deep_scrub: 0,
                    scrub_errors: 0,
                    unrepairable: 0,
                });
            }
        }
        let moved = movement(&before, &after, &report);
        for mv in &moved.moves {
            let arriving = mv.to.iter().filter(|o| !mv.from.contains(o)).count() as u64;
            let shard = if mv.pg.starts_with(&format!("{}.", ec_id.0)) {
                3_000
            } else {
                6_000
            };
            assert_eq!(mv.bytes, shard * arriving, "{}", mv.pg);
        }
        assert!(moved
            .moves
            .iter()
            .any(|m| m.pg.starts_with(&format!("{}.", ec_id.0))));
    }

    /// Rule: an out OSD's copies all leave it; a refused command is an error.
    #[test]
    fn out_moves_everything_off_and_refusals_are_errors() {
        let before = map();
        let after = preview(&before, &[Command::OsdOut { id: OsdId(2) }]).expect("preview");
        let moved = movement(&before, &after, &Report::default());
        assert!(!moved.to.contains_key("osd.2"));
        assert_eq!(
            moved.from.get("osd.2").map(|f| f.copies),
            Some(tidepool_state::pg_counts(&before)[&OsdId(2)] as u64)
        );
        assert!(preview(&before, &[Command::OsdOut { id: OsdId(9) }]).is_err());
    }
}
