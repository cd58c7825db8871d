//! Deterministic simulation of 3 and 5 monitors: a seeded network that drops, duplicates,
//! delays and reorders messages and cuts partitions, crash-restarts that keep only what was
//! persisted, and skewed clocks. The safety invariants are checked after every step; after the
//! faults stop, every monitor must converge within a bounded simulated time.
//!
//! `SIM_SEEDS=N` runs N seeds (default 1,000 per cluster size); `SIM_SEED=S` replays one seed.

use std::collections::{BTreeMap, BTreeSet};

use tidepool_monitor::paxos::{
    Durable, Message, Millis, PaxosConfig, PaxosNode, Proposal, Rank, Ready, Slot, Value,
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

    /// Performs a monitor's ready work: persist (into its durable store), check, then send.
    fn drain(&mut self, rank: Rank) {
        let ready: Ready = match self.monitors[usize::from(rank)].node.as_mut() {
            Some(node) => node.poll_ready(),
            None => return,
        };
        let monitor = &mut self.monitors[usize::from(rank)];
        for record in &ready.persist {
            monitor.durable.apply(record);
        }
        for (slot, value) in &ready.committed {
            match self.chosen.get(slot) {
                Some(existing) if existing != value => {
                    self.fail(&format!("two values chosen for slot {slot}"))
                }
                Some(_) => {}
                None => {
                    self.chosen.insert(*slot, value.clone());
                }
            }
        }
        self.check(rank);
        for (to, message) in ready.send {
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

    /// Invariants of one monitor: its log is contiguous from 1, agrees with what was chosen,
    /// and never shrinks.
    fn check(&mut self, rank: Rank) {
        let monitor = &self.monitors[usize::from(rank)];
        let Some(node) = monitor.node.as_ref() else {
            return;
        };
        let commit = node.commit();
        let log = node.log();
        if log.len() as u64 != commit || log.keys().copied().ne(1..=commit) {
            self.fail(&format!("mon.{rank} log is not contiguous 1..={commit}"));
        }
        for (slot, value) in log {
            if self.chosen.get(slot).is_some_and(|chosen| chosen != value) {
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
fn run_seed(seed: u64, members: u8) {
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
    let logs: BTreeSet<_> = sim
        .monitors
        .iter()
        .map(|m| m.node.as_ref().map(|n| n.log().clone()))
        .collect();
    if logs.len() != 1 {
        sim.fail("logs differ after convergence");
    }
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

/// Rule: with 3 monitors, safety holds under every fault and progress resumes after healing.
#[test]
fn three_monitors() {
    for seed in seeds() {
        run_seed(seed, 3);
    }
}

/// Rule: the same with 5 monitors.
#[test]
fn five_monitors() {
    for seed in seeds() {
        run_seed(seed.wrapping_add(1 << 32), 5);
    }
}

/// Rule: a single monitor commits on its own.
#[test]
fn one_monitor() {
    run_seed(7, 1);
}
