//! The decisions of peering, without IO: which holder's history is authoritative, how each
//! holder catches up with it, and which holders serve the PG (`pg_temp`) while new holders
//! backfill. The daemon gathers the facts, asks these functions, and carries out the answer.

use tidepool_placement::OsdId;
use tidepool_proto::osd::{LogEntry, PgInfo};

/// What one OSD holds of a PG: its summary and newest entry, or `None` for no copy.
pub type Copy = Option<(PgInfo, Option<LogEntry>)>;

/// How a holder reaches the authority's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Catchup {
    /// It has it.
    UpToDate,
    /// Replay these entries of the authority's log (copy the objects they name).
    Log(Vec<LogEntry>),
    /// Its copy cannot be brought forward from the log: copy everything.
    Backfill,
}

impl Catchup {
    /// Whether the holder can serve the PG after at most a short log-based recovery.
    pub fn usable(&self) -> bool {
        !matches!(self, Catchup::Backfill)
    }
}

/// The rank of a copy's history: newer epoch first, then newer version. A copy with no entries
/// (none, or an interrupted backfill) ranks lowest.
pub fn rank(copy: &Copy) -> (u64, u64) {
    copy.as_ref()
        .map_or((0, 0), |(info, _)| (info.last_epoch.0, info.last_update))
}

/// The holder whose history wins: the highest [`rank`], the first of equals in `holders` order
/// (put the deciding OSD first so that it stays the authority on ties).
pub fn authority(holders: &[(OsdId, Copy)]) -> Option<OsdId> {
    let mut best: Option<(OsdId, (u64, u64))> = None;
    for (osd, copy) in holders {
        let rank = rank(copy);
        if best.is_none_or(|(_, b)| rank > b) {
            best = Some((*osd, rank));
        }
    }
    best.map(|(osd, _)| osd)
}

/// How `holder` catches up with an authority whose summary is `info` and whose kept log is
/// `log` (entries after `info.log_tail`, in order).
pub fn catchup(info: &PgInfo, log: &[LogEntry], holder: &Copy) -> Catchup {
    let (their, last) = match holder {
        Some((their, last)) if their.last_update > 0 => (their, last),
        _ if info.last_update == 0 => return Catchup::UpToDate,
        // No copy, or an empty one (a backfill that never finished): even while the log
        // holds every change, replaying it copies the whole PG, which is a backfill's work
        // and is done as one, in the background behind `pg_temp`.
        _ => return Catchup::Backfill,
    };
    if their.last_update > info.last_update {
        // Newer than the authority in version but older in epoch: a divergent history.
        return Catchup::Backfill;
    }
    match log.iter().position(|e| Some(e) == last.as_ref()) {
        Some(at) if at + 1 == log.len() => Catchup::UpToDate,
        Some(at) => Catchup::Log(log[at + 1..].to_vec()),
        None if their.last_update == info.last_update && last.is_none() && log.is_empty() => {
            Catchup::UpToDate
        }
        None => Catchup::Backfill,
    }
}

/// The holders that should serve the PG: the usable members of `up` in order, then other
/// usable holders until `size` (they stand in for members that must backfill). Equal to `up`
/// when every member is usable; otherwise the daemon asks the monitors for this as `pg_temp`.
pub fn choose_acting(up: &[OsdId], usable: &[OsdId], size: usize) -> Vec<OsdId> {
    let mut want: Vec<OsdId> = up.iter().copied().filter(|o| usable.contains(o)).collect();
    for osd in usable {
        if want.len() >= size {
            break;
        }
        if !want.contains(osd) {
            want.push(*osd);
        }
    }
    want
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidepool_placement::Epoch;

    fn entry(version: u64, epoch: u64) -> LogEntry {
        LogEntry {
            version,
            epoch: Epoch(epoch),
            name: format!("o{version}"),
            delete: false,
            reqid: None,
        }
    }

    fn log(from: u64, to: u64) -> Vec<LogEntry> {
        (from..=to).map(|v| entry(v, 1)).collect()
    }

    fn copy(last_update: u64, epoch: u64, tail: u64) -> Copy {
        Some((
            PgInfo {
                last_update,
                last_epoch: Epoch(epoch),
                log_tail: tail,
            },
            (last_update > 0).then(|| entry(last_update, epoch)),
        ))
    }

    fn info(last_update: u64, tail: u64) -> PgInfo {
        PgInfo {
            last_update,
            last_epoch: Epoch(1),
            log_tail: tail,
        }
    }

    /// Rule: the newest epoch wins over a higher version; ties go to the first holder.
    #[test]
    fn authority_prefers_epoch_then_version_then_order() {
        let holders = vec![
            (OsdId(1), copy(10, 1, 0)),
            (OsdId(2), copy(5, 2, 0)),
            (OsdId(3), copy(5, 2, 0)),
            (OsdId(4), None),
        ];
        assert_eq!(authority(&holders), Some(OsdId(2)));
        assert_eq!(authority(&[(OsdId(7), None)]), Some(OsdId(7)));
        assert_eq!(authority(&[]), None);
    }

    /// Rule: a holder whose newest entry is in the authority's log replays the rest; one the
    /// log no longer reaches, or with a divergent history, backfills.
    #[test]
    fn catchup_uses_the_log_while_it_reaches() {
        let kept = log(3, 10);
        let auth = info(10, 2);
        assert_eq!(catchup(&auth, &kept, &copy(10, 1, 0)), Catchup::UpToDate);
        assert_eq!(
            catchup(&auth, &kept, &copy(7, 1, 0)),
            Catchup::Log(log(8, 10))
        );
        assert_eq!(catchup(&auth, &kept, &copy(1, 1, 0)), Catchup::Backfill);
        // Same version, other epoch: its entry 7 is not the authority's entry 7.
        assert_eq!(catchup(&auth, &kept, &copy(7, 2, 0)), Catchup::Backfill);
        assert_eq!(catchup(&auth, &kept, &copy(12, 1, 0)), Catchup::Backfill);
        // No copy, or an empty one: backfill, even while the log holds every change.
        assert_eq!(catchup(&auth, &kept, &None), Catchup::Backfill);
        assert_eq!(catchup(&info(10, 0), &log(1, 10), &None), Catchup::Backfill);
        assert_eq!(
            catchup(&info(10, 0), &log(1, 10), &copy(0, 0, 0)),
            Catchup::Backfill
        );
        assert_eq!(catchup(&info(0, 0), &[], &None), Catchup::UpToDate);
        assert_eq!(catchup(&info(0, 0), &[], &copy(0, 0, 0)), Catchup::UpToDate);
    }

    /// Rule: usable up members keep their order; stand-ins fill the places of those that
    /// backfill; a fully usable up set is kept as it is.
    #[test]
    fn acting_keeps_usable_up_members_and_fills_with_stand_ins() {
        let up = [OsdId(4), OsdId(1), OsdId(2)];
        assert_eq!(
            choose_acting(&up, &[OsdId(1), OsdId(2), OsdId(4)], 3),
            up.to_vec()
        );
        assert_eq!(
            choose_acting(&up, &[OsdId(1), OsdId(2), OsdId(3)], 3),
            vec![OsdId(1), OsdId(2), OsdId(3)]
        );
        assert_eq!(
            choose_acting(&up, &[OsdId(2), OsdId(3)], 3),
            vec![OsdId(2), OsdId(3)]
        );
        assert_eq!(choose_acting(&up, &[], 3), Vec::<OsdId>::new());
    }
}
