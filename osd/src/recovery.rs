//! Backfill and stray copies: how a PG's primary fills new holders in the background while it
//! serves through `pg_temp`, gives the PG back to its placement, and how stray copies go once
//! the PG is clean (docs/osd.md, "Backfill"). Peering and recovery from the log are the PG
//! machine's ([`crate::machine`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tidepool_placement::{Epoch, OsdId, PgId};
use tidepool_proto::mon::Command;
use tidepool_proto::osd::{LogEntry, ObjectState, OsdRequest, OsdResponse, PgInfo};
use tracing::{info, warn};

use crate::daemon::{Holders, Osd};
use crate::ec::is_internal;
use crate::machine::{names_of, Answer};
use crate::pg;
use crate::shell::RECOVERY_BATCH;
use crate::store::{Op, Transaction};

/// A background backfill's progress, for the PG's statistics.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// Waiting for a backfill slot.
    pub waiting: bool,
    /// Objects copied so far to the holder being filled.
    pub copied: u64,
}

impl Osd {
    /// As primary: whether `from`'s copy of `pg` is a stray that may go, i.e. the PG is
    /// active and clean under a map at least as new as the asker's, and not placed on `from`.
    pub(crate) async fn handle_stray_check(
        self: &Arc<Self>,
        pg: PgId,
        from: OsdId,
        epoch: tidepool_placement::Epoch,
    ) -> OsdResponse {
        let view = self.view_at(epoch).await;
        let Some(holders) = view.holders(pg) else {
            return OsdResponse::Failed(format!("no PG {pg}"));
        };
        let clean = holders.primary == Some(self.id)
            && !holders.temp
            && holders.acting.len() >= holders.size
            && !holders.up.contains(&from)
            && self.serves(pg).await;
        if clean {
            OsdResponse::Ack
        } else {
            OsdResponse::Failed(format!("{pg} is not clean without osd.{}", from.0))
        }
    }

    /// Removes the copies this OSD holds of PGs placed elsewhere, each once the PG's primary
    /// says the PG is clean without it.
    pub(crate) async fn remove_strays(self: &Arc<Self>) {
        let Ok(collections) = self.store.collections() else {
            return;
        };
        let view = self.view();
        for coll in collections {
            let pg = PgId {
                pool: tidepool_placement::PoolId(coll.pool),
                seed: coll.seed,
            };
            // The copy of a removed pool goes at once; others once the primary agrees.
            if let Some(holders) = view.holders(pg) {
                if holders.up.contains(&self.id) || holders.acting.contains(&self.id) {
                    continue;
                }
                let Some(primary) = holders.primary else {
                    continue;
                };
                let check = OsdRequest::StrayCheck {
                    pg,
                    from: self.id,
                    epoch: view.map.epoch,
                };
                if !matches!(self.call(primary, &check).await, Some(OsdResponse::Ack)) {
                    continue;
                }
            } else if view.map.pools.contains_key(&pg.pool) {
                continue;
            }
            let slot = self.slot(pg);
            let _ops = slot.ops.lock().await;
            let mut machine = slot.machine.lock().await;
            // Placed here again meanwhile: keep it.
            if self
                .view()
                .holders(pg)
                .is_some_and(|h| h.up.contains(&self.id) || h.acting.contains(&self.id))
            {
                continue;
            }
            info!(%pg, "removing a stray copy");
            if self
                .apply(Transaction {
                    ops: vec![Op::RemoveCollection(coll)],
                })
                .await
                .is_err()
            {
                return;
            }
            *machine = None;
            slot.forget();
        }
    }

    /// Fills the PG's new holders (placement members outside `pg_temp`) while the `pg_temp`
    /// holders serve it, one after another, each under a backfill slot; then gives the PG
    /// back to its placement. Ends when this OSD no longer serves the PG through `pg_temp`.
    pub(crate) async fn backfill(self: Arc<Self>, pg: PgId) {
        let mut done: BTreeSet<OsdId> = BTreeSet::new();
        loop {
            let view = self.view();
            let Some(holders) = view.holders(pg) else {
                break;
            };
            if holders.primary != Some(self.id) || !holders.temp {
                break;
            }
            let targets: Vec<OsdId> = holders
                .up
                .iter()
                .filter(|o| !holders.acting.contains(o) && !done.contains(o))
                .copied()
                .collect();
            if targets.is_empty() {
                info!(%pg, "backfill complete; giving the PG back to its placement");
                let clear = Command::PgTemp(vec![(pg, Vec::new())]);
                if let Err(reason) = self.mon_command(clear).await {
                    warn!(%pg, %reason, "clearing pg_temp failed; will retry");
                }
                let mut maps = self.maps.clone();
                let _ = tokio::time::timeout(Duration::from_secs(5), maps.changed()).await;
                continue;
            }
            for target in targets {
                self.set_progress(pg, |p| {
                    p.waiting = true;
                    p.copied = 0;
                });
                let _slot = self
                    .throttled("backfill", &self.backfills, "osd_max_backfills")
                    .await;
                self.set_progress(pg, |p| p.waiting = false);
                match self.backfill_one(pg, &holders, target).await {
                    Ok(()) => {
                        info!(%pg, to = target.0, "backfilled");
                        done.insert(target);
                    }
                    Err(reason) => {
                        warn!(%pg, to = target.0, %reason, "backfill stopped; will retry");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
        }
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pg);
    }

    fn set_progress(&self, pg: PgId, change: impl FnOnce(&mut Progress)) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        change(progress.entry(pg).or_default());
    }

    /// Copies this copy of `pg` to `target` in name order, a batch at a time (client
    /// operations go on between batches), then the changes made meanwhile, the log and the
    /// summary under the PG's lock, so the target ends as a copy of one point in history that
    /// the log reaches from now on.
    async fn backfill_one(
        self: &Arc<Self>,
        pg: PgId,
        holders: &Holders,
        target: OsdId,
    ) -> Result<(), String> {
        let coll = pg::collection(pg);
        let slot = self.slot(pg);
        // Checked with the client operations held: no write is in flight.
        let still = || async {
            let current = self.view().holders(pg);
            let same = current.as_ref().is_some_and(|h| {
                h.acting == holders.acting && h.up.contains(&target) && h.primary == Some(self.id)
            });
            if same && self.serves(pg).await {
                Ok(())
            } else {
                Err(String::from("the PG's holders changed"))
            }
        };
        let copy = || async {
            self.with_machine(pg, |m| m.durable().clone())
                .await
                .map_err(|e| e.to_string())
        };
        let start = {
            let _ops = slot.ops.lock().await;
            still().await?;
            copy().await?.info.last_update
        };
        info!(%pg, to = target.0, "backfilling");
        self.backfill_push(target, pg, true, Vec::new(), Vec::new(), None)
            .await?;
        let mut after: Option<String> = None;
        loop {
            let batch_started = std::time::Instant::now();
            let objects = {
                let _ops = slot.ops.lock().await;
                still().await?;
                let page = tokio::task::block_in_place(|| {
                    self.store.list(coll, after.as_deref(), RECOVERY_BATCH)
                })
                .map_err(|e| e.to_string())?;
                let Some(last) = page.last() else { break };
                after = Some(last.clone());
                let names: Vec<String> = page.into_iter().filter(|n| !is_internal(n)).collect();
                self.objects_for(pg, target, &names).await?
            };
            let count = objects.len() as u64;
            self.backfill_push(target, pg, false, objects, Vec::new(), None)
                .await?;
            self.set_progress(pg, |p| p.copied += count);
            // Clients first: while they use this OSD, a backfill works at most half the time.
            if self.io.clients_active() {
                tokio::time::sleep(batch_started.elapsed()).await;
            }
        }
        let _ops = slot.ops.lock().await;
        still().await?;
        let copy = copy().await?;
        if copy.info.log_tail > start {
            return Err("the log moved past the backfill's start; starting again".into());
        }
        let changed: Vec<LogEntry> = copy
            .log
            .iter()
            .filter(|e| e.version > start)
            .cloned()
            .collect();
        let objects = self.objects_for(pg, target, &names_of(&changed)).await?;
        self.backfill_push(target, pg, false, objects, copy.log, Some(copy.info))
            .await
    }

    /// One push of a backfill, under the current map.
    async fn backfill_push(
        &self,
        target: OsdId,
        pg: PgId,
        reset: bool,
        objects: Vec<(String, Option<ObjectState>)>,
        entries: Vec<LogEntry>,
        info: Option<PgInfo>,
    ) -> Result<(), String> {
        let epoch = self.view().map.epoch;
        match self
            .push(target, pg, epoch, reset, objects, entries, info)
            .await
        {
            Some(Answer::Ack) => Ok(()),
            Some(Answer::Failed(reason)) => Err(reason),
            Some(Answer::Stale(have)) => Err(format!(
                "osd.{} is fenced at epoch {}: a newer primary peered",
                target.0, have.0
            )),
            _ => Err(format!("osd.{} did not take the backfill push", target.0)),
        }
    }

    /// Asks the monitors for the `pg_temp`s in `wanted` (one command, one new epoch), except
    /// those already asked for under the current map.
    pub(crate) async fn ask_pg_temp(&self, wanted: Vec<(PgId, Vec<OsdId>)>) {
        let epoch = self.view().map.epoch;
        let fresh: Vec<(PgId, Vec<OsdId>)> = {
            let mut asked = self.remaps_asked.lock().unwrap_or_else(|p| p.into_inner());
            wanted
                .into_iter()
                .filter(|(pg, want)| {
                    let again = asked.get(pg) == Some(&(epoch, want.clone()));
                    if !again {
                        asked.insert(*pg, (epoch, want.clone()));
                    }
                    !again
                })
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        info!(
            pgs = fresh.len(),
            "asking for pg_temp while new holders backfill"
        );
        if let Err(reason) = self.mon_command(Command::PgTemp(fresh.clone())).await {
            warn!(%reason, "asking for pg_temp failed; will ask again");
            let mut asked = self.remaps_asked.lock().unwrap_or_else(|p| p.into_inner());
            for (pg, _) in fresh {
                asked.remove(&pg);
            }
        }
    }

    /// Sends a command to the monitors; the epoch of the map it made, or why it failed (a
    /// refusal included).
    pub(crate) async fn mon_command(&self, command: Command) -> Result<Epoch, String> {
        let mut mon = self.mon.lock().await;
        match mon.command(command).await {
            Ok(Ok(outcome)) => Ok(outcome.epoch),
            Ok(Err(refused)) => Err(refused.to_string()),
            Err(error) => Err(error.to_string()),
        }
    }
}
