//! Multi-Paxos with a stable leader, as a state machine without IO.
//!
//! Inputs: [`PaxosNode::handle_message`], [`PaxosNode::handle_tick`] (time is an argument, in
//! milliseconds of the caller's monotonic clock) and [`PaxosNode::propose`]. Output:
//! [`PaxosNode::poll_ready`], a [`Ready`] batch whose `persist` records the caller must make
//! durable **before** it sends `send`. Committed values come out in slot order, exactly once per
//! node lifetime (after a restart, from the slot after the persisted commit index).
//!
//! One slot holds one [`Value`], a batch of proposals; the leader keeps one slot in flight and
//! queues proposals meanwhile, so each slot carries everything that arrived during the previous
//! round trip.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// A monitor's position in the monitor map, `0..members`. Lower ranks are preferred leaders.
pub type Rank = u8;
/// A log position; slot `n` holds the change that makes map epoch `n`.
pub type Slot = u64;
/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;

/// One proposal, opaque to consensus.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Proposal(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What a slot holds: a batch of proposals (empty for a no-op that fills a gap).
pub type Value = Vec<Proposal>;

/// A proposal number: `(round, rank)`. Only the monitor of that rank uses it, so two leaders
/// never share a ballot. Round 0 is never used by a leader.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// Grows with every election attempt.
    pub round: u64,
    /// The rank of the monitor that owns the ballot.
    pub rank: Rank,
}

/// Messages between monitors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Liveness, sent by every monitor every heartbeat interval.
    Ping {
        /// The sender's commit index.
        commit: Slot,
    },
    /// Phase 1a: asks for a promise and for everything accepted from `from_slot` on.
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// The first slot the candidate has not committed.
        from_slot: Slot,
    },
    /// Phase 1b: a promise to accept nothing below `ballot`.
    Promise {
        /// The promised ballot.
        ballot: Ballot,
        /// Accepted but not committed entries from the requested slot on.
        accepted: Vec<(Slot, Ballot, Value)>,
        /// Committed entries from the requested slot on.
        committed: Vec<(Slot, Value)>,
    },
    /// A refusal: the sender has promised a higher ballot.
    Nack {
        /// The ballot the sender promised.
        promised: Ballot,
    },
    /// Phase 2a: accept `value` in `slot`.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
        /// The value.
        value: Value,
    },
    /// Phase 2b: the sender accepted `slot` under `ballot`.
    Accepted {
        /// The ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
    },
    /// From the leader: it is alive, and every slot up to `commit` is chosen.
    Heartbeat {
        /// The leader's ballot.
        ballot: Ballot,
        /// The leader's commit index.
        commit: Slot,
        /// Present when the heartbeat grants a lease.
        lease: Option<LeaseGrant>,
    },
    /// Answer to a heartbeat: the follower's commit index, so the leader can fill it in.
    HeartbeatAck {
        /// The leader's ballot.
        ballot: Ballot,
        /// The follower's commit index.
        commit: Slot,
        /// The `sent_ms` of the lease the follower took, if the heartbeat granted one.
        lease_sent_ms: Option<Millis>,
    },
    /// Chosen values for a follower that is behind, in slot order from its commit index + 1.
    Chosen {
        /// The leader's ballot.
        ballot: Ballot,
        /// The entries.
        entries: Vec<(Slot, Value)>,
    },
    /// The sender's whole state at `slot`, for a monitor that is behind the sender's trimmed
    /// log. Only chosen values are in it, so any monitor may send one.
    Snapshot {
        /// The slot the state includes.
        slot: Slot,
        /// The state machine's encoding, opaque to consensus.
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
}

/// A lease, granted in a heartbeat. The follower that takes it promises no other candidate for
/// [`PaxosConfig::lease_ms`] of its own clock, and may answer reads for `readable_ms` of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// When the leader sent it, on the leader's clock (echoed in the ack).
    pub sent_ms: Millis,
    /// How much longer the leader itself may answer reads (0 when it may not).
    pub readable_ms: Millis,
}

/// A change to durable state; the caller persists a batch of these atomically and in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Never accept a ballot below this one.
    Promised(Ballot),
    /// `value` was accepted in `slot` under `ballot`.
    Accepted {
        /// The slot.
        slot: Slot,
        /// The ballot.
        ballot: Ballot,
        /// The value.
        value: Value,
    },
    /// `value` is chosen in `slot`, and every slot before it is too.
    Committed {
        /// The slot.
        slot: Slot,
        /// The value.
        value: Value,
    },
    /// The chosen values up to `through` are no longer kept (the state machine holds them).
    Trimmed {
        /// The last slot dropped.
        through: Slot,
    },
    /// A snapshot of the state at `slot` replaced the log: everything up to `slot` is chosen,
    /// and nothing is kept for it.
    Installed {
        /// The snapshot's slot.
        slot: Slot,
    },
}

/// Everything a monitor keeps across restarts, rebuilt by replaying [`Record`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// The highest promised ballot.
    pub promised: Ballot,
    /// Accepted, not yet committed entries.
    pub accepted: BTreeMap<Slot, (Ballot, Value)>,
    /// Chosen values still kept, slots `trimmed + 1..=commit`.
    pub log: BTreeMap<Slot, Value>,
    /// Chosen slots up to here are only in the state machine.
    pub trimmed: Slot,
}

impl Durable {
    /// Applies one record.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Promised(ballot) => self.promised = self.promised.max(*ballot),
            Record::Accepted {
                slot,
                ballot,
                value,
            } => {
                self.accepted.insert(*slot, (*ballot, value.clone()));
            }
            Record::Committed { slot, value } => {
                self.accepted.remove(slot);
                self.log.insert(*slot, value.clone());
            }
            Record::Trimmed { through } => {
                let through = (*through).min(self.commit());
                self.log = self.log.split_off(&(through + 1));
                self.trimmed = self.trimmed.max(through);
            }
            Record::Installed { slot } => {
                if *slot > self.commit() {
                    self.log.clear();
                    self.accepted = self.accepted.split_off(&(slot + 1));
                    self.trimmed = *slot;
                }
            }
        }
    }

    /// The highest committed slot (0 when none).
    pub fn commit(&self) -> Slot {
        self.log.keys().next_back().copied().unwrap_or(self.trimmed)
    }
}

/// Timing and sizes.
#[derive(Clone, Debug)]
pub struct PaxosConfig {
    /// This monitor's rank.
    pub rank: Rank,
    /// Number of monitors (1, 3 or 5).
    pub members: u8,
    /// How often pings and heartbeats go out, and retransmissions happen.
    pub heartbeat_interval_ms: Millis,
    /// Silence after which a peer (or the leader) counts as gone.
    pub election_timeout_ms: Millis,
    /// How long a follower that took a lease refuses other candidates. Must be well below the
    /// election timeout: a leader cut off from a majority stops granting leases, and every lease
    /// it granted runs out before the others elect a new leader.
    pub lease_ms: Millis,
    /// Most proposals in one slot.
    pub batch_proposals_max: usize,
    /// Most proposals queued at the leader; more are refused.
    pub queue_proposals_max: usize,
    /// Most entries sent to a lagging follower in one message.
    pub catch_up_entries_max: usize,
}

impl PaxosConfig {
    /// Defaults for a monitor of `rank` among `members`.
    pub fn new(rank: Rank, members: u8) -> PaxosConfig {
        PaxosConfig {
            rank,
            members,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            lease_ms: 400,
            batch_proposals_max: 256,
            queue_proposals_max: 4096,
            catch_up_entries_max: 64,
        }
    }

    fn majority(&self) -> usize {
        usize::from(self.members) / 2 + 1
    }

    /// How long after sending an acknowledged lease the leader may answer reads: half the lease,
    /// leaving room for message delay, a tick of stale time and clocks running up to 5 % apart.
    fn readable_window_ms(&self) -> Millis {
        self.lease_ms / 2
    }
}

/// Work for the caller: persist first, then send; `committed` is for the state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Records to make durable (one synced batch) before sending anything below.
    pub persist: Vec<Record>,
    /// Messages to send.
    pub send: Vec<(Rank, Message)>,
    /// A snapshot to install before applying `committed` (which then holds only later slots).
    pub install: Option<(Slot, Vec<u8>)>,
    /// Newly committed slots, in order.
    pub committed: Vec<(Slot, Value)>,
    /// Peers that are behind this monitor's trimmed log: the caller sends each a
    /// [`Message::Snapshot`] of its state.
    pub snapshot_to: Vec<Rank>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.send.is_empty()
            && self.install.is_none()
            && self.committed.is_empty()
            && self.snapshot_to.is_empty()
    }
}

/// Why a proposal was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This monitor is not the leader; `leader` is the one it follows, if any.
    NotLeader {
        /// The current leader, when known.
        leader: Option<Rank>,
    },
    /// The leader's queue is full.
    Busy,
}

#[derive(Debug)]
enum Role {
    Follower {
        leader: Option<Ballot>,
    },
    Candidate {
        ballot: Ballot,
        promises: BTreeSet<Rank>,
        /// Highest-ballot accepted value seen per slot.
        found: BTreeMap<Slot, (Ballot, Value)>,
        /// Chosen values reported by acceptors ahead of this monitor.
        chosen: BTreeMap<Slot, Value>,
        started_ms: Millis,
    },
    Leader {
        ballot: Ballot,
        /// The slot in flight and who accepted it.
        in_flight: Option<(Slot, Value, BTreeSet<Rank>)>,
        /// Slots recovered in phase 1 that must be re-proposed before new ones.
        recovered: VecDeque<(Slot, Value)>,
        /// The last recovered slot: until it commits, this leader may lack chosen values.
        recovered_through: Slot,
        queue: VecDeque<Proposal>,
        /// Per peer, the send time of the latest lease it acknowledged.
        lease_acks: Vec<Option<Millis>>,
    },
}

/// A lease this monitor took from a leader.
#[derive(Clone, Copy, Debug)]
struct Lease {
    ballot: Ballot,
    /// Reads are answered until then (own clock).
    readable_until_ms: Millis,
    /// The leader's commit index when it granted the lease; reads wait until we have it.
    commit: Slot,
}

/// One monitor's consensus state.
#[derive(Debug)]
pub struct PaxosNode {
    config: PaxosConfig,
    durable: Durable,
    role: Role,
    now_ms: Millis,
    /// When each peer was last heard from.
    last_heard_ms: Vec<Option<Millis>>,
    /// When the current leader was last heard from.
    leader_heard_ms: Millis,
    last_heartbeat_ms: Millis,
    /// The highest ballot seen anywhere, so a new candidacy outbids it.
    highest_seen: Ballot,
    /// No candidate but the lease's leader gets a promise before then (own clock). Set for one
    /// lease at start-up, since leases taken before a crash are forgotten.
    refuse_candidates_until_ms: Millis,
    /// The lease ballot (`None` at start-up) that `refuse_candidates_until_ms` protects.
    lease_ballot: Option<Ballot>,
    /// The lease this follower holds for reads.
    lease: Option<Lease>,
    /// When a snapshot last went to each peer, so a lagging peer gets one at most every
    /// election timeout.
    snapshot_sent_ms: Vec<Option<Millis>>,
    ready: Ready,
}

impl PaxosNode {
    /// A monitor starting from `durable` (empty for a new one) at time `now_ms`.
    pub fn new(config: PaxosConfig, durable: Durable, now_ms: Millis) -> PaxosNode {
        assert!(config.rank < config.members, "rank must be below members");
        let members = usize::from(config.members);
        PaxosNode {
            highest_seen: durable.promised,
            durable,
            role: Role::Follower { leader: None },
            now_ms,
            last_heard_ms: vec![None; members],
            leader_heard_ms: now_ms,
            last_heartbeat_ms: now_ms,
            refuse_candidates_until_ms: if config.members > 1 {
                now_ms + config.lease_ms
            } else {
                now_ms
            },
            lease_ballot: None,
            lease: None,
            snapshot_sent_ms: vec![None; members],
            config,
            ready: Ready::default(),
        }
    }

    /// Whether this monitor may answer reads at `now_ms` (its own clock): the leader while a
    /// majority holds its lease and it has every chosen value; a follower while its lease from
    /// that leader lasts and it has caught up to the commit index the lease carried. A read so
    /// answered reflects every change committed under an earlier leader.
    pub fn is_readable(&self, now_ms: Millis) -> bool {
        match &self.role {
            Role::Leader {
                recovered_through,
                lease_acks,
                ..
            } => {
                self.commit() >= *recovered_through
                    && self.leader_readable_ms(lease_acks, now_ms) > 0
            }
            Role::Follower {
                leader: Some(ballot),
            } => self.lease.is_some_and(|lease| {
                lease.ballot == *ballot
                    && now_ms < lease.readable_until_ms
                    && self.commit() >= lease.commit
            }),
            _ => false,
        }
    }

    /// The monitors in this leader's quorum at `now_ms`: itself and every peer that
    /// acknowledged a lease within the last lease time. Empty unless leading.
    pub fn quorum(&self, now_ms: Millis) -> Vec<Rank> {
        let Role::Leader { lease_acks, .. } = &self.role else {
            return Vec::new();
        };
        (0..self.config.members)
            .filter(|rank| {
                *rank == self.config.rank
                    || lease_acks
                        .get(usize::from(*rank))
                        .copied()
                        .flatten()
                        .is_some_and(|sent| now_ms < sent + self.config.lease_ms)
            })
            .collect()
    }

    /// How much longer a leader may answer reads, from the acknowledged leases.
    fn leader_readable_ms(&self, lease_acks: &[Option<Millis>], now_ms: Millis) -> Millis {
        let window = self.config.readable_window_ms();
        // The latest time a majority (counting ourselves, whose lease never lapses) still holds.
        let mut until: Vec<Millis> = lease_acks
            .iter()
            .enumerate()
            .filter(|(rank, _)| *rank != usize::from(self.config.rank))
            .filter_map(|(_, sent)| sent.map(|sent| sent + window))
            .collect();
        until.sort_unstable_by(|a, b| b.cmp(a));
        let others_needed = self.config.majority() - 1;
        if others_needed == 0 {
            return window;
        }
        until
            .get(others_needed - 1)
            .map_or(0, |until| until.saturating_sub(now_ms))
    }

    /// The ballot this monitor leads or follows.
    pub fn ballot(&self) -> Option<Ballot> {
        match &self.role {
            Role::Leader { ballot, .. } => Some(*ballot),
            Role::Follower { leader } => *leader,
            Role::Candidate { .. } => None,
        }
    }

    /// The first slot still in the log (`commit + 1` when the log is empty).
    pub fn first_kept(&self) -> Slot {
        self.durable.trimmed + 1
    }

    /// Drops chosen values up to `through` (at most the commit index): the caller's state
    /// machine holds them, and a peer that needs them gets a snapshot instead.
    pub fn trim(&mut self, through: Slot) {
        let through = through.min(self.commit());
        if through > self.durable.trimmed {
            self.persist(Record::Trimmed { through });
        }
    }

    /// This monitor's rank.
    pub fn rank(&self) -> Rank {
        self.config.rank
    }

    /// The highest committed slot.
    pub fn commit(&self) -> Slot {
        self.durable.commit()
    }

    /// The chosen values, slots `1..=commit`.
    pub fn log(&self) -> &BTreeMap<Slot, Value> {
        &self.durable.log
    }

    /// Whether this monitor leads, with a majority's promise.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    /// The leader this monitor follows (itself when leading).
    pub fn leader(&self) -> Option<Rank> {
        match &self.role {
            Role::Leader { ballot, .. } => Some(ballot.rank),
            Role::Follower { leader } => leader.map(|b| b.rank),
            Role::Candidate { .. } => None,
        }
    }

    /// Takes the work accumulated since the last call.
    pub fn poll_ready(&mut self) -> Ready {
        std::mem::take(&mut self.ready)
    }

    fn persist(&mut self, record: Record) {
        self.durable.apply(&record);
        self.ready.persist.push(record);
    }

    fn send(&mut self, to: Rank, message: Message) {
        if to == self.config.rank {
            return;
        }
        self.ready.send.push((to, message));
    }

    fn broadcast(&mut self, message: Message) {
        for to in 0..self.config.members {
            if to != self.config.rank {
                self.ready.send.push((to, message.clone()));
            }
        }
    }

    /// Queues a proposal at the leader.
    pub fn propose(&mut self, proposal: Proposal) -> Result<(), ProposeError> {
        let leader = self.leader();
        let Role::Leader { queue, .. } = &mut self.role else {
            return Err(ProposeError::NotLeader { leader });
        };
        if queue.len() >= self.config.queue_proposals_max {
            return Err(ProposeError::Busy);
        }
        queue.push_back(proposal);
        self.start_next_slot();
        Ok(())
    }

    /// Advances time: pings, heartbeats, retransmissions and elections.
    pub fn handle_tick(&mut self, now_ms: Millis) {
        self.now_ms = self.now_ms.max(now_ms);
        if self.now_ms.saturating_sub(self.last_heartbeat_ms) >= self.config.heartbeat_interval_ms {
            self.last_heartbeat_ms = self.now_ms;
            self.periodic();
        }
        if self.config.members == 1 && !self.is_leader() {
            self.start_election();
            return;
        }
        let timeout = self.config.election_timeout_ms;
        if self.is_leader() && self.heard_within(timeout) < self.config.majority() {
            // A leader that heard from no majority for an election timeout steps down: it
            // cannot commit, and the others may have elected another by now. Clients and OSDs
            // that ask it are told it leads no more, and look for the leader elsewhere.
            self.role = Role::Follower { leader: None };
            self.leader_heard_ms = self.now_ms;
        }
        let should_elect = match &self.role {
            Role::Leader { .. } => false,
            Role::Candidate { started_ms, .. } => {
                self.now_ms.saturating_sub(*started_ms) >= timeout
            }
            // Silence is measured from the last word of a leader, or from start-up: a monitor
            // that just started first listens for one timeout, so the lowest reachable rank is
            // the one that stands.
            Role::Follower { .. } => {
                self.now_ms.saturating_sub(self.leader_heard_ms) >= timeout
                    && !self.lower_rank_alive()
            }
        };
        if should_elect {
            self.start_election();
        }
    }

    /// How many monitors, this one included, were heard from within the last `ms`.
    fn heard_within(&self, ms: Millis) -> usize {
        (0..self.config.members)
            .filter(|&rank| {
                rank == self.config.rank
                    || self.last_heard_ms[usize::from(rank)]
                        .is_some_and(|at| self.now_ms.saturating_sub(at) < ms)
            })
            .count()
    }

    /// Whether a monitor of lower rank was heard from recently: then it should lead, not us.
    fn lower_rank_alive(&self) -> bool {
        (0..self.config.rank).any(|rank| {
            self.last_heard_ms[usize::from(rank)]
                .is_some_and(|at| self.now_ms.saturating_sub(at) < self.config.election_timeout_ms)
        })
    }

    fn periodic(&mut self) {
        let commit = self.commit();
        match &self.role {
            Role::Leader {
                ballot,
                in_flight,
                lease_acks,
                ..
            } => {
                let (ballot, in_flight) = (*ballot, in_flight.clone());
                // Leases go out only while a majority was heard from within a lease: a leader
                // cut off from the majority stops granting before the others may elect.
                let heard = self.heard_within(self.config.lease_ms);
                let lease = (heard >= self.config.majority()).then(|| LeaseGrant {
                    sent_ms: self.now_ms,
                    readable_ms: self.leader_readable_ms(lease_acks, self.now_ms),
                });
                if lease.is_some() {
                    // The leader's own vote is part of every majority it counts.
                    self.refuse_candidates_until_ms = self.now_ms + self.config.lease_ms;
                    self.lease_ballot = Some(ballot);
                }
                self.broadcast(Message::Heartbeat {
                    ballot,
                    commit,
                    lease,
                });
                // Retransmit the slot in flight to whoever has not accepted it (lost messages).
                if let Some((slot, value, accepted)) = in_flight {
                    for to in 0..self.config.members {
                        if !accepted.contains(&to) {
                            self.send(
                                to,
                                Message::Accept {
                                    ballot,
                                    slot,
                                    value: value.clone(),
                                },
                            );
                        }
                    }
                }
            }
            Role::Candidate {
                ballot, promises, ..
            } => {
                let (ballot, promises) = (*ballot, promises.clone());
                for to in 0..self.config.members {
                    if !promises.contains(&to) {
                        self.send(
                            to,
                            Message::Prepare {
                                ballot,
                                from_slot: commit + 1,
                            },
                        );
                    }
                }
                self.broadcast(Message::Ping { commit });
            }
            Role::Follower { .. } => self.broadcast(Message::Ping { commit }),
        }
    }

    fn start_election(&mut self) {
        if self.now_ms < self.refuse_candidates_until_ms {
            // Our own vote is promised to a lease holder for now.
            return;
        }
        let ballot = Ballot {
            round: self.highest_seen.round.max(self.durable.promised.round) + 1,
            rank: self.config.rank,
        };
        self.highest_seen = ballot;
        self.persist(Record::Promised(ballot));
        let from_slot = self.commit() + 1;
        let mut found = BTreeMap::new();
        for (&slot, (accepted_ballot, value)) in self.durable.accepted.range(from_slot..) {
            found.insert(slot, (*accepted_ballot, value.clone()));
        }
        self.role = Role::Candidate {
            ballot,
            promises: BTreeSet::from([self.config.rank]),
            found,
            chosen: BTreeMap::new(),
            started_ms: self.now_ms,
        };
        self.broadcast(Message::Prepare { ballot, from_slot });
        self.maybe_become_leader();
    }

    /// Handles one message from `from`. Anything stale, duplicated or malformed is ignored.
    pub fn handle_message(&mut self, from: Rank, message: Message) {
        if from >= self.config.members || from == self.config.rank {
            return;
        }
        self.last_heard_ms[usize::from(from)] = Some(self.now_ms);
        match message {
            Message::Ping { commit } => {
                if let Role::Leader { .. } = self.role {
                    self.fill_in(from, commit);
                }
            }
            Message::Prepare { ballot, from_slot } => self.handle_prepare(from, ballot, from_slot),
            Message::Promise {
                ballot,
                accepted,
                committed,
            } => self.handle_promise(from, ballot, accepted, committed),
            Message::Nack { promised } => self.observe_higher(promised),
            Message::Accept {
                ballot,
                slot,
                value,
            } => self.handle_accept(from, ballot, slot, value),
            Message::Accepted { ballot, slot } => self.handle_accepted(from, ballot, slot),
            Message::Heartbeat {
                ballot,
                commit,
                lease,
            } => {
                if self.follow(ballot) {
                    if let Some(grant) = lease {
                        self.take_lease(ballot, commit, grant);
                    }
                    self.learn_commit(ballot, commit);
                    let commit = self.commit();
                    self.send(
                        from,
                        Message::HeartbeatAck {
                            ballot,
                            commit,
                            lease_sent_ms: lease.map(|grant| grant.sent_ms),
                        },
                    );
                } else {
                    let promised = self.durable.promised;
                    self.send(from, Message::Nack { promised });
                }
            }
            Message::HeartbeatAck {
                ballot,
                commit,
                lease_sent_ms,
            } => {
                if let Role::Leader {
                    ballot: mine,
                    lease_acks,
                    ..
                } = &mut self.role
                {
                    if *mine == ballot {
                        if let Some(sent) = lease_sent_ms {
                            let ack = &mut lease_acks[usize::from(from)];
                            *ack = Some(ack.map_or(sent, |known| known.max(sent)));
                        }
                        self.fill_in(from, commit);
                    }
                }
            }
            Message::Snapshot { slot, state } => self.handle_snapshot(slot, state),
            Message::Chosen { ballot, entries } => {
                if self.follow(ballot) {
                    for (slot, value) in entries {
                        if slot == self.commit() + 1 {
                            self.commit_slot(slot, value);
                        }
                    }
                }
            }
        }
    }

    /// Notes a ballot higher than ours; a leader or candidate that is outbid steps down.
    fn observe_higher(&mut self, ballot: Ballot) {
        if ballot > self.highest_seen {
            self.highest_seen = ballot;
        }
        let mine = match &self.role {
            Role::Leader { ballot, .. } | Role::Candidate { ballot, .. } => Some(*ballot),
            Role::Follower { .. } => None,
        };
        if mine.is_some_and(|mine| ballot > mine) {
            self.role = Role::Follower { leader: None };
        }
    }

    /// Accepts `ballot`'s sender as leader if the ballot is at least our promise.
    fn follow(&mut self, ballot: Ballot) -> bool {
        if ballot < self.durable.promised {
            return false;
        }
        self.observe_higher(ballot);
        if ballot > self.durable.promised {
            self.persist(Record::Promised(ballot));
        }
        let leads_it = matches!(&self.role, Role::Leader { ballot: mine, .. } if *mine == ballot);
        if !leads_it {
            self.role = Role::Follower {
                leader: Some(ballot),
            };
            self.leader_heard_ms = self.now_ms;
        }
        true
    }

    /// Takes a lease: refuse other candidates for a lease, answer reads for as long as the
    /// leader may (less a tenth for clocks that run apart).
    fn take_lease(&mut self, ballot: Ballot, commit: Slot, grant: LeaseGrant) {
        self.refuse_candidates_until_ms = self.now_ms + self.config.lease_ms;
        self.lease_ballot = Some(ballot);
        self.lease = Some(Lease {
            ballot,
            readable_until_ms: self.now_ms + grant.readable_ms * 9 / 10,
            commit,
        });
    }

    /// Installs a peer's snapshot when it is ahead of us (never while leading: a leader has
    /// every chosen value once it has recovered).
    fn handle_snapshot(&mut self, slot: Slot, state: Vec<u8>) {
        if slot <= self.commit() || self.is_leader() {
            return;
        }
        self.persist(Record::Installed { slot });
        // Slots committed earlier in this batch are inside the snapshot.
        self.ready.committed.clear();
        self.ready.install = Some((slot, state));
    }

    /// Asks the caller to send `to` a snapshot, at most once per election timeout.
    fn send_snapshot(&mut self, to: Rank) {
        let last = &mut self.snapshot_sent_ms[usize::from(to)];
        if last.is_some_and(|at| self.now_ms.saturating_sub(at) < self.config.election_timeout_ms) {
            return;
        }
        *last = Some(self.now_ms);
        self.ready.snapshot_to.push(to);
    }

    fn handle_prepare(&mut self, from: Rank, ballot: Ballot, from_slot: Slot) {
        // A lease holder promises nobody else until the lease runs out; the candidate retries.
        if self.now_ms < self.refuse_candidates_until_ms && self.lease_ballot != Some(ballot) {
            return;
        }
        // A candidate that lacks slots we trimmed cannot learn them from a promise: it gets
        // our state and asks again.
        if from_slot <= self.durable.trimmed {
            self.send_snapshot(from);
            return;
        }
        if ballot < self.durable.promised
            || (ballot == self.durable.promised && ballot.rank != from)
        {
            let promised = self.durable.promised;
            self.send(from, Message::Nack { promised });
            return;
        }
        // Passed the stricter check above, so following cannot fail.
        self.follow(ballot);
        let accepted = self
            .durable
            .accepted
            .range(from_slot..)
            .map(|(slot, (b, v))| (*slot, *b, v.clone()))
            .collect();
        // Every committed entry the candidate lacks, untruncated: a chosen value may survive in a
        // promise majority only as a committed entry, so leaving one out could let the candidate
        // fill its slot with a no-op.
        let committed = self
            .durable
            .log
            .range(from_slot..)
            .map(|(slot, value)| (*slot, value.clone()))
            .collect();
        self.send(
            from,
            Message::Promise {
                ballot,
                accepted,
                committed,
            },
        );
    }

    fn handle_promise(
        &mut self,
        from: Rank,
        ballot: Ballot,
        accepted: Vec<(Slot, Ballot, Value)>,
        committed: Vec<(Slot, Value)>,
    ) {
        let Role::Candidate {
            ballot: mine,
            promises,
            found,
            chosen,
            ..
        } = &mut self.role
        else {
            return;
        };
        if ballot != *mine {
            return;
        }
        promises.insert(from);
        for (slot, accepted_ballot, value) in accepted {
            let better = found.get(&slot).is_none_or(|(b, _)| accepted_ballot > *b);
            if better {
                found.insert(slot, (accepted_ballot, value));
            }
        }
        for (slot, value) in committed {
            chosen.insert(slot, value);
        }
        self.maybe_become_leader();
    }

    fn maybe_become_leader(&mut self) {
        let Role::Candidate {
            ballot,
            promises,
            found,
            chosen,
            ..
        } = &mut self.role
        else {
            return;
        };
        if promises.len() < self.config.majority() {
            return;
        }
        let ballot = *ballot;
        let mut found = std::mem::take(found);
        let chosen = std::mem::take(chosen);
        // Values already chosen elsewhere are learned directly, in order.
        for (slot, value) in chosen {
            if slot == self.commit() + 1 {
                found.remove(&slot);
                self.commit_slot(slot, value);
            }
        }
        // Every slot after our commit index up to the highest accepted one is re-proposed with
        // the value accepted under the highest ballot, or a no-op where nobody accepted one.
        let last = found.keys().next_back().copied().unwrap_or(0);
        let mut recovered = VecDeque::new();
        for slot in self.commit() + 1..=last {
            let value = found.remove(&slot).map(|(_, v)| v).unwrap_or_default();
            recovered.push_back((slot, value));
        }
        self.role = Role::Leader {
            ballot,
            in_flight: None,
            recovered,
            recovered_through: last,
            queue: VecDeque::new(),
            lease_acks: vec![None; usize::from(self.config.members)],
        };
        let commit = self.commit();
        self.broadcast(Message::Heartbeat {
            ballot,
            commit,
            lease: None,
        });
        self.start_next_slot();
    }

    /// Puts the next slot in flight when none is.
    fn start_next_slot(&mut self) {
        let commit = self.commit();
        let batch_max = self.config.batch_proposals_max;
        let Role::Leader {
            ballot,
            in_flight,
            recovered,
            queue,
            ..
        } = &mut self.role
        else {
            return;
        };
        if in_flight.is_some() {
            return;
        }
        let (slot, value) = if let Some((slot, value)) = recovered.pop_front() {
            (slot, value)
        } else if !queue.is_empty() {
            let take = queue.len().min(batch_max);
            (commit + 1, queue.drain(..take).collect())
        } else {
            return;
        };
        let ballot = *ballot;
        *in_flight = Some((slot, value.clone(), BTreeSet::from([self.config.rank])));
        self.persist(Record::Accepted {
            slot,
            ballot,
            value: value.clone(),
        });
        self.broadcast(Message::Accept {
            ballot,
            slot,
            value,
        });
        self.check_chosen();
    }

    fn handle_accept(&mut self, from: Rank, ballot: Ballot, slot: Slot, value: Value) {
        if !self.follow(ballot) {
            let promised = self.durable.promised;
            self.send(from, Message::Nack { promised });
            return;
        }
        if slot <= self.commit() {
            // Already chosen here: acknowledge so the leader can count us.
            self.send(from, Message::Accepted { ballot, slot });
            return;
        }
        let already = self
            .durable
            .accepted
            .get(&slot)
            .is_some_and(|(b, v)| *b == ballot && *v == value);
        if !already {
            self.persist(Record::Accepted {
                slot,
                ballot,
                value,
            });
        }
        self.send(from, Message::Accepted { ballot, slot });
    }

    fn handle_accepted(&mut self, from: Rank, ballot: Ballot, slot: Slot) {
        let Role::Leader {
            ballot: mine,
            in_flight: Some((in_flight_slot, _, accepted)),
            ..
        } = &mut self.role
        else {
            return;
        };
        if ballot != *mine || slot != *in_flight_slot {
            return;
        }
        accepted.insert(from);
        self.check_chosen();
    }

    /// Commits the slot in flight once a majority accepted it, then starts the next one.
    fn check_chosen(&mut self) {
        let majority = self.config.majority();
        let Role::Leader {
            ballot, in_flight, ..
        } = &mut self.role
        else {
            return;
        };
        let Some((slot, value, accepted)) = in_flight.as_ref() else {
            return;
        };
        if accepted.len() < majority {
            return;
        }
        let (slot, value, ballot) = (*slot, value.clone(), *ballot);
        *in_flight = None;
        assert_eq!(slot, self.commit() + 1, "the leader commits slots in order");
        self.commit_slot(slot, value);
        let commit = self.commit();
        self.broadcast(Message::Heartbeat {
            ballot,
            commit,
            lease: None,
        });
        self.start_next_slot();
    }

    /// A follower learns that slots up to `commit` are chosen under `ballot`: those it accepted
    /// under that very ballot hold the chosen value.
    fn learn_commit(&mut self, ballot: Ballot, commit: Slot) {
        while self.commit() < commit {
            let slot = self.commit() + 1;
            match self.durable.accepted.get(&slot) {
                Some((b, value)) if *b == ballot => {
                    let value = value.clone();
                    self.commit_slot(slot, value);
                }
                // Missing or from an older ballot: the leader fills us in (HeartbeatAck).
                _ => break,
            }
        }
    }

    fn commit_slot(&mut self, slot: Slot, value: Value) {
        debug_assert_eq!(slot, self.commit() + 1);
        self.persist(Record::Committed {
            slot,
            value: value.clone(),
        });
        self.ready.committed.push((slot, value));
    }

    /// Sends a follower the chosen values it lacks.
    fn fill_in(&mut self, to: Rank, their_commit: Slot) {
        let Role::Leader { ballot, .. } = &self.role else {
            return;
        };
        let ballot = *ballot;
        if their_commit >= self.commit() {
            return;
        }
        if their_commit < self.durable.trimmed {
            self.send_snapshot(to);
            return;
        }
        let entries: Vec<(Slot, Value)> = self
            .durable
            .log
            .range(their_commit + 1..)
            .take(self.config.catch_up_entries_max)
            .map(|(slot, value)| (*slot, value.clone()))
            .collect();
        self.send(to, Message::Chosen { ballot, entries });
    }
}
