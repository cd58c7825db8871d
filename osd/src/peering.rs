//! The decisions of peering, without IO: whom to ask about a PG, whether enough of them
//! answered for the PG to go active, which holder's history is authoritative, how each holder
//! catches up with it, which holders serve the PG (`pg_temp`) while new holders backfill, and
//! what a holder does with a change or push from a primary (fencing). The daemon gathers the
//! facts, asks these functions, and carries out the answer (docs/osd.md, "Peering").

use std::collections::BTreeSet;

use tidepool_placement::{Epoch, OsdId, PgActivation};
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

/// The rank of a copy's history: the newest interval it was activated in first, then the
/// epoch of its newest entry, then its newest version. A history written in a newer interval
/// thus beats a longer one from an older interval (whose extra entries were never
/// acknowledged: the newer interval's peering fenced their writer). A copy with no entries
/// (none, or an interrupted backfill) ranks lowest.
pub fn rank(copy: &Copy) -> (u64, u64, u64) {
    copy.as_ref().map_or((0, 0, 0), |(info, _)| {
        (
            info.last_epoch_started.0,
            info.last_epoch.0,
            info.last_update,
        )
    })
}

/// The OSDs a primary asks about a PG: its acting and up members, and the acting set of the
/// last interval that went active (its members hold every acknowledged write). Without such a
/// record (a PG that never went active since it was recorded) every up OSD is asked.
pub fn probe_set(
    me: OsdId,
    acting: &[OsdId],
    up: &[OsdId],
    last_active: Option<&PgActivation>,
    up_osds: &[OsdId],
) -> Vec<OsdId> {
    let mut probe = BTreeSet::new();
    probe.extend(acting.iter().chain(up));
    match last_active {
        Some(record) => probe.extend(record.acting.iter().filter(|o| up_osds.contains(o))),
        None => probe.extend(up_osds),
    }
    probe.remove(&me);
    probe.into_iter().collect()
}

/// Whether a PG may go active after the OSDs in `answered` (the asker included) answered:
/// at least `k` members of the last interval that went active must be among them (`k` is 1
/// for a replicated pool, whose every copy is whole, and the data shard count of an erasure
/// pool, whose objects need `k` shards), or every member still in the map when fewer are left
/// (the others were removed: their data is declared lost). Otherwise the PG is down, and the
/// answer names the members it waits for.
pub fn prior_answered(
    last_active: Option<&PgActivation>,
    answered: &[OsdId],
    k: usize,
    exists: impl Fn(OsdId) -> bool,
) -> Result<(), Vec<OsdId>> {
    let Some(record) = last_active else {
        return Ok(());
    };
    let alive: Vec<OsdId> = record
        .acting
        .iter()
        .copied()
        .filter(|o| exists(*o))
        .collect();
    let heard = alive.iter().filter(|o| answered.contains(o)).count();
    if heard >= k.max(1).min(alive.len()) {
        Ok(())
    } else {
        Err(alive
            .into_iter()
            .filter(|o| !answered.contains(o))
            .collect())
    }
}

/// The copies that must undo the authority's newest entry `newest` in an erasure PG's
/// peering: those whose newest entry it is, when fewer than `k` answering copies may hold it.
/// Such a change reached too few shards to be decoded, and was never acknowledged (an
/// acknowledged change is on every shard of an acting set of at least `k + 1`, and peering
/// hears from `k` of them). Only the newest entry can be in doubt: a primary sends a change
/// only once every holder took the one before.
///
/// A copy with newer entries than `newest` (from an older interval: the authority outranks it)
/// may hold it below them; it is counted as holding it, so that an acknowledged change is
/// never undone. Never anything for `k` = 1: the authority holds it.
pub fn in_doubt(
    newest: Option<&LogEntry>,
    copies: &[(OsdId, Copy)],
    k: usize,
) -> Option<Vec<OsdId>> {
    let newest = newest?;
    let mut may_hold = 0;
    let mut holders = Vec::new();
    for (osd, copy) in copies {
        let Some((info, last)) = copy else { continue };
        if last.as_ref() == Some(newest) {
            holders.push(*osd);
            may_hold += 1;
        } else if info.last_update > newest.version && info.last_epoch >= newest.epoch {
            may_hold += 1;
        }
    }
    (may_hold < k.max(1)).then_some(holders)
}

/// The summary of a copy whose summary is `info` once its newest entry, at `info.last_update`,
/// is undone; `before` is the entry before it (`None` when it was the first).
pub fn undone(info: &PgInfo, before: Option<&LogEntry>) -> PgInfo {
    let last_update = info.last_update.saturating_sub(1);
    PgInfo {
        last_update,
        last_epoch: before.map_or(Epoch(0), |e| e.epoch),
        log_tail: info.log_tail.min(last_update),
        last_epoch_started: info.last_epoch_started,
    }
}

/// How long (milliseconds) a new primary waits before it serves reads: the longest read lease
/// that the holders it asked had granted to the primary of the last active interval, unless
/// that primary answered itself (answering fenced it, so it serves nothing more).
pub fn lease_wait(
    last_active: Option<&PgActivation>,
    answered: &[OsdId],
    leases: &[(OsdId, u64)],
) -> u64 {
    let Some(old) = last_active.and_then(|r| r.acting.first()) else {
        return 0;
    };
    if answered.contains(old) {
        return 0;
    }
    leases
        .iter()
        .filter(|(osd, _)| osd == old)
        .map(|(_, ms)| *ms)
        .max()
        .unwrap_or(0)
}

/// What a holder does with a change (`Replicate`) from a primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Apply it: it is the next change of this copy.
    Apply,
    /// This copy has it already (a resend): acknowledge.
    Duplicate,
    /// The primary's epoch is older than this PG's fence: a newer primary has peered.
    Stale(Epoch),
    /// This copy missed earlier changes: the primary brings it up to date first.
    Behind,
    /// This copy's history differs at or before the change: the primary must replace it.
    Diverged,
}

/// Decides what a holder whose copy is `info` with the kept log `log`, fenced at `fence`,
/// does with `entry` sent under the primary's map `epoch`.
pub fn accept_change(
    fence: Epoch,
    epoch: Epoch,
    info: &PgInfo,
    log: &[LogEntry],
    entry: &LogEntry,
) -> Accept {
    if epoch < fence {
        return Accept::Stale(fence);
    }
    if info.last_update >= entry.version {
        // A resend of a change this copy has is acknowledged again; the same version with
        // another change (another primary's) is a different history.
        return if log.iter().rev().any(|e| e == entry) {
            Accept::Duplicate
        } else {
            Accept::Diverged
        };
    }
    if info.last_update + 1 != entry.version {
        return Accept::Behind;
    }
    Accept::Apply
}

/// The holder whose history wins: the highest [`rank`], the first of equals in `holders` order
/// (put the deciding OSD first so that it stays the authority on ties).
pub fn authority(holders: &[(OsdId, Copy)]) -> Option<OsdId> {
    let mut best: Option<(OsdId, (u64, u64, u64))> = None;
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
                last_epoch_started: Epoch(0),
            },
            (last_update > 0).then(|| entry(last_update, epoch)),
        ))
    }

    fn info(last_update: u64, tail: u64) -> PgInfo {
        PgInfo {
            last_update,
            last_epoch: Epoch(1),
            log_tail: tail,
            last_epoch_started: Epoch(0),
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
    fn started(mut copy: Copy, les: u64) -> Copy {
        if let Some((info, _)) = copy.as_mut() {
            info.last_epoch_started = Epoch(les);
        }
        copy
    }

    fn activation(epoch: u64, acting: &[u32]) -> PgActivation {
        PgActivation {
            epoch: Epoch(epoch),
            acting: acting.iter().map(|&o| OsdId(o)).collect(),
        }
    }

    fn osds(ids: &[u32]) -> Vec<OsdId> {
        ids.iter().map(|&o| OsdId(o)).collect()
    }

    /// Rule: a history started in a newer interval beats a longer one, or one with newer
    /// entries, from an older interval (a paused primary's writes after it was replaced).
    #[test]
    fn authority_prefers_the_newest_started_interval() {
        let holders = vec![
            (OsdId(1), started(copy(20, 7, 0), 5)),
            (OsdId(2), started(copy(12, 6, 0), 8)),
        ];
        assert_eq!(authority(&holders), Some(OsdId(2)));
    }

    /// Rule: a primary asks its acting and up members and the last active interval's members
    /// that are up; with no record of one, every up OSD.
    #[test]
    fn probe_set_names_the_last_active_interval() {
        let record = activation(5, &[3, 4, 5]);
        assert_eq!(
            probe_set(
                OsdId(1),
                &osds(&[1, 2]),
                &osds(&[1, 2, 6]),
                Some(&record),
                &osds(&[1, 2, 3, 4, 6, 7])
            ),
            osds(&[2, 3, 4, 6])
        );
        assert_eq!(
            probe_set(OsdId(1), &osds(&[1]), &osds(&[1]), None, &osds(&[1, 2, 7])),
            osds(&[2, 7])
        );
    }

    /// Rule: a PG goes active only when an OSD of its last active interval answered, or every
    /// such OSD was removed from the map; otherwise it is down, waiting for those that exist.
    #[test]
    fn down_until_the_last_active_interval_answers() {
        let record = activation(5, &[3, 4, 5]);
        let exists = |o: OsdId| o != OsdId(5);
        assert_eq!(prior_answered(None, &osds(&[1]), 1, exists), Ok(()));
        assert_eq!(
            prior_answered(Some(&record), &osds(&[1, 4]), 1, exists),
            Ok(())
        );
        assert_eq!(
            prior_answered(Some(&record), &osds(&[1, 2]), 1, exists),
            Err(osds(&[3, 4]))
        );
        let gone = activation(5, &[5]);
        assert_eq!(prior_answered(Some(&gone), &osds(&[1]), 1, exists), Ok(()));
    }

    /// Rule: an erasure PG needs `k` shards of its last active interval (or all that are left
    /// in the map, when fewer are), and names those it still waits for.
    #[test]
    fn erasure_pg_is_down_below_k_shards_of_the_last_interval() {
        let record = activation(5, &[1, 2, 3, 4, 5, 6]);
        let all = |_: OsdId| true;
        assert_eq!(
            prior_answered(Some(&record), &osds(&[1, 2, 3, 9]), 4, all),
            Err(osds(&[4, 5, 6]))
        );
        assert_eq!(
            prior_answered(Some(&record), &osds(&[1, 2, 3, 6]), 4, all),
            Ok(())
        );
        // Four of the six were removed: the two left are all there is.
        let two_left = |o: OsdId| o.0 > 4;
        assert_eq!(
            prior_answered(Some(&record), &osds(&[5, 6]), 4, two_left),
            Ok(())
        );
        assert_eq!(
            prior_answered(Some(&record), &osds(&[5]), 4, two_left),
            Err(osds(&[6]))
        );
    }

    /// Rule: the authority's newest entry is undone when fewer than `k` answering copies have
    /// it as their newest; those copies are the ones to undo it. Never with `k` = 1.
    #[test]
    fn the_newest_entry_is_in_doubt_below_k_holders() {
        let copies = vec![
            (OsdId(1), copy(8, 3, 0)),
            (OsdId(2), copy(8, 3, 0)),
            (OsdId(3), copy(7, 1, 0)),
            (OsdId(4), copy(8, 2, 0)),
            (OsdId(5), None),
        ];
        let newest = entry(8, 3);
        assert_eq!(
            in_doubt(Some(&newest), &copies, 3),
            Some(osds(&[1, 2])),
            "the entry 8 of epoch 2 is another change"
        );
        assert_eq!(in_doubt(Some(&newest), &copies, 2), None);
        assert_eq!(in_doubt(Some(&newest), &copies[..1], 1), None);
        assert_eq!(in_doubt(None, &copies, 3), None);
        // A copy with newer entries, made after it, may hold it below them.
        let mut more = copies.clone();
        more.push((OsdId(6), copy(9, 3, 0)));
        assert_eq!(in_doubt(Some(&newest), &more, 3), None);
        let before = entry(7, 1);
        assert_eq!(
            undone(&info(8, 2), Some(&before)),
            PgInfo {
                last_update: 7,
                last_epoch: Epoch(1),
                log_tail: 2,
                last_epoch_started: Epoch(0),
            }
        );
        assert_eq!(undone(&info(1, 1), None), PgInfo::default());
    }

    /// Rule: a new primary waits out the leases granted to the last interval's primary,
    /// unless that primary answered (and is fenced).
    #[test]
    fn lease_wait_covers_only_an_unanswered_old_primary() {
        let record = activation(5, &[3, 4]);
        let leases = [(OsdId(3), 900), (OsdId(3), 1200), (OsdId(7), 4000)];
        assert_eq!(lease_wait(Some(&record), &osds(&[1, 4]), &leases), 1200);
        assert_eq!(lease_wait(Some(&record), &osds(&[1, 3]), &leases), 0);
        assert_eq!(lease_wait(None, &osds(&[1]), &leases), 0);
    }

    /// Rule: a holder applies only the next change of its history, from a primary at least
    /// as new as its fence; a resend is acknowledged again; the same version with another
    /// change, or a version it is past, is another history.
    #[test]
    fn accept_change_fences_and_checks_the_history() {
        let have = info(5, 0);
        let kept = log(1, 5);
        let cases = [
            (3, 2, entry(6, 1), Accept::Stale(Epoch(3))),
            (3, 3, entry(6, 1), Accept::Apply),
            (1, 4, entry(5, 1), Accept::Duplicate),
            (1, 4, entry(5, 2), Accept::Diverged),
            (1, 4, entry(3, 2), Accept::Diverged),
            (1, 4, entry(8, 1), Accept::Behind),
        ];
        for (fence, epoch, sent, expected) in cases {
            assert_eq!(
                accept_change(Epoch(fence), Epoch(epoch), &have, &kept, &sent),
                expected,
                "fence {fence}, epoch {epoch}, entry {sent:?}"
            );
        }
    }
}
