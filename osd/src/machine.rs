//! One PG's life on one OSD as a state machine without IO, as `monitor::paxos` is: the map's
//! facts about the PG, requests and answers from peers, completed disk writes, client writes
//! and ticks go in; requests to send, answers to give, records to persist, object copies to
//! make and commands for the monitors come out (docs/osd.md, "The PG machine").
//!
//! It holds what the PG's copy here is (its summary and log, as durable) and decides every
//! step of the PG's replication protocol:
//!
//! - **as a holder**: answering a peering question (which fences the PG at the asker's
//!   epoch), taking a change or a recovery push from a primary, and acknowledging it only once
//!   it is durable and no newer primary has asked about the PG meanwhile;
//! - **as the primary**: peering (asking the OSDs that can hold the history, waiting for one
//!   of the last active interval, choosing the authority, recovering this copy and the other
//!   acting copies, waiting out the previous primary's read leases, starting the interval on
//!   every acting copy, having the monitors record the activation), then taking client writes
//!   one after another: each goes to disk here and to every other acting holder, and is
//!   acknowledged only when all have it and the PG is still active here.
//!
//! Object data is the caller's: a record or push names objects, and the caller moves their
//! bytes. Tokens tie outputs to the inputs that complete them; the caller hands out the tokens
//! of requests and writes, the machine those of what it sends and persists.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use tidepool_placement::{Epoch, OsdId, PgActivation};
use tidepool_proto::osd::{LogEntry, PgInfo};

use crate::peering::{self, Accept, Catchup, Copy};

/// Ties an output to the input that completes it.
pub type Token = u64;
/// Milliseconds on the caller's clock.
pub type Millis = u64;

/// How long peering waits before trying again after it failed.
pub const PEERING_RETRY_MS: Millis = 2_000;
/// How long a write waits before sending again to holders that did not take it.
pub const RESEND_MS: Millis = 200;
/// How long a write may wait for its holders in all, across map changes.
pub const WRITE_DEADLINE_MS: Millis = 60_000;
/// The fewest log entries kept: undoing the newest needs the one before it.
const MIN_KEEP: u64 = 2;
/// Why a copy does not undo a change: it took it in a recovery push.
const NOTHING_KEPT: &str =
    "this copy took the change in a recovery push and kept nothing to undo it";

/// What the map says about the PG, and about this OSD.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    /// The map's epoch.
    pub epoch: Epoch,
    /// The epoch in which this OSD came up at its address (`None` while the map has it down).
    pub booted: Option<Epoch>,
    /// Where placement puts the PG, in order.
    pub up: Vec<OsdId>,
    /// Who serves it; the first is its primary.
    pub acting: Vec<OsdId>,
    /// Whether `acting` is a `pg_temp`.
    pub temp: bool,
    /// Copies wanted.
    pub size: usize,
    /// Copies needed to take writes.
    pub min_size: usize,
    /// Copies that rebuild every object: 1 for a replicated pool, `k` for an erasure pool
    /// (each copy is one shard).
    pub k: usize,
    /// The newest activation the map records for the PG.
    pub last_active: Option<PgActivation>,
    /// The OSDs up in the map.
    pub up_osds: Vec<OsdId>,
    /// The OSDs in the map (up or not).
    pub exists: Vec<OsdId>,
}

impl Interval {
    fn primary(&self) -> Option<OsdId> {
        self.acting.first().copied()
    }

    /// Whether `other` is the same interval of the PG (the same holders and record).
    fn same_interval(&self, other: &Interval) -> bool {
        self.acting == other.acting
            && self.up == other.up
            && self.temp == other.temp
            && self.last_active == other.last_active
    }
}

/// Which objects a push carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Objects {
    /// Every object of the sender's copy.
    All,
    /// These.
    Named(Vec<String>),
}

/// What OSDs ask each other about a PG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Peering: what is your copy? Fences the PG at `epoch`.
    Query {
        /// The asker's map.
        epoch: Epoch,
    },
    /// The log entries after `after`.
    Log {
        /// The version after which to send.
        after: u64,
    },
    /// A change from the primary, and the summary after it.
    Change {
        /// The primary's map.
        epoch: Epoch,
        /// The change.
        entry: LogEntry,
        /// The summary after it.
        info: PgInfo,
    },
    /// Peering of an erasure pool: undo `entry`, this copy's newest change, which reached
    /// too few shards to stand. Fences the PG at `epoch`.
    Undo {
        /// The asker's map.
        epoch: Epoch,
        /// The change.
        entry: LogEntry,
    },
    /// Recovery: objects, then the log and summary that go with them.
    Push {
        /// The primary's map.
        epoch: Epoch,
        /// Whether the copy is replaced (everything else of it goes).
        reset: bool,
        /// The objects carried.
        objects: Objects,
        /// Log entries to record.
        entries: Vec<LogEntry>,
        /// The summary to record (`None` for a batch of objects alone).
        info: Option<PgInfo>,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// To a query: the copy here (`None` for none), and the read leases this OSD granted
    /// under older maps (the caller fills these in).
    Info {
        /// This OSD's copy.
        copy: Copy,
        /// `(osd, milliseconds left)`.
        leases: Vec<(OsdId, Millis)>,
    },
    /// To a log request: the entries, or `None` when the log no longer reaches back so far.
    Log(Option<Vec<LogEntry>>),
    /// Done, and durable.
    Ack,
    /// Refused: the PG is fenced at this newer epoch.
    Stale(Epoch),
    /// Refused: this copy must be brought up to date first.
    Behind,
    /// Refused for this reason.
    Failed(String),
}

/// A change to the PG's durable state; the caller persists records in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A change (with its object's new state, which the caller has), and the summary after it.
    Change {
        /// The change.
        entry: LogEntry,
        /// The summary after it.
        info: PgInfo,
    },
    /// Copied objects (which the caller has), with entries and a summary.
    Copy {
        /// Whether the copy was replaced.
        reset: bool,
        /// Entries recorded.
        entries: Vec<LogEntry>,
        /// The summary recorded.
        info: Option<PgInfo>,
    },
    /// A new summary alone (an interval started).
    Info(PgInfo),
    /// The newest change undone (its objects restored by the caller from what it kept to
    /// undo it), and the summary after.
    Undo {
        /// The change undone.
        entry: LogEntry,
        /// The summary after.
        info: PgInfo,
    },
}

/// What this OSD holds of the PG, as durable: rebuilt from the store after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Whether it holds a copy at all.
    pub present: bool,
    /// Its summary.
    pub info: PgInfo,
    /// Its log, in order: every entry after `info.log_tail`, and up to a batch of older ones
    /// (trimmed in batches).
    pub log: Vec<LogEntry>,
    /// The version of its newest change when this copy kept what undoes it (it took it as a
    /// change; a recovery push keeps nothing to undo).
    pub undoable: Option<u64>,
}

impl Durable {
    /// Applies one record.
    pub fn apply(&mut self, record: &Record) {
        self.present = true;
        self.undoable = match record {
            Record::Change { entry, .. } => Some(entry.version),
            // A summary alone (an interval's start) changes no object.
            Record::Copy {
                reset: false,
                entries,
                ..
            } if entries.is_empty() => self.undoable,
            Record::Info(_) => self.undoable,
            Record::Copy { .. } | Record::Undo { .. } => None,
        };
        match record {
            Record::Change { entry, info } => {
                if self.log.last().is_some_and(|e| e.version >= entry.version) {
                    self.log.retain(|e| e.version < entry.version);
                }
                self.log.push(entry.clone());
                self.info = info.clone();
            }
            Record::Copy {
                reset,
                entries,
                info,
            } => {
                if *reset {
                    self.log.clear();
                    self.info = PgInfo::default();
                }
                let mut merged: BTreeMap<u64, LogEntry> =
                    self.log.drain(..).map(|e| (e.version, e)).collect();
                merged.extend(entries.iter().map(|e| (e.version, e.clone())));
                self.log = merged.into_values().collect();
                if let Some(info) = info {
                    self.info = info.clone();
                }
            }
            Record::Info(info) => self.info = info.clone(),
            Record::Undo { entry, info } => {
                self.log.retain(|e| e.version < entry.version);
                self.info = info.clone();
            }
        }
        // The log is in version order: what the summary no longer keeps is at its ends. The
        // old end goes in batches, so that a change does not move the whole log.
        const BATCH: u64 = 128;
        let (tail, head) = (self.info.log_tail, self.info.last_update);
        if self.log.first().is_some_and(|e| e.version + BATCH <= tail) {
            let cut = self.log.partition_point(|e| e.version <= tail);
            self.log.drain(..cut);
        }
        if self.log.last().is_some_and(|e| e.version > head) {
            let keep = self.log.partition_point(|e| e.version <= head);
            self.log.truncate(keep);
        }
    }

    /// The copy as a peering answer gives it.
    pub fn copy(&self) -> Copy {
        self.present
            .then(|| (self.info.clone(), self.log.last().cloned()))
    }
}

/// Why a client write was not done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The PG is not active here (peering, down, or no longer led here): the client retries.
    NotActive(String),
    /// Fewer holders than the pool needs.
    Undersized {
        /// Acting holders.
        acting: usize,
        /// Needed.
        min_size: usize,
    },
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::NotActive(reason) => f.write_str(reason),
            WriteError::Undersized { acting, min_size } => {
                write!(f, "{acting} holders, {min_size} needed")
            }
        }
    }
}

/// Which input a persisted record came from, for the caller that holds its object data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client write of this token.
    Write(Token),
    /// The peer request of this token.
    Request(Token),
    /// The machine itself (a summary).
    Own,
}

/// Work for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `request` to `to`; feed its answer back as [`Input::Answer`] (`None` for none).
    Send {
        /// The token of the answer.
        token: Token,
        /// The peer.
        to: OsdId,
        /// The request.
        request: Request,
    },
    /// Answer the peer request of `token`.
    Respond {
        /// The request's token.
        token: Token,
        /// The answer.
        answer: Answer,
    },
    /// Make `record` durable (after every record output before it), then feed
    /// [`Input::Persisted`]. A failed write is the store failing: the OSD stops.
    Persist {
        /// The token of the completion.
        token: Token,
        /// Whose data goes with it.
        origin: Origin,
        /// The record.
        record: Record,
    },
    /// Bring this copy to `from`'s (whose summary is `info`) by `plan`, persisting as it goes;
    /// then feed [`Input::Pulled`] with the record that describes the result.
    Pull {
        /// The token of the completion.
        token: Token,
        /// The authority.
        from: OsdId,
        /// How.
        plan: Catchup,
        /// The authority's summary.
        info: PgInfo,
    },
    /// The PG's fence rose to this epoch.
    Fenced(Epoch),
    /// Ask the monitors to record this activation; feed [`Input::RecordFailed`] if refused.
    RecordActivation(PgActivation),
    /// Ask the monitors for this `pg_temp` (empty: none).
    WantPgTemp(Vec<OsdId>),
    /// The client write of `token` is finished.
    Written {
        /// The write's token.
        token: Token,
        /// Its version, or why not.
        result: Result<u64, WriteError>,
    },
    /// Feed [`Input::Tick`] at this time (or later).
    Timer(Millis),
}

/// What happens to the PG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A new map.
    Map(Interval),
    /// A request from a peer.
    Request {
        /// Its token, for the answer.
        token: Token,
        /// The request.
        request: Request,
    },
    /// The answer to a [`Output::Send`].
    Answer {
        /// The send's token.
        token: Token,
        /// The answer, `None` when none came.
        answer: Option<Answer>,
    },
    /// A [`Output::Persist`] is durable.
    Persisted {
        /// Its token.
        token: Token,
    },
    /// A [`Output::Pull`] ended: `record` (already persisted) describes the copy now, `None`
    /// when it failed.
    Pulled {
        /// Its token.
        token: Token,
        /// The result.
        record: Option<Record>,
    },
    /// A client write of one object, already planned by the caller.
    Write {
        /// Its token.
        token: Token,
        /// The object.
        name: String,
        /// Whether it removes the object.
        delete: bool,
        /// The client's request id.
        reqid: Option<(String, u64)>,
    },
    /// The monitors did not record the activation asked for.
    RecordFailed,
    /// Time passed.
    Tick,
}

/// The PG's state as its statistics show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Active and serving here.
    pub active: bool,
    /// Down: the OSDs of the last active interval it waits for.
    pub down: Option<Vec<OsdId>>,
    /// Objects being recovered from the log.
    pub recovering: u64,
}

#[derive(Debug)]
enum Role {
    /// Not leading the PG (a holder, a stray, or waiting for a map).
    Idle,
    Peering(Box<Peering>),
    /// No OSD of the last active interval answered: it waits for one of these.
    Down {
        waiting: Vec<OsdId>,
        retry_at: Millis,
    },
    /// Waiting for a `pg_temp`, or for a retry.
    Waiting {
        retry_at: Option<Millis>,
    },
    /// The monitors are asked to record this activation.
    Recording(PgActivation),
    Active(Box<Active>),
}

#[derive(Debug)]
struct Peering {
    epoch: Epoch,
    step: Step,
    sent: BTreeMap<Token, OsdId>,
    copies: Vec<(OsdId, Copy)>,
    leases: Vec<(OsdId, Millis)>,
    failed: Option<String>,
    authority: OsdId,
    auth: (PgInfo, Vec<LogEntry>),
    recovering: u64,
    /// The newest entry, undone in this peering (at most one is).
    undo: Option<LogEntry>,
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Asking,
    Log,
    Undo,
    Pull,
    Push,
    Lease(Millis),
    Start,
    Announce,
}

#[derive(Debug)]
struct Active {
    activation: PgActivation,
    write: Option<Write>,
    queue: VecDeque<(Token, LogEntry)>,
}

#[derive(Debug)]
struct Write {
    token: Token,
    entry: LogEntry,
    info: PgInfo,
    started: Millis,
    local: bool,
    /// Holders still to take it.
    waiting: BTreeSet<OsdId>,
    /// Holders that are behind: brought up to date from this copy once it has the change.
    behind: BTreeSet<OsdId>,
    /// Requests out, by token: to whom, and whether it is a query before a push.
    sent: BTreeMap<Token, (OsdId, Sent)>,
    /// A holder is fenced at this epoch: wait for that map.
    needs_map: Option<Epoch>,
    resend_at: Option<Millis>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    Change,
    Query,
    Push,
}

#[derive(Debug)]
enum Pending {
    /// A peer's change or push: answer once durable.
    Reply {
        token: Token,
        epoch: Epoch,
        record: Record,
    },
    /// This primary's own write.
    Local(Record),
    /// The interval's start.
    Started(Record),
    /// This copy's part of peering's undo.
    Undone(Record),
}

/// One PG on one OSD.
#[derive(Debug)]
pub struct PgMachine {
    me: OsdId,
    keep: u64,
    durable: Durable,
    reqids: HashMap<(String, u64), u64>,
    fence: Epoch,
    interval: Option<Interval>,
    role: Role,
    now: Millis,
    next_token: Token,
    pending: BTreeMap<Token, Pending>,
    /// Peering questions answered once the changes on their way to disk here are durable.
    deferred: Vec<Token>,
    out: Vec<Output>,
}

impl PgMachine {
    /// The machine of OSD `me` for a PG whose copy here is `durable`, keeping `keep` log
    /// entries.
    pub fn new(me: OsdId, durable: Durable, keep: u64) -> PgMachine {
        let reqids = durable
            .log
            .iter()
            .filter_map(|e| e.reqid.clone().map(|r| (r, e.version)))
            .collect();
        PgMachine {
            me,
            keep: keep.max(MIN_KEEP),
            durable,
            reqids,
            fence: Epoch(0),
            interval: None,
            role: Role::Idle,
            now: 0,
            next_token: 1,
            pending: BTreeMap::new(),
            deferred: Vec::new(),
            out: Vec::new(),
        }
    }

    /// The copy here.
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// Sets how many log entries are kept.
    pub fn set_keep(&mut self, keep: u64) {
        self.keep = keep.max(MIN_KEEP);
    }

    /// The PG's fence here (`None` while this OSD is not up in its map: it takes nothing).
    pub fn fence(&self) -> Option<Epoch> {
        let booted = self.interval.as_ref()?.booted?;
        Some(self.fence.max(booted))
    }

    /// Whether this OSD serves the PG as its primary: it activated the PG in the current
    /// acting set, the map records that very activation, and no newer primary has asked
    /// about the PG since.
    pub fn serves(&self) -> bool {
        let (Role::Active(active), Some(interval)) = (&self.role, &self.interval) else {
            return false;
        };
        active.activation.acting == interval.acting
            && interval.primary() == Some(self.me)
            && interval.last_active.as_ref() == Some(&active.activation)
            && self.fence().is_some_and(|f| f <= active.activation.epoch)
    }

    /// The interval this OSD serves the PG in, while it does.
    pub fn activation(&self) -> Option<&PgActivation> {
        match &self.role {
            Role::Active(active) if self.serves() => Some(&active.activation),
            _ => None,
        }
    }

    /// The version a client's request made here, if it did.
    pub fn done(&self, reqid: &(String, u64)) -> Option<u64> {
        self.reqids.get(reqid).copied()
    }

    /// The PG's state for its statistics.
    pub fn status(&self) -> Status {
        Status {
            active: self.serves(),
            down: match &self.role {
                Role::Down { waiting, .. } => Some(waiting.clone()),
                _ => None,
            },
            recovering: match &self.role {
                Role::Peering(p) => p.recovering,
                _ => 0,
            },
        }
    }

    /// Handles one input at time `now`; returns the work it makes, in order.
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Output> {
        self.now = self.now.max(now);
        match input {
            Input::Map(interval) => self.on_map(interval),
            Input::Request { token, request } => self.on_request(token, request),
            Input::Answer { token, answer } => self.on_answer(token, answer),
            Input::Persisted { token } => self.on_persisted(token),
            Input::Pulled { token, record } => self.on_pulled(token, record),
            Input::Write {
                token,
                name,
                delete,
                reqid,
            } => self.on_write(token, name, delete, reqid),
            Input::RecordFailed => {
                if matches!(self.role, Role::Recording(_)) {
                    self.retry_later();
                }
            }
            Input::Tick => self.on_tick(),
        }
        std::mem::take(&mut self.out)
    }

    fn token(&mut self) -> Token {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    fn send(&mut self, to: OsdId, request: Request) -> Token {
        let token = self.token();
        self.out.push(Output::Send { token, to, request });
        token
    }

    fn persist(&mut self, origin: Origin, record: Record, pending: Pending) -> Token {
        let token = self.token();
        self.pending.insert(token, pending);
        self.out.push(Output::Persist {
            token,
            origin,
            record,
        });
        token
    }

    /// The epoch of the newest map this machine has.
    pub fn epoch(&self) -> Epoch {
        self.map_epoch()
    }

    /// What the newest map says about the PG.
    pub fn interval(&self) -> Option<&Interval> {
        self.interval.as_ref()
    }

    fn map_epoch(&self) -> Epoch {
        self.interval.as_ref().map_or(Epoch(0), |i| i.epoch)
    }

    /// Raises the PG's fence. A newer primary is at work: this OSD's own peering under an
    /// older epoch stops (its view of the copies is out of date); it tries again with the
    /// next map.
    fn raise_fence(&mut self, epoch: Epoch) {
        if epoch > self.fence {
            self.fence = epoch;
            self.out.push(Output::Fenced(epoch));
            let stale = match &self.role {
                Role::Peering(p) => p.epoch < epoch,
                Role::Recording(activation) => activation.epoch < epoch,
                _ => false,
            };
            if stale {
                self.role = Role::Waiting { retry_at: None };
            }
        }
    }

    // ---- the map ----

    fn on_map(&mut self, interval: Interval) {
        if interval.epoch < self.map_epoch() {
            return;
        }
        let changed = self
            .interval
            .as_ref()
            .is_none_or(|old| !old.same_interval(&interval) || old.booted != interval.booted);
        self.interval = Some(interval);
        match &self.role {
            Role::Recording(activation) => {
                let interval = self.interval.as_ref().expect("just set");
                if interval.last_active.as_ref() == Some(activation)
                    && interval.acting == activation.acting
                {
                    let activation = activation.clone();
                    self.role = Role::Active(Box::new(Active {
                        activation,
                        write: None,
                        queue: VecDeque::new(),
                    }));
                    if !self.serves() {
                        self.stop_serving("the PG changed interval");
                    }
                } else if changed {
                    self.restart();
                }
            }
            Role::Active(_) => {
                if !self.serves() {
                    self.stop_serving("the PG changed interval during the write");
                } else if let Role::Active(active) = &self.role {
                    // A holder fenced at a newer epoch held the write up: resend under it.
                    if active
                        .write
                        .as_ref()
                        .and_then(|w| w.needs_map)
                        .is_some_and(|e| e <= self.map_epoch())
                    {
                        self.resend();
                    }
                }
            }
            // A PG that is down or waits for its `pg_temp` tries again with every map (the
            // OSDs it waits for may be back); one that peers goes on unless its interval
            // changed.
            Role::Down { .. } | Role::Waiting { retry_at: None } | Role::Idle => self.restart(),
            Role::Peering(_) | Role::Waiting { .. } => {
                if changed {
                    self.restart();
                }
            }
        }
    }

    /// Ends this primary's service: every write in flight and queued fails (the client
    /// resends), and the PG peers again.
    fn stop_serving(&mut self, reason: &str) {
        if let Role::Active(active) = std::mem::replace(&mut self.role, Role::Idle) {
            let active = *active;
            let tokens = active
                .write
                .map(|w| w.token)
                .into_iter()
                .chain(active.queue.into_iter().map(|(t, _)| t));
            for token in tokens {
                self.out.push(Output::Written {
                    token,
                    result: Err(WriteError::NotActive(reason.to_owned())),
                });
            }
        }
        self.restart();
    }

    /// Starts peering when this OSD is the primary, else idles. A write of this primary's
    /// still on its way to disk is waited for first: peering reads this copy as durable.
    fn restart(&mut self) {
        self.role = Role::Idle;
        let Some(interval) = self.interval.clone() else {
            return;
        };
        if interval.primary() != Some(self.me) || interval.booted.is_none() {
            return;
        }
        if self.in_flight() || self.local_in_flight() {
            // Peering reads this copy as durable: it waits for what is on its way to disk.
            self.role = Role::Waiting { retry_at: None };
            return;
        }
        // Asking fences this primary too: nothing older than this peering is acknowledged
        // or served here from now on.
        self.raise_fence(interval.epoch);
        let probe = peering::probe_set(
            self.me,
            &interval.acting,
            &interval.up,
            interval.last_active.as_ref(),
            &interval.up_osds,
        );
        let mut peering = Peering {
            epoch: interval.epoch,
            step: Step::Asking,
            sent: BTreeMap::new(),
            copies: vec![(self.me, Some(self.own_copy()))],
            leases: Vec::new(),
            failed: None,
            authority: self.me,
            auth: (PgInfo::default(), Vec::new()),
            recovering: 0,
            undo: None,
        };
        for osd in probe {
            let token = self.send(
                osd,
                Request::Query {
                    epoch: interval.epoch,
                },
            );
            peering.sent.insert(token, osd);
        }
        self.role = Role::Peering(Box::new(peering));
        self.advance_peering();
    }

    /// This copy for peering: an OSD with none yet takes part with an empty one.
    fn own_copy(&self) -> (PgInfo, Option<LogEntry>) {
        (self.durable.info.clone(), self.durable.log.last().cloned())
    }

    fn retry_later(&mut self) {
        let at = self.now + PEERING_RETRY_MS;
        self.role = Role::Waiting { retry_at: Some(at) };
        self.out.push(Output::Timer(at));
    }

    // ---- peering ----

    fn peering(&mut self) -> Option<&mut Peering> {
        match &mut self.role {
            Role::Peering(p) => Some(p),
            _ => None,
        }
    }

    /// Takes peering as far as the answers so far allow.
    fn advance_peering(&mut self) {
        let Some(interval) = self.interval.clone() else {
            return;
        };
        let Role::Peering(p) = &mut self.role else {
            return;
        };
        if !p.sent.is_empty() {
            return;
        }
        if let Some(reason) = p.failed.take() {
            tracing::debug!(%reason, "peering failed; will retry");
            self.retry_later();
            return;
        }
        match p.step {
            Step::Asking => {
                let answered: Vec<OsdId> = p.copies.iter().map(|(o, _)| *o).collect();
                let prior = peering::prior_answered(
                    interval.last_active.as_ref(),
                    &answered,
                    interval.k,
                    |o| interval.exists.contains(&o),
                );
                // An erasure PG serves nothing with fewer than `k` shards acting.
                let shards = if interval.acting.len() < interval.k {
                    let missing = interval.up.iter().filter(|o| !interval.acting.contains(o));
                    Err(missing.copied().collect())
                } else {
                    Ok(())
                };
                if let Err(waiting) = prior.and(shards) {
                    if interval.temp && interval.acting.len() < interval.k {
                        // A `pg_temp` that holds too few shards to serve: back to placement's
                        // holders, to plan again.
                        self.out.push(Output::WantPgTemp(Vec::new()));
                    }
                    let retry_at = self.now + PEERING_RETRY_MS;
                    self.role = Role::Down { waiting, retry_at };
                    self.out.push(Output::Timer(retry_at));
                    return;
                }
                p.authority = peering::authority(&p.copies).unwrap_or(self.me);
                if p.authority == self.me {
                    p.auth = (self.durable.info.clone(), self.durable.log.clone());
                    self.plan();
                } else {
                    let authority = p.authority;
                    let after = copy_info(&p.copies, authority).log_tail;
                    p.step = Step::Log;
                    let token = self.send(authority, Request::Log { after });
                    if let Some(p) = self.peering() {
                        p.sent.insert(token, authority);
                    }
                }
            }
            Step::Log => self.plan(),
            Step::Undo => {
                // Every holder undid it: the authority's history ends with the entry before.
                let before = p.auth.1.iter().rev().nth(1).cloned();
                if let Some(entry) = p.undo.clone() {
                    if p.auth.1.last() == Some(&entry) {
                        p.auth.1.pop();
                        p.auth.0 = peering::undone(&p.auth.0, before.as_ref());
                    }
                    for (_, copy) in p.copies.iter_mut() {
                        if let Some((info, last)) = copy {
                            if last.as_ref() == Some(&entry) {
                                *info = peering::undone(info, before.as_ref());
                                last.clone_from(&before);
                            }
                        }
                    }
                }
                self.plan();
            }
            Step::Pull => self.push_all(),
            Step::Push => {
                let answered: Vec<OsdId> = p.copies.iter().map(|(o, _)| *o).collect();
                let wait = peering::lease_wait(interval.last_active.as_ref(), &answered, &p.leases);
                let until = self.now + wait;
                p.step = Step::Lease(until);
                if wait > 0 {
                    self.out.push(Output::Timer(until));
                } else {
                    self.advance_peering();
                }
            }
            Step::Lease(until) => {
                if self.now < until {
                    return;
                }
                // Every acting copy now holds every acknowledged write: they start the
                // interval, so that each ranks above any copy from an older one.
                p.step = Step::Start;
                let mut info = self.durable.info.clone();
                info.last_epoch_started = interval.epoch;
                let record = Record::Info(info);
                self.persist(Origin::Own, record.clone(), Pending::Started(record));
            }
            Step::Start => {}
            Step::Announce => {
                let activation = PgActivation {
                    epoch: p.epoch,
                    acting: interval.acting.clone(),
                };
                self.out.push(Output::RecordActivation(activation.clone()));
                self.role = Role::Recording(activation);
            }
        }
    }

    /// With the authority's log: the newest entry to undo, the `pg_temp` to ask for, or the
    /// recovery of this copy.
    fn plan(&mut self) {
        let interval = self.interval.clone().expect("peering has a map");
        let me = self.me;
        let Some(p) = self.peering() else { return };
        if p.undo.is_none() {
            let newest = p
                .copies
                .iter()
                .find(|(osd, _)| *osd == p.authority)
                .and_then(|(_, copy)| copy.as_ref())
                .and_then(|(_, last)| last.clone());
            if let Some(holders) = peering::in_doubt(newest.as_ref(), &p.copies, interval.k) {
                let entry = newest.expect("an entry in doubt");
                return self.undo(entry, holders);
            }
        }
        let plans: BTreeMap<OsdId, Catchup> = p
            .copies
            .iter()
            .map(|(osd, copy)| (*osd, peering::catchup(&p.auth.0, &p.auth.1, copy)))
            .collect();
        if !interval.temp {
            // Stand-ins must hold data; an up member may also be empty when the PG is, and so
            // may the authority.
            let authority = p.authority;
            let usable: Vec<OsdId> = p
                .copies
                .iter()
                .filter(|(osd, copy)| {
                    plans[osd].usable()
                        && (interval.up.contains(osd)
                            || *osd == authority
                            || peering::rank(copy).2 > 0)
                })
                .map(|(osd, _)| *osd)
                .collect();
            let want = peering::choose_acting(&interval.up, &usable, interval.size);
            if want.len() < interval.k {
                // Too few shards with a usable history to serve: wait for more.
                let waiting = interval.up.iter().filter(|o| !usable.contains(o));
                let (waiting, retry_at) = (waiting.copied().collect(), self.now + PEERING_RETRY_MS);
                self.role = Role::Down { waiting, retry_at };
                self.out.push(Output::Timer(retry_at));
                return;
            }
            if want != interval.up {
                self.out.push(Output::WantPgTemp(want));
                self.role = Role::Waiting { retry_at: None };
                return;
            }
        }
        p.recovering = interval
            .acting
            .iter()
            .filter_map(|osd| match plans.get(osd) {
                Some(Catchup::Log(entries)) => Some(names_of(entries).len() as u64),
                _ => None,
            })
            .sum();
        p.step = Step::Pull;
        if plans[&me] != Catchup::UpToDate {
            let (from, info) = (p.authority, p.auth.0.clone());
            let token = self.token();
            self.out.push(Output::Pull {
                token,
                from,
                plan: plans[&me].clone(),
                info,
            });
            if let Some(p) = self.peering() {
                p.sent.insert(token, from);
            }
        } else {
            self.advance_peering();
        }
    }

    /// Has every copy in `holders` undo `entry` (this one too, when it holds it).
    fn undo(&mut self, entry: LogEntry, holders: Vec<OsdId>) {
        let epoch = self.map_epoch();
        tracing::info!(
            version = entry.version,
            object = %entry.name,
            holders = ?holders,
            "undoing a change that reached too few shards"
        );
        if let Some(p) = self.peering() {
            p.step = Step::Undo;
            p.undo = Some(entry.clone());
        }
        if holders.contains(&self.me) && self.durable.undoable != Some(entry.version) {
            // Held by too few shards, and not to be undone here: peering tries again, until
            // more of the shards that hold it answer.
            if let Some(p) = self.peering() {
                p.failed = Some(NOTHING_KEPT.into());
            }
            return self.advance_peering();
        }
        for osd in holders {
            let token = if osd == self.me {
                let before = self.durable.log.iter().rev().nth(1);
                let info = peering::undone(&self.durable.info, before);
                let record = Record::Undo {
                    entry: entry.clone(),
                    info,
                };
                self.persist(Origin::Own, record.clone(), Pending::Undone(record))
            } else {
                let entry = entry.clone();
                self.send(osd, Request::Undo { epoch, entry })
            };
            if let Some(p) = self.peering() {
                p.sent.insert(token, osd);
            }
        }
        self.advance_peering();
    }

    /// Brings every other acting copy up to this one.
    fn push_all(&mut self) {
        let interval = self.interval.clone().expect("peering has a map");
        let me = self.me;
        let Some(p) = self.peering() else { return };
        p.step = Step::Push;
        let copies = p.copies.clone();
        // This copy holds the authority's history now (it had it, or pulled it): it pushes it
        // with the authority's rank, which its own summary may lag in.
        let started = p.auth.0.last_epoch_started;
        for &osd in interval.acting.iter().filter(|o| **o != me) {
            let copy = copies
                .iter()
                .find(|(o, _)| *o == osd)
                .and_then(|(_, c)| c.clone());
            if let Some(mut request) = self.catch_up(&copy, interval.epoch) {
                if let Request::Push {
                    info: Some(info), ..
                } = &mut request
                {
                    info.last_epoch_started = info.last_epoch_started.max(started);
                }
                let token = self.send(osd, request);
                if let Some(p) = self.peering() {
                    p.sent.insert(token, osd);
                }
            }
        }
        self.advance_peering();
    }

    /// The push that brings a holder whose copy is `their` up to this copy (`None` when it
    /// is up to date).
    fn catch_up(&self, their: &Copy, epoch: Epoch) -> Option<Request> {
        let (info, log) = (&self.durable.info, &self.durable.log);
        let (reset, objects, entries) = match peering::catchup(info, log, their) {
            Catchup::UpToDate => return None,
            Catchup::Log(entries) => (false, Objects::Named(names_of(&entries)), entries),
            Catchup::Backfill => (true, Objects::All, log.clone()),
        };
        Some(Request::Push {
            epoch,
            reset,
            objects,
            entries,
            info: Some(info.clone()),
        })
    }

    fn on_pulled(&mut self, token: Token, record: Option<Record>) {
        let Some(p) = self.peering() else { return };
        if p.sent.remove(&token).is_none() {
            return;
        }
        match record {
            Some(record) => self.apply(&record),
            None => {
                if let Some(p) = self.peering() {
                    p.failed = Some("pulling this primary's copy failed".into());
                }
            }
        }
        self.advance_peering();
    }

    /// Applies a record that is now durable to this copy.
    fn apply(&mut self, record: &Record) {
        self.durable.apply(record);
        match record {
            Record::Change { entry, .. } => {
                if let Some(reqid) = entry.reqid.clone() {
                    self.reqids.insert(reqid, entry.version);
                }
                let tail = self.durable.info.log_tail;
                if self.reqids.len() > 2 * self.durable.log.len() + 64 {
                    self.reqids.retain(|_, version| *version > tail);
                }
            }
            Record::Copy { .. } | Record::Undo { .. } => self.reload_reqids(),
            Record::Info(_) => {}
        }
    }

    fn reload_reqids(&mut self) {
        self.reqids = self
            .durable
            .log
            .iter()
            .filter_map(|e| e.reqid.clone().map(|r| (r, e.version)))
            .collect();
    }

    fn on_answer(&mut self, token: Token, answer: Option<Answer>) {
        if let Role::Active(active) = &self.role {
            if active
                .write
                .as_ref()
                .is_some_and(|w| w.sent.contains_key(&token))
            {
                self.on_write_answer(token, answer);
                return;
            }
        }
        let acting = self
            .interval
            .as_ref()
            .map(|i| i.acting.clone())
            .unwrap_or_default();
        let Some(p) = self.peering() else { return };
        let Some(osd) = p.sent.remove(&token) else {
            return;
        };
        match (&p.step, answer) {
            (Step::Asking, Some(Answer::Info { copy, leases })) => {
                p.copies.push((osd, copy));
                p.leases.extend(leases);
            }
            (Step::Asking, _) if acting.contains(&osd) => {
                p.failed = Some(format!("acting holder osd.{} did not answer", osd.0));
            }
            (Step::Asking, _) => {}
            (Step::Log, Some(Answer::Log(Some(log)))) => {
                p.auth = (copy_info(&p.copies, osd), log);
            }
            (Step::Undo | Step::Push | Step::Announce, Some(Answer::Ack)) => {}
            (step, answer) => {
                p.failed = Some(format!("osd.{} answered {answer:?} in {step:?}", osd.0));
            }
        }
        self.advance_peering();
    }

    fn on_tick(&mut self) {
        match &self.role {
            Role::Waiting { retry_at: Some(at) } | Role::Down { retry_at: at, .. }
                if *at <= self.now =>
            {
                self.restart()
            }
            Role::Peering(p) if matches!(p.step, Step::Lease(_)) => self.advance_peering(),
            Role::Active(active) => {
                let Some(write) = &active.write else { return };
                if self.now >= write.started + WRITE_DEADLINE_MS {
                    let waiting = write.waiting.clone();
                    self.fail_write(format!("holders {waiting:?} did not take the write"));
                } else if write.resend_at.is_some_and(|at| at <= self.now) {
                    self.resend();
                }
            }
            _ => {}
        }
    }

    // ---- as a holder ----

    fn on_request(&mut self, token: Token, request: Request) {
        let respond = |machine: &mut PgMachine, answer| {
            machine.out.push(Output::Respond { token, answer });
        };
        match request {
            Request::Query { epoch } => {
                // Fence first, then answer: a change still on its way to disk here is then
                // either in the answer or not acknowledged.
                self.raise_fence(epoch);
                if self.in_flight() || self.local_in_flight() {
                    self.deferred.push(token);
                } else {
                    let copy = self.durable.copy();
                    respond(
                        self,
                        Answer::Info {
                            copy,
                            leases: Vec::new(),
                        },
                    );
                }
            }
            Request::Log { after } => {
                let log =
                    (self.durable.present && after >= self.durable.info.log_tail).then(|| {
                        self.durable
                            .log
                            .iter()
                            .filter(|e| e.version > after)
                            .cloned()
                            .collect()
                    });
                respond(self, Answer::Log(log));
            }
            Request::Change { epoch, entry, info } => {
                let Some(fence) = self.fence() else {
                    return respond(self, not_up());
                };
                match peering::accept_change(
                    fence,
                    epoch,
                    &self.durable.info,
                    &self.durable.log,
                    &entry,
                ) {
                    Accept::Apply => {}
                    Accept::Duplicate => return respond(self, self.acknowledge(epoch)),
                    Accept::Stale(have) => return respond(self, Answer::Stale(have)),
                    Accept::Behind | Accept::Diverged => return respond(self, Answer::Behind),
                }
                if self.in_flight() || self.local_in_flight() {
                    // The change before this one is still on its way to disk here.
                    return respond(self, Answer::Behind);
                }
                self.take(token, epoch, Record::Change { entry, info });
            }
            Request::Undo { epoch, entry } => {
                let Some(fence) = self.fence() else {
                    return respond(self, not_up());
                };
                if epoch < fence {
                    return respond(self, Answer::Stale(fence));
                }
                if self.in_flight() || self.local_in_flight() {
                    let busy = "a change is on its way to disk here".to_owned();
                    return respond(self, Answer::Failed(busy));
                }
                if self.durable.log.last() != Some(&entry) {
                    // Undone already (a resend), or never taken: either way not here. Newer
                    // entries after it mean the asker's view of this copy is out of date.
                    let answer = if self.durable.log.contains(&entry) {
                        Answer::Failed("newer changes follow the one to undo".into())
                    } else {
                        self.acknowledge(epoch)
                    };
                    return respond(self, answer);
                }
                if self.durable.undoable != Some(entry.version) {
                    return respond(self, Answer::Failed(NOTHING_KEPT.into()));
                }
                let before = self.durable.log.iter().rev().nth(1);
                let info = peering::undone(&self.durable.info, before);
                self.take(token, epoch, Record::Undo { entry, info });
            }
            Request::Push {
                epoch,
                reset,
                objects: _,
                entries,
                info,
            } => {
                let Some(fence) = self.fence() else {
                    return respond(self, not_up());
                };
                if epoch < fence {
                    return respond(self, Answer::Stale(fence));
                }
                if let Some(info) = info.as_ref().filter(|_| !reset) {
                    // Without a reset, a push only adds to this copy: one that would drop
                    // entries (and leave their objects) means the primary's view of this copy
                    // is out of date.
                    if self.durable.present && info.last_update < self.durable.info.last_update {
                        return respond(
                            self,
                            Answer::Failed("the push would roll back this copy's log".into()),
                        );
                    }
                    let mine = self.durable.copy();
                    if mine.is_some()
                        && peering::rank(&mine) > peering::rank(&Some((info.clone(), None)))
                    {
                        return respond(
                            self,
                            Answer::Failed(
                                "this copy's history is newer than the pushed one".into(),
                            ),
                        );
                    }
                }
                let record = Record::Copy {
                    reset,
                    entries,
                    info,
                };
                self.take(token, epoch, record);
            }
        }
    }

    /// Takes a primary's change or push under `epoch` (a newer epoch raises the fence), and
    /// answers the request of `token` once it is durable.
    fn take(&mut self, token: Token, epoch: Epoch, record: Record) {
        self.raise_fence(epoch);
        self.persist(
            Origin::Request(token),
            record.clone(),
            Pending::Reply {
                token,
                epoch,
                record,
            },
        );
    }

    /// Whether a change or push from a peer is on its way to disk here.
    fn in_flight(&self) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p, Pending::Reply { .. }))
    }

    /// Whether a write or undo of this primary's is on its way to disk here.
    fn local_in_flight(&self) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p, Pending::Local(_) | Pending::Undone(_)))
    }

    /// Answers the peering questions deferred while changes went to disk, once they are.
    fn answer_deferred(&mut self) {
        if self.deferred.is_empty() || self.in_flight() || self.local_in_flight() {
            return;
        }
        for token in std::mem::take(&mut self.deferred) {
            let copy = self.durable.copy();
            self.out.push(Output::Respond {
                token,
                answer: Answer::Info {
                    copy,
                    leases: Vec::new(),
                },
            });
        }
    }

    /// The answer to a change or push from a primary under `epoch`, now durable: `Ack`,
    /// unless a newer primary asked about the PG while it went to disk (it may have read this
    /// copy without it) or this OSD is no longer up.
    fn acknowledge(&self, epoch: Epoch) -> Answer {
        match self.fence() {
            Some(fence) if fence <= epoch => Answer::Ack,
            Some(fence) => Answer::Stale(fence),
            None => not_up(),
        }
    }

    fn on_persisted(&mut self, token: Token) {
        let Some(pending) = self.pending.remove(&token) else {
            return;
        };
        match pending {
            Pending::Reply {
                token,
                epoch,
                record,
            } => {
                self.apply(&record);
                let answer = self.acknowledge(epoch);
                self.out.push(Output::Respond { token, answer });
                self.answer_deferred();
                if matches!(self.role, Role::Waiting { retry_at: None }) && !self.in_flight() {
                    self.restart();
                }
            }
            Pending::Local(record) => {
                self.apply(&record);
                self.answer_deferred();
                let version = match &record {
                    Record::Change { entry, .. } => entry.version,
                    _ => 0,
                };
                if let Some(write) = self.write().filter(|w| w.entry.version == version) {
                    write.local = true;
                    self.push_behind();
                    self.finish_write();
                } else if matches!(self.role, Role::Waiting { retry_at: None }) {
                    // Its write failed meanwhile: peer now that this copy is durable.
                    self.restart();
                }
            }
            Pending::Undone(record) => {
                self.apply(&record);
                self.answer_deferred();
                let me = self.me;
                match self.peering() {
                    Some(p) if p.step == Step::Undo && p.sent.get(&token) == Some(&me) => {
                        p.sent.remove(&token);
                        self.advance_peering();
                    }
                    _ => {
                        if matches!(self.role, Role::Waiting { retry_at: None }) {
                            self.restart();
                        }
                    }
                }
            }
            Pending::Started(record) => {
                self.apply(&record);
                let interval = self.interval.clone().expect("peering has a map");
                let me = self.me;
                let info = self.durable.info.clone();
                let Some(p) = self.peering() else { return };
                if p.step != Step::Start {
                    return;
                }
                p.step = Step::Announce;
                for &osd in interval.acting.iter().filter(|o| **o != me) {
                    let token = self.send(
                        osd,
                        Request::Push {
                            epoch: interval.epoch,
                            reset: false,
                            objects: Objects::Named(Vec::new()),
                            entries: Vec::new(),
                            info: Some(info.clone()),
                        },
                    );
                    if let Some(p) = self.peering() {
                        p.sent.insert(token, osd);
                    }
                }
                self.advance_peering();
            }
        }
    }

    // ---- client writes, as the primary ----

    fn on_write(&mut self, token: Token, name: String, delete: bool, reqid: Option<(String, u64)>) {
        let epoch = self.map_epoch();
        let serves = self.serves();
        let (acting, min_size) = self
            .interval
            .as_ref()
            .map_or((0, 0), |i| (i.acting.len(), i.min_size));
        let Role::Active(active) = &mut self.role else {
            return self.out.push(Output::Written {
                token,
                result: Err(WriteError::NotActive("the PG is peering".into())),
            });
        };
        if !serves {
            return self.out.push(Output::Written {
                token,
                result: Err(WriteError::NotActive("the PG is peering".into())),
            });
        }
        if acting < min_size {
            return self.out.push(Output::Written {
                token,
                result: Err(WriteError::Undersized { acting, min_size }),
            });
        }
        let entry = LogEntry {
            version: 0,
            epoch,
            name,
            delete,
            reqid,
        };
        active.queue.push_back((token, entry));
        self.next_write();
    }

    /// Starts the next queued write, unless one is in flight.
    fn next_write(&mut self) {
        let me = self.me;
        let now = self.now;
        let last = self.durable.info.last_update;
        let keep = self.keep;
        let info = self.durable.info.clone();
        let Role::Active(active) = &mut self.role else {
            return;
        };
        if active.write.is_some() {
            return;
        }
        let Some((token, mut entry)) = active.queue.pop_front() else {
            return;
        };
        if let Some(version) = entry.reqid.as_ref().and_then(|r| self.reqids.get(r)) {
            // A resend of a change already made gets its version back, not a second change.
            self.out.push(Output::Written {
                token,
                result: Ok(*version),
            });
            return self.next_write();
        }
        entry.version = last + 1;
        let next = crate::pg::advance(&info, &entry, keep);
        let waiting: BTreeSet<OsdId> = active
            .activation
            .acting
            .iter()
            .copied()
            .filter(|o| *o != me)
            .collect();
        active.write = Some(Write {
            token,
            entry: entry.clone(),
            info: next.clone(),
            started: now,
            local: false,
            waiting,
            behind: BTreeSet::new(),
            sent: BTreeMap::new(),
            needs_map: None,
            resend_at: None,
        });
        let record = Record::Change { entry, info: next };
        self.persist(Origin::Write(token), record.clone(), Pending::Local(record));
        self.resend();
    }

    fn write(&mut self) -> Option<&mut Write> {
        match &mut self.role {
            Role::Active(active) => active.write.as_mut(),
            _ => None,
        }
    }

    /// Sends the write in flight to every holder that has not taken it and is not being
    /// brought up to date.
    fn resend(&mut self) {
        let epoch = self.map_epoch();
        let Some(write) = self.write() else { return };
        write.needs_map = None;
        write.resend_at = None;
        let busy: BTreeSet<OsdId> = write.sent.values().map(|(o, _)| *o).collect();
        let targets: Vec<OsdId> = write
            .waiting
            .iter()
            .copied()
            .filter(|o| !busy.contains(o) && !write.behind.contains(o))
            .collect();
        let (entry, info) = (write.entry.clone(), write.info.clone());
        for osd in targets {
            let token = self.send(
                osd,
                Request::Change {
                    epoch,
                    entry: entry.clone(),
                    info: info.clone(),
                },
            );
            if let Some(write) = self.write() {
                write.sent.insert(token, (osd, Sent::Change));
            }
        }
    }

    fn on_write_answer(&mut self, token: Token, answer: Option<Answer>) {
        let now = self.now;
        let epoch = self.map_epoch();
        let shards = self.interval.as_ref().is_some_and(|i| i.k > 1);
        let Some(write) = self.write() else { return };
        let Some((osd, sent)) = write.sent.remove(&token) else {
            return;
        };
        let mut retry = false;
        match (sent, answer) {
            (Sent::Change | Sent::Push, Some(Answer::Ack)) => {
                write.waiting.remove(&osd);
                write.behind.remove(&osd);
            }
            (Sent::Change, Some(Answer::Behind)) if shards => {
                // A shard that is behind would take this change inside a recovery push, with
                // nothing kept to undo it: the PG peers again instead, and recovers it there.
                return self.fail_write(format!("osd.{} is behind", osd.0));
            }
            (Sent::Change, Some(Answer::Behind)) => {
                write.behind.insert(osd);
            }
            (_, Some(Answer::Stale(have))) => {
                write.behind.remove(&osd);
                if have > epoch {
                    // Waits for that map, or for the deadline.
                    if write.needs_map.is_none() {
                        let deadline = write.started + WRITE_DEADLINE_MS;
                        self.out.push(Output::Timer(deadline));
                    }
                    if let Some(write) = self.write() {
                        write.needs_map = write.needs_map.max(Some(have));
                    }
                } else {
                    retry = true;
                }
            }
            (Sent::Query, Some(Answer::Info { copy, .. })) => {
                // Bring it up to this copy, which holds the change by now.
                match self.catch_up(&copy, epoch) {
                    None => {
                        if let Some(write) = self.write() {
                            write.waiting.remove(&osd);
                            write.behind.remove(&osd);
                        }
                    }
                    Some(request) => {
                        let token = self.send(osd, request);
                        if let Some(write) = self.write() {
                            write.sent.insert(token, (osd, Sent::Push));
                        }
                    }
                }
            }
            _ => {
                write.behind.remove(&osd);
                retry = true;
            }
        }
        if retry {
            if let Some(write) = self.write() {
                if write.resend_at.is_none() {
                    write.resend_at = Some(now + RESEND_MS);
                    self.out.push(Output::Timer(now + RESEND_MS));
                }
            }
        }
        self.push_behind();
        self.finish_write();
    }

    /// Asks the holders that are behind for their copy (then pushes), once this copy has the
    /// change.
    fn push_behind(&mut self) {
        let epoch = self.map_epoch();
        let Some(write) = self.write() else { return };
        if !write.local {
            return;
        }
        let busy: BTreeSet<OsdId> = write.sent.values().map(|(o, _)| *o).collect();
        let targets: Vec<OsdId> = write
            .behind
            .iter()
            .copied()
            .filter(|o| !busy.contains(o))
            .collect();
        for osd in targets {
            let token = self.send(osd, Request::Query { epoch });
            if let Some(write) = self.write() {
                write.sent.insert(token, (osd, Sent::Query));
            }
        }
    }

    /// Acknowledges the write in flight once it is durable everywhere, unless a newer
    /// primary peered meanwhile.
    fn finish_write(&mut self) {
        let serves = self.serves();
        let Some(write) = self.write() else { return };
        if !write.local || !write.waiting.is_empty() {
            return;
        }
        if !serves {
            // A newer primary that peered meanwhile may not have seen this change here: it is
            // not acknowledged (the client resends; the newer history holds it or not, never
            // half of it).
            return self.fail_write("the PG was peered by a newer primary".into());
        }
        let (token, version) = (write.token, write.entry.version);
        if let Role::Active(active) = &mut self.role {
            active.write = None;
        }
        self.out.push(Output::Written {
            token,
            result: Ok(version),
        });
        self.next_write();
    }

    /// Fails the write in flight. It may be on some holders and not others, and on disk here:
    /// the PG peers again before anything else, from what is durable.
    fn fail_write(&mut self, reason: String) {
        self.stop_serving(&reason);
    }
}

fn not_up() -> Answer {
    Answer::Failed("this OSD is not up in its map".into())
}

/// The summary `osd` gave in peering.
fn copy_info(copies: &[(OsdId, Copy)], osd: OsdId) -> PgInfo {
    copies
        .iter()
        .find(|(o, _)| *o == osd)
        .and_then(|(_, copy)| copy.as_ref())
        .map(|(info, _)| info.clone())
        .unwrap_or_default()
}

/// The distinct object names of `entries`, in order.
pub fn names_of(entries: &[LogEntry]) -> Vec<String> {
    let names: BTreeSet<&String> = entries.iter().map(|e| &e.name).collect();
    names.into_iter().cloned().collect()
}
