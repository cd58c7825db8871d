//! The placement function: placement group → ordered OSDs.
//!
//! Every OSD with a non-zero weight draws `-log2(u) / weight` for a uniform `u` hashed from
//! (placement group, attempt, OSD); the smallest draw is the best (straw2's `ln(u) / weight`,
//! negated). A bucket's draw is the best draw of the OSDs below it, so a bucket wins with
//! probability proportional to its weight, exactly as straw2 with summed weights, and in addition
//! a change to one OSD's weight changes only the draws of that OSD: data moves only to or from
//! the OSD whose weight changed, wherever it sits in the hierarchy.
//!
//! * Replicated pools ("first-n"): one draw per OSD; the failure domains are ranked by their
//!   draw, and each of the best `size` domains that has an `in` OSD contributes its best `in`
//!   OSD. An OSD marked out therefore hands its copies to the next best OSD of its own domain,
//!   or, when its domain has none left, to the next domain; nothing else moves.
//! * Erasure-coded pools ("independent"): position `p` draws with attempt `p + width * round`;
//!   the winning domain takes the position unless an earlier position claimed it (retried in the
//!   next round, up to `tunables.erasure_rounds_max` rounds); a position whose domain has no `in`
//!   OSD left looks elsewhere only after every other position has settled (see
//!   `select_erasure`). A position that finds nothing stays empty. Marking an OSD out changes
//!   the positions it held and nothing else.
//!
//! `out` OSDs still count towards their domain's draw (like Ceph's reweight, not its CRUSH
//! weight); only a weight change alters draws.

use std::collections::BTreeMap;

use crate::cost::cost;
use crate::hash::{draw_hash, draw_key, osd_salt, pg_input};
use crate::map::{Ancestor, ClusterMap, OsdId, PgId, PoolId, PoolKind, Rule};

/// One OSD of a compiled rule.
#[derive(Clone, Copy, Debug)]
struct Leaf {
    osd: u32,
    salt: u64,
    weight: u32,
    is_in: bool,
}

/// The OSDs a rule can choose from, grouped by failure domain.
#[derive(Clone, Debug)]
struct RuleTable {
    /// Leaves sorted by failure domain; only OSDs with a non-zero weight.
    leaves: Vec<Leaf>,
    /// `leaves[domains[d].0..domains[d].1]` are the leaves of domain `d`.
    domains: Vec<(u32, u32)>,
    /// All leaves have the same weight, so draws compare by hash alone.
    uniform: bool,
}

/// An OSD's draw; smaller `cost / weight` is better.
#[derive(Clone, Copy, Debug)]
struct Draw {
    cost: u64,
    weight: u32,
    hash: u32,
    osd: u32,
}

impl Draw {
    /// Whether `self` beats `other`. Ties (vanishingly rare) go to the larger hash, then the
    /// smaller OSD id, so the order is total and independent of iteration order.
    #[inline(always)]
    fn beats(&self, other: &Draw, uniform: bool) -> bool {
        if !uniform {
            let lhs = u128::from(self.cost) * u128::from(other.weight);
            let rhs = u128::from(other.cost) * u128::from(self.weight);
            if lhs != rhs {
                return lhs < rhs;
            }
        }
        self.hash > other.hash || (self.hash == other.hash && self.osd < other.osd)
    }
}

impl RuleTable {
    fn new(map: &ClusterMap, rule: Rule) -> RuleTable {
        let mut grouped: BTreeMap<Ancestor, Vec<Leaf>> = BTreeMap::new();
        for osd in map.osds.values() {
            if osd.weight.is_zero() || !map.is_under(osd.id, rule.root) {
                continue;
            }
            // An OSD outside any bucket of the failure-domain type cannot be placed by this rule.
            let Some(domain) = map.ancestor(osd.id, rule.failure_domain) else {
                continue;
            };
            grouped.entry(domain).or_default().push(Leaf {
                osd: osd.id.0,
                salt: osd_salt(osd.id.0),
                weight: osd.weight.raw(),
                is_in: osd.is_in,
            });
        }
        let mut leaves = Vec::new();
        let mut domains = Vec::with_capacity(grouped.len());
        for (_, group) in grouped {
            let start = leaves.len() as u32;
            leaves.extend(group);
            domains.push((start, leaves.len() as u32));
        }
        let uniform = leaves.windows(2).all(|w| w[0].weight == w[1].weight);
        RuleTable {
            leaves,
            domains,
            uniform,
        }
    }

    #[inline(always)]
    fn leaves_of(&self, range: (u32, u32)) -> &[Leaf] {
        &self.leaves[range.0 as usize..range.1 as usize]
    }

    #[inline(always)]
    fn draw(&self, leaf: &Leaf, key: u64) -> Draw {
        let hash = draw_hash(key, leaf.salt);
        Draw {
            cost: if self.uniform { 0 } else { cost(hash) },
            weight: leaf.weight,
            hash,
            osd: leaf.osd,
        }
    }

    /// The best draw of the leaves in `range`, and the best among those that are `in`.
    #[inline(always)]
    fn best_in_range(&self, range: (u32, u32), key: u64) -> (Option<Draw>, Option<Draw>) {
        let mut best: Option<Draw> = None;
        let mut best_in: Option<Draw> = None;
        // While the best draw is also the best `in` draw (the common case: nothing is out),
        // one comparison decides both.
        let mut best_is_in = false;
        for leaf in self.leaves_of(range) {
            let draw = self.draw(leaf, key);
            if best.is_none_or(|b| draw.beats(&b, self.uniform)) {
                best = Some(draw);
                best_is_in = leaf.is_in;
                if leaf.is_in {
                    best_in = Some(draw);
                }
            } else if leaf.is_in
                && !best_is_in
                && best_in.is_none_or(|b| draw.beats(&b, self.uniform))
            {
                best_in = Some(draw);
            }
        }
        (best, best_in)
    }

    /// First-n selection of `width` OSDs from distinct domains.
    fn select_replicated(&self, x: u64, width: usize, scratch: &mut Scratch) {
        let key = draw_key(x, 0);
        let ranked = &mut scratch.ranked;
        ranked.clear();
        for &range in &self.domains {
            let (Some(best), Some(best_in)) = self.best_in_range(range, key) else {
                continue;
            };
            if ranked.len() == width && !best.beats(&ranked[width - 1].0, self.uniform) {
                continue;
            }
            let at = ranked
                .iter()
                .position(|(other, _)| best.beats(other, self.uniform))
                .unwrap_or(ranked.len());
            if ranked.len() == width {
                ranked.pop();
            }
            ranked.insert(at, (best, best_in));
        }
        scratch.out.clear();
        scratch
            .out
            .extend(ranked.iter().map(|(_, chosen)| Some(OsdId(chosen.osd))));
    }

    /// The domain holding the best draw for `key`.
    fn race(&self, key: u64) -> Option<usize> {
        let mut winner: Option<(Draw, usize)> = None;
        for (domain, &range) in self.domains.iter().enumerate() {
            for leaf in self.leaves_of(range) {
                let draw = self.draw(leaf, key);
                if winner.is_none_or(|(w, _)| draw.beats(&w, self.uniform)) {
                    winner = Some((draw, domain));
                }
            }
        }
        winner.map(|(_, domain)| domain)
    }

    /// Independent (positionally stable) selection of `width` positions.
    ///
    /// Phase one: in each round, every open position claims the winner of its race unless an
    /// earlier claim holds that domain (a collision, retried next round). A claimed domain with
    /// no `in` OSD parks the position. Phase two: parked and still-open positions draw again with
    /// fresh attempts and take only unclaimed domains. Because a domain that loses its last `in`
    /// OSD is still claimed in phase one, the other positions' claims do not change; only the
    /// parked position looks elsewhere.
    fn select_erasure(&self, x: u64, width: usize, rounds_max: u16, scratch: &mut Scratch) {
        scratch.out.clear();
        scratch.out.resize(width, None);
        scratch.parked.clear();
        scratch.parked.resize(width, false);
        scratch.taken.clear();
        scratch.taken.resize(self.domains.len(), false);
        let rounds = u32::from(rounds_max);
        for phase in 0..2u32 {
            for round in 0..rounds {
                let mut open = false;
                for position in 0..width {
                    let parked = scratch.parked[position];
                    if scratch.out[position].is_some() || (phase == 0 && parked) {
                        continue;
                    }
                    open = true;
                    let attempt = position as u32 + width as u32 * (round + phase * rounds);
                    let key = draw_key(x, attempt);
                    let Some(domain) = self.race(key) else {
                        return;
                    };
                    if scratch.taken[domain] {
                        continue;
                    }
                    scratch.taken[domain] = true;
                    match self.best_in_range(self.domains[domain], key) {
                        (_, Some(chosen)) => scratch.out[position] = Some(OsdId(chosen.osd)),
                        (_, None) => scratch.parked[position] = true,
                    }
                }
                if !open {
                    break;
                }
            }
        }
    }
}

/// Reusable working memory for [`Placement::raw_into`], owned by the caller so that mapping
/// many placement groups allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    ranked: Vec<(Draw, Draw)>,
    taken: Vec<bool>,
    parked: Vec<bool>,
    out: Vec<Option<OsdId>>,
}

/// Where a placement group lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgMapping {
    /// What the placement function chose, ignoring up/down.
    pub raw: Vec<Option<OsdId>>,
    /// `raw` without the down OSDs: removed (replicated) or left as empty positions (erasure).
    pub up: Vec<Option<OsdId>>,
    /// Who serves the placement group: `pg_temp` when set, else `up`.
    pub acting: Vec<Option<OsdId>>,
    /// The first OSD of `acting`, which orders all operations.
    pub primary: Option<OsdId>,
}

/// A cluster map compiled for fast, allocation-free placement. Immutable; build a new one for
/// each epoch.
#[derive(Debug)]
pub struct Placement {
    map: ClusterMap,
    tables: BTreeMap<Rule, RuleTable>,
}

impl Placement {
    /// Compiles `map`, which must be valid (see [`ClusterMap::validate`]).
    pub fn new(map: &ClusterMap) -> Placement {
        let mut tables = BTreeMap::new();
        for pool in map.pools.values() {
            tables
                .entry(pool.rule)
                .or_insert_with(|| RuleTable::new(map, pool.rule));
        }
        Placement {
            map: map.clone(),
            tables,
        }
    }

    /// The map this placement was compiled from.
    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    /// The placement group that object `name` of `pool` belongs to.
    pub fn object_pg(&self, pool: PoolId, name: &[u8]) -> Option<PgId> {
        let pg_num = self.map.pools.get(&pool)?.pg_num;
        Some(PgId {
            pool,
            seed: crate::hash::stable_mod(crate::hash::object_hash(name), pg_num),
        })
    }

    /// The raw placement of `pg` (ignoring up/down and `pg_temp`), written into `out`. Leaves
    /// `out` empty for an unknown pool or a seed beyond `pg_num`.
    pub fn raw_into(&self, pg: PgId, scratch: &mut Scratch, out: &mut Vec<Option<OsdId>>) {
        out.clear();
        let Some(pool) = self.map.pools.get(&pg.pool) else {
            return;
        };
        let Some(table) = self.tables.get(&pool.rule) else {
            return;
        };
        if pg.seed >= pool.pg_num {
            return;
        }
        let x = pg_input(pg.pool.0, pg.seed);
        let width = pool.kind.width();
        match pool.kind {
            PoolKind::Replicated { .. } => table.select_replicated(x, width, scratch),
            PoolKind::Erasure { .. } => {
                table.select_erasure(x, width, self.map.tunables.erasure_rounds_max, scratch)
            }
        }
        out.extend_from_slice(&scratch.out);
    }

    /// The full mapping of `pg`: raw, up, acting and primary. `None` for an unknown pool or a
    /// seed beyond `pg_num`.
    pub fn map_pg(&self, pg: PgId, scratch: &mut Scratch) -> Option<PgMapping> {
        let pool = self.map.pools.get(&pg.pool)?;
        if pg.seed >= pool.pg_num {
            return None;
        }
        let mut raw = Vec::with_capacity(pool.kind.width());
        self.raw_into(pg, scratch, &mut raw);
        // Down OSDs are removed (replicated) or leave their position empty (erasure).
        let only_up = |slots: &[Option<OsdId>]| -> Vec<Option<OsdId>> {
            let is_up = |osd: &OsdId| self.map.osds.get(osd).is_some_and(|o| o.up);
            match pool.kind {
                PoolKind::Replicated { .. } => slots
                    .iter()
                    .flatten()
                    .filter(|osd| is_up(osd))
                    .map(|&osd| Some(osd))
                    .collect(),
                PoolKind::Erasure { .. } => slots
                    .iter()
                    .map(|slot| slot.filter(|osd| is_up(osd)))
                    .collect(),
            }
        };
        let up = only_up(&raw);
        // `pg_temp` without its down members; when none is left, placement serves again.
        let acting = self
            .map
            .pg_temp
            .get(&pg)
            .map(|temp| only_up(temp))
            .filter(|temp| temp.iter().any(Option::is_some))
            .unwrap_or_else(|| up.clone());
        let primary = acting.iter().flatten().next().copied();
        Some(PgMapping {
            raw,
            up,
            acting,
            primary,
        })
    }
}
