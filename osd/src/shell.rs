//! The shell around each PG's [`PgMachine`]: it hands the machine its inputs (maps, peers'
//! requests and answers, completed disk writes, client writes, timers) and carries out what
//! the machine decides — sending requests, answering them, writing records to the store with
//! their objects, copying objects for recovery, asking the monitors — without deciding
//! anything itself (docs/osd.md, "The PG machine").

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tidepool_placement::{Epoch, OsdId, PgActivation, PgId};
use tidepool_proto::osd::{ObjectState, OsdRequest, OsdResponse, PgInfo};
use tokio::sync::oneshot;
use tracing::warn;

use crate::daemon::{list_all, Osd, PeerRequest, RECOVERY_TIMEOUT};
use crate::machine::{
    Answer, Durable, Input, Interval, Objects, Origin, Output, PgMachine, Record, Request, Token,
    WriteError,
};
use crate::peering::Catchup;
use crate::pg::{self, Planned, VERSION_XATTR};
use crate::store::{Op, StoreError, Transaction};

/// Objects read or pushed per recovery message.
pub(crate) const RECOVERY_BATCH: usize = 16;

/// One PG on this OSD.
#[derive(Default)]
pub(crate) struct PgSlot {
    /// Client operations, one at a time: planning reads what the write before it made.
    pub ops: tokio::sync::Mutex<()>,
    /// The machine, loaded on first use; held only while it takes an input and its outputs
    /// are handed out (records are submitted to the store in order), never while the network
    /// or a commit is awaited.
    pub machine: tokio::sync::Mutex<Option<PgMachine>>,
    /// Scrubs of the PG, one at a time.
    pub scrub: tokio::sync::Mutex<()>,
    /// What goes with inputs and outputs in flight.
    stash: Mutex<Stash>,
}

#[derive(Default)]
struct Stash {
    /// Peer requests waiting for the machine's answer: where to send it, and a query's epoch
    /// (its answer carries the leases granted before it).
    replies: HashMap<Token, (oneshot::Sender<Answer>, Option<Epoch>)>,
    /// The data of peer requests: a change's transaction, or a push's objects.
    requests: HashMap<Token, RequestData>,
    /// Client writes: their planned operations, and where their outcome goes.
    writes: HashMap<Token, ClientWrite>,
    /// The transactions of this primary's changes in flight, by version, for the replicas.
    changes: HashMap<u64, Transaction>,
    /// Erasure pools: each holder's own transaction of a change in flight, by version.
    shard_changes: HashMap<(u64, OsdId), Transaction>,
}

impl Stash {
    fn clear_changes(&mut self) {
        self.changes.clear();
        self.shard_changes.clear();
    }
}

enum RequestData {
    Change(Transaction),
    Push(Vec<(String, Option<ObjectState>)>),
}

/// A client write handed to the machine.
struct ClientWrite {
    name: String,
    planned: Planned,
    done: oneshot::Sender<Result<u64, WriteError>>,
}

impl PgSlot {
    fn stash(&self) -> std::sync::MutexGuard<'_, Stash> {
        self.stash.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets everything in flight (the copy was removed): waiters get no answer.
    pub fn forget(&self) {
        *self.stash() = Stash::default();
    }
}

impl Osd {
    /// The slot of `pg`.
    pub(crate) fn slot(&self, pg: PgId) -> Arc<PgSlot> {
        self.pgs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(pg)
            .or_default()
            .clone()
    }

    /// The PGs with a slot here.
    pub(crate) fn slots(&self) -> Vec<PgId> {
        self.pgs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Milliseconds on this OSD's clock, for the machines.
    fn now_ms(&self) -> u64 {
        self.io.clock.elapsed().as_millis() as u64
    }

    /// What the current map says about `pg` to its machine here.
    pub(crate) fn interval(&self, pg: PgId) -> Option<Interval> {
        let view = self.view();
        let holders = view.holders(pg)?;
        let map = &view.map;
        Some(Interval {
            epoch: map.epoch,
            booted: self.fences.booted(),
            up: holders.up,
            acting: holders.acting,
            temp: holders.temp,
            size: holders.size,
            min_size: holders.min_size,
            k: holders.k,
            last_active: map.pg_active.get(&pg).cloned(),
            up_osds: map.osds.values().filter(|o| o.up).map(|o| o.id).collect(),
            exists: map.osds.keys().copied().collect(),
        })
    }

    /// Runs `f` on the machine of `pg` (loading it) without handing it an input.
    pub(crate) async fn with_machine<R>(
        self: &Arc<Self>,
        pg: PgId,
        f: impl FnOnce(&PgMachine) -> R,
    ) -> Result<R, StoreError> {
        self.with_machine_in(pg, &self.slot(pg), f).await
    }

    /// [`Osd::with_machine`] with the PG's slot at hand.
    pub(crate) async fn with_machine_in<R>(
        self: &Arc<Self>,
        pg: PgId,
        slot: &Arc<PgSlot>,
        f: impl FnOnce(&PgMachine) -> R,
    ) -> Result<R, StoreError> {
        let mut guard = slot.machine.lock().await;
        let outputs = self.load(pg, &mut guard)?;
        let machine = guard.as_ref().expect("just loaded");
        let result = f(machine);
        for wait in self.carry_out(pg, slot, machine, outputs).await {
            tokio::spawn(wait);
        }
        Ok(result)
    }

    /// Whether this OSD serves `pg` as its primary now.
    pub(crate) async fn serves(self: &Arc<Self>, pg: PgId) -> bool {
        self.with_machine(pg, PgMachine::serves)
            .await
            .unwrap_or(false)
    }

    /// Loads the machine of `pg` from the store the first time it is used, and gives it the
    /// current map; the outputs that makes.
    fn load(&self, pg: PgId, slot: &mut Option<PgMachine>) -> Result<Vec<Output>, StoreError> {
        let keep = self.log_entries.load(Ordering::Relaxed);
        if let Some(machine) = slot.as_mut() {
            machine.set_keep(keep);
            return Ok(Vec::new());
        }
        let loaded = tokio::task::block_in_place(|| pg::load(&*self.store, pg))?;
        let durable = match loaded {
            Some((info, mut log)) => {
                log.retain(|e| e.version > info.log_tail && e.version <= info.last_update);
                let kept = crate::ec::rollback_name(info.last_update);
                let undoable = self
                    .store
                    .stat(pg::collection(pg), &kept)
                    .is_ok()
                    .then_some(info.last_update);
                Durable {
                    present: true,
                    info,
                    log,
                    undoable,
                }
            }
            None => Durable::default(),
        };
        let mut machine = PgMachine::new(self.id, durable, keep);
        let outputs = match self.interval(pg) {
            Some(interval) => machine.handle(self.now_ms(), Input::Map(interval)),
            None => Vec::new(),
        };
        *slot = Some(machine);
        Ok(outputs)
    }

    /// Hands `input` to the machine of `pg` and carries out what it decides.
    pub(crate) fn step(self: &Arc<Self>, pg: PgId, input: Input) -> BoxFuture<'static, ()> {
        self.step_in(pg, self.slot(pg), input)
    }

    /// [`Osd::step`] with the PG's slot at hand; the network and disk waits it starts run as
    /// tasks of their own.
    fn step_in(
        self: &Arc<Self>,
        pg: PgId,
        slot: Arc<PgSlot>,
        input: Input,
    ) -> BoxFuture<'static, ()> {
        let osd = self.clone();
        Box::pin(async move {
            for wait in osd.step_waits(pg, &slot, input).await {
                tokio::spawn(wait);
            }
        })
    }

    /// Hands `input` to the machine and carries out what it decides; returns the network and
    /// disk waits it started (each feeds its outcome back), for the caller to drive or spawn.
    async fn step_waits(self: &Arc<Self>, pg: PgId, slot: &Arc<PgSlot>, input: Input) -> Vec<Wait> {
        let mut guard = slot.machine.lock().await;
        let mut outputs = match self.load(pg, &mut guard) {
            Ok(outputs) => outputs,
            Err(error) => {
                let _ = self.fail_stop::<()>(Err(error));
                return Vec::new();
            }
        };
        let machine = guard.as_mut().expect("just loaded");
        outputs.extend(machine.handle(self.now_ms(), input));
        self.carry_out(pg, slot, machine, outputs).await
    }

    /// Carries out the machine's outputs, in order, with the machine held: records reach the
    /// store in the order given. Returns the waits it started.
    async fn carry_out(
        self: &Arc<Self>,
        pg: PgId,
        slot: &Arc<PgSlot>,
        machine: &PgMachine,
        outputs: Vec<Output>,
    ) -> Vec<Wait> {
        let mut waits: Vec<Wait> = Vec::new();
        for output in outputs {
            match output {
                Output::Send { token, to, request } => {
                    let osd = self.clone();
                    let slot = slot.clone();
                    waits.push(Box::pin(async move {
                        let answer = osd.send_request(pg, &slot, to, request).await;
                        osd.step_in(pg, slot, Input::Answer { token, answer }).await;
                    }));
                }
                Output::Respond { token, answer } => {
                    let waiting = slot.stash().replies.remove(&token);
                    if let Some((reply, _)) = waiting {
                        let _ = reply.send(answer);
                    }
                }
                Output::Persist {
                    token,
                    origin,
                    record,
                } => {
                    let submitted = match self.record_tx(pg, slot, machine, origin, &record) {
                        Ok(tx) => self.submit(tx).await,
                        Err(error) => Err(error),
                    };
                    match submitted {
                        Ok(commit) => {
                            let osd = self.clone();
                            let slot = slot.clone();
                            waits.push(Box::pin(async move {
                                if osd.fail_stop(commit.await).is_ok() {
                                    osd.step_in(pg, slot, Input::Persisted { token }).await;
                                }
                            }));
                        }
                        Err(error) => {
                            // Fail-stop: the store refuses everything from now on, and so
                            // does this OSD.
                            let _ = self.fail_stop::<()>(Err(error));
                            return waits;
                        }
                    }
                }
                Output::Pull {
                    token,
                    from,
                    plan,
                    info,
                } => {
                    let osd = self.clone();
                    let present = machine.durable().present;
                    waits.push(Box::pin(async move {
                        let record = match osd.pull_from(pg, from, &plan, &info, present).await {
                            Ok(record) => Some(record),
                            Err(reason) => {
                                warn!(%pg, from = from.0, %reason, "recovering this copy failed");
                                None
                            }
                        };
                        osd.step(pg, Input::Pulled { token, record }).await;
                    }));
                }
                Output::Fenced(epoch) => self.fences.raise(epoch),
                Output::RecordActivation(activation) => self.to_record(pg, activation),
                Output::WantPgTemp(want) => self.want_pg_temp(pg, want),
                Output::Written { token, result } => {
                    let write = slot.stash().writes.remove(&token);
                    slot.stash().clear_changes();
                    if let Some(write) = write {
                        let _ = write.done.send(result);
                    }
                }
                Output::Timer(at) => {
                    let osd = self.clone();
                    let wait = Duration::from_millis(at.saturating_sub(self.now_ms()));
                    waits.push(Box::pin(async move {
                        tokio::time::sleep(wait).await;
                        osd.step(pg, Input::Tick).await;
                    }));
                }
            }
        }
        waits
    }

    /// The transaction that makes `record` durable, with the objects its input carried.
    fn record_tx(
        &self,
        pg: PgId,
        slot: &PgSlot,
        machine: &PgMachine,
        origin: Origin,
        record: &Record,
    ) -> Result<Transaction, StoreError> {
        let coll = pg::collection(pg);
        let before = machine.durable();
        let erasure = self.view().codec(pg.pool).is_some();
        let mut ops = Vec::new();
        let fresh = match record {
            Record::Copy { reset, .. } => *reset || !before.present,
            _ => !before.present,
        };
        if matches!(record, Record::Copy { reset: true, .. }) && before.present {
            ops.push(Op::RemoveCollection(coll));
        }
        if fresh {
            ops.push(Op::CreateCollection(coll));
        }
        let data = match origin {
            Origin::Request(token) => slot.stash().requests.remove(&token),
            _ => None,
        };
        match (record, origin, data) {
            // The primary's own change: the planned operations, the version, the log entry
            // and summary; its replicas get the same transaction.
            (Record::Change { entry, info }, Origin::Write(token), _) => {
                let Some((own, removed, name, others)) =
                    slot.stash().writes.get_mut(&token).map(|w| {
                        (
                            std::mem::take(&mut w.planned.ops),
                            w.planned.removed,
                            w.name.clone(),
                            std::mem::take(&mut w.planned.others),
                        )
                    })
                else {
                    return Ok(Transaction { ops });
                };
                let trim = (info.log_tail > before.info.log_tail)
                    .then(|| (before.info.log_tail + 1, info.log_tail));
                // The object's ops, its version, the log entry and the summary.
                let change = |mut ops: Vec<Op>| {
                    if !removed {
                        ops.push(Op::SetXattr {
                            coll,
                            name: name.clone(),
                            key: VERSION_XATTR.into(),
                            value: entry.version.to_le_bytes().to_vec(),
                        });
                    }
                    ops.extend(pg::record(coll, std::slice::from_ref(entry), info, trim));
                    let mut tx = Transaction { ops };
                    if tx.written_bytes() >= crate::store::BLOB_MIN_BYTES as u64 {
                        tokio::task::block_in_place(|| tx.add_checksums());
                    }
                    tx
                };
                let own = if erasure {
                    self.with_rollback(coll, entry, before.info.last_update, own)?
                } else {
                    own
                };
                ops.extend(change(own).ops);
                let tx = Transaction { ops };
                self.io.write_bytes.inc_by(tx.written_bytes());
                let mut stash = slot.stash();
                stash.clear_changes();
                if erasure {
                    // Each holder gets its own shard of the change.
                    for (osd, ops) in others {
                        stash
                            .shard_changes
                            .insert((entry.version, osd), change(ops));
                    }
                } else {
                    // The replicas' copy shares the data buffers (see `tidepool_proto::Payload`).
                    stash.changes.insert(entry.version, tx.clone());
                }
                Ok(tx)
            }
            // A primary's change: its transaction as sent, with this shard's rollback record
            // first in an erasure pool.
            (Record::Change { entry, .. }, _, Some(RequestData::Change(tx))) => {
                if erasure {
                    ops.extend(self.with_rollback(coll, entry, before.info.last_update, tx.ops)?);
                } else {
                    ops.extend(tx.ops);
                }
                Ok(Transaction { ops })
            }
            (Record::Copy { entries, info, .. }, _, data) => {
                let objects = match data {
                    Some(RequestData::Push(objects)) => objects,
                    _ => Vec::new(),
                };
                for (name, object) in &objects {
                    if fresh {
                        // Nothing of the old copy is left: write without looking at it.
                        if let Some(object) = object {
                            ops.extend(pg::create_state(coll, name, object));
                        }
                    } else {
                        ops.extend(pg::write_state(&*self.store, coll, name, object.as_ref()));
                    }
                }
                if let Some(info) = info {
                    ops.extend(pg::record(coll, entries, info, None));
                }
                Ok(Transaction { ops })
            }
            (Record::Info(info), _, _) => {
                ops.extend(pg::record(coll, &[], info, None));
                Ok(Transaction { ops })
            }
            (Record::Undo { entry, info }, _, _) => {
                ops.extend(self.undo_ops(coll, entry)?);
                let dropped = Some((entry.version, entry.version));
                ops.extend(pg::record(coll, &[], info, dropped));
                Ok(Transaction { ops })
            }
            (Record::Change { .. }, _, _) => Ok(Transaction { ops }),
        }
    }

    /// An erasure pool's change `ops` on this shard, with the record that undoes it first
    /// (and the record of the change before it dropped).
    fn with_rollback(
        &self,
        coll: crate::store::CollectionId,
        entry: &tidepool_proto::osd::LogEntry,
        previous: u64,
        ops: Vec<Op>,
    ) -> Result<Vec<Op>, StoreError> {
        tokio::task::block_in_place(|| {
            crate::ec::with_rollback(
                &*self.store,
                coll,
                &entry.name,
                entry.version,
                Some(previous),
                ops,
            )
        })
    }

    /// The ops that undo `entry` on this shard, from its rollback record (the machine undoes
    /// only a change this copy kept the record of).
    fn undo_ops(
        &self,
        coll: crate::store::CollectionId,
        entry: &tidepool_proto::osd::LogEntry,
    ) -> Result<Vec<Op>, StoreError> {
        let kept = tokio::task::block_in_place(|| {
            crate::ec::rollback_ops(&*self.store, coll, entry.version)
        })?;
        kept.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{coll}: the record that undoes version {} of {:?} is gone",
                entry.version, entry.name
            ))
        })
    }

    /// Submits `tx` to the store, in order with what this PG submitted before: a small one
    /// right here (its reads come from RocksDB's caches), a heavy one on a blocking thread.
    pub(crate) async fn submit(&self, tx: Transaction) -> Result<crate::store::Commit, StoreError> {
        if tx.is_heavy() {
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.submit(&tx)).await {
                Ok(commit) => commit,
                Err(error) => Err(StoreError::Failed(format!("local write task: {error}"))),
            }
        } else {
            self.store.submit(&tx)
        }
    }

    // ---- peers' requests ----

    /// Hands a peer's request about `pg` to its machine and waits for the answer.
    pub(crate) async fn ask(self: &Arc<Self>, pg: PgId, request: PeerRequest) -> OsdResponse {
        let (request, data, query) = match request {
            OsdRequest::PgQuery { epoch, .. } => (Request::Query { epoch }, None, Some(epoch)),
            OsdRequest::PgLog { after, .. } => (Request::Log { after }, None, None),
            OsdRequest::PgUndo { epoch, entry, .. } => (Request::Undo { epoch, entry }, None, None),
            OsdRequest::Replicate {
                epoch,
                pg: _,
                entry,
                transaction,
            } => {
                let coll = pg::collection(pg);
                if transaction.ops.iter().any(|op| op.collection() != coll) {
                    return OsdResponse::Failed("transaction outside its PG".into());
                }
                let Some(info) = pg::recorded_info(&transaction) else {
                    return OsdResponse::Failed("a change without its PG summary".into());
                };
                (
                    Request::Change { epoch, entry, info },
                    Some(RequestData::Change(transaction)),
                    None,
                )
            }
            OsdRequest::PgPush {
                epoch,
                reset,
                objects,
                entries,
                info,
                ..
            } => {
                if let Some((name, _)) = objects.iter().find(|(n, _)| pg::check_name(n).is_err()) {
                    return OsdResponse::Failed(format!("bad object name {name:?}"));
                }
                let names = objects.iter().map(|(n, _)| n.clone()).collect();
                (
                    Request::Push {
                        epoch,
                        reset,
                        objects: Objects::Named(names),
                        entries,
                        info,
                    },
                    Some(RequestData::Push(objects)),
                    None,
                )
            }
            _ => return OsdResponse::Failed("not a PG request".into()),
        };
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let slot = self.slot(pg);
        {
            let mut stash = slot.stash();
            stash.replies.insert(token, (reply, query));
            if let Some(data) = data {
                stash.requests.insert(token, data);
            }
        }
        let waits = self
            .step_waits(pg, &slot, Input::Request { token, request })
            .await;
        match until(answer, waits).await {
            Ok(Answer::Info { copy, .. }) => OsdResponse::PgInfo {
                copy,
                leases: query.map_or_else(Vec::new, |epoch| self.fences.granted_before(epoch)),
            },
            Ok(Answer::Log(log)) => OsdResponse::PgLog(log),
            Ok(Answer::Ack) => OsdResponse::Ack,
            Ok(Answer::Stale(have)) => OsdResponse::StaleEpoch { have },
            Ok(Answer::Behind) => OsdResponse::Behind,
            Ok(Answer::Failed(reason)) => OsdResponse::Failed(reason),
            Err(_) => OsdResponse::Failed(format!("{pg}: the copy here was removed")),
        }
    }

    /// Hands a client's planned write to the machine and waits for its outcome.
    pub(crate) async fn write(
        self: &Arc<Self>,
        pg: PgId,
        slot: &Arc<PgSlot>,
        name: String,
        planned: Planned,
        reqid: (String, u64),
    ) -> Result<u64, WriteError> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (done, outcome) = oneshot::channel();
        let delete = planned.removed;
        slot.stash().writes.insert(
            token,
            ClientWrite {
                name: name.clone(),
                planned,
                done,
            },
        );
        let waits = self
            .step_waits(
                pg,
                slot,
                Input::Write {
                    token,
                    name,
                    delete,
                    reqid: Some(reqid),
                },
            )
            .await;
        until(outcome, waits)
            .await
            .unwrap_or_else(|_| Err(WriteError::NotActive(format!("{pg}: the copy was removed"))))
    }

    // ---- requests to peers ----

    /// Sends a machine's request to `to`; its answer (`None` for none).
    async fn send_request(
        self: &Arc<Self>,
        pg: PgId,
        slot: &PgSlot,
        to: OsdId,
        request: Request,
    ) -> Option<Answer> {
        let peer = match request {
            Request::Query { epoch } => {
                let sent = Instant::now();
                let answer = self.call(to, &OsdRequest::PgQuery { pg, epoch }).await;
                if let Some(OsdResponse::PgInfo { copy, leases }) = answer {
                    // An answer to a question under this epoch is a read lease too.
                    self.fences.hold(to, sent);
                    return Some(Answer::Info { copy, leases });
                }
                return answer.and_then(answer_of);
            }
            Request::Log { after } => OsdRequest::PgLog { pg, after },
            Request::Undo { epoch, entry } => OsdRequest::PgUndo { epoch, pg, entry },
            Request::Change { epoch, entry, .. } => {
                let transaction = {
                    let stash = slot.stash();
                    stash
                        .shard_changes
                        .get(&(entry.version, to))
                        .or_else(|| stash.changes.get(&entry.version))
                        .cloned()?
                };
                OsdRequest::Replicate {
                    epoch,
                    pg,
                    entry,
                    transaction,
                }
            }
            Request::Push {
                epoch,
                reset,
                objects,
                entries,
                info,
            } => {
                return self
                    .send_push(pg, to, epoch, reset, objects, entries, info)
                    .await
            }
        };
        self.call(to, &peer).await.and_then(answer_of)
    }

    /// Sends a push: its objects in batches (the first replaces the copy when `reset`), then
    /// the entries and summary. Objects are read from this copy now.
    #[allow(clippy::too_many_arguments)]
    async fn send_push(
        &self,
        pg: PgId,
        to: OsdId,
        epoch: Epoch,
        reset: bool,
        objects: Objects,
        entries: Vec<tidepool_proto::osd::LogEntry>,
        info: Option<PgInfo>,
    ) -> Option<Answer> {
        let coll = pg::collection(pg);
        let names = match objects {
            Objects::Named(names) => names,
            Objects::All => {
                tracing::info!(%pg, to = to.0, "copying the whole PG");
                tokio::task::block_in_place(|| list_all(&*self.store, coll)).ok()?
            }
        };
        if !names.is_empty() && !reset {
            tracing::info!(%pg, to = to.0, objects = names.len(), "recovering from the log");
        }
        let mut first = true;
        for batch in names.chunks(RECOVERY_BATCH) {
            let objects = match self.objects_for(pg, to, batch).await {
                Ok(objects) => objects,
                Err(reason) => {
                    warn!(%pg, to = to.0, %reason, "reading objects to push failed");
                    return None;
                }
            };
            let answer = self
                .push(to, pg, epoch, reset && first, objects, Vec::new(), None)
                .await;
            if answer != Some(Answer::Ack) {
                return answer;
            }
            first = false;
        }
        self.push(to, pg, epoch, reset && first, Vec::new(), entries, info)
            .await
    }

    /// Whole objects of this OSD's copy of `pg`.
    pub(crate) fn read_objects(
        &self,
        pg: PgId,
        names: &[String],
    ) -> Result<Vec<(String, Option<ObjectState>)>, String> {
        let coll = pg::collection(pg);
        tokio::task::block_in_place(|| {
            names
                .iter()
                .map(|name| Ok((name.clone(), pg::read_state(&*self.store, coll, name)?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .map_err(|e| e.to_string())
    }

    /// One recovery push, under the recovery throttles.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn push(
        &self,
        target: OsdId,
        pg: PgId,
        epoch: Epoch,
        reset: bool,
        objects: Vec<(String, Option<ObjectState>)>,
        entries: Vec<tidepool_proto::osd::LogEntry>,
        info: Option<PgInfo>,
    ) -> Option<Answer> {
        let count = objects.len() as u64;
        let bytes: u64 = objects
            .iter()
            .filter_map(|(_, o)| o.as_ref())
            .map(|o| o.data.len() as u64)
            .sum();
        let _slot = self
            .throttled(
                "recovery_out",
                &self.recovery_out,
                "osd_recovery_max_active",
            )
            .await;
        let start = std::time::Instant::now();
        self.recovery_rate
            .take(bytes, self.option("osd_recovery_max_bytes_per_sec"))
            .await;
        self.io.waited("recovery_bytes", start);
        let request = OsdRequest::PgPush {
            epoch,
            pg,
            reset,
            objects,
            entries,
            info,
        };
        let answer = self
            .call_while_up(target, &request, RECOVERY_TIMEOUT)
            .await
            .and_then(answer_of);
        if answer == Some(Answer::Ack) {
            self.io.recovered(count, bytes);
        }
        answer
    }

    /// Makes this OSD's copy `source`'s (whose summary is `info`), by `plan`, persisting as
    /// it goes; the record that describes the copy after it.
    async fn pull_from(
        &self,
        pg: PgId,
        source: OsdId,
        plan: &Catchup,
        info: &PgInfo,
        present: bool,
    ) -> Result<Record, String> {
        let coll = pg::collection(pg);
        tracing::info!(%pg, from = source.0, "recovering this primary's copy");
        let (names, entries, reset) = match plan {
            Catchup::UpToDate => (Vec::new(), Vec::new(), false),
            Catchup::Log(entries) => (crate::machine::names_of(entries), entries.clone(), false),
            Catchup::Backfill => {
                let names = self.list_remote(pg, source).await?;
                let Some(OsdResponse::PgLog(Some(entries))) = self
                    .call(
                        source,
                        &OsdRequest::PgLog {
                            pg,
                            after: info.log_tail,
                        },
                    )
                    .await
                else {
                    return Err(format!("osd.{} did not send its log", source.0));
                };
                let mut ops = Vec::new();
                if present {
                    ops.push(Op::RemoveCollection(coll));
                }
                ops.push(Op::CreateCollection(coll));
                self.apply(Transaction { ops })
                    .await
                    .map_err(|e| e.to_string())?;
                (names, entries, true)
            }
        };
        if !present && !reset {
            self.apply(Transaction {
                ops: vec![Op::CreateCollection(coll)],
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        let erasure = self.view().codec(pg.pool).is_some();
        for batch in names.chunks(RECOVERY_BATCH) {
            let objects = if erasure {
                // This shard rebuilt from k others, not copied from the source.
                self.own_shards_from(pg, source, batch).await?
            } else {
                let Some(OsdResponse::PgObjects(objects)) = self
                    .call_while_up(
                        source,
                        &OsdRequest::PgRead {
                            pg,
                            names: batch.to_vec(),
                        },
                        RECOVERY_TIMEOUT,
                    )
                    .await
                else {
                    return Err(format!("osd.{} did not send objects", source.0));
                };
                objects
            };
            let mut ops = Vec::new();
            for (name, object) in &objects {
                ops.extend(pg::write_state(&*self.store, coll, name, object.as_ref()));
            }
            self.apply(Transaction { ops })
                .await
                .map_err(|e| e.to_string())?;
        }
        self.apply(Transaction {
            ops: pg::record(coll, &entries, info, None),
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(Record::Copy {
            reset,
            entries,
            info: Some(info.clone()),
        })
    }

    async fn list_remote(&self, pg: PgId, osd: OsdId) -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        let mut start_after = None;
        loop {
            let Some(OsdResponse::PgList { names: page, done }) = self
                .call(
                    osd,
                    &OsdRequest::PgList {
                        pg,
                        start_after: start_after.clone(),
                    },
                )
                .await
            else {
                return Err(format!("osd.{} did not list its objects", osd.0));
            };
            start_after = page.last().cloned();
            names.extend(page);
            if done {
                return Ok(names);
            }
        }
    }

    // ---- the monitors ----

    fn to_record(&self, pg: PgId, activation: PgActivation) {
        self.activations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((pg, activation));
        self.monitor_work.notify_one();
    }

    fn want_pg_temp(&self, pg: PgId, want: Vec<OsdId>) {
        self.remaps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((pg, want));
        self.monitor_work.notify_one();
    }
}

/// A network or disk wait a step started, which hands its outcome to the machine.
type Wait = BoxFuture<'static, ()>;

/// Drives `waits` in this task until `outcome` arrives (the common case: a client write or a
/// peer's change needs nothing but its own waits), then leaves the rest to tasks of their own.
async fn until<T>(
    outcome: oneshot::Receiver<T>,
    waits: Vec<Wait>,
) -> Result<T, oneshot::error::RecvError> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut waits: FuturesUnordered<Wait> = waits.into_iter().collect();
    let mut outcome = std::pin::pin!(outcome);
    loop {
        tokio::select! {
            result = &mut outcome => {
                for wait in waits {
                    tokio::spawn(wait);
                }
                return result;
            }
            Some(()) = waits.next(), if !waits.is_empty() => {}
        }
    }
}

/// A peer's answer as the machine reads it.
fn answer_of(response: OsdResponse) -> Option<Answer> {
    Some(match response {
        OsdResponse::PgInfo { copy, leases } => Answer::Info { copy, leases },
        OsdResponse::PgLog(log) => Answer::Log(log),
        OsdResponse::Ack => Answer::Ack,
        OsdResponse::StaleEpoch { have } => Answer::Stale(have),
        OsdResponse::Behind => Answer::Behind,
        OsdResponse::Failed(reason) => Answer::Failed(reason),
        _ => return None,
    })
}

/// Records what the monitors are asked for by the machines: activations (one command for
/// all that are ready) and `pg_temp`s. A refused activation is handed back to its machine.
pub(crate) async fn monitor_commands(osd: Arc<Osd>) {
    loop {
        osd.monitor_work.notified().await;
        // PGs that peer at once are recorded in one command (one new map, not one each).
        tokio::time::sleep(Duration::from_millis(20)).await;
        let activations: Vec<(PgId, PgActivation)> =
            std::mem::take(&mut *osd.activations.lock().unwrap_or_else(|p| p.into_inner()));
        if !activations.is_empty() {
            let command = tidepool_proto::mon::Command::PgActive(activations.clone());
            match osd.mon_command(command).await {
                Ok(epoch) => {
                    tracing::info!(
                        pgs = activations.len(),
                        epoch = epoch.0,
                        "activations recorded"
                    );
                }
                Err(reason) => {
                    warn!(%reason, "recording activations failed; will peer again");
                    for (pg, _) in activations {
                        osd.step(pg, Input::RecordFailed).await;
                    }
                }
            }
        }
        let remaps: Vec<(PgId, Vec<OsdId>)> =
            std::mem::take(&mut *osd.remaps.lock().unwrap_or_else(|p| p.into_inner()));
        if !remaps.is_empty() {
            osd.ask_pg_temp(remaps).await;
        }
    }
}

/// Hands every new map to the machines of the PGs placed here or held here.
pub(crate) async fn follow_pgs(osd: Arc<Osd>) {
    let mut maps = osd.maps.clone();
    loop {
        let view = osd.view();
        let mut pgs: Vec<PgId> = view
            .pgs()
            .filter(|pg| {
                view.holders(*pg)
                    .is_some_and(|h| h.up.contains(&osd.id) || h.acting.contains(&osd.id))
            })
            .collect();
        pgs.extend(osd.slots());
        pgs.sort_unstable();
        pgs.dedup();
        for pg in pgs {
            if let Some(interval) = osd.interval(pg) {
                osd.step(pg, Input::Map(interval)).await;
            }
        }
        if maps.changed().await.is_err() {
            return;
        }
    }
}
