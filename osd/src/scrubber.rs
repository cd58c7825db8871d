//! Scrub on the OSD: a holder's scrub map of a PG, and the primary's scrub of a PG on an
//! operator's request (every holder's map gathered while the PG's writes wait, then compared).
//! See docs/scrub.md.

use std::sync::Arc;
use std::time::Duration;

use tidepool_placement::{OsdId, PgId};
use tidepool_proto::osd::{ObjectOp, OpError, OsdRequest, OsdResponse};

use crate::daemon::{storage_failed, MapView, Osd};
use crate::pg::{self, Planned, VERSION_XATTR};
use crate::scrub::{self, ScrubMap, ScrubReport};
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

    /// The primary's scrub of `pg`: refused unless this OSD leads it and it is active and
    /// clean (a holder that is behind is recovery's work). The PG's writes wait while the
    /// holders' maps are read, so every map is of the same PG version.
    pub(crate) async fn scrub_pg(self: &Arc<Self>, pg: PgId, deep: bool) -> OsdResponse {
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
        OsdResponse::Scrubbed(ScrubReport {
            pg,
            deep,
            holders: holders.acting,
            objects,
            inconsistencies: verdict.inconsistencies,
            unrepairable: verdict.unrepairable,
        })
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
        let others: Vec<OsdId> = view
            .holders(pg)
            .map(|h| h.acting)
            .unwrap_or_default()
            .into_iter()
            .filter(|o| *o != self.id)
            .collect();
        for osd in others {
            let request = OsdRequest::PgRead {
                pg,
                names: vec![name.to_owned()],
            };
            let state = match self.call_while_up(osd, &request, GOOD_COPY_TIMEOUT).await {
                Some(OsdResponse::PgObjects(objects)) => {
                    objects.into_iter().next().and_then(|o| o.1)
                }
                other => {
                    tracing::warn!(%pg, name, osd = osd.0, ?other, "no good copy from this holder");
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
