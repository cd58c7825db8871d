//! Deterministic simulation of one PG on five OSDs, each driven by the real [`PgMachine`]: a
//! replicated PG (3 copies, `min_size` 2), and erasure PGs (2+1 and 2+2: each holder keeps
//! one shard, an object needs 2 of them, and each change keeps what undoes it). Around it: a seeded network that drops, delays and reorders messages; disks that
//! are slow and lose what was not yet durable when their OSD crashes; OSDs that crash and
//! restart from what they persisted, pause (their inputs wait, then arrive all at once, old
//! messages before the newer map) or are cut off; a monitor that marks OSDs down and out after
//! a grace, hands out `pg_temp`, and records activations by the same rule as the real
//! monitors; clients that write and delete a few hot keys, resend after timeouts under the
//! same request id, and give up.
//!
//! Checked: whenever a primary starts serving, and at the end on every holder, each key's
//! value is its last acknowledged write or a write that was still unacknowledged after that
//! one started (no acknowledged write lost, no acknowledged delete undone); two OSDs never
//! serve the PG in the same interval; after the faults stop, the PG is active and clean, and
//! every holder has the same objects and summary, within a bounded simulated time. For
//! erasure PGs also: every object state that recovery copies is held by at least `k`
//! reachable shards (so it could be decoded), and at activation every acting shard holds the
//! same state of every object (a reader never decodes a mix of two versions).
//!
//! `SIM_SEEDS=N` runs N seeds (default 2,000); `SIM_SEED=S` replays one seed with a trace.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tidepool_osd::machine::{
    Answer, Durable, Input, Interval, Millis, Objects, Origin, Output, PgMachine, Record, Request,
    Token,
};
use tidepool_osd::peering::Catchup;
use tidepool_placement::{Epoch, OsdId, PgActivation};

const OSDS: usize = 5;

/// A PG's redundancy: holders, holders needed for writes, holders that rebuild an object.
#[derive(Clone, Copy, Debug)]
struct Shape {
    size: usize,
    min_size: usize,
    k: usize,
}

const REPLICATED: Shape = Shape {
    size: 3,
    min_size: 2,
    k: 1,
};
/// Erasure 2+1 and 2+2 (`min_size` `k + 1`, as the pools have).
const ERASURE_2_1: Shape = Shape {
    size: 3,
    min_size: 3,
    k: 2,
};
const ERASURE_2_2: Shape = Shape {
    size: 4,
    min_size: 3,
    k: 2,
};
const KEYS: u64 = 4;
const CLIENTS: usize = 3;
/// How long an OSD may be silent before the monitor marks it down, and down before out.
const GRACE_MS: Millis = 1_500;
const OUT_MS: Millis = 4_000;
const RPC_TIMEOUT_MS: Millis = 1_000;
const CLIENT_TIMEOUT_MS: Millis = 3_000;
const CLIENT_GIVE_UP_MS: Millis = 15_000;
/// How long faults go on, and how long the PG then has to become active and clean.
const FAULTS_MS: Millis = 40_000;
const SETTLE_MS: Millis = 90_000;
/// Tokens of backfill pushes, which the shell sends (the machine's own stay far below).
const BACKFILL_TOKENS: Token = 1 << 62;

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

/// Objects and their values: the id of the write that made each.
type Values = BTreeMap<String, u64>;
/// The value of a shard undone with nothing kept to undo it (the checks catch it).
const MISSING: u64 = u64::MAX;
/// What a message carries of objects: each named object's value, `None` for none.
type Data = Vec<(String, Option<u64>)>;

#[derive(Debug)]
enum Event {
    /// An input for OSD `osd`'s machine, unless it restarted since (`life`).
    Input {
        osd: usize,
        life: u64,
        input: Input,
    },
    /// A request from `from` (its token `token`, life `from_life`) reaches `to`.
    Request {
        from: usize,
        from_life: u64,
        token: Token,
        to: usize,
        request: Request,
        data: Data,
    },
    /// A disk write of `osd` is durable.
    Durable {
        osd: usize,
        life: u64,
    },
    /// A pull of `osd` from `from` ends.
    Pull {
        osd: usize,
        life: u64,
        token: Token,
        from: usize,
        plan: Catchup,
        info: tidepool_proto::osd::PgInfo,
    },
    /// A client's write reaches `osd`.
    ClientWrite {
        client: usize,
        attempt: u64,
        osd: usize,
    },
    /// A client hears back (or times out: `result` is `None`).
    ClientDone {
        client: usize,
        attempt: u64,
        result: Option<Result<u64, String>>,
    },
    /// A client sends its operation again.
    ClientRetry {
        client: usize,
        attempt: u64,
    },
    /// A client starts its next operation.
    ClientNext {
        client: usize,
    },
    /// The monitor checks whether `osd` is still silent.
    Grace {
        osd: usize,
    },
    /// A command from an OSD reaches the monitor.
    Command {
        osd: usize,
        life: u64,
        command: Command,
    },
    /// A backfill push of `osd` to `to` was answered.
    Backfilled {
        osd: usize,
        life: u64,
        to: usize,
        attempt: Token,
        ok: bool,
    },
    /// The fault injector acts.
    Fault,
    /// A fault ends for `osd`.
    Restart {
        osd: usize,
    },
    Resume {
        osd: usize,
    },
    Reconnect {
        osd: usize,
    },
}

#[derive(Debug)]
enum Command {
    Record(PgActivation),
    PgTemp(Vec<OsdId>),
    ClearTemp,
    Boot,
}

struct Osd {
    machine: Option<PgMachine>,
    life: u64,
    /// What is durable: the summary and log, and the objects.
    durable: Durable,
    objects: Values,
    /// Erasure shape: what undoes this copy's newest change (its version, object and the
    /// object's value before), kept with the change as the OSDs keep a rollback record.
    undo: Option<(u64, String, Option<u64>)>,
    /// Disk writes not yet durable, in order: their token, record and object changes.
    disk: Vec<(Token, Record, Data)>,
    disk_busy_until: Millis,
    paused_until: Option<Millis>,
    /// Inputs held while paused.
    held: Vec<Event>,
    cut_off: bool,
    /// Requests being handled: the machine's token → (asker, asker's token, asker's life,
    /// carried data).
    inbound: HashMap<Token, (usize, Token, u64, Data)>,
    /// Client writes being handled: token → (client, attempt, key, value).
    writes: HashMap<Token, (usize, u64, String, Option<u64>)>,
    next_token: Token,
    serving: bool,
    /// Backfill pushes out: target → attempt.
    backfilling: BTreeMap<usize, Token>,
    backfilled: BTreeSet<usize>,
}

impl Osd {
    /// Makes `record` and its objects durable.
    fn write(&mut self, record: &Record, data: Data) {
        if matches!(record, Record::Copy { reset: true, .. }) {
            self.objects.clear();
        }
        if let Record::Change { entry, .. } = record {
            let before = self.objects.get(&entry.name).copied();
            self.undo = Some((entry.version, entry.name.clone(), before));
        }
        if let Record::Undo { entry, .. } = record {
            match self.undo.take() {
                Some((version, key, before)) if version == entry.version => match before {
                    Some(v) => self.objects.insert(key, v),
                    None => self.objects.remove(&key),
                },
                // Nothing kept (never, as the machine undoes only what a copy kept): the
                // object is marked so that the checks catch it.
                _ => self.objects.insert(entry.name.clone(), MISSING),
            };
        }
        for (key, value) in data {
            match value {
                Some(v) => self.objects.insert(key, v),
                None => self.objects.remove(&key),
            };
        }
        self.durable.apply(record);
    }
}

struct Mon {
    shape: Shape,
    epoch: u64,
    up: [bool; OSDS],
    inn: [bool; OSDS],
    booted: [u64; OSDS],
    down_since: [Millis; OSDS],
    pg_temp: Option<Vec<OsdId>>,
    last_active: Option<PgActivation>,
    pref: Vec<usize>,
}

impl Mon {
    fn up_set(&self) -> Vec<OsdId> {
        self.pref
            .iter()
            .copied()
            .filter(|&o| self.inn[o])
            .take(self.shape.size)
            .filter(|&o| self.up[o])
            .map(|o| OsdId(o as u32))
            .collect()
    }

    fn acting(&self) -> Vec<OsdId> {
        match &self.pg_temp {
            Some(temp) => temp
                .iter()
                .copied()
                .filter(|o| self.up[o.0 as usize])
                .collect(),
            None => self.up_set(),
        }
    }

    fn interval(&self, osd: usize) -> Interval {
        Interval {
            epoch: Epoch(self.epoch),
            booted: self.up[osd].then_some(Epoch(self.booted[osd])),
            up: self.up_set(),
            acting: self.acting(),
            temp: self.pg_temp.is_some(),
            size: self.shape.size,
            min_size: self.shape.min_size,
            k: self.shape.k,
            last_active: self.last_active.clone(),
            up_osds: (0..OSDS)
                .filter(|&o| self.up[o])
                .map(|o| OsdId(o as u32))
                .collect(),
            exists: (0..OSDS).map(|o| OsdId(o as u32)).collect(),
        }
    }
}

/// A client operation: put a value or delete (`value` `None`).
#[derive(Clone, Debug)]
struct Op {
    key: String,
    value: Option<u64>,
    reqid: (String, u64),
    start: Millis,
    /// When the client stopped waiting (acknowledged, or gave up); `None` while it waits.
    end: Option<Millis>,
    acked: Option<u64>,
}

struct Client {
    op: Option<usize>,
    attempt: u64,
    sequence: u64,
}

struct Sim {
    seed: u64,
    shape: Shape,
    rng: Rng,
    now: Millis,
    sequence: u64,
    queue: BTreeMap<(Millis, u64), Event>,
    osds: Vec<Osd>,
    mon: Mon,
    clients: Vec<Client>,
    ops: Vec<Op>,
    /// The value of each write id.
    next_value: u64,
    /// Who served each activation.
    served: BTreeMap<(u64, Vec<OsdId>), usize>,
    drop_per_thousand: u64,
    delay_max: Millis,
    disk_max: Millis,
    keep: u64,
    faulting: bool,
    /// Longest fault, and longest gap between faults.
    fault_length: Millis,
    fault_gap: Millis,
    /// How often the interesting paths ran.
    stats: BTreeMap<&'static str, u64>,
    trace: bool,
    steps: u64,
    activations: u64,
}

impl Sim {
    fn new(shape: Shape, seed: u64, trace: bool) -> Sim {
        let mut rng = Rng(seed);
        let mut pref: Vec<usize> = (0..OSDS).collect();
        for i in (1..OSDS).rev() {
            pref.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let keep = 3 + rng.below(20);
        let rng_len = rng.below(14_000);
        let rng_gap = rng.below(4_000);
        let osds = (0..OSDS)
            .map(|o| Osd {
                machine: Some(PgMachine::new(OsdId(o as u32), Durable::default(), keep)),
                life: 0,
                durable: Durable::default(),
                objects: Values::new(),
                undo: None,
                disk: Vec::new(),
                disk_busy_until: 0,
                paused_until: None,
                held: Vec::new(),
                cut_off: false,
                inbound: HashMap::new(),
                writes: HashMap::new(),
                next_token: 1,
                serving: false,
                backfilling: BTreeMap::new(),
                backfilled: BTreeSet::new(),
            })
            .collect();
        let mut sim = Sim {
            seed,
            shape,
            drop_per_thousand: rng.below(100),
            delay_max: 1 + rng.below(100),
            disk_max: 1 + rng.below(40),
            keep,
            rng,
            now: 0,
            sequence: 0,
            queue: BTreeMap::new(),
            osds,
            mon: Mon {
                shape,
                epoch: 1,
                up: [true; OSDS],
                inn: [true; OSDS],
                booted: [1; OSDS],
                down_since: [0; OSDS],
                pg_temp: None,
                last_active: None,
                pref,
            },
            clients: (0..CLIENTS)
                .map(|_| Client {
                    op: None,
                    attempt: 0,
                    sequence: 0,
                })
                .collect(),
            ops: Vec::new(),
            next_value: 1,
            served: BTreeMap::new(),
            faulting: true,
            fault_length: 2_000 + rng_len,
            fault_gap: 300 + rng_gap,
            stats: BTreeMap::new(),
            trace,
            steps: 0,
            activations: 0,
        };
        sim.publish();
        for client in 0..CLIENTS {
            let at = sim.rng.below(500);
            sim.schedule(at, Event::ClientNext { client });
        }
        let at = 1_000 + sim.rng.below(2_000);
        sim.schedule(at, Event::Fault);
        sim
    }

    fn schedule(&mut self, delay: Millis, event: Event) {
        self.sequence += 1;
        self.queue.insert((self.now + delay, self.sequence), event);
    }

    fn delay(&mut self) -> Millis {
        1 + self.rng.below(self.delay_max)
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "seed {} (replay with SIM_SEED={}): {what} at {} ms after {} steps",
            self.seed, self.seed, self.now, self.steps
        );
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        !self.osds[a].cut_off && !self.osds[b].cut_off
    }

    /// Whether a message between `a` and `b` gets through.
    fn delivers(&mut self, a: usize, b: usize) -> bool {
        self.reachable(a, b) && !self.rng.chance(self.drop_per_thousand)
    }

    // ---- the monitor ----

    fn new_epoch(&mut self) {
        self.mon.epoch += 1;
        self.publish();
    }

    /// Every OSD gets the new map after its own delay (a cut-off OSD does not).
    fn publish(&mut self) {
        for osd in 0..OSDS {
            if self.osds[osd].cut_off {
                continue;
            }
            let interval = self.mon.interval(osd);
            let (life, delay) = (self.osds[osd].life, self.delay());
            self.schedule(
                delay,
                Event::Input {
                    osd,
                    life,
                    input: Input::Map(interval),
                },
            );
        }
    }

    fn command(&mut self, osd: usize, life: u64, command: Command) {
        if self.osds[osd].life != life || self.osds[osd].machine.is_none() {
            return;
        }
        match command {
            Command::Record(activation) => {
                let newer = self
                    .mon
                    .last_active
                    .as_ref()
                    .is_none_or(|r| r.epoch < activation.epoch);
                if self.mon.acting() == activation.acting
                    && newer
                    && activation.epoch.0 <= self.mon.epoch
                {
                    self.mon.last_active = Some(activation);
                    self.new_epoch();
                } else {
                    let delay = self.delay();
                    self.schedule(
                        delay,
                        Event::Input {
                            osd,
                            life,
                            input: Input::RecordFailed,
                        },
                    );
                }
            }
            Command::PgTemp(want) if want.is_empty() => {
                if self.mon.pg_temp.take().is_some() {
                    self.new_epoch();
                }
            }
            Command::PgTemp(want) => {
                if self.mon.pg_temp.as_ref() != Some(&want) && want != self.mon.up_set() {
                    self.mon.pg_temp = Some(want);
                    self.new_epoch();
                }
            }
            Command::ClearTemp => {
                if self.mon.pg_temp.take().is_some() {
                    self.new_epoch();
                }
            }
            Command::Boot => {
                self.mon.up[osd] = true;
                self.mon.inn[osd] = true;
                self.mon.booted[osd] = self.mon.epoch + 1;
                self.new_epoch();
            }
        }
    }

    fn silent(&self, osd: usize) -> bool {
        let o = &self.osds[osd];
        o.machine.is_none() || o.paused_until.is_some() || o.cut_off
    }

    fn grace(&mut self, osd: usize) {
        if !self.silent(osd) {
            return;
        }
        if self.mon.up[osd] {
            self.trace(&format!("mon: osd.{osd} down"));
            self.mon.up[osd] = false;
            self.mon.down_since[osd] = self.now;
            self.new_epoch();
            self.schedule(OUT_MS, Event::Grace { osd });
        } else if self.mon.inn[osd] && self.now >= self.mon.down_since[osd] + OUT_MS {
            self.trace(&format!("mon: osd.{osd} out"));
            self.mon.inn[osd] = false;
            self.new_epoch();
        }
    }

    // ---- an OSD's shell ----

    fn trace(&self, what: &str) {
        if self.trace {
            eprintln!("{:>7} {what}", self.now);
        }
    }

    fn feed(&mut self, osd: usize, input: Input) {
        let now = self.now;
        let Some(machine) = self.osds[osd].machine.as_mut() else {
            return;
        };
        if self.trace {
            eprintln!("{now:>7} osd.{osd} <- {input:?}");
        }
        let outputs = machine.handle(now, input);
        let serving = machine.serves();
        if machine.status().down.is_some() {
            *self.stats.entry("down PGs").or_default() += 1;
        }
        for output in outputs {
            self.perform(osd, output);
        }
        if serving && !self.osds[osd].serving {
            self.check_activation(osd);
        }
        self.osds[osd].serving = serving;
        if serving && self.mon.pg_temp.is_some() {
            self.backfill(osd);
        }
    }

    fn perform(&mut self, osd: usize, output: Output) {
        if self.trace {
            eprintln!("{:>7} osd.{osd} -> {output:?}", self.now);
        }
        let path = match &output {
            Output::Pull {
                plan: Catchup::Backfill,
                ..
            } => Some("pulls of a whole copy"),
            Output::Pull { .. } => Some("pulls from the log"),
            Output::Send {
                request: Request::Push { reset: true, .. },
                ..
            } => Some("pushes of a whole copy"),
            Output::Send {
                request: Request::Push { entries, .. },
                ..
            } if !entries.is_empty() => Some("pushes from the log"),
            Output::Respond {
                answer: Answer::Behind,
                ..
            } => Some("holders behind"),
            Output::Respond {
                answer: Answer::Stale(_),
                ..
            } => Some("refusals of an older epoch"),
            Output::WantPgTemp(_) => Some("pg_temp asked for"),
            Output::Send {
                request: Request::Undo { .. },
                ..
            }
            | Output::Persist {
                record: Record::Undo { .. },
                ..
            } => Some("undos of a change on too few shards"),
            _ => None,
        };
        if let Some(path) = path {
            *self.stats.entry(path).or_default() += 1;
        }
        let life = self.osds[osd].life;
        match output {
            Output::Send { token, to, request } => {
                let to = to.0 as usize;
                let data = self.data_for(osd, &request);
                // What a primary with the newest map recovers must be decodable (one that
                // resumes from a pause may send what it decided long ago: it is fenced).
                let current = self.osds[osd]
                    .machine
                    .as_ref()
                    .is_some_and(|m| m.epoch().0 == self.mon.epoch);
                let rebuilt = !matches!(request, Request::Push { .. })
                    || self.rebuildable(osd, &data, current);
                if rebuilt && self.delivers(osd, to) {
                    let delay = self.delay();
                    self.schedule(
                        delay,
                        Event::Request {
                            from: osd,
                            from_life: life,
                            token,
                            to,
                            request,
                            data,
                        },
                    );
                }
                self.schedule(
                    RPC_TIMEOUT_MS,
                    Event::Input {
                        osd,
                        life,
                        input: Input::Answer {
                            token,
                            answer: None,
                        },
                    },
                );
            }
            Output::Respond { token, answer } => {
                let Some((asker, their, asker_life, _)) = self.osds[osd].inbound.remove(&token)
                else {
                    return;
                };
                if their >= BACKFILL_TOKENS {
                    if answer == Answer::Ack && self.delivers(osd, asker) {
                        let delay = self.delay();
                        self.schedule(
                            delay,
                            Event::Backfilled {
                                osd: asker,
                                life: asker_life,
                                to: osd,
                                attempt: their,
                                ok: true,
                            },
                        );
                    }
                    return;
                }
                if self.delivers(osd, asker) {
                    let delay = self.delay();
                    self.schedule(
                        delay,
                        Event::Input {
                            osd: asker,
                            life: asker_life,
                            input: Input::Answer {
                                token: their,
                                answer: Some(answer),
                            },
                        },
                    );
                }
            }
            Output::Persist {
                token,
                origin,
                record,
            } => {
                let data = match origin {
                    Origin::Write(write) => {
                        let (_, _, key, value) = self.osds[osd].writes[&write].clone();
                        vec![(key, value)]
                    }
                    Origin::Request(request) => {
                        let data = self.osds[osd].inbound.get(&request);
                        data.map(|(_, _, _, data)| data.clone()).unwrap_or_default()
                    }
                    Origin::Own => Vec::new(),
                };
                let o = &mut self.osds[osd];
                o.disk.push((token, record, data));
                let at = o.disk_busy_until.max(self.now) + 1 + self.rng.below(self.disk_max);
                self.osds[osd].disk_busy_until = at;
                let delay = at - self.now;
                self.schedule(delay, Event::Durable { osd, life });
            }
            Output::Pull {
                token,
                from,
                plan,
                info,
            } => {
                // What peering decided to recover must be decodable when it decides; the pull
                // itself may come later (a pause) and fail.
                let current = self.osds[osd]
                    .machine
                    .as_ref()
                    .is_some_and(|m| m.epoch().0 == self.mon.epoch);
                if let (Catchup::Log(entries), true) = (&plan, current) {
                    let source = &self.osds[from.0 as usize].objects;
                    let data: Data = tidepool_osd::machine::names_of(entries)
                        .into_iter()
                        .map(|n| {
                            let value = source.get(&n).copied();
                            (n, value)
                        })
                        .collect();
                    self.rebuildable(from.0 as usize, &data, true);
                }
                let delay = self.delay() * 2;
                self.schedule(
                    delay,
                    Event::Pull {
                        osd,
                        life,
                        token,
                        from: from.0 as usize,
                        plan,
                        info,
                    },
                );
            }
            Output::Fenced(_) => {}
            Output::RecordActivation(activation) => {
                self.command_mon(osd, Command::Record(activation));
            }
            Output::WantPgTemp(want) => self.command_mon(osd, Command::PgTemp(want)),
            Output::Written { token, result } => {
                let Some((client, attempt, _, _)) = self.osds[osd].writes.remove(&token) else {
                    return;
                };
                if !self.osds[osd].cut_off && !self.rng.chance(self.drop_per_thousand) {
                    let delay = self.delay();
                    self.schedule(
                        delay,
                        Event::ClientDone {
                            client,
                            attempt,
                            result: Some(result.map_err(|e| e.to_string())),
                        },
                    );
                }
            }
            Output::Timer(at) => {
                let delay = at.saturating_sub(self.now);
                self.schedule(
                    delay,
                    Event::Input {
                        osd,
                        life,
                        input: Input::Tick,
                    },
                );
            }
        }
    }

    fn command_mon(&mut self, osd: usize, command: Command) {
        let life = self.osds[osd].life;
        if self.osds[osd].cut_off {
            if matches!(command, Command::Record(_)) {
                self.schedule(
                    RPC_TIMEOUT_MS,
                    Event::Input {
                        osd,
                        life,
                        input: Input::RecordFailed,
                    },
                );
            }
            return;
        }
        let delay = self.delay();
        self.schedule(delay, Event::Command { osd, life, command });
    }

    /// The objects a request carries, read from the sender's durable copy when it is sent
    /// (a change carries its write's value).
    fn data_for(&self, osd: usize, request: &Request) -> Data {
        let o = &self.osds[osd];
        match request {
            Request::Change { entry, .. } => {
                let value = entry
                    .reqid
                    .as_ref()
                    .and_then(|r| self.ops.iter().find(|op| &op.reqid == r))
                    .and_then(|op| op.value);
                vec![(entry.name.clone(), value)]
            }
            Request::Push { objects, .. } => {
                let data = match objects {
                    Objects::All => o
                        .objects
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(*v)))
                        .collect(),
                    Objects::Named(names) => names
                        .iter()
                        .map(|n| (n.clone(), o.objects.get(n).copied()))
                        .collect(),
                };
                data
            }
            _ => Vec::new(),
        }
    }

    /// Erasure shape: recovery rebuilds each object state it copies from `k` shards of that
    /// state. Whether they are reachable from `from` now (when not, the copy fails, as the
    /// daemon's does, and is tried again). With `settled` (peering's recovery, not backfill
    /// beside a write in flight), fewer than `k` shards of it anywhere fails the run: peering
    /// kept a change that no reader could ever decode.
    fn rebuildable(&self, from: usize, data: &Data, settled: bool) -> bool {
        if self.shape.k < 2 {
            return true;
        }
        let mut reachable = true;
        for (key, value) in data {
            let Some(value) = value.filter(|v| *v != MISSING) else {
                continue;
            };
            let holders: Vec<usize> = (0..OSDS)
                .filter(|&o| self.osds[o].objects.get(key) == Some(&value))
                .collect();
            if settled && holders.len() < self.shape.k {
                self.fail(&format!(
                    "osd.{from} recovers {key} = {value}, held by {holders:?} only: fewer than \
                     k = {} shards",
                    self.shape.k
                ));
            }
            let live = holders.iter().filter(|&&o| {
                let osd = &self.osds[o];
                o == from
                    || osd.machine.is_some()
                        && osd.paused_until.is_none()
                        && self.reachable(from, o)
            });
            reachable &= live.count() >= self.shape.k;
        }
        reachable
    }

    fn disk_done(&mut self, osd: usize) {
        let o = &mut self.osds[osd];
        if o.disk.is_empty() {
            return;
        }
        let (token, record, data) = o.disk.remove(0);
        o.write(&record, data);
        self.feed(osd, Input::Persisted { token });
    }

    fn pull(
        &mut self,
        osd: usize,
        token: Token,
        from: usize,
        plan: Catchup,
        info: tidepool_proto::osd::PgInfo,
    ) {
        let source = &self.osds[from];
        let record = if source.machine.is_none()
            || source.paused_until.is_some()
            || !self.reachable(osd, from)
        {
            None
        } else {
            let (names, reset, entries): (Vec<String>, bool, _) = match &plan {
                Catchup::UpToDate => (Vec::new(), false, Vec::new()),
                Catchup::Log(entries) => (
                    tidepool_osd::machine::names_of(entries),
                    false,
                    entries.clone(),
                ),
                Catchup::Backfill => (
                    source.objects.keys().cloned().collect(),
                    true,
                    source
                        .durable
                        .log
                        .iter()
                        .filter(|e| e.version > info.log_tail)
                        .cloned()
                        .collect(),
                ),
            };
            let data: Data = names
                .iter()
                .map(|n| (n.clone(), source.objects.get(n).copied()))
                .collect();
            if !self.rebuildable(from, &data, false) {
                return self.feed(
                    osd,
                    Input::Pulled {
                        token,
                        record: None,
                    },
                );
            }
            let record = Record::Copy {
                reset,
                entries,
                info: Some(info),
            };
            self.osds[osd].write(&record, data);
            Some(record)
        };
        self.feed(osd, Input::Pulled { token, record });
    }

    /// As the daemon's background backfill: the serving primary copies itself whole to the
    /// placement's members outside `pg_temp`, then gives the PG back to its placement.
    fn backfill(&mut self, osd: usize) {
        let Some(machine) = self.osds[osd].machine.as_ref() else {
            return;
        };
        let Some(interval) = machine.interval().cloned() else {
            return;
        };
        let epoch = machine.epoch();
        if !interval.temp {
            return;
        }
        let missing: Vec<usize> = interval
            .up
            .iter()
            .filter(|o| !interval.acting.contains(o))
            .map(|o| o.0 as usize)
            .filter(|o| !self.osds[osd].backfilled.contains(o))
            .collect();
        if missing.is_empty() {
            if !self.osds[osd].backfilling.is_empty() || self.osds[osd].backfilled.is_empty() {
                return;
            }
            self.osds[osd].backfilled.clear();
            self.command_mon(osd, Command::ClearTemp);
            return;
        }
        let targets: Vec<usize> = missing
            .into_iter()
            .filter(|o| !self.osds[osd].backfilling.contains_key(o))
            .collect();
        for to in targets {
            let attempt = BACKFILL_TOKENS + self.sequence;
            self.osds[osd].backfilling.insert(to, attempt);
            let o = &self.osds[osd];
            let request = Request::Push {
                epoch,
                reset: true,
                objects: Objects::All,
                entries: o.durable.log.clone(),
                info: Some(o.durable.info.clone()),
            };
            let data = self.data_for(osd, &request);
            let life = o.life;
            // Backfill runs beside client writes: an object whose newest state is not yet on
            // `k` shards cannot be rebuilt, and the attempt fails (the daemon tries again).
            let rebuilt = self.rebuildable(osd, &data, false);
            if !rebuilt {
                *self
                    .stats
                    .entry("backfills retried for a write in flight")
                    .or_default() += 1;
            }
            if rebuilt && self.delivers(osd, to) {
                let delay = self.delay();
                // The answer comes back as `Backfilled` through a token the machine never
                // hands out.
                self.schedule(
                    delay,
                    Event::Request {
                        from: osd,
                        from_life: life,
                        token: attempt,
                        to,
                        request,
                        data,
                    },
                );
            }
            self.schedule(
                RPC_TIMEOUT_MS * 2,
                Event::Backfilled {
                    osd,
                    life,
                    to,
                    attempt,
                    ok: false,
                },
            );
        }
    }

    // ---- clients ----

    fn client_next(&mut self, client: usize) {
        if !self.faulting {
            return;
        }
        let key = format!("k{}", self.rng.below(KEYS));
        let value = (!self.rng.chance(200)).then(|| {
            self.next_value += 1;
            self.next_value
        });
        let c = &mut self.clients[client];
        c.sequence += 1;
        self.ops.push(Op {
            key,
            value,
            reqid: (format!("client.{client}"), c.sequence),
            start: self.now,
            end: None,
            acked: None,
        });
        c.op = Some(self.ops.len() - 1);
        self.client_send(client);
    }

    fn client_send(&mut self, client: usize) {
        self.clients[client].attempt += 1;
        let attempt = self.clients[client].attempt;
        let primary = self.mon.acting().first().map(|o| o.0 as usize);
        if let Some(osd) = primary {
            if !self.osds[osd].cut_off && !self.rng.chance(self.drop_per_thousand) {
                let delay = self.delay();
                self.schedule(
                    delay,
                    Event::ClientWrite {
                        client,
                        attempt,
                        osd,
                    },
                );
            }
        }
        self.schedule(
            CLIENT_TIMEOUT_MS,
            Event::ClientDone {
                client,
                attempt,
                result: None,
            },
        );
    }

    fn client_write(&mut self, client: usize, attempt: u64, osd: usize) {
        let Some(op) = self.clients[client].op.map(|i| self.ops[i].clone()) else {
            return;
        };
        let o = &mut self.osds[osd];
        if o.machine.is_none() {
            return;
        }
        let token = o.next_token;
        o.next_token += 1;
        o.writes
            .insert(token, (client, attempt, op.key.clone(), op.value));
        self.feed(
            osd,
            Input::Write {
                token,
                name: op.key,
                delete: op.value.is_none(),
                reqid: Some(op.reqid),
            },
        );
    }

    fn client_done(&mut self, client: usize, attempt: u64, result: Option<Result<u64, String>>) {
        let c = &self.clients[client];
        let Some(index) = c.op else { return };
        if c.attempt != attempt {
            return;
        }
        match result {
            Some(Ok(version)) => {
                self.ops[index].acked = Some(version);
                self.ops[index].end = Some(self.now);
                self.trace(&format!("client.{client} acked {:?}", self.ops[index]));
                self.clients[client].op = None;
                let delay = self.rng.below(300);
                self.schedule(delay, Event::ClientNext { client });
            }
            _ if self.now > self.ops[index].start + CLIENT_GIVE_UP_MS => {
                self.trace(&format!("client.{client} gives up {:?}", self.ops[index]));
                self.ops[index].end = Some(self.now);
                self.clients[client].op = None;
                let delay = self.rng.below(300);
                self.schedule(delay, Event::ClientNext { client });
            }
            _ => {
                // Resend under the same request id, a little later; answers to this attempt
                // no longer count.
                self.clients[client].attempt += 1;
                let attempt = self.clients[client].attempt;
                let delay = 50 + self.rng.below(300);
                self.schedule(delay, Event::ClientRetry { client, attempt });
            }
        }
    }

    // ---- faults ----

    fn fault(&mut self) {
        if !self.faulting {
            return;
        }
        // The primary half of the time: its faults are the ones that matter most.
        let osd = match self.mon.acting().first() {
            Some(primary) if self.rng.chance(500) => primary.0 as usize,
            _ => self.rng.below(OSDS as u64) as usize,
        };
        let busy = self.silent(osd);
        let length = self.fault_length;
        if !busy {
            match self.rng.below(3) {
                0 => {
                    self.trace(&format!("fault: osd.{osd} crashes"));
                    let o = &mut self.osds[osd];
                    o.machine = None;
                    o.disk.clear();
                    o.held.clear();
                    o.inbound.clear();
                    o.writes.clear();
                    o.backfilling.clear();
                    o.serving = false;
                    o.life += 1;
                    let down = 200 + self.rng.below(length);
                    self.schedule(down, Event::Restart { osd });
                }
                1 => {
                    let pause = 200 + self.rng.below(length);
                    self.trace(&format!("fault: osd.{osd} pauses for {pause} ms"));
                    self.osds[osd].paused_until = Some(self.now + pause);
                    self.schedule(pause, Event::Resume { osd });
                }
                _ => {
                    let cut = 200 + self.rng.below(length);
                    self.trace(&format!("fault: osd.{osd} cut off for {cut} ms"));
                    self.osds[osd].cut_off = true;
                    self.schedule(cut, Event::Reconnect { osd });
                }
            }
            self.schedule(GRACE_MS, Event::Grace { osd });
        }
        let next = 100 + self.rng.below(self.fault_gap);
        self.schedule(next, Event::Fault);
    }

    /// After a restart, or when a paused or cut-off OSD finds the map has it down: boot.
    fn boot_if_down(&mut self, osd: usize) {
        if !self.mon.up[osd] || !self.mon.inn[osd] {
            let life = self.osds[osd].life;
            let delay = self.delay();
            self.schedule(
                delay,
                Event::Command {
                    osd,
                    life,
                    command: Command::Boot,
                },
            );
        }
    }

    fn restart(&mut self, osd: usize) {
        self.trace(&format!("osd.{osd} restarts"));
        let o = &mut self.osds[osd];
        o.machine = Some(PgMachine::new(
            OsdId(osd as u32),
            o.durable.clone(),
            self.keep,
        ));
        o.disk_busy_until = self.now;
        // A restarted OSD boots: a new epoch fences everything older.
        let life = o.life;
        let delay = self.delay();
        self.schedule(
            delay,
            Event::Command {
                osd,
                life,
                command: Command::Boot,
            },
        );
        let interval = self.mon.interval(osd);
        self.feed(osd, Input::Map(interval));
    }

    fn resume(&mut self, osd: usize) {
        self.trace(&format!("osd.{osd} resumes"));
        self.osds[osd].paused_until = None;
        // What arrived meanwhile comes all at once, in order: old messages before the newer
        // maps.
        for event in std::mem::take(&mut self.osds[osd].held) {
            self.run(event);
        }
        self.boot_if_down(osd);
    }

    fn reconnect(&mut self, osd: usize) {
        self.trace(&format!("osd.{osd} reconnects"));
        self.osds[osd].cut_off = false;
        let interval = self.mon.interval(osd);
        let life = self.osds[osd].life;
        let delay = self.delay();
        self.schedule(
            delay,
            Event::Input {
                osd,
                life,
                input: Input::Map(interval),
            },
        );
        self.boot_if_down(osd);
    }

    fn heal(&mut self) {
        self.faulting = false;
        for osd in 0..OSDS {
            if self.osds[osd].machine.is_none() {
                self.restart(osd);
            }
            if self.osds[osd].paused_until.is_some() {
                self.resume(osd);
            }
            if self.osds[osd].cut_off {
                self.reconnect(osd);
            }
            self.boot_if_down(osd);
        }
    }

    fn run(&mut self, event: Event) {
        match event {
            Event::Input { osd, life, input } => {
                if self.osds[osd].life != life {
                    return;
                }
                if self.osds[osd].paused_until.is_some() {
                    return self.osds[osd].held.push(Event::Input { osd, life, input });
                }
                self.feed(osd, input);
            }
            Event::Request {
                from,
                from_life,
                token,
                to,
                request,
                data,
            } => {
                if self.osds[to].paused_until.is_some() {
                    return self.osds[to].held.push(Event::Request {
                        from,
                        from_life,
                        token,
                        to,
                        request,
                        data,
                    });
                }
                let o = &mut self.osds[to];
                if o.machine.is_none() {
                    return;
                }
                let mine = o.next_token;
                o.next_token += 1;
                o.inbound.insert(mine, (from, token, from_life, data));
                self.feed(
                    to,
                    Input::Request {
                        token: mine,
                        request,
                    },
                );
            }
            Event::Durable { osd, life } => {
                if self.osds[osd].life != life {
                    return;
                }
                if self.osds[osd].paused_until.is_some() {
                    return self.osds[osd].held.push(Event::Durable { osd, life });
                }
                self.disk_done(osd);
            }
            Event::Pull {
                osd,
                life,
                token,
                from,
                plan,
                info,
            } => {
                if self.osds[osd].life != life {
                    return;
                }
                if self.osds[osd].paused_until.is_some() {
                    return self.osds[osd].held.push(Event::Pull {
                        osd,
                        life,
                        token,
                        from,
                        plan,
                        info,
                    });
                }
                self.pull(osd, token, from, plan, info);
            }
            Event::ClientWrite {
                client,
                attempt,
                osd,
            } => {
                if self.osds[osd].paused_until.is_some() {
                    return self.osds[osd].held.push(Event::ClientWrite {
                        client,
                        attempt,
                        osd,
                    });
                }
                self.client_write(client, attempt, osd);
            }
            Event::ClientDone {
                client,
                attempt,
                result,
            } => self.client_done(client, attempt, result),
            Event::ClientRetry { client, attempt } => {
                if self.clients[client].attempt == attempt && self.clients[client].op.is_some() {
                    self.client_send(client);
                }
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::Grace { osd } => self.grace(osd),
            Event::Command { osd, life, command } => self.command(osd, life, command),
            Event::Backfilled {
                osd,
                life,
                to,
                attempt,
                ok,
            } => {
                if self.osds[osd].life != life
                    || self.osds[osd].backfilling.get(&to) != Some(&attempt)
                {
                    return;
                }
                self.osds[osd].backfilling.remove(&to);
                if ok {
                    self.osds[osd].backfilled.insert(to);
                }
                if self.osds[osd].paused_until.is_none() && self.osds[osd].serving {
                    self.backfill(osd);
                }
            }
            Event::Fault => self.fault(),
            Event::Restart { osd } => {
                if self.osds[osd].machine.is_none() {
                    self.restart(osd);
                }
            }
            Event::Resume { osd } => self.resume(osd),
            Event::Reconnect { osd } => self.reconnect(osd),
        }
    }
}

impl Sim {
    /// The values `key` may hold now: that of its last acknowledged write, or of a write not
    /// acknowledged that was still in flight after that one started. With no acknowledged
    /// write, its first value (none) too.
    fn allowed(&self, key: &str) -> Vec<Option<u64>> {
        let last = self
            .ops
            .iter()
            .filter(|op| op.key == key && op.acked.is_some())
            .max_by_key(|op| op.acked);
        let mut allowed = vec![last.and_then(|op| op.value)];
        allowed.extend(
            self.ops
                .iter()
                .filter(|op| op.key == key && op.acked.is_none())
                .filter(|op| last.is_none_or(|last| op.end.is_none_or(|end| end > last.start)))
                .map(|op| op.value),
        );
        allowed
    }

    fn check_objects(&self, osd: usize, when: &str) {
        for k in 0..KEYS {
            let key = format!("k{k}");
            let value = self.osds[osd].objects.get(&key).copied();
            let allowed = self.allowed(&key);
            if !allowed.contains(&value) {
                let history: Vec<&Op> = self.ops.iter().filter(|op| op.key == key).collect();
                self.fail(&format!(
                    "{when}: osd.{osd} holds {key} = {value:?}, allowed {allowed:?}; \
                     the key's operations: {history:#?}"
                ));
            }
        }
    }

    /// A primary starts serving: one per interval, and its copy holds every acknowledged
    /// write.
    fn check_activation(&mut self, osd: usize) {
        self.activations += 1;
        self.osds[osd].backfilled.clear();
        self.osds[osd].backfilling.clear();
        let Some(activation) = self.osds[osd]
            .machine
            .as_ref()
            .and_then(|m| m.activation().cloned())
        else {
            return;
        };
        let key = (activation.epoch.0, activation.acting.clone());
        if let Some(other) = self.served.insert(key, osd) {
            if other != osd {
                self.fail(&format!(
                    "osd.{osd} and osd.{other} both serve the interval {activation:?}"
                ));
            }
        }
        self.trace(&format!("osd.{osd} serves {activation:?}"));
        // A primary that resumes after a pause may start serving an interval the monitors
        // have since replaced, before it learns the newer map: its holders are fenced (it
        // acknowledges no write) and its read leases ran out. Only the current interval must
        // hold every acknowledged write.
        if self.mon.last_active.as_ref() == Some(&activation) {
            self.check_objects(osd, "activation");
            if self.shape.k > 1 {
                // Every shard of the interval holds the same state of every object.
                for other in &activation.acting {
                    let other = other.0 as usize;
                    if self.osds[other].objects != self.osds[osd].objects {
                        self.fail(&format!(
                            "at activation, shard osd.{other} holds {:?} and the primary \
                             osd.{osd} {:?}",
                            self.osds[other].objects, self.osds[osd].objects
                        ));
                    }
                }
            }
        }
    }

    /// Whether the PG is active and clean, and every client done.
    fn settled(&self) -> bool {
        let acting = self.mon.acting();
        let Some(primary) = acting.first().map(|o| o.0 as usize) else {
            return false;
        };
        self.mon.pg_temp.is_none()
            && acting.len() == self.shape.size
            && (0..OSDS).all(|o| self.mon.up[o] && self.mon.inn[o])
            && self.osds[primary]
                .machine
                .as_ref()
                .is_some_and(|m| m.serves() && m.epoch().0 == self.mon.epoch)
            && self.clients.iter().all(|c| c.op.is_none())
            && acting.iter().all(|o| {
                let o = &self.osds[o.0 as usize];
                o.disk.is_empty()
                    && o.durable.info.last_update == self.osds[primary].durable.info.last_update
            })
    }

    fn check_end(&self) {
        let acting = self.mon.acting();
        let primary = acting[0].0 as usize;
        for osd in &acting {
            let osd = osd.0 as usize;
            self.check_objects(osd, "the end");
            let (mine, theirs) = (&self.osds[osd], &self.osds[primary]);
            if mine.objects != theirs.objects
                || mine.durable.info.last_update != theirs.durable.info.last_update
            {
                self.fail(&format!(
                    "osd.{osd} and the primary osd.{primary} differ: {:?} {:?} and {:?} {:?}",
                    mine.durable.info, mine.objects, theirs.durable.info, theirs.objects
                ));
            }
        }
    }

    fn run_to_end(mut self) -> (u64, u64, u64, BTreeMap<&'static str, u64>) {
        let mut healed = false;
        while let Some(((at, _), event)) = self.queue.pop_first() {
            self.now = at;
            self.steps += 1;
            if !healed && self.now >= FAULTS_MS {
                healed = true;
                self.heal();
            }
            self.run(event);
            if healed && self.settled() {
                self.check_end();
                let acked = self.ops.iter().filter(|op| op.acked.is_some()).count() as u64;
                return (self.ops.len() as u64, acked, self.activations, self.stats);
            }
            if self.now > FAULTS_MS + SETTLE_MS {
                let states: Vec<String> = (0..OSDS)
                    .map(|o| {
                        let osd = &self.osds[o];
                        format!(
                            "osd.{o}: up {} in {} alive {} status {:?} info {:?}",
                            self.mon.up[o],
                            self.mon.inn[o],
                            osd.machine.is_some(),
                            osd.machine.as_ref().map(|m| m.status()),
                            osd.durable.info
                        )
                    })
                    .collect();
                self.fail(&format!(
                    "the PG did not become active and clean: acting {:?} up {:?} temp {:?} \
                     last_active {:?} epoch {}\n{}",
                    self.mon.acting(),
                    self.mon.up_set(),
                    self.mon.pg_temp,
                    self.mon.last_active,
                    self.mon.epoch,
                    states.join("\n")
                ));
            }
        }
        self.fail("the simulation ran out of events");
    }
}

/// Runs `seeds` seeds of `shape` (`SIM_SEEDS` overrides), or replays `SIM_SEED` with a trace.
fn run_seeds(shape: Shape, seeds: u64) {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        let (ops, acked, activations, stats) = Sim::new(shape, seed, true).run_to_end();
        eprintln!(
            "{shape:?} seed {seed}: {ops} operations, {acked} acknowledged, {activations} \
             activations; {stats:?}"
        );
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(seeds);
    let (mut ops, mut acked, mut activations) = (0, 0, 0);
    let mut paths: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in 0..seeds {
        let (o, a, v, stats) = Sim::new(shape, seed, false).run_to_end();
        ops += o;
        acked += a;
        activations += v;
        for (path, n) in stats {
            *paths.entry(path).or_default() += n;
        }
    }
    eprintln!(
        "{shape:?}, {seeds} seeds: {ops} operations, {acked} acknowledged, {activations} \
         activations; {paths:?}"
    );
    assert!(
        acked > seeds,
        "the clients got almost nothing done: {acked} acknowledged"
    );
}

/// Thousands of seeds of crashes, pauses and cut-off OSDs under concurrent writers: nothing
/// acknowledged is lost, one primary per interval, and the PG heals.
#[test]
fn a_pg_loses_no_acknowledged_write_under_faults() {
    run_seeds(REPLICATED, 2_000);
}

/// The same faults on erasure PGs, where a change that reached fewer than `k` shards when its
/// primary failed is undone by peering: nothing acknowledged is lost, every object state that
/// recovery rebuilds has `k` shards, and the shards of an active PG agree.
#[test]
fn an_erasure_pg_loses_no_acknowledged_write_and_never_mixes_versions() {
    run_seeds(ERASURE_2_1, 1_000);
    run_seeds(ERASURE_2_2, 1_000);
}
