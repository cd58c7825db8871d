//! Deterministic simulation of 3 and 5 monitors: a seeded network that drops, duplicates,
//! delays and reorders messages and cuts partitions, crash-restarts that keep only what was
//! persisted, skewed clocks, and logs trimmed at random so that lagging monitors catch up from
//! snapshots. The safety invariants (one value per slot, nothing committed lost or changed,
//! contiguous histories, reads under a lease never stale across leaders) are checked after
//! every step; after the faults stop, every monitor must converge within a bounded simulated
//! time.
//!
//! `SIM_SEEDS=N` runs N seeds (default 1,000 per cluster size); `SIM_SEED=S` replays one seed.

use std::collections::{BTreeMap, BTreeSet};

use tidepool_monitor::paxos::{
    Ballot, Durable, Message, Millis, PaxosConfig, PaxosNode, Proposal, Rank, Ready, Slot, Value,
};

/// splitmix64: small, seeded, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, per_thousand: u64) -> bool {
        self.below(1000) < per_thousand
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: Rank,
        to: Rank,
        message: Message,
    },
    Tick(Rank),
}

/// Fault rates for one run, drawn from the seed.
#[derive(Debug)]
struct Faults {
    drop_per_thousand: u64,
    duplicate_per_thousand: u64,
    delay_max_ms: u64,
    crash_per_thousand: u64,
    partition_per_thousand: u64,
}

struct Monitor {
    node: Option<PaxosNode>,
    durable: Durable,
    /// Clock skew: this monitor's clock reads `global * rate / 1000 + offset`.
    rate_per_thousand: u64,
    offset_ms: u64,
    /// The state machine: every chosen value in slot order, persisted with `durable`.
    history: Vec<Value>,
    /// Highest commit this monitor ever reported; it must never go back, even across restarts.
    commit_high: Slot,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now_ms: Millis,
    sequence: u64,
    queue: BTreeMap<(Millis, u64), Event>,
    monitors: Vec<Monitor>,
    /// Side of the partition per monitor; messages cross only between equal sides.
    side: Vec<u8>,
    faults: Faults,
    healed: bool,
    /// Whether the leader is being fed proposals.
    proposing: bool,
    /// The one value chosen per slot, as first reported by any monitor.
    chosen: BTreeMap<Slot, Value>,
    /// The highest ballot under which a leader committed anything.
    commit_ballot: Ballot,
    /// Reads answered under a lease, by leaders and by followers.
    reads: [u64; 2],
    proposals_made: u64,
    steps: u64,
}

const TICK_MS: Millis = 20;

impl Sim {
    fn new(seed: u64, members: u8) -> Sim {
        let mut rng = Rng(seed);
        let faults = Faults {
            drop_per_thousand: rng.below(200),
            duplicate_per_thousand: rng.below(100),
            delay_max_ms: 1 + rng.below(60),
            crash_per_thousand: rng.below(3),
            partition_per_thousand: rng.below(3),
        };
        let monitors = (0..members)
            .map(|rank| {
                let rate = 950 + rng.below(101);
                let offset = rng.below(10_000);
                let mut monitor = Monitor {
                    node: None,
                    durable: Durable::default(),
                    rate_per_thousand: rate,
                    offset_ms: offset,
                    history: Vec::new(),
                    commit_high: 0,
                };
                monitor.node = Some(PaxosNode::new(
                    PaxosConfig::new(rank, members),
                    Durable::default(),
                    offset,
                ));
                monitor
            })
            .collect();
        let mut sim = Sim {
            seed,
            rng,
            now_ms: 0,
            sequence: 0,
            queue: BTreeMap::new(),
            monitors,
            side: vec![0; usize::from(members)],
            faults,
            healed: false,
            proposing: true,
            chosen: BTreeMap::new(),
            commit_ballot: Ballot::default(),
            reads: [0; 2],
            proposals_made: 0,
            steps: 0,
        };
        for rank in 0..members {
            let at = sim.rng.below(TICK_MS);
            sim.schedule(at, Event::Tick(rank));
        }
        sim
    }

    fn schedule(&mut self, delay_ms: Millis, event: Event) {
        self.sequence += 1;
        self.queue
            .insert((self.now_ms + delay_ms, self.sequence), event);
    }

    fn local_time(&self, rank: Rank) -> Millis {
        let m = &self.monitors[usize::from(rank)];
        self.now_ms * m.rate_per_thousand / 1000 + m.offset_ms
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "seed {} (replay with SIM_SEED={}): {what} at {} ms after {} steps; faults {:?}",
            self.seed, self.seed, self.now_ms, self.steps, self.faults
        );
    }

    /// Performs a monitor's ready work: persist (into its durable store and state machine),
    /// check, then send.
    fn drain(&mut self, rank: Rank) {
        let (ready, leading): (Ready, Option<Ballot>) =
            match self.monitors[usize::from(rank)].node.as_mut() {
                Some(node) => (
                    node.poll_ready(),
                    node.is_leader().then(|| node.ballot()).flatten(),
                ),
                None => return,
            };
        let monitor = &mut self.monitors[usize::from(rank)];
        for record in &ready.persist {
            monitor.durable.apply(record);
        }
        let mut applied = Vec::new();
        if let Some((slot, state)) = &ready.install {
            let history: Vec<Value> = rmp_serde::from_slice(state).expect("snapshots decode");
            if history.len() as u64 != *slot {
                self.fail(&format!(
                    "mon.{rank} got a snapshot of {} slots for slot {slot}",
                    history.len()
                ));
            }
            applied.extend(
                history
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(i, v)| (i as u64 + 1, v)),
            );
            self.monitors[usize::from(rank)].history = history;
        }
        for (slot, value) in &ready.committed {
            let applied_len = self.monitors[usize::from(rank)].history.len() as u64;
            if *slot != applied_len + 1 {
                self.fail(&format!(
                    "mon.{rank} applied slot {slot} after {applied_len}"
                ));
            }
            self.monitors[usize::from(rank)].history.push(value.clone());
            applied.push((*slot, value.clone()));
        }
        if let (Some(ballot), false) = (leading, ready.committed.is_empty()) {
            self.commit_ballot = self.commit_ballot.max(ballot);
        }
        for (slot, value) in applied {
            match self.chosen.get(&slot) {
                Some(existing) if *existing != value => {
                    self.fail(&format!("two values chosen for slot {slot}"))
                }
                Some(_) => {}
                None => {
                    self.chosen.insert(slot, value);
                }
            }
        }
        self.check(rank);
        for (to, message) in ready.send {
            self.transmit(rank, to, message);
        }
        for to in ready.snapshot_to {
            let monitor = &self.monitors[usize::from(rank)];
            let message = Message::Snapshot {
                slot: monitor.history.len() as u64,
                state: rmp_serde::to_vec(&monitor.history).expect("histories encode"),
            };
            self.transmit(rank, to, message);
        }
    }

    fn transmit(&mut self, from: Rank, to: Rank, message: Message) {
        if !self.healed {
            if self.side[usize::from(from)] != self.side[usize::from(to)]
                || self.rng.chance(self.faults.drop_per_thousand)
            {
                return;
            }
            if self.rng.chance(self.faults.duplicate_per_thousand) {
                let delay = 1 + self.rng.below(self.faults.delay_max_ms);
                self.schedule(
                    delay,
                    Event::Deliver {
                        from,
                        to,
                        message: message.clone(),
                    },
                );
            }
        }
        let delay = 1 + self.rng.below(self.faults.delay_max_ms);
        self.schedule(delay, Event::Deliver { from, to, message });
    }

    /// Invariants of one monitor: its history is contiguous from 1 and agrees with what was
    /// chosen, its log is the history's tail, its commit never goes back, and a read under a
    /// lease would not miss anything committed under a later leader.
    fn check(&mut self, rank: Rank) {
        let now = self.local_time(rank);
        let monitor = &self.monitors[usize::from(rank)];
        let Some(node) = monitor.node.as_ref() else {
            return;
        };
        let commit = node.commit();
        if monitor.history.len() as u64 != commit {
            self.fail(&format!(
                "mon.{rank} applied {} slots but committed {commit}",
                monitor.history.len()
            ));
        }
        let log = node.log();
        if log.keys().copied().ne(node.first_kept()..=commit) {
            self.fail(&format!("mon.{rank} log is not contiguous up to {commit}"));
        }
        for (slot, value) in log {
            if monitor.history[*slot as usize - 1] != *value
                || self.chosen.get(slot).is_some_and(|chosen| chosen != value)
            {
                self.fail(&format!(
                    "mon.{rank} holds a different value in slot {slot}"
                ));
            }
        }
        if commit < monitor.commit_high {
            self.fail(&format!(
                "mon.{rank} lost committed slots ({} -> {commit})",
                monitor.commit_high
            ));
        }
        if node.is_readable(now) {
            let top = self.chosen.keys().next_back().copied().unwrap_or(0);
            if node.is_leader() {
                self.reads[0] += 1;
                if commit < top {
                    self.fail(&format!(
                        "mon.{rank} leads readable at slot {commit}, but slot {top} is chosen"
                    ));
                }
            } else {
                self.reads[1] += 1;
                if node.ballot().is_none_or(|b| b < self.commit_ballot) {
                    self.fail(&format!(
                        "mon.{rank} is readable under {:?}, but {:?} has committed since",
                        node.ballot(),
                        self.commit_ballot
                    ));
                }
            }
        }
        self.monitors[usize::from(rank)].commit_high = commit;
    }

    fn step(&mut self) -> bool {
        let Some(((at, _), event)) = self.queue.pop_first() else {
            return false;
        };
        self.now_ms = at;
        self.steps += 1;
        match event {
            Event::Tick(rank) => {
                self.schedule(TICK_MS, Event::Tick(rank));
                self.maybe_inject_faults(rank);
                let now = self.local_time(rank);
                if let Some(node) = self.monitors[usize::from(rank)].node.as_mut() {
                    node.handle_tick(now);
                    if self.proposing && node.is_leader() && self.rng.chance(300) {
                        self.proposals_made += 1;
                        let proposal = Proposal(self.proposals_made.to_le_bytes().to_vec());
                        let _ = node.propose(proposal);
                    }
                    // Trim now and then, keeping a few slots or none, so that lagging monitors
                    // need snapshots.
                    if self.rng.chance(20) {
                        let keep = self.rng.below(8);
                        node.trim(node.commit().saturating_sub(keep));
                    }
                }
                self.drain(rank);
            }
            Event::Deliver { from, to, message } => {
                if let Some(node) = self.monitors[usize::from(to)].node.as_mut() {
                    node.handle_message(from, message);
                }
                self.drain(to);
            }
        }
        true
    }

    fn maybe_inject_faults(&mut self, rank: Rank) {
        if self.healed {
            return;
        }
        let index = usize::from(rank);
        if self.rng.chance(self.faults.crash_per_thousand) {
            if self.monitors[index].node.is_some() {
                // Crash: everything not persisted is gone.
                self.monitors[index].node = None;
            } else {
                self.restart(rank);
            }
        }
        if self.rng.chance(self.faults.partition_per_thousand) {
            let members = self.monitors.len();
            for side in self.side.iter_mut() {
                *side = 0;
            }
            if self.rng.chance(700) {
                // Cut a random subset off.
                for i in 0..members {
                    if self.rng.chance(400) {
                        self.side[i] = 1;
                    }
                }
            }
        }
    }

    fn restart(&mut self, rank: Rank) {
        let members = self.monitors.len() as u8;
        let now = self.local_time(rank);
        let monitor = &mut self.monitors[usize::from(rank)];
        monitor.node = Some(PaxosNode::new(
            PaxosConfig::new(rank, members),
            monitor.durable.clone(),
            now,
        ));
    }

    fn heal(&mut self) {
        self.healed = true;
        self.side.iter_mut().for_each(|side| *side = 0);
        for rank in 0..self.monitors.len() as u8 {
            if self.monitors[usize::from(rank)].node.is_none() {
                self.restart(rank);
            }
        }
    }

    fn run_until(&mut self, end_ms: Millis) {
        while self
            .queue
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= end_ms)
        {
            self.step();
        }
    }

    fn commits(&self) -> Vec<Slot> {
        self.monitors
            .iter()
            .map(|m| m.node.as_ref().map_or(0, PaxosNode::commit))
            .collect()
    }
}

/// Runs one seed: faults for 20 simulated seconds, then a healed network in which every
/// monitor must catch up with the others and new proposals must commit.
/// Returns how many steps found a readable leader and a readable follower.
fn run_seed(seed: u64, members: u8) -> [u64; 2] {
    let mut sim = Sim::new(seed, members);
    sim.run_until(20_000);
    sim.heal();
    let healed_at = sim.now_ms;
    let before = sim.chosen.len();
    // Liveness: within 10 s of healing a leader commits fresh proposals; once proposals stop,
    // every monitor converges within 5 s.
    sim.run_until(healed_at + 10_000);
    sim.proposing = false;
    sim.run_until(healed_at + 15_000);
    let commits = sim.commits();
    let top = commits.iter().copied().max().unwrap_or(0);
    if commits.iter().any(|&c| c != top) {
        sim.fail(&format!(
            "no convergence after healing: commits {commits:?}"
        ));
    }
    if sim.chosen.len() <= before {
        sim.fail("no progress after healing");
    }
    let histories: BTreeSet<_> = sim.monitors.iter().map(|m| m.history.clone()).collect();
    if histories.len() != 1 {
        sim.fail("histories differ after convergence");
    }
    sim.reads
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        return vec![seed.parse().expect("SIM_SEED is a number")];
    }
    let count: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    (0..count).collect()
}

/// Runs every seed and checks that leases were in use: reads by leaders and by followers.
fn run_seeds(members: u8, salt: u64) {
    let mut reads = [0; 2];
    for seed in seeds() {
        let [leader, follower] = run_seed(seed.wrapping_add(salt), members);
        reads[0] += leader;
        reads[1] += follower;
    }
    assert!(
        reads[0] > 0 && reads[1] > 0,
        "leases never allowed a read: {reads:?}"
    );
}

/// Rule: with 3 monitors, safety holds under every fault and progress resumes after healing.
#[test]
fn three_monitors() {
    run_seeds(3, 0);
}

/// Rule: the same with 5 monitors.
#[test]
fn five_monitors() {
    run_seeds(5, 1 << 32);
}

/// Rule: a single monitor commits on its own.
#[test]
fn one_monitor() {
    run_seed(7, 1);
}

/// A leader cut off from the others steps down within an election timeout or two, rather
/// than go on claiming to lead (clients and OSDs would keep asking it), while the other two
/// elect a leader among themselves; healed, all three follow one leader again.
#[test]
fn a_leader_cut_off_from_the_others_steps_down() {
    for seed in 1..=20 {
        let mut sim = Sim::new(seed, 3);
        sim.faults = Faults {
            drop_per_thousand: 0,
            duplicate_per_thousand: 0,
            delay_max_ms: 5,
            crash_per_thousand: 0,
            partition_per_thousand: 0,
        };
        sim.run_until(5_000);
        let leaders = |sim: &Sim| -> Vec<Option<Rank>> {
            sim.monitors
                .iter()
                .map(|m| m.node.as_ref().and_then(PaxosNode::leader))
                .collect()
        };
        let before = leaders(&sim);
        let leader =
            before[0].unwrap_or_else(|| panic!("seed {seed}: a leader by 5 s: {before:?}"));
        assert!(
            before.iter().all(|l| *l == Some(leader)),
            "seed {seed}: {before:?}"
        );
        sim.side[usize::from(leader)] = 1;
        sim.run_until(sim.now_ms + 3_000);
        let cut = leaders(&sim);
        assert_ne!(
            cut[usize::from(leader)],
            Some(leader),
            "seed {seed}: the cut-off leader {leader} still leads: {cut:?}"
        );
        let others: Vec<Option<Rank>> = (0..3u8)
            .filter(|r| *r != leader)
            .map(|r| cut[usize::from(r)])
            .collect();
        assert!(
            others[0].is_some() && others[0] == others[1] && others[0] != Some(leader),
            "seed {seed}: the other two follow one of them: {cut:?}"
        );
        sim.heal();
        sim.run_until(sim.now_ms + 3_000);
        let healed = leaders(&sim);
        assert!(
            healed[0].is_some() && healed.iter().all(|l| *l == healed[0]),
            "seed {seed}: healed, one leader: {healed:?}"
        );
    }
}
