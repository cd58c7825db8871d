//! The monitor's Prometheus metrics (`tidepool_mon_…`), and the cluster-wide gauges
//! (`tidepool_cluster_…`) that the leader alone exports, computed by `tidepool-state` from
//! the snapshot the leader holds: the map, the OSDs' reports and its quorum.

use std::collections::{BTreeMap, BTreeSet};

use tidepool_metrics::{
    self as metrics, Collector, FloatGauge, GaugeVec, Histogram, IntCounter, IntGauge,
    MetricsError, Registry,
};
use tidepool_placement::ClusterMap;
use tidepool_proto::mon::{MonStatus, Report};
use tidepool_state::gauges::{cluster_gauges, Gauge};
use tidepool_state::Snapshot;

use crate::paxos::Rank;

#[derive(Debug)]
pub(crate) struct MonMetrics {
    in_quorum: IntGauge,
    quorum_size: IntGauge,
    is_leader: IntGauge,
    elections: IntCounter,
    pub commit_seconds: Histogram,
    map_epoch: IntGauge,
    /// The cluster gauges, by name (help and samples), exported while leading.
    cluster: ClusterGauges,
}

impl MonMetrics {
    pub fn new(registry: &Registry) -> Result<MonMetrics, MetricsError> {
        Ok(MonMetrics {
            in_quorum: metrics::gauge(
                registry,
                "tidepool_mon_in_quorum",
                "1 while this monitor leads or follows a leader under a valid lease",
            )?,
            quorum_size: metrics::gauge(
                registry,
                "tidepool_mon_quorum_size",
                "Monitors in the quorum, as its leader sees them (0 on the others)",
            )?,
            is_leader: metrics::gauge(
                registry,
                "tidepool_mon_is_leader",
                "1 while this monitor leads",
            )?,
            elections: metrics::counter(
                registry,
                "tidepool_mon_elections_total",
                "Leaders this monitor saw elected (itself included)",
            )?,
            commit_seconds: metrics::latency(
                registry,
                "tidepool_mon_commit_seconds",
                "Time from a command's proposal to its commit, on the leader",
            )?,
            map_epoch: metrics::gauge(
                registry,
                "tidepool_mon_map_epoch",
                "The epoch of the cluster map this monitor holds",
            )?,
            cluster: ClusterGauges {
                registry: registry.clone(),
                gauges: BTreeMap::new(),
            },
        })
    }

    /// A new leader was seen.
    pub fn elected(&self) {
        self.elections.inc();
    }

    /// This monitor's view: whether it leads, whether it is readable, the epoch it holds.
    pub fn set_role(&self, leading: bool, readable: bool, epoch: u64) {
        self.is_leader.set(i64::from(leading));
        self.in_quorum.set(i64::from(readable));
        self.map_epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        if !leading {
            self.quorum_size.set(0);
        }
    }

    /// The leader's view of the cluster: its quorum (`members` monitors, `quorum` of them
    /// with it), the map and the reports; the cluster gauges follow from them.
    pub fn set_cluster(
        &mut self,
        rank: Rank,
        members: u8,
        quorum: &[Rank],
        map: &ClusterMap,
        report: Report,
        config: Vec<(String, String)>,
    ) {
        self.quorum_size.set(quorum.len() as i64);
        let mons = (0..members)
            .map(|r| {
                quorum.contains(&r).then_some(MonStatus {
                    rank: r,
                    leader: Some(rank),
                    readable: true,
                    commit: 0,
                    epoch: map.epoch,
                    map_digest: 0,
                })
            })
            .collect();
        let snapshot = Snapshot {
            mons,
            map: Some(map.clone()),
            report,
            config,
            ..Snapshot::default()
        };
        self.cluster
            .set(cluster_gauges(&tidepool_state::status(&snapshot)));
    }

    /// Not leading: no cluster gauges from here.
    pub fn clear_cluster(&mut self) {
        self.cluster.set(Vec::new());
    }
}

/// Gauges whose names and labels come from the state: registered on first sight, and
/// unregistered when no longer said (as when this monitor stops leading); a label value no
/// longer said (a PG state no PG is in any more) disappears.
#[derive(Debug)]
struct ClusterGauges {
    registry: Registry,
    gauges: BTreeMap<&'static str, Family>,
}

/// One metric name: unlabelled, or labelled by one label.
#[derive(Debug)]
enum Family {
    One(FloatGauge),
    Labelled(GaugeVec),
}

impl Family {
    fn collector(self) -> Box<dyn Collector> {
        match self {
            Family::One(gauge) => Box::new(gauge),
            Family::Labelled(gauges) => Box::new(gauges),
        }
    }
}

impl ClusterGauges {
    fn set(&mut self, samples: Vec<Gauge>) {
        let said: BTreeSet<&'static str> = samples.iter().map(|s| s.name).collect();
        let gone: Vec<&'static str> = self
            .gauges
            .keys()
            .filter(|name| !said.contains(*name))
            .copied()
            .collect();
        for name in gone {
            if let Some(family) = self.gauges.remove(name) {
                let _ = self.registry.unregister(family.collector());
            }
        }
        for family in self.gauges.values() {
            if let Family::Labelled(gauges) = family {
                gauges.reset();
            }
        }
        for sample in samples {
            if !self.gauges.contains_key(sample.name) {
                let family = match &sample.label {
                    None => metrics::float_gauge(&self.registry, sample.name, sample.help)
                        .map(Family::One),
                    Some((label, _)) => {
                        metrics::float_gauges(&self.registry, sample.name, sample.help, &[label])
                            .map(Family::Labelled)
                    }
                };
                match family {
                    Ok(family) => {
                        self.gauges.insert(sample.name, family);
                    }
                    Err(error) => {
                        tracing::warn!(%error, name = sample.name, "a cluster gauge is left out");
                        continue;
                    }
                }
            }
            match (self.gauges.get(sample.name), &sample.label) {
                (Some(Family::One(gauge)), None) => gauge.set(sample.value),
                (Some(Family::Labelled(gauges)), Some((_, value))) => gauges
                    .with_label_values(&[value.as_str()])
                    .set(sample.value),
                _ => {}
            }
        }
    }
}
