//! The leader's failure policy, without IO: beacons and failure reports in, map changes out.
//!
//! - An up OSD is marked **down** once `mon_osd_min_down_reporters` distinct peers (fewer when
//!   fewer OSDs are up) reported it silent within the last `osd_heartbeat_grace` × 2, or once
//!   it sent no beacon for `mon_osd_report_timeout`.
//! - An OSD that is down and in is marked **out** after `mon_osd_down_out_interval`
//!   (0: never), counted from when this leader first saw it down; a new leader starts counting
//!   afresh, which only delays the change.
//! - An up OSD is marked **full** once its last beacon reports `mon_osd_full_percent` of its
//!   size used, and not full once it reports less.
//! - A change is proposed again only after a second, so a slow commit is not flooded.
//!
//! Time is milliseconds of the leader's monotonic clock, passed in.

use std::collections::BTreeMap;

use tidepool_placement::OsdId;
use tidepool_proto::mon::{Command, OsdStat};

use crate::service::MapState;

/// How long before the same change is proposed again.
const REPROPOSE_MS: u64 = 1000;

/// What the leader knows about OSD liveness.
#[derive(Debug, Default)]
pub struct FailurePolicy {
    /// When this leader started watching: beacons are expected from then on.
    since_ms: u64,
    last_beacon_ms: BTreeMap<OsdId, u64>,
    /// Per silent OSD, who reported it and when.
    reports: BTreeMap<OsdId, BTreeMap<OsdId, u64>>,
    down_since_ms: BTreeMap<OsdId, u64>,
    /// Per OSD, its size and what it had free at its last beacon.
    usage: BTreeMap<OsdId, (u64, u64)>,
    /// When each change (per OSD) was last proposed.
    proposed_ms: BTreeMap<(OsdId, Due), u64>,
}

/// A change the policy makes to one OSD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Down,
    Out,
    Full(bool),
}

impl FailurePolicy {
    /// A policy for a leader elected at `now_ms`.
    pub fn new(now_ms: u64) -> FailurePolicy {
        FailurePolicy {
            since_ms: now_ms,
            ..FailurePolicy::default()
        }
    }

    /// `osd` sent a beacon: it is alive, and reports about it are void.
    pub fn beacon(&mut self, osd: OsdId, now_ms: u64) {
        self.last_beacon_ms.insert(osd, now_ms);
        self.reports.remove(&osd);
    }

    /// `osd` reported its disk usage.
    pub fn usage(&mut self, osd: OsdId, stat: &OsdStat) {
        self.usage
            .insert(osd, (stat.total_bytes, stat.available_bytes));
    }

    /// `reporter` says `target` has been silent.
    pub fn failure(&mut self, reporter: OsdId, target: OsdId, now_ms: u64) {
        if reporter != target {
            self.reports
                .entry(target)
                .or_default()
                .insert(reporter, now_ms);
        }
    }

    /// The changes due at `now_ms` for the map in `state`.
    pub fn tick(&mut self, state: &MapState, now_ms: u64) -> Vec<Command> {
        let grace_ms = state.option("osd_heartbeat_grace") * 1000;
        let report_timeout_ms = state.option("mon_osd_report_timeout") * 1000;
        let down_out_ms = state.option("mon_osd_down_out_interval") * 1000;
        let up = state.map.osds.values().filter(|o| o.up).count();
        let reporters_needed = (state.option("mon_osd_min_down_reporters") as usize)
            .min(up.saturating_sub(1))
            .max(1);
        let full_percent = u128::from(state.option("mon_osd_full_percent"));
        let mut due = Vec::new();
        for osd in state.map.osds.values() {
            let id = osd.id;
            if osd.up {
                if self.down_since_ms.remove(&id).is_some() {
                    // It was down and booted since: the boot counts as a beacon.
                    self.beacon(id, now_ms);
                }
                let reporters = self.reports.get_mut(&id).map_or(0, |reports| {
                    reports.retain(|_, at| now_ms.saturating_sub(*at) <= 2 * grace_ms);
                    reports.len()
                });
                let heard = self
                    .last_beacon_ms
                    .get(&id)
                    .copied()
                    .unwrap_or(self.since_ms);
                if reporters >= reporters_needed
                    || now_ms.saturating_sub(heard) >= report_timeout_ms
                {
                    due.push((id, Due::Down));
                }
                if let Some(&(total, available)) = self.usage.get(&id).filter(|u| u.0 > 0) {
                    let used = u128::from(total.saturating_sub(available));
                    let full = used * 100 >= full_percent * u128::from(total);
                    if full != osd.full {
                        due.push((id, Due::Full(full)));
                    }
                }
            } else {
                self.reports.remove(&id);
                let since = *self.down_since_ms.entry(id).or_insert(now_ms);
                if osd.is_in && down_out_ms > 0 && now_ms.saturating_sub(since) >= down_out_ms {
                    due.push((id, Due::Out));
                }
            }
        }
        self.last_beacon_ms
            .retain(|id, _| state.map.osds.contains_key(id));
        self.usage.retain(|id, _| state.map.osds.contains_key(id));
        self.proposed_ms
            .retain(|_, at| now_ms.saturating_sub(*at) < REPROPOSE_MS);
        due.retain(|change| !self.proposed_ms.contains_key(change));
        for change in &due {
            self.proposed_ms.insert(*change, now_ms);
        }
        due.into_iter()
            .map(|(id, change)| match change {
                Due::Down => Command::OsdDown { id },
                Due::Out => Command::OsdAutoOut { id },
                Due::Full(full) => Command::OsdFull { id, full },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidepool_placement::Weight;
    use tidepool_proto::mon::Request;

    fn state_with_osds(n: u32) -> MapState {
        let mut state = MapState::genesis();
        for i in 0..n {
            let create = Command::OsdCreate {
                host: "host0".into(),
                weight: Weight::ONE,
            };
            let boot = Command::OsdBoot {
                id: OsdId(i),
                addr: format!("127.0.0.1:{}", 6800 + i),
            };
            apply(&mut state, create);
            apply(&mut state, boot);
        }
        apply(
            &mut state,
            Command::ConfigSet {
                key: "mon_osd_down_out_interval".into(),
                value: "10".into(),
            },
        );
        state
    }

    fn apply(state: &mut MapState, command: Command) {
        let sequence = state.answered.get("t").map_or(1, |(s, _)| s + 1);
        let request = Request {
            client: "t".into(),
            sequence,
            command,
        };
        let (_, answers) = state.apply_slot(&[crate::service::proposal(&request)]);
        answers[0].as_ref().expect("applies");
    }

    /// Rule: an OSD is marked full once it reports `mon_osd_full_percent` of its size used,
    /// and not full once it reports less; an OSD that reports no size is never full.
    #[test]
    fn usage_past_the_full_ratio_marks_full_and_back() {
        let mut state = state_with_osds(3);
        let mut policy = FailurePolicy::new(0);
        let stat = |total: u64, available: u64| OsdStat {
            total_bytes: total,
            available_bytes: available,
            ..OsdStat::default()
        };
        for osd in 0..3 {
            policy.beacon(OsdId(osd), 0);
        }
        policy.usage(OsdId(0), &stat(1000, 60));
        policy.usage(OsdId(1), &stat(1000, 50));
        policy.usage(OsdId(2), &stat(0, 0));
        let due = policy.tick(&state, 10);
        assert_eq!(
            due,
            vec![Command::OsdFull {
                id: OsdId(1),
                full: true
            }]
        );
        apply(&mut state, due[0].clone());
        assert!(state.map.osds[&OsdId(1)].full);
        assert!(policy.tick(&state, 20).is_empty(), "stays full, said once");
        policy.usage(OsdId(1), &stat(1000, 400));
        assert_eq!(
            policy.tick(&state, 2000),
            vec![Command::OsdFull {
                id: OsdId(1),
                full: false
            }]
        );
    }

    /// Rule: one reporter is not enough; two distinct reporters mark an OSD down; its beacon
    /// clears the reports.
    #[test]
    fn reports_from_enough_peers_mark_down() {
        let state = state_with_osds(4);
        let mut policy = FailurePolicy::new(0);
        for osd in 0..4 {
            policy.beacon(OsdId(osd), 0);
        }
        policy.failure(OsdId(1), OsdId(0), 100);
        policy.failure(OsdId(1), OsdId(0), 200);
        assert!(policy.tick(&state, 300).is_empty());
        policy.beacon(OsdId(0), 350);
        policy.failure(OsdId(2), OsdId(0), 400);
        assert!(
            policy.tick(&state, 500).is_empty(),
            "the beacon voided the reports"
        );
        policy.failure(OsdId(1), OsdId(0), 600);
        policy.failure(OsdId(3), OsdId(0), 700);
        assert_eq!(
            policy.tick(&state, 800),
            vec![Command::OsdDown { id: OsdId(0) }]
        );
        assert!(
            policy.tick(&state, 900).is_empty(),
            "not proposed twice at once"
        );
    }

    /// Rule: an OSD that stops sending beacons is marked down after the report timeout.
    #[test]
    fn missing_beacons_mark_down() {
        let state = state_with_osds(2);
        let mut policy = FailurePolicy::new(0);
        policy.beacon(OsdId(1), 0);
        for osd in [0, 1] {
            policy.beacon(OsdId(osd), 25_000);
        }
        policy.beacon(OsdId(1), 50_000);
        assert_eq!(
            policy.tick(&state, 55_000),
            vec![Command::OsdDown { id: OsdId(0) }]
        );
    }

    /// Rule: a down OSD is marked out after the interval and, once out, left alone; when it
    /// boots it comes back in.
    #[test]
    fn down_then_out_then_back_in() {
        let mut state = state_with_osds(3);
        apply(&mut state, Command::OsdDown { id: OsdId(2) });
        let mut policy = FailurePolicy::new(0);
        for osd in 0..3 {
            policy.beacon(OsdId(osd), 0);
        }
        assert!(policy.tick(&state, 1_000).is_empty());
        assert!(policy.tick(&state, 10_999).is_empty());
        assert_eq!(
            policy.tick(&state, 11_000),
            vec![Command::OsdAutoOut { id: OsdId(2) }]
        );
        apply(&mut state, Command::OsdAutoOut { id: OsdId(2) });
        assert!(!state.map.osds[&OsdId(2)].is_in);
        assert!(policy.tick(&state, 20_000).is_empty());
        apply(
            &mut state,
            Command::OsdBoot {
                id: OsdId(2),
                addr: "127.0.0.1:7000".into(),
            },
        );
        let osd = &state.map.osds[&OsdId(2)];
        assert!(osd.up && osd.is_in, "an auto-out OSD comes back in on boot");
    }

    /// Rule: an OSD that boots again after being down is not marked down at once for beacons
    /// it missed while it was down.
    #[test]
    fn a_boot_counts_as_a_beacon() {
        let mut state = state_with_osds(2);
        let mut policy = FailurePolicy::new(0);
        policy.beacon(OsdId(1), 0);
        apply(&mut state, Command::OsdDown { id: OsdId(0) });
        assert!(policy.tick(&state, 1_000).is_empty());
        apply(
            &mut state,
            Command::OsdBoot {
                id: OsdId(0),
                addr: "127.0.0.1:7000".into(),
            },
        );
        policy.beacon(OsdId(1), 40_000);
        assert!(policy.tick(&state, 40_000).is_empty(), "booted just now");
        policy.beacon(OsdId(1), 70_000);
        assert_eq!(
            policy.tick(&state, 70_000),
            vec![Command::OsdDown { id: OsdId(0) }],
            "and silent since"
        );
    }

    /// Rule: an OSD an operator marked out stays out when it boots.
    #[test]
    fn operator_out_stays_out() {
        let mut state = state_with_osds(2);
        apply(&mut state, Command::OsdOut { id: OsdId(1) });
        apply(&mut state, Command::OsdDown { id: OsdId(1) });
        apply(
            &mut state,
            Command::OsdBoot {
                id: OsdId(1),
                addr: "127.0.0.1:7001".into(),
            },
        );
        assert!(!state.map.osds[&OsdId(1)].is_in);
    }
}
