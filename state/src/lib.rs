//! The cluster's state, pure: what `tidepool status`, `watch`, `osd tree` and `osd df` show,
//! what the dashboard draws and what the cluster-wide metrics export, all computed from one
//! [`Snapshot`] of what the monitors say. It takes no clock and does no I/O, so the three
//! can never disagree and every shape is tested without a cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use tidepool_placement::{BucketId, ClusterMap, OsdId, Placement, Scratch};
pub use tidepool_proto::mon::{is_active_clean, state_has};
use tidepool_proto::mon::{MonStatus, Report};

pub mod gauges;
pub mod testing;

/// What the monitors say about the cluster at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The cluster's id.
    pub id: String,
    /// Each monitor's view (`None`: it did not answer).
    pub mons: Vec<Option<MonStatus>>,
    /// The map (`None` without a quorum).
    pub map: Option<ClusterMap>,
    /// The primaries' and OSDs' latest reports.
    pub report: Report,
    /// Daemons `tidepool up` restarted within the last hour, oldest first.
    pub restarts: Vec<Restart>,
    /// The cluster-wide options that were set.
    pub config: Vec<(String, String)>,
    /// When it was taken (seconds since the Unix epoch).
    pub at: u64,
    /// Where each daemon serves its Prometheus metrics, by daemon (`osd.3`, `gateway`).
    pub metrics: BTreeMap<String, String>,
}

/// A daemon that died and that `tidepool up` started again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Restart {
    /// `osd.2`, `mon.0`, `gateway`.
    pub daemon: String,
    /// When it was restarted (seconds since the Unix epoch).
    pub at: u64,
    /// How it stopped: `was killed by signal 9 (SIGKILL, or out of memory)`.
    pub why: String,
}

/// One named health check that fails, as Ceph names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `OSD_DOWN`, `PG_DEGRADED`, …
    pub code: String,
    /// `HEALTH_WARN` or `HEALTH_ERR`.
    pub severity: String,
    /// One line for people.
    pub summary: String,
}

/// The cluster's health: the worst severity among the failing checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `HEALTH_OK`, `HEALTH_WARN` or `HEALTH_ERR`.
    pub status: String,
    /// The failing checks.
    pub checks: Vec<Check>,
}

/// `tidepool status`, as data.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub id: String,
    pub health: Health,
    pub monitors: Monitors,
    pub epoch: u64,
    pub osds: OsdCounts,
    pub pools: Vec<PoolLine>,
    pub data: Data,
    pub pgs: Pgs,
    pub recovery: Recovery,
    pub io: ClientIo,
    /// Daemons `tidepool up` restarted within the last hour.
    pub restarts: Vec<Restart>,
    /// Where each daemon serves its Prometheus metrics, by daemon.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Monitors {
    pub total: usize,
    pub quorum: Vec<u8>,
    pub leader: Option<u8>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OsdCounts {
    pub total: usize,
    pub up: usize,
    #[serde(rename = "in")]
    pub is_in: usize,
    pub remapped_pgs: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolLine {
    pub name: String,
    pub pg_num: u32,
    /// OSDs per PG: copies, or `k + m` shards.
    pub size: usize,
    /// `replicated size 3 min_size 2`, `erasure 4+2 stripe_unit 4096`.
    pub profile: String,
    /// Raw bytes per stored byte: the copies, or `(k + m) / k`.
    pub raw_per_stored: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Data {
    pub objects: u64,
    pub stored_bytes: u64,
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Pgs {
    pub total: usize,
    pub by_state: BTreeMap<String, usize>,
    pub active_clean: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Recovery {
    /// Object copies wanted: objects × copies, over every PG.
    pub object_copies: u64,
    pub degraded_objects: u64,
    pub misplaced_objects: u64,
    pub degraded_ratio: f64,
    pub misplaced_ratio: f64,
    pub bytes_per_sec: u64,
    pub objects_per_sec: u64,
    /// Seconds until nothing is degraded or misplaced at the current rate.
    pub eta_seconds: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClientIo {
    pub read_bytes_per_sec: u64,
    pub write_bytes_per_sec: u64,
    pub ops_per_sec: u64,
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The PG states of every PG: as reported when the report is of the PG's current holders;
/// `peering` when the map moved it since; `down` when none of its OSDs is up; `unknown` when
/// nobody reported it yet.
pub fn pg_states(map: &ClusterMap, report: &Report) -> BTreeMap<tidepool_placement::PgId, String> {
    pg_views(map, report)
        .into_iter()
        .map(|(pg, view)| (pg, view.state))
        .collect()
}

/// A PG's state, and whether it is `unknown` only because its primary has not reported since
/// the map changed (it says nothing of the PG's availability yet).
struct PgView {
    state: String,
    awaited: bool,
}

fn pg_views(map: &ClusterMap, report: &Report) -> BTreeMap<tidepool_placement::PgId, PgView> {
    let reported: BTreeMap<_, _> = report.pgs.iter().map(|s| (s.pg, s)).collect();
    let reported_at: BTreeMap<OsdId, tidepool_placement::Epoch> =
        report.osds.iter().map(|(id, s)| (*id, s.epoch)).collect();
    let placement = Placement::new(map);
    let mut scratch = Scratch::default();
    let mut views = BTreeMap::new();
    for pool in map.pools.values() {
        for seed in 0..pool.pg_num {
            let pg = tidepool_placement::PgId {
                pool: pool.id,
                seed,
            };
            let Some(mapping) = placement.map_pg(pg, &mut scratch) else {
                continue;
            };
            let up: Vec<OsdId> = mapping.up.iter().flatten().copied().collect();
            let acting: Vec<OsdId> = mapping.acting.iter().flatten().copied().collect();
            let state = match reported.get(&pg) {
                _ if mapping.primary.is_none() => "down".to_owned(),
                Some(stat) if stat.up == up && stat.acting == acting => stat.state.clone(),
                Some(_) => "peering".to_owned(),
                None => "unknown".to_owned(),
            };
            let awaited = state == "unknown"
                && mapping
                    .primary
                    .is_some_and(|p| reported_at.get(&p).is_none_or(|e| *e < map.epoch));
            views.insert(pg, PgView { state, awaited });
        }
    }
    views
}

/// The status of the cluster in `snapshot`.
pub fn status(snapshot: &Snapshot) -> Status {
    let empty = ClusterMap::default();
    let map = snapshot.map.as_ref().unwrap_or(&empty);
    let report = &snapshot.report;
    let answering: Vec<&MonStatus> = snapshot.mons.iter().flatten().collect();
    let leader = answering.iter().find_map(|s| s.leader);
    let quorum: Vec<u8> = answering.iter().map(|s| s.rank).collect();
    let views = pg_views(map, report);
    // Unknown only until the primary's next report: not counted as inactive.
    let awaited = views.values().filter(|v| v.awaited).count();
    let states: BTreeMap<_, _> = views.into_iter().map(|(pg, v)| (pg, v.state)).collect();
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for state in states.values() {
        *by_state.entry(state.clone()).or_default() += 1;
    }
    let active_clean = states.values().filter(|s| is_active_clean(s)).count();
    let inactive = states.values().filter(|s| !state_has(s, "active")).count() - awaited;
    let degraded_pgs = states.values().filter(|s| state_has(s, "degraded")).count();
    let remapped_pgs = states.values().filter(|s| state_has(s, "remapped")).count();
    let size_of = |pg: &tidepool_placement::PgId| {
        map.pools.get(&pg.pool).map_or(0, |p| p.kind.width()) as u64
    };
    let (mut objects, mut stored, mut copies, mut degraded, mut misplaced) = (0, 0, 0, 0, 0);
    for stat in report
        .pgs
        .iter()
        .filter(|s| map.pools.contains_key(&s.pg.pool))
    {
        objects += stat.objects;
        stored += stat.bytes;
        copies += stat.objects * size_of(&stat.pg);
        degraded += stat.degraded;
        misplaced += stat.misplaced;
    }
    let osd_stats: Vec<_> = report
        .osds
        .iter()
        .filter(|(id, _)| map.osds.get(id).is_some_and(|o| o.up))
        .map(|(_, s)| s)
        .collect();
    let sum = |f: &dyn Fn(&tidepool_proto::mon::OsdStat) -> u64| {
        osd_stats.iter().map(|s| f(s)).sum::<u64>()
    };
    let recovery_objects = sum(&|s| s.io.recovery_objects_per_sec);
    let eta_seconds = (degraded + misplaced > 0 && recovery_objects > 0)
        .then(|| (degraded + misplaced).div_ceil(recovery_objects));
    let down: Vec<OsdId> = map.osds.values().filter(|o| !o.up).map(|o| o.id).collect();
    let mut checks = Vec::new();
    let mut check = |code: &str, severity: &str, summary: String| {
        checks.push(Check {
            code: code.into(),
            severity: severity.into(),
            summary,
        })
    };
    if quorum.len() < snapshot.mons.len() {
        let out: Vec<String> = snapshot
            .mons
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(rank, _)| format!("mon.{rank}"))
            .collect();
        // Without a majority nothing can change: an error, not a warning.
        let severity = if quorum.len() * 2 > snapshot.mons.len() {
            "HEALTH_WARN"
        } else {
            "HEALTH_ERR"
        };
        check(
            "MON_DOWN",
            severity,
            format!(
                "{}/{} mons down: {}",
                out.len(),
                snapshot.mons.len(),
                out.join(", ")
            ),
        );
    }
    if !down.is_empty() {
        let names: Vec<String> = down.iter().map(|o| o.to_string()).collect();
        check(
            "OSD_DOWN",
            "HEALTH_WARN",
            format!("{} osds down: {}", down.len(), names.join(", ")),
        );
    }
    let option = |name: &str| {
        tidepool_proto::config::get(
            snapshot
                .config
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            name,
        ) as f64
            / 100.0
    };
    let (nearfull, full) = (
        option("mon_osd_nearfull_percent"),
        option("mon_osd_full_percent"),
    );
    for (id, stat) in &report.osds {
        let Some(osd) = map.osds.get(id) else {
            continue;
        };
        let used = if stat.total_bytes == 0 {
            0.0
        } else {
            1.0 - stat.available_bytes as f64 / stat.total_bytes as f64
        };
        if osd.full || used >= full {
            check(
                "OSD_FULL",
                "HEALTH_ERR",
                format!(
                    "{id} is full ({:.0}% used): writes of data to its PGs are refused",
                    used * 100.0
                ),
            );
        } else if used >= nearfull {
            check(
                "OSD_NEARFULL",
                "HEALTH_WARN",
                format!("{id} is near full ({:.0}% used)", used * 100.0),
            );
        }
    }
    if inactive > 0 {
        // A down PG waits for an OSD of its last active interval: say which.
        let down: Vec<String> = report
            .pgs
            .iter()
            .filter(|stat| states.get(&stat.pg) == Some(&stat.state) && stat.state == "down")
            .take(3)
            .map(|stat| {
                let waiting: Vec<String> = stat.waiting_for.iter().map(|o| o.to_string()).collect();
                format!(
                    "pg {} is down, waiting for {}",
                    stat.pg,
                    waiting.join(" or ")
                )
            })
            .collect();
        let detail = if down.is_empty() {
            String::new()
        } else {
            format!("; {}", down.join("; "))
        };
        check(
            "PG_AVAILABILITY",
            "HEALTH_WARN",
            format!("Reduced data availability: {inactive} pgs inactive{detail}"),
        );
    }
    if degraded > 0 || degraded_pgs > 0 {
        check(
            "PG_DEGRADED",
            "HEALTH_WARN",
            format!(
                "Degraded data redundancy: {degraded}/{copies} objects degraded ({:.3}%), {degraded_pgs} pgs degraded",
                pct(degraded, copies) * 100.0
            ),
        );
    }
    scrub_checks(snapshot, &states, &mut check);
    let status = if checks.iter().any(|c| c.severity == "HEALTH_ERR") {
        "HEALTH_ERR"
    } else if checks.is_empty() {
        "HEALTH_OK"
    } else {
        "HEALTH_WARN"
    };
    Status {
        id: snapshot.id.clone(),
        health: Health {
            status: status.into(),
            checks,
        },
        monitors: Monitors {
            total: snapshot.mons.len(),
            quorum,
            leader,
        },
        epoch: map.epoch.0,
        osds: OsdCounts {
            total: map.osds.len(),
            up: map.osds.values().filter(|o| o.up).count(),
            is_in: map.osds.values().filter(|o| o.is_in).count(),
            remapped_pgs,
        },
        pools: map
            .pools
            .values()
            .map(|p| {
                let (raw, stored) = p.kind.raw_ratio();
                PoolLine {
                    name: p.name.clone(),
                    pg_num: p.pg_num,
                    size: p.kind.width(),
                    profile: p.kind.to_string(),
                    raw_per_stored: f64::from(raw) / f64::from(stored),
                }
            })
            .collect(),
        data: Data {
            objects,
            stored_bytes: stored,
            used_bytes: sum(&|s| s.used_bytes),
            total_bytes: sum(&|s| s.total_bytes),
            available_bytes: sum(&|s| s.available_bytes),
        },
        pgs: Pgs {
            total: states.len(),
            by_state,
            active_clean,
        },
        recovery: Recovery {
            object_copies: copies,
            degraded_objects: degraded,
            misplaced_objects: misplaced,
            degraded_ratio: pct(degraded, copies),
            misplaced_ratio: pct(misplaced, copies),
            bytes_per_sec: sum(&|s| s.io.recovery_bytes_per_sec),
            objects_per_sec: recovery_objects,
            eta_seconds,
        },
        io: ClientIo {
            read_bytes_per_sec: sum(&|s| s.io.read_bytes_per_sec),
            write_bytes_per_sec: sum(&|s| s.io.write_bytes_per_sec),
            ops_per_sec: sum(&|s| s.io.ops_per_sec),
        },
        restarts: snapshot.restarts.clone(),
        metrics: snapshot.metrics.clone(),
    }
}

/// The scrubs' health checks, from the primaries' reports of the PGs in `states` (the PGs
/// of the map, reported by their current primaries): `OSD_SCRUB_ERRORS` (inconsistencies
/// found and not repaired), `PG_DAMAGED` (PGs with any; say how many objects have no provably
/// good copy), `PG_NOT_DEEP_SCRUBBED` (PGs whose last deep scrub is older than 1.75 times
/// `osd_deep_scrub_interval`, as Ceph warns).
fn scrub_checks(
    snapshot: &Snapshot,
    states: &BTreeMap<tidepool_placement::PgId, String>,
    check: &mut impl FnMut(&str, &str, String),
) {
    let current: Vec<&tidepool_proto::mon::PgStat> = snapshot
        .report
        .pgs
        .iter()
        .filter(|stat| states.get(&stat.pg) == Some(&stat.state))
        .collect();
    let errors: u64 = current.iter().map(|s| s.scrub_errors).sum();
    if errors > 0 {
        check(
            "OSD_SCRUB_ERRORS",
            "HEALTH_ERR",
            format!("{errors} scrub errors"),
        );
    }
    let damaged: Vec<&&tidepool_proto::mon::PgStat> =
        current.iter().filter(|s| s.scrub_errors > 0).collect();
    if !damaged.is_empty() {
        let named: Vec<String> = damaged.iter().take(3).map(|s| s.pg.to_string()).collect();
        let lost: u64 = damaged.iter().map(|s| s.unrepairable).sum();
        let detail = if lost > 0 {
            format!("; {lost} objects with no provably good copy")
        } else {
            String::new()
        };
        check(
            "PG_DAMAGED",
            "HEALTH_ERR",
            format!(
                "Possible data damage: {} pgs inconsistent ({}{}){detail}",
                damaged.len(),
                named.join(", "),
                if damaged.len() > 3 { ", …" } else { "" }
            ),
        );
    }
    let interval = tidepool_proto::config::get(
        snapshot
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        "osd_deep_scrub_interval",
    );
    let deadline = snapshot.at.saturating_sub(interval.saturating_mul(7) / 4);
    let late = current
        .iter()
        .filter(|s| s.last_deep_scrub > 0 && s.last_deep_scrub < deadline)
        .count();
    if late > 0 {
        check(
            "PG_NOT_DEEP_SCRUBBED",
            "HEALTH_WARN",
            format!("{late} pgs not deep-scrubbed in time"),
        );
    }
    let most = tidepool_proto::config::get(
        snapshot
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        "mon_osd_warn_num_repaired",
    );
    let repairing: Vec<String> = snapshot
        .report
        .osds
        .iter()
        .filter(|(_, stat)| stat.bad_reads > most)
        .map(|(id, stat)| format!("{id} ({})", stat.bad_reads))
        .collect();
    if !repairing.is_empty() {
        check(
            "OSD_TOO_MANY_REPAIRS",
            "HEALTH_WARN",
            format!(
                "Too many bad copies found by reads on {} osds: {} (its disk may be failing)",
                repairing.len(),
                repairing.join(", ")
            ),
        );
    }
}

/// Bytes for people: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A progress bar of `width` characters for `done` of `total`.
fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (width * done)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    format!("[{}{}]", "=".repeat(filled), ".".repeat(width - filled))
}

/// `status` as text, in the shape of `ceph -s`.
pub fn render_status(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  cluster:");
    let _ = writeln!(out, "    id:     {}", s.id);
    let _ = writeln!(out, "    health: {}", s.health.status);
    for check in &s.health.checks {
        let _ = writeln!(out, "            {}", check.summary);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "  services:");
    let quorum: Vec<String> = s.monitors.quorum.iter().map(u8::to_string).collect();
    let _ = writeln!(
        out,
        "    mon: {} daemons, quorum {} (leader {})",
        s.monitors.total,
        if quorum.is_empty() {
            "none".into()
        } else {
            quorum.join(",")
        },
        s.monitors
            .leader
            .map_or("none".into(), |l| format!("mon.{l}"))
    );
    let remapped = if s.osds.remapped_pgs > 0 {
        format!("; {} remapped pgs", s.osds.remapped_pgs)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "    osd: {} osds: {} up, {} in{remapped}",
        s.osds.total, s.osds.up, s.osds.is_in
    );
    if let Some(last) = s.restarts.last() {
        let _ = writeln!(
            out,
            "    restarted by tidepool up in the last hour: {} (last: {} at {}, it {})",
            s.restarts.len(),
            last.daemon,
            time_of_day(last.at),
            last.why
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "  data:");
    let _ = writeln!(
        out,
        "    pools:   {} pools, {} pgs",
        s.pools.len(),
        s.pgs.total
    );
    for pool in s.pools.iter().filter(|p| p.profile.starts_with("erasure")) {
        let _ = writeln!(
            out,
            "             {}: {} (raw/stored {:.2})",
            pool.name, pool.profile, pool.raw_per_stored
        );
    }
    let _ = writeln!(
        out,
        "    objects: {} objects, {}",
        s.data.objects,
        bytes(s.data.stored_bytes)
    );
    let _ = writeln!(
        out,
        "    usage:   {} used, {} / {} avail",
        bytes(s.data.used_bytes),
        bytes(s.data.available_bytes),
        bytes(s.data.total_bytes)
    );
    let mut first = true;
    let mut pg_line = |text: String| {
        let _ = writeln!(out, "    {:<9}{text}", if first { "pgs:" } else { "" });
        first = false;
    };
    if s.recovery.degraded_objects > 0 {
        pg_line(format!(
            "{}/{} objects degraded ({:.3}%)",
            s.recovery.degraded_objects,
            s.recovery.object_copies,
            s.recovery.degraded_ratio * 100.0
        ));
    }
    if s.recovery.misplaced_objects > 0 {
        pg_line(format!(
            "{}/{} objects misplaced ({:.3}%)",
            s.recovery.misplaced_objects,
            s.recovery.object_copies,
            s.recovery.misplaced_ratio * 100.0
        ));
    }
    let mut states: Vec<(&String, &usize)> = s.pgs.by_state.iter().collect();
    states.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (state, count) in states {
        pg_line(format!("{count} {state}"));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "  io:");
    let _ = writeln!(
        out,
        "    client:   {}/s rd, {}/s wr, {} op/s",
        bytes(s.io.read_bytes_per_sec),
        bytes(s.io.write_bytes_per_sec),
        s.io.ops_per_sec
    );
    if s.recovery.bytes_per_sec > 0 || s.recovery.objects_per_sec > 0 {
        let _ = writeln!(
            out,
            "    recovery: {}/s, {} objects/s",
            bytes(s.recovery.bytes_per_sec),
            s.recovery.objects_per_sec
        );
    }
    if s.pgs.active_clean < s.pgs.total {
        let _ = writeln!(out);
        let _ = writeln!(out, "  progress:");
        let _ = writeln!(
            out,
            "    Recovery: {}/{} pgs active+clean",
            s.pgs.active_clean, s.pgs.total
        );
        let _ = writeln!(
            out,
            "      {} (remaining: {})",
            bar(s.pgs.active_clean, s.pgs.total, 28),
            s.recovery.eta_seconds.map_or("unknown".into(), duration)
        );
    }
    out
}

/// One OSD in `osd df`.
#[derive(Clone, Debug, Serialize)]
pub struct DfRow {
    pub id: u32,
    pub weight: f64,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    /// Used bytes ÷ size, in percent.
    pub utilization: f64,
    /// Utilisation ÷ the mean utilisation of the OSDs that are in.
    pub var: f64,
    /// PGs placed on it (up sets).
    pub pgs: usize,
    /// PG copies it holds on disk (placed ones and strays).
    pub pgs_held: u32,
    /// Bad copies and shards its reads found and served around since it started.
    pub bad_reads: u64,
    pub status: String,
}

/// `osd df`, as data.
#[derive(Clone, Debug, Serialize)]
pub struct Df {
    pub osds: Vec<DfRow>,
    pub total_size_bytes: u64,
    pub total_used_bytes: u64,
    pub min_var: f64,
    pub max_var: f64,
    pub stddev: f64,
}

/// PGs per OSD in the up sets of `map`.
pub fn pg_counts(map: &ClusterMap) -> BTreeMap<OsdId, usize> {
    let placement = Placement::new(map);
    let mut scratch = Scratch::default();
    let mut counts = BTreeMap::new();
    for pool in map.pools.values() {
        for seed in 0..pool.pg_num {
            let pg = tidepool_placement::PgId {
                pool: pool.id,
                seed,
            };
            if let Some(mapping) = placement.map_pg(pg, &mut scratch) {
                for osd in mapping.up.into_iter().flatten() {
                    *counts.entry(osd).or_default() += 1;
                }
            }
        }
    }
    counts
}

/// `osd df` for `snapshot`.
pub fn df(snapshot: &Snapshot) -> Df {
    let empty = ClusterMap::default();
    let map = snapshot.map.as_ref().unwrap_or(&empty);
    let stats: BTreeMap<OsdId, &tidepool_proto::mon::OsdStat> = snapshot
        .report
        .osds
        .iter()
        .map(|(id, s)| (*id, s))
        .collect();
    let counts = pg_counts(map);
    let mut rows: Vec<DfRow> = map
        .osds
        .values()
        .map(|osd| {
            let stat = stats.get(&osd.id);
            let size = stat.map_or(0, |s| s.total_bytes);
            let used = stat.map_or(0, |s| s.used_bytes);
            DfRow {
                id: osd.id.0,
                weight: f64::from(osd.weight.raw())
                    / f64::from(tidepool_placement::Weight::ONE.raw()),
                size_bytes: size,
                used_bytes: used,
                available_bytes: stat.map_or(0, |s| s.available_bytes),
                utilization: pct(used, size) * 100.0,
                var: 0.0,
                pgs: counts.get(&osd.id).copied().unwrap_or(0),
                pgs_held: stat.map_or(0, |s| s.pgs),
                bad_reads: stat.map_or(0, |s| s.bad_reads),
                status: format!(
                    "{},{}",
                    if osd.up { "up" } else { "down" },
                    if osd.is_in { "in" } else { "out" }
                ),
            }
        })
        .collect();
    let in_rows: Vec<f64> = rows
        .iter()
        .filter(|r| r.status.ends_with(",in") && r.size_bytes > 0)
        .map(|r| r.utilization)
        .collect();
    let mean = if in_rows.is_empty() {
        0.0
    } else {
        in_rows.iter().sum::<f64>() / in_rows.len() as f64
    };
    for row in &mut rows {
        row.var = if mean > 0.0 {
            row.utilization / mean
        } else {
            0.0
        };
    }
    let vars: Vec<f64> = rows
        .iter()
        .filter(|r| r.status.ends_with(",in") && r.size_bytes > 0)
        .map(|r| r.var)
        .collect();
    let stddev = if in_rows.is_empty() {
        0.0
    } else {
        (in_rows.iter().map(|u| (u - mean).powi(2)).sum::<f64>() / in_rows.len() as f64).sqrt()
    };
    Df {
        total_size_bytes: rows.iter().map(|r| r.size_bytes).sum(),
        total_used_bytes: rows.iter().map(|r| r.used_bytes).sum(),
        min_var: vars.iter().copied().fold(f64::INFINITY, f64::min).min(1.0),
        max_var: vars.iter().copied().fold(0.0, f64::max),
        stddev,
        osds: rows,
    }
}

/// `osd df` as text.
pub fn render_df(df: &Df) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4} {:>8} {:>10} {:>10} {:>10} {:>6} {:>5} {:>4} {:>5}  STATUS",
        "ID", "WEIGHT", "SIZE", "USED", "AVAIL", "%USE", "VAR", "PGS", "HELD"
    );
    for r in &df.osds {
        let _ = writeln!(
            out,
            "{:>4} {:>8.5} {:>10} {:>10} {:>10} {:>6.2} {:>5.2} {:>4} {:>5}  {}",
            r.id,
            r.weight,
            bytes(r.size_bytes),
            bytes(r.used_bytes),
            bytes(r.available_bytes),
            r.utilization,
            r.var,
            r.pgs,
            r.pgs_held,
            r.status
        );
    }
    let _ = writeln!(
        out,
        "{:>4} {:>8} {:>10} {:>10}",
        "TOTAL",
        "",
        bytes(df.total_size_bytes),
        bytes(df.total_used_bytes)
    );
    let _ = writeln!(
        out,
        "MIN/MAX VAR: {:.2}/{:.2}  STDDEV: {:.2}",
        if df.min_var.is_finite() {
            df.min_var
        } else {
            0.0
        },
        df.max_var,
        df.stddev
    );
    out
}

/// One line of `osd tree`: a bucket or an OSD, with its depth.
#[derive(Clone, Debug, Serialize)]
pub struct TreeNode {
    /// Buckets have negative ids (`-1 - bucket id`), OSDs their own.
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub depth: usize,
    /// An OSD's weight, or the sum of the weights below a bucket.
    pub weight: f64,
    /// OSDs only: `up` or `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// OSDs only: 1 when in, 0 when out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reweight: Option<f64>,
}

/// `osd tree` for `map`: roots first, each bucket followed by what it holds.
pub fn tree(map: &ClusterMap) -> Vec<TreeNode> {
    fn weight_of(map: &ClusterMap, bucket: BucketId) -> f64 {
        let osds: f64 = map
            .osds
            .values()
            .filter(|o| o.parent == bucket)
            .map(|o| f64::from(o.weight.raw()))
            .sum::<f64>()
            / f64::from(tidepool_placement::Weight::ONE.raw());
        let children: f64 = map
            .buckets
            .values()
            .filter(|b| b.parent == Some(bucket))
            .map(|b| weight_of(map, b.id))
            .sum();
        osds + children
    }
    fn walk(map: &ClusterMap, bucket: BucketId, depth: usize, out: &mut Vec<TreeNode>) {
        let Some(b) = map.buckets.get(&bucket) else {
            return;
        };
        out.push(TreeNode {
            id: -1 - i64::from(b.id.0),
            name: b.name.clone(),
            kind: b.kind.to_string(),
            depth,
            weight: weight_of(map, b.id),
            status: None,
            reweight: None,
        });
        for child in map.buckets.values().filter(|c| c.parent == Some(bucket)) {
            walk(map, child.id, depth + 1, out);
        }
        for osd in map.osds.values().filter(|o| o.parent == bucket) {
            out.push(TreeNode {
                id: i64::from(osd.id.0),
                name: osd.id.to_string(),
                kind: "osd".into(),
                depth: depth + 1,
                weight: f64::from(osd.weight.raw())
                    / f64::from(tidepool_placement::Weight::ONE.raw()),
                status: Some(if osd.up { "up" } else { "down" }.into()),
                reweight: Some(if osd.is_in { 1.0 } else { 0.0 }),
            });
        }
    }
    let mut out = Vec::new();
    for root in map.buckets.values().filter(|b| b.parent.is_none()) {
        walk(map, root.id, 0, &mut out);
    }
    out
}

/// `osd tree` as text.
pub fn render_tree(nodes: &[TreeNode]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4}  {:>9}  {:<24} {:>6}  {:>8}",
        "ID", "WEIGHT", "TYPE NAME", "STATUS", "REWEIGHT"
    );
    for n in nodes {
        let name = format!("{}{} {}", "    ".repeat(n.depth), n.kind, n.name);
        let name = if n.kind == "osd" {
            format!("{}{}", "    ".repeat(n.depth), n.name)
        } else {
            name
        };
        let _ = writeln!(
            out,
            "{:>4}  {:>9.5}  {:<24} {:>6}  {:>8}",
            n.id,
            n.weight,
            name,
            n.status.as_deref().unwrap_or(""),
            n.reweight.map_or(String::new(), |r| format!("{r:.5}"))
        );
    }
    out
}

/// What changed between two snapshots, one line per event.
pub fn events(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut events = Vec::new();
    let (Some(old), Some(new)) = (&before.map, &after.map) else {
        return events;
    };
    for osd in new.osds.values() {
        match old.osds.get(&osd.id) {
            None => events.push(format!("{} created", osd.id)),
            Some(was) => {
                if was.up != osd.up {
                    events.push(format!("{} {}", osd.id, if osd.up { "up" } else { "down" }));
                }
                if was.is_in != osd.is_in {
                    events.push(format!(
                        "{} {}",
                        osd.id,
                        if osd.is_in { "in" } else { "out" }
                    ));
                }
                if was.weight != osd.weight {
                    events.push(format!(
                        "{} weight {} -> {}",
                        osd.id, was.weight, osd.weight
                    ));
                }
            }
        }
    }
    for id in old.osds.keys().filter(|id| !new.osds.contains_key(id)) {
        events.push(format!("{id} removed"));
    }
    let (was, now) = (status(before), status(after));
    if was.pgs.by_state != now.pgs.by_state {
        let states: Vec<String> = now
            .pgs
            .by_state
            .iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect();
        events.push(format!("pgs: {}", states.join(", ")));
    }
    let moving = |s: &Status| s.recovery.degraded_objects + s.recovery.misplaced_objects;
    if moving(&was) > 0 && moving(&now) == 0 && now.pgs.active_clean == now.pgs.total {
        events.push("recovery finished: all pgs active+clean".into());
    }
    for restart in after
        .restarts
        .iter()
        .filter(|r| !before.restarts.contains(r))
    {
        events.push(format!(
            "{} restarted by tidepool up (it {})",
            restart.daemon, restart.why
        ));
    }
    if was.health.status != now.health.status {
        events.push(format!(
            "health {} -> {}",
            was.health.status, now.health.status
        ));
    }
    events
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) of a time in seconds since the Unix epoch.
pub fn timestamp(secs: u64) -> String {
    // Days to a civil date, by the proleptic Gregorian calendar in eras of 400 years.
    let days = secs / 86_400 + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{}Z", time_of_day(secs))
}

/// `HH:MM:SS` (UTC) of a time in seconds since the Unix epoch.
pub fn time_of_day(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::testing::four_osd_map;
    use super::*;
    use tidepool_placement::{Epoch, PgId};
    use tidepool_proto::mon::{IoRates, OsdStat, PgStat};

    /// A 4-OSD map with one pool of 8 PGs, one OSD down, and reports for 7 PGs.
    pub(crate) fn snapshot() -> Snapshot {
        let mut map = four_osd_map(8);
        let pool = *map.pools.keys().next().expect("pool");
        map.osds.get_mut(&OsdId(3)).expect("osd.3").up = false;
        let placement = Placement::new(&map);
        let holders = |seed: u32| -> Vec<OsdId> {
            placement
                .map_pg(PgId { pool, seed }, &mut Scratch::default())
                .map(|m| m.up.into_iter().flatten().collect())
                .unwrap_or_default()
        };
        let pgs = (0..7)
            .map(|seed| PgStat {
                pg: PgId { pool, seed },
                state: if seed < 5 {
                    "active+clean".into()
                } else {
                    "active+undersized+degraded".into()
                },
                objects: 10,
                bytes: 10 << 20,
                degraded: if seed < 5 { 0 } else { 10 },
                misplaced: 0,
                up: holders(seed),
                acting: holders(seed),
                epoch: Epoch(5),
                waiting_for: Vec::new(),
                last_scrub: 0,
                last_deep_scrub: 0,
                scrub_errors: 0,
                unrepairable: 0,
            })
            .collect();
        let epoch = map.epoch;
        let osd = |id: u32| {
            (
                OsdId(id),
                OsdStat {
                    total_bytes: 100 << 30,
                    available_bytes: 60 << 30,
                    used_bytes: (u64::from(id) + 1) << 30,
                    pgs: 6,
                    io: IoRates {
                        recovery_objects_per_sec: 5,
                        recovery_bytes_per_sec: 5 << 20,
                        ..IoRates::default()
                    },
                    epoch,
                    bad_reads: 0,
                },
            )
        };
        Snapshot {
            id: "cluster-id".into(),
            mons: vec![
                Some(MonStatus {
                    rank: 0,
                    leader: Some(0),
                    readable: true,
                    commit: 1,
                    epoch: Epoch(5),
                    map_digest: 0,
                }),
                None,
                Some(MonStatus {
                    rank: 2,
                    leader: Some(0),
                    readable: true,
                    commit: 1,
                    epoch: Epoch(5),
                    map_digest: 0,
                }),
            ],
            map: Some(map),
            report: Report {
                osds: (0..3).map(osd).collect(),
                pgs,
            },
            restarts: Vec::new(),
            config: Vec::new(),
            at: 1_000_000_000,
            metrics: BTreeMap::new(),
        }
    }

    /// Rule: timestamps are UTC calendar dates, leap years included.
    #[test]
    fn timestamps_are_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(1_796_515_200 + 3_723), "2026-12-06T01:02:03Z");
        assert_eq!(timestamp(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    /// Rule: scrub errors raise `OSD_SCRUB_ERRORS` and `PG_DAMAGED` (an error), a PG deep-
    /// scrubbed longer ago than 1.75 deep-scrub intervals raises `PG_NOT_DEEP_SCRUBBED` (a
    /// warning); a report of an earlier state of the PG counts for none of them.
    #[test]
    fn scrub_checks_follow_the_reports() {
        let codes = |snap: &Snapshot| -> Vec<String> {
            status(snap)
                .health
                .checks
                .into_iter()
                .map(|c| c.code)
                .filter(|c| {
                    c.starts_with("OSD_SCRUB") || c.starts_with("PG_N") || c == "PG_DAMAGED"
                })
                .collect()
        };
        let mut snap = snapshot();
        let week = 7 * 24 * 3600;
        for stat in &mut snap.report.pgs {
            stat.last_deep_scrub = snap.at - week;
        }
        assert!(codes(&snap).is_empty());
        snap.report.pgs[0].scrub_errors = 2;
        snap.report.pgs[0].unrepairable = 1;
        snap.report.pgs[0].state = "active+clean+inconsistent".into();
        snap.report.pgs[1].last_deep_scrub = snap.at - 2 * week;
        let s = status(&snap);
        assert_eq!(s.health.status, "HEALTH_ERR");
        assert_eq!(
            codes(&snap),
            ["OSD_SCRUB_ERRORS", "PG_DAMAGED", "PG_NOT_DEEP_SCRUBBED"]
        );
        let damaged = s
            .health
            .checks
            .iter()
            .find(|c| c.code == "PG_DAMAGED")
            .expect("check");
        assert!(
            damaged.summary.contains("1 pgs inconsistent"),
            "{}",
            damaged.summary
        );
        assert!(
            damaged
                .summary
                .contains("1 objects with no provably good copy"),
            "{}",
            damaged.summary
        );
        // A longer interval: not late.
        snap.config = vec![("osd_deep_scrub_interval".into(), (2 * week).to_string())];
        assert_eq!(codes(&snap), ["OSD_SCRUB_ERRORS", "PG_DAMAGED"]);
        // The PG moved since its report: the report no longer counts.
        snap.report.pgs[0].acting.reverse();
        snap.report.pgs[0].up.reverse();
        assert!(codes(&snap).is_empty());
        // An OSD whose reads found more bad copies than `mon_osd_warn_num_repaired`.
        let repairs = |snap: &Snapshot| -> Vec<String> {
            status(snap)
                .health
                .checks
                .into_iter()
                .filter(|c| c.code == "OSD_TOO_MANY_REPAIRS")
                .map(|c| c.summary)
                .collect()
        };
        snap.report.osds[0].1.bad_reads = 10;
        assert!(repairs(&snap).is_empty());
        snap.report.osds[0].1.bad_reads = 11;
        let id = snap.report.osds[0].0;
        assert_eq!(
            repairs(&snap),
            [format!(
                "Too many bad copies found by reads on 1 osds: {id} (11) (its disk may be failing)"
            )]
        );
        snap.config
            .push(("mon_osd_warn_num_repaired".into(), "20".into()));
        assert!(repairs(&snap).is_empty());
    }

    /// Rule: health names each failing check; counts, ratios and the ETA follow the reports;
    /// a PG nobody reports is `unknown`.
    #[test]
    fn status_summarises_health_pgs_and_recovery() {
        let s = status(&snapshot());
        assert_eq!(s.health.status, "HEALTH_WARN");
        let codes: Vec<&str> = s.health.checks.iter().map(|c| c.code.as_str()).collect();
        assert_eq!(
            codes,
            ["MON_DOWN", "OSD_DOWN", "PG_AVAILABILITY", "PG_DEGRADED"]
        );
        assert_eq!(s.pgs.total, 8);
        assert_eq!(s.pgs.by_state["active+clean"], 5);
        assert_eq!(s.pgs.by_state["active+undersized+degraded"], 2);
        assert_eq!(s.pgs.by_state["unknown"], 1);
        assert_eq!(s.recovery.object_copies, 7 * 10 * 3);
        assert_eq!(s.recovery.degraded_objects, 20);
        assert!((s.recovery.degraded_ratio - 20.0 / 210.0).abs() < 1e-9);
        assert_eq!(s.recovery.objects_per_sec, 15);
        assert_eq!(s.recovery.eta_seconds, Some(2));
        assert_eq!(s.osds.up, 3);
    }

    /// Rule: an OSD past `mon_osd_nearfull_percent` is near full (a warning); one past
    /// `mon_osd_full_percent`, or marked full in the map, is full (an error); the thresholds
    /// follow the options.
    #[test]
    fn fullness_follows_usage_the_map_and_the_options() {
        let mut snap = snapshot();
        let usage = |snap: &mut Snapshot, osd: usize, available: u64| {
            snap.report.osds[osd].1.available_bytes = available;
        };
        usage(&mut snap, 0, 3 << 30);
        usage(&mut snap, 1, 12 << 30);
        let codes = |snap: &Snapshot| -> Vec<String> {
            status(snap)
                .health
                .checks
                .iter()
                .map(|c| c.code.clone())
                .filter(|c| c.starts_with("OSD_"))
                .collect()
        };
        assert_eq!(codes(&snap), ["OSD_DOWN", "OSD_FULL", "OSD_NEARFULL"]);
        assert_eq!(status(&snap).health.status, "HEALTH_ERR");
        snap.config = vec![("mon_osd_full_percent".into(), "98".into())];
        assert_eq!(codes(&snap), ["OSD_DOWN", "OSD_NEARFULL", "OSD_NEARFULL"]);
        let map = snap.map.as_mut().expect("map");
        map.osds.get_mut(&OsdId(2)).expect("osd.2").full = true;
        assert_eq!(
            codes(&snap),
            ["OSD_DOWN", "OSD_NEARFULL", "OSD_NEARFULL", "OSD_FULL"]
        );
    }

    /// Rule: a PG nobody reports is `unknown`; it counts as inactive only once its primary
    /// has reported since the map changed (until then it is a report still on its way, as
    /// after an OSD is added).
    #[test]
    fn unknown_is_inactive_only_once_its_primary_reported() {
        let mut snap = snapshot();
        let epoch = snap.map.as_ref().expect("map").epoch;
        for (_, stat) in &mut snap.report.osds {
            stat.epoch = Epoch(epoch.0 - 1);
        }
        let s = status(&snap);
        assert_eq!(s.pgs.by_state["unknown"], 1);
        let codes: Vec<&str> = s.health.checks.iter().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, ["MON_DOWN", "OSD_DOWN", "PG_DEGRADED"]);
    }

    /// Rule: the text has the sections of `ceph -s`, one line per failing check and per PG
    /// state, and a progress bar while PGs are not clean.
    #[test]
    fn status_text_has_the_shape_of_ceph_s() {
        let text = render_status(&status(&snapshot()));
        let shape: Vec<&str> = text
            .lines()
            .map(|l| l.split(':').next().unwrap_or("").trim_end())
            .filter(|l| !l.is_empty() && !l.starts_with("      "))
            .collect();
        assert_eq!(
            shape,
            [
                "  cluster",
                "    id",
                "    health",
                "  services",
                "    mon",
                "    osd",
                "  data",
                "    pools",
                "    objects",
                "    usage",
                "    pgs",
                "  io",
                "    client",
                "    recovery",
                "  progress",
                "    Recovery",
            ],
            "{text}"
        );
        assert!(
            text.contains("health: HEALTH_WARN\n            1/3 mons down: mon.1\n"),
            "{text}"
        );
        assert!(text.contains("20/210 objects degraded (9.524%)"), "{text}");
        assert!(text.contains("5 active+clean"), "{text}");
        assert!(text.contains("(remaining: 2s)"), "{text}");
    }

    /// Rule: `osd df` has a row per OSD with its PGs and variance; `osd tree` lists each
    /// bucket before what it holds.
    #[test]
    fn df_and_tree_shapes() {
        let snap = snapshot();
        let df = df(&snap);
        assert_eq!(df.osds.len(), 4);
        assert_eq!(
            df.osds.iter().map(|r| r.pgs).sum::<usize>(),
            8 * 3 - pgs_on_down(&snap)
        );
        let text = render_df(&df);
        assert!(
            text.starts_with(
                "  ID   WEIGHT       SIZE       USED      AVAIL   %USE   VAR  PGS  HELD  STATUS\n"
            ),
            "{text}"
        );
        assert!(text.contains("MIN/MAX VAR: "), "{text}");
        let nodes = tree(snap.map.as_ref().expect("map"));
        assert_eq!(nodes[0].kind, "root");
        assert!(nodes
            .iter()
            .any(|n| n.name == "osd.3" && n.status.as_deref() == Some("down")));
        let text = render_tree(&nodes);
        assert!(
            text.lines().next().expect("header").contains("TYPE NAME"),
            "{text}"
        );
    }

    fn pgs_on_down(snap: &Snapshot) -> usize {
        let map = snap.map.as_ref().expect("map");
        let mut raw = map.clone();
        raw.osds.values_mut().for_each(|o| o.up = true);
        pg_counts(&raw).values().sum::<usize>() - pg_counts(map).values().sum::<usize>()
    }

    /// Rule: watch reports OSD state changes, PG state changes and the end of recovery.
    #[test]
    fn events_between_snapshots() {
        let before = snapshot();
        let mut after = before.clone();
        let map = after.map.as_mut().expect("map");
        map.osds.get_mut(&OsdId(3)).expect("osd.3").up = true;
        for pg in &mut after.report.pgs {
            pg.state = "active+clean".into();
            pg.degraded = 0;
        }
        after.restarts.push(Restart {
            daemon: "osd.2".into(),
            at: 1_800_000_000,
            why: "was killed by signal 9".into(),
        });
        let events = events(&before, &after);
        assert!(events.contains(&"osd.3 up".to_owned()), "{events:?}");
        assert!(events.iter().any(|e| e.starts_with("pgs: ")), "{events:?}");
        assert!(
            events.contains(&"osd.2 restarted by tidepool up (it was killed by signal 9)".into()),
            "{events:?}"
        );
        let text = render_status(&status(&after));
        assert!(
            text.contains("restarted by tidepool up in the last hour: 1 (last: osd.2 at"),
            "{text}"
        );
    }
}
