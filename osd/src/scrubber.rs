//! Scrub on the OSD: a holder's scrub map of a PG; the primary's scrub and repair of a PG on an
//! operator's request (every holder's map gathered while the PG's writes wait, compared, and
//! each bad copy rewritten from a good one); and a read whose copy here fails its checksums,
//! served and repaired from another holder's. See docs/scrub.md.

use std::sync::Arc;
use std::time::Duration;

use tidepool_placement::{Epoch, OsdId, PgId};
use tidepool_proto::osd::{ObjectOp, ObjectState, OpError, OsdRequest, OsdResponse};

use crate::daemon::{storage_failed, MapView, Osd};
use crate::machine::Answer;
use crate::pg::{self, Planned, VERSION_XATTR};
use crate::scrub::{self, Repair, ScrubMap, ScrubReport};
use crate::store::{StoreError, Transaction};

/// How long a holder may take to answer with its scrub map (a deep one reads every byte).
const SCRUB_MAP_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a holder may take to send a good copy of an object whose read failed here.
const GOOD_COPY_TIMEOUT: Duration = Duration::from_secs(30);

impl Osd {
    /// A holder's answer to [`OsdRequest::ScrubMap`]: its scrub map of `pg`.
    pub(crate) fn scrub_map(&self, pg: PgId, deep: bool) -> OsdResponse {
        let coll = pg::collection(pg);
        match tokio::task::block_in_place(|| scrub::map_of(&*self.store, coll, deep)) {
            Ok(map) => OsdResponse::ScrubMap(map),
            Err(StoreError::NoCollection(_)) => OsdResponse::ScrubMap(ScrubMap::new()),
            Err(error) => storage_failed(error),
        }
    }

    /// The primary's scrub of `pg`, then its repairs when `repair`: refused unless this OSD
    /// leads the PG and it is active and clean (a holder that is behind is recovery's work).
    /// The PG's writes wait while the holders' maps are read and the repairs are made, so
    /// every map is of the same PG version and every repair writes that version.
    pub(crate) async fn scrub_pg(
        self: &Arc<Self>,
        pg: PgId,
        deep: bool,
        repair: bool,
    ) -> OsdResponse {
        let view = self.view();
        let Some(holders) = view.holders(pg) else {
            return OsdResponse::Failed(format!("{pg}: no such PG"));
        };
        if holders.primary != Some(self.id) {
            return OsdResponse::NotPrimary;
        }
        let slot = self.slot(pg);
        let _ops = slot.ops.lock().await;
        let clean = holders.acting.len() == holders.size && !holders.temp;
        let serving = self
            .with_machine_in(pg, &slot, |m| {
                let status = m.status();
                status.active && status.recovering == 0
            })
            .await;
        match serving {
            Err(error) => return storage_failed(error),
            Ok(false) => return OsdResponse::Failed(format!("{pg} is not active; scrub later")),
            Ok(true) if !clean => {
                return OsdResponse::Failed(format!(
                    "{pg} is not clean (acting {:?} of {} copies); scrub once it is",
                    holders.acting, holders.size
                ))
            }
            Ok(true) => {}
        }
        let request = OsdRequest::ScrubMap { pg, deep };
        let answers = futures_util::future::join_all(holders.acting.iter().map(|osd| {
            let request = &request;
            async move {
                let answer = if *osd == self.id {
                    Some(self.scrub_map(pg, deep))
                } else {
                    self.call_while_up(*osd, request, SCRUB_MAP_TIMEOUT).await
                };
                (*osd, answer)
            }
        }))
        .await;
        let mut maps: Vec<(OsdId, ScrubMap)> = Vec::with_capacity(answers.len());
        for (osd, answer) in answers {
            match answer {
                Some(OsdResponse::ScrubMap(map)) => maps.push((osd, map)),
                other => {
                    return OsdResponse::Failed(format!(
                        "{pg}: osd.{} sent no scrub map ({other:?}); scrub later",
                        osd.0
                    ))
                }
            }
        }
        let verdict = scrub::compare(&maps, holders.k);
        let objects = maps
            .iter()
            .flat_map(|(_, map)| map.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        for found in &verdict.inconsistencies {
            tracing::warn!(
                %pg, object = found.object, osd = found.holder.0, problem = ?found.problem,
                deep, "scrub found an inconsistency"
            );
        }
        tracing::info!(
            %pg, deep, objects, inconsistencies = verdict.inconsistencies.len(),
            unrepairable = verdict.unrepairable.len(), "scrubbed"
        );
        let mut repaired = Vec::new();
        if repair {
            for fix in &verdict.repairs {
                match self.repair(pg, view.map.epoch, fix).await {
                    Ok(done) => {
                        tracing::warn!(%pg, object = done.0, on = ?done.1, "repaired");
                        repaired.push(done);
                    }
                    Err(reason) => {
                        return OsdResponse::Failed(format!("{pg}: a repair failed: {reason}"))
                    }
                }
            }
        }
        OsdResponse::Scrubbed(ScrubReport {
            pg,
            deep,
            holders: holders.acting,
            objects,
            inconsistencies: verdict.inconsistencies,
            unrepairable: verdict.unrepairable,
            repaired,
        })
    }

    /// Carries out one repair of a scrub of `pg` under `epoch`: this OSD's own copy (or shard)
    /// first, from a good holder's, so that it can serve as a source; then each other holder's,
    /// pushed as recovery pushes are. Returns the object and the holders written.
    async fn repair(
        self: &Arc<Self>,
        pg: PgId,
        epoch: Epoch,
        fix: &Repair,
    ) -> Result<(String, Vec<OsdId>), String> {
        let (object, targets) = match fix {
            Repair::Remove { object, on } => {
                for osd in on {
                    self.put_object(pg, epoch, *osd, object, None).await?;
                }
                return Ok((object.clone(), on.clone()));
            }
            Repair::Copy { object, from, to } => (object, (from, to)),
        };
        let (from, to) = targets;
        let names = [object.clone()];
        let erasure = self.view().codec(pg.pool).is_some();
        if to.contains(&self.id) {
            let source = *from.first().ok_or("no good copy to repair from")?;
            let mut got = if erasure {
                self.own_shards_from(pg, source, &names).await?
            } else {
                self.fetch_objects(pg, source, &names, GOOD_COPY_TIMEOUT)
                    .await?
            };
            let state = got
                .pop()
                .and_then(|(_, state)| state)
                .ok_or_else(|| format!("osd.{} no longer has {object:?}", source.0))?;
            self.put_object(pg, epoch, self.id, object, Some(state))
                .await?;
        }
        for osd in to.iter().filter(|o| **o != self.id) {
            let mut got = self.objects_for(pg, *osd, &names).await?;
            let state = got.pop().and_then(|(_, state)| state);
            self.put_object(pg, epoch, *osd, object, state).await?;
        }
        Ok((object.clone(), to.clone()))
    }

    /// Makes `name` of `pg` exactly `state` (or removes it) on `osd`: in this OSD's store, or
    /// by a push to another holder.
    async fn put_object(
        &self,
        pg: PgId,
        epoch: Epoch,
        osd: OsdId,
        name: &str,
        state: Option<ObjectState>,
    ) -> Result<(), String> {
        if osd != self.id {
            let objects = vec![(name.to_owned(), state)];
            return match self
                .push(osd, pg, epoch, false, objects, Vec::new(), None)
                .await
            {
                Some(Answer::Ack) => Ok(()),
                other => Err(format!(
                    "osd.{} took no repair of {name:?}: {other:?}",
                    osd.0
                )),
            };
        }
        let coll = pg::collection(pg);
        let store = &*self.store;
        let ops =
            tokio::task::block_in_place(|| pg::write_state(store, coll, name, state.as_ref()));
        match self.store.submit(&Transaction { ops }) {
            Ok(commit) => commit.await,
            Err(error) => Err(error),
        }
        .map_err(|e| format!("repairing {name:?} here: {e}"))
    }

    /// Objects `names` of `pg` as the holder `source` has them, read through its checksums.
    pub(crate) async fn fetch_objects(
        &self,
        pg: PgId,
        source: OsdId,
        names: &[String],
        limit: Duration,
    ) -> Result<Vec<(String, Option<ObjectState>)>, String> {
        let request = OsdRequest::PgRead {
            pg,
            names: names.to_vec(),
        };
        match self.call_while_up(source, &request, limit).await {
            Some(OsdResponse::PgObjects(objects)) => Ok(objects),
            other => Err(format!("osd.{} sent no objects: {other:?}", source.0)),
        }
    }

    /// The read-only transaction `steps` on `name` of `pg`, whose read here failed with
    /// `reason` (a checksum that does not match): this OSD's copy is replaced by another
    /// holder's at the same version (read through that holder's own checksums), and the steps
    /// run again on it. The client gets exact bytes; the bad copy is repaired as it is found,
    /// and logged. Fails as before when no other holder has a good copy.
    pub(crate) async fn read_repaired(
        self: &Arc<Self>,
        pg: PgId,
        view: &MapView,
        name: &str,
        reason: &str,
        steps: Vec<ObjectOp>,
    ) -> Result<Planned, OpError> {
        let coll = pg::collection(pg);
        let failed = || OpError::Storage(reason.to_owned());
        // The copy's metadata says which version a good copy must have.
        let version = match self.store.xattrs(coll, name) {
            Ok(xattrs) => pg::version_of(&xattrs),
            Err(_) => return Err(failed()),
        };
        tracing::warn!(%pg, name, version, reason, "a read failed its checksums; fetching a good copy");
        let names = [name.to_owned()];
        for osd in view.other_holders(pg, self.id) {
            let state = match self.fetch_objects(pg, osd, &names, GOOD_COPY_TIMEOUT).await {
                Ok(objects) => objects.into_iter().next().and_then(|o| o.1),
                Err(reason) => {
                    tracing::warn!(%pg, name, reason, "no good copy from this holder");
                    continue;
                }
            };
            let Some(state) = state else { continue };
            let theirs = state
                .xattrs
                .get(VERSION_XATTR)
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(u64::from_le_bytes);
            if theirs != Some(version) {
                continue;
            }
            let store = &*self.store;
            let ops =
                tokio::task::block_in_place(|| pg::write_state(store, coll, name, Some(&state)));
            let written = match self.store.submit(&Transaction { ops }) {
                Ok(commit) => commit.await,
                Err(error) => Err(error),
            };
            if let Err(error) = written {
                tracing::warn!(%pg, name, %error, "repairing this OSD's copy failed");
                return Err(failed());
            }
            tracing::warn!(%pg, name, version, osd = osd.0, "this OSD's bad copy was repaired from another holder's");
            return tokio::task::block_in_place(|| pg::plan(store, coll, name, steps));
        }
        Err(OpError::Storage(format!(
            "{reason}; no other holder has a good copy of version {version}"
        )))
    }
}
