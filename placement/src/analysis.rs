//! Counting placement: PGs per OSD, and what moves between two maps.

use std::collections::BTreeMap;

use crate::map::{OsdId, PgId, PoolId, PoolKind};
use crate::select::{Placement, Scratch};

/// How many placement groups of `pool` each OSD holds (raw placement, every OSD of the pool's
/// rule listed, with zero when it holds none).
pub fn pg_counts(placement: &Placement, pool: PoolId) -> BTreeMap<OsdId, u64> {
    let mut counts: BTreeMap<OsdId, u64> = BTreeMap::new();
    let Some(pool_entry) = placement.map().pools.get(&pool) else {
        return counts;
    };
    for osd in placement.map().osds.values() {
        if osd.is_in
            && !osd.weight.is_zero()
            && placement.map().is_under(osd.id, pool_entry.rule.root)
        {
            counts.insert(osd.id, 0);
        }
    }
    let mut scratch = Scratch::default();
    let mut raw = Vec::new();
    for seed in 0..pool_entry.pg_num {
        placement.raw_into(PgId { pool, seed }, &mut scratch, &mut raw);
        for osd in raw.iter().flatten() {
            *counts.entry(*osd).or_default() += 1;
        }
    }
    counts
}

/// What changes between two placements of one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Movement {
    /// Copies (or shards) that must be written somewhere new.
    pub moved: u64,
    /// Copies (or shards) placed after the change.
    pub placed_after: u64,
    /// Placement groups with at least one copy moving.
    pub pgs_changed: u64,
    /// Moves by source and destination; `None` is "nowhere" (a copy created or dropped).
    pub flows: BTreeMap<(Option<OsdId>, Option<OsdId>), u64>,
}

impl Movement {
    /// Copies moved away from `osd`.
    pub fn moved_from(&self, osd: OsdId) -> u64 {
        self.flows
            .iter()
            .filter(|((from, _), _)| *from == Some(osd))
            .map(|(_, n)| n)
            .sum()
    }

    /// Copies moved onto `osd`.
    pub fn moved_to(&self, osd: OsdId) -> u64 {
        self.flows
            .iter()
            .filter(|((_, to), _)| *to == Some(osd))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The copies of `pool` that move from `before` to `after`. For replicated pools a copy moves
/// when an OSD joins the placement group's set (the order within the set does not matter); for
/// erasure-coded pools when a position changes OSD.
pub fn movement(before: &Placement, after: &Placement, pool: PoolId) -> Movement {
    let mut result = Movement::default();
    let (Some(old_pool), Some(new_pool)) =
        (before.map().pools.get(&pool), after.map().pools.get(&pool))
    else {
        return result;
    };
    let pg_num = old_pool.pg_num.max(new_pool.pg_num);
    let erasure = matches!(new_pool.kind, PoolKind::Erasure { .. });
    let mut scratch = Scratch::default();
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for seed in 0..pg_num {
        let pg = PgId { pool, seed };
        before.raw_into(pg, &mut scratch, &mut old);
        after.raw_into(pg, &mut scratch, &mut new);
        result.placed_after += new.iter().flatten().count() as u64;
        let mut changed = 0;
        if erasure {
            for position in 0..old.len().max(new.len()) {
                let from = old.get(position).copied().flatten();
                let to = new.get(position).copied().flatten();
                if from != to && to.is_some() {
                    *result.flows.entry((from, to)).or_default() += 1;
                    changed += 1;
                }
            }
        } else {
            let mut gone: Vec<OsdId> = old
                .iter()
                .flatten()
                .filter(|o| !new.contains(&Some(**o)))
                .copied()
                .collect();
            let added: Vec<OsdId> = new
                .iter()
                .flatten()
                .filter(|o| !old.contains(&Some(**o)))
                .copied()
                .collect();
            gone.sort();
            for (i, to) in added.iter().enumerate() {
                *result
                    .flows
                    .entry((gone.get(i).copied(), Some(*to)))
                    .or_default() += 1;
                changed += 1;
            }
        }
        result.moved += changed;
        result.pgs_changed += u64::from(changed > 0);
    }
    result
}
