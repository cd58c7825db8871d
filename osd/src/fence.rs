//! Fencing and read leases: what stops an OSD with an older view of a PG (one that was paused,
//! cut off or restarted) from acknowledging writes or serving reads once a newer primary has
//! peered the PG (docs/osd.md, "Fencing").
//!
//! - A PG's **fence** on an OSD is the newest epoch under which a primary asked it about the
//!   PG (peering), or the epoch in which this OSD last booted. Changes, pushes and reads of an
//!   older epoch are refused; a change that was being applied when the fence rose is not
//!   acknowledged. Each PG's machine keeps its fence ([`crate::machine`]); this OSD keeps the
//!   boot epoch and the newest fence of all, which decides read leases.
//! - A **read lease**: a primary serves reads only while every other acting holder has
//!   answered one of its heartbeats within [`READ_LEASE`]. A holder answers a heartbeat as a
//!   lease only when the sender's map is at least as new as every fence it has; a new primary
//!   waits out the leases the old primary may still hold before it serves reads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tidepool_placement::{Epoch, OsdId};

/// How long a heartbeat answer lets a primary serve reads.
pub const READ_LEASE: Duration = Duration::from_secs(4);

/// This OSD's fences, the read leases it granted and those it holds.
#[derive(Debug, Default)]
pub struct Fences {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The epoch in which this OSD last came up at its address (`None` before it has).
    booted: Option<Epoch>,
    /// The newest fence of any PG.
    highest: Epoch,
    /// Leases granted: to whom, when, under which epoch of theirs.
    granted: HashMap<OsdId, (Instant, Epoch)>,
    /// Leases held: from whom, and when the heartbeat they answered was sent.
    held: HashMap<OsdId, Instant>,
}

impl Fences {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that this OSD is up in the map since `epoch` (`None`: it is down, or not yet
    /// up at its address): everything older than that epoch is refused.
    pub fn set_booted(&self, epoch: Option<Epoch>) {
        let mut inner = self.inner();
        inner.booted = epoch;
        if epoch.is_none() {
            inner.held.clear();
        }
    }

    /// The epoch in which this OSD came up at its address (`None` while it is not up).
    pub fn booted(&self) -> Option<Epoch> {
        self.inner().booted
    }

    /// Notes that a PG's fence rose to `epoch` (a peering question, or this OSD's own
    /// peering).
    pub fn raise(&self, epoch: Epoch) {
        let mut inner = self.inner();
        inner.highest = inner.highest.max(epoch);
    }

    /// Whether a heartbeat from `from` under its map `epoch` gets a read lease: only when that
    /// map is at least as new as every fence here.
    pub fn grant(&self, from: OsdId, epoch: Epoch) -> bool {
        let mut inner = self.inner();
        let Some(booted) = inner.booted else {
            return false;
        };
        if epoch < inner.highest.max(booted) {
            return false;
        }
        inner.granted.insert(from, (Instant::now(), epoch));
        true
    }

    /// The leases still running that were granted under maps older than `epoch`, as
    /// `(osd, milliseconds left)`.
    pub fn granted_before(&self, epoch: Epoch) -> Vec<(OsdId, u64)> {
        let inner = self.inner();
        inner
            .granted
            .iter()
            .filter(|(_, (_, under))| *under < epoch)
            .filter_map(|(osd, (at, _))| {
                let left = READ_LEASE.checked_sub(at.elapsed())?;
                Some((*osd, left.as_millis() as u64 + 1))
            })
            .collect()
    }

    /// Records a lease from `from` for a heartbeat (or question) sent at `sent`.
    pub fn hold(&self, from: OsdId, sent: Instant) {
        let mut inner = self.inner();
        let entry = inner.held.entry(from).or_insert(sent);
        *entry = (*entry).max(sent);
    }

    /// Whether this OSD holds a running lease from every one of `holders`.
    pub fn held_from_all(&self, holders: &[OsdId]) -> bool {
        let inner = self.inner();
        holders.iter().all(|osd| {
            inner
                .held
                .get(osd)
                .is_some_and(|sent| sent.elapsed() < READ_LEASE)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: nothing is taken before this OSD is up; the boot epoch is forgotten while the
    /// map has it down.
    #[test]
    fn booted_follows_the_map() {
        let fences = Fences::default();
        assert_eq!(fences.booted(), None);
        fences.set_booted(Some(Epoch(5)));
        assert_eq!(fences.booted(), Some(Epoch(5)));
        fences.set_booted(None);
        assert_eq!(fences.booted(), None);
    }

    /// Rule: a heartbeat under a map older than any fence gets no lease; leases granted under
    /// older maps than a question's are reported to the asker.
    #[test]
    fn leases_stop_at_the_fence() {
        let fences = Fences::default();
        assert!(!fences.grant(OsdId(1), Epoch(3)), "not booted");
        fences.set_booted(Some(Epoch(2)));
        assert!(fences.grant(OsdId(1), Epoch(3)));
        fences.raise(Epoch(4));
        assert!(!fences.grant(OsdId(1), Epoch(3)));
        assert!(fences.grant(OsdId(2), Epoch(4)));
        let before: Vec<OsdId> = fences
            .granted_before(Epoch(4))
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(before, vec![OsdId(1)]);
        fences.hold(OsdId(1), Instant::now());
        assert!(fences.held_from_all(&[OsdId(1)]));
        assert!(!fences.held_from_all(&[OsdId(1), OsdId(2)]));
        assert!(fences.held_from_all(&[]));
    }
}
