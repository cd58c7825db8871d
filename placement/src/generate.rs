//! Building maps and changes from a few numbers: for `tidepool placement simulate`, local
//! clusters, tests and benchmarks.

use crate::incremental::{Change, Incremental};
use crate::map::{Bucket, BucketId, BucketType, ClusterMap, Osd, OsdId, Pool, PoolKind, Rule};
use crate::weight::Weight;

/// The name of the root bucket of generated maps.
pub const ROOT_NAME: &str = "default";

/// A regular cluster: `hosts` hosts named `host0`, `host1`, … under one root `default`, each
/// with `osds_per_host` OSDs of equal weight, numbered from 0 host by host. Every OSD is up and
/// in.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Number of hosts.
    pub hosts: u32,
    /// OSDs in each host.
    pub osds_per_host: u32,
    /// Weight of every OSD.
    pub weight: Weight,
}

impl Layout {
    /// The map of epoch 1 with this layout and no pools.
    pub fn build(&self) -> ClusterMap {
        let mut map = ClusterMap::default();
        map.epoch = crate::map::Epoch(1);
        let root = BucketId(0);
        map.buckets.insert(
            root,
            Bucket {
                id: root,
                name: ROOT_NAME.to_owned(),
                kind: BucketType::Root,
                parent: None,
            },
        );
        for h in 0..self.hosts {
            let host = BucketId(h + 1);
            map.buckets.insert(
                host,
                Bucket {
                    id: host,
                    name: format!("host{h}"),
                    kind: BucketType::Host,
                    parent: Some(root),
                },
            );
            for i in 0..self.osds_per_host {
                let id = OsdId(h * self.osds_per_host + i);
                map.osds.insert(id, new_osd(id, host, self.weight));
            }
        }
        map
    }
}

fn new_osd(id: OsdId, parent: BucketId, weight: Weight) -> Osd {
    Osd {
        id,
        parent,
        weight,
        up: true,
        is_in: true,
        addr: None,
        full: false,
    }
}

/// A pool over the whole of the root named [`ROOT_NAME`], or `None` when the map has no such root.
pub fn pool(
    map: &ClusterMap,
    name: &str,
    kind: PoolKind,
    pg_num: u32,
    failure_domain: BucketType,
) -> Option<Pool> {
    let root = map.bucket_by_name(ROOT_NAME)?.id;
    Some(Pool {
        id: map.next_pool_id(),
        name: name.to_owned(),
        kind,
        pg_num,
        rule: Rule {
            root,
            failure_domain,
        },
    })
}

/// The changes that add a new, up and in OSD with `weight` to the host named `host`, creating
/// the host under [`ROOT_NAME`] when it does not exist. Returns the new OSD's id too.
pub fn add_osd(map: &ClusterMap, host: &str, weight: Weight) -> (OsdId, Vec<Change>) {
    let mut changes = Vec::new();
    let parent = match map.bucket_by_name(host) {
        Some(bucket) => bucket.id,
        None => {
            let id = map.next_bucket_id();
            let root = map.bucket_by_name(ROOT_NAME).map(|b| b.id);
            changes.push(Change::AddBucket(Bucket {
                id,
                name: host.to_owned(),
                kind: BucketType::Host,
                parent: root,
            }));
            id
        }
    };
    let id = map.next_osd_id();
    changes.push(Change::AddOsd(new_osd(id, parent, weight)));
    (id, changes)
}

/// The incremental that follows `map` with `changes`.
pub fn next(map: &ClusterMap, changes: Vec<Change>) -> Incremental {
    Incremental {
        epoch: map.epoch.next(),
        changes,
    }
}
