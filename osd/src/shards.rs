//! The primary's side of erasure pools: a client transaction planned over stripes
//! ([`crate::ec`]), the old stripes it needs fetched from the data shards (decoded from any
//! `k` when some are missing, stale or corrupt), and each holder handed its own shard of the
//! change. See docs/erasure.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tidepool_erasure::Codec;
use tidepool_placement::{OsdId, PgId};
use tidepool_proto::osd::{ObjectRequest, OsdRequest, OsdResponse, ShardBytes};

use crate::daemon::{MapView, Osd};
use crate::ec::{self, Meta};
use crate::pg::{self, Planned};
use crate::shell::PgSlot;
use crate::store::StoreError;

/// How long a shard read may take before its shard counts as missing.
const SHARD_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Osd {
    /// A client transaction on an object of an erasure pool's PG that this OSD serves as
    /// primary (its ops lock held).
    pub(crate) async fn erasure_object(
        self: &Arc<Self>,
        view: &MapView,
        slot: &Arc<PgSlot>,
        codec: Arc<Codec>,
        request: ObjectRequest,
    ) -> OsdResponse {
        let pg = request.pg;
        let Some(positions) = view.positions(pg) else {
            return OsdResponse::Failed(format!("{pg}: no such PG"));
        };
        let Some(me) = positions.iter().position(|o| *o == Some(self.id)) else {
            return OsdResponse::NotPrimary;
        };
        let coll = pg::collection(pg);
        let name = request.name.clone();
        let old = match Meta::load(&*self.store, coll, &name) {
            Ok(old) => old,
            Err(error) => return OsdResponse::Object(Err(error)),
        };
        if old.exists && old.position() != Some(me) {
            return OsdResponse::Failed(format!(
                "{pg}: this OSD's shard of {name:?} is not of position {me}; the PG must recover"
            ));
        }
        // First pass: which old stripes the transaction reads.
        let mut needed = ec::Needed::new(codec.layout());
        if let Err(error) = ec::plan(&codec, coll, &name, &old, &request.ops, &mut needed) {
            return OsdResponse::Object(Err(error));
        }
        let mut stripes = match self
            .fetch_stripes(pg, &positions, &codec, &name, &old, &needed.stripes)
            .await
        {
            Ok(stripes) => stripes,
            Err(reason) => return OsdResponse::Failed(reason),
        };
        let planned = match tokio::task::block_in_place(|| {
            ec::plan(&codec, coll, &name, &old, &request.ops, &mut stripes)
        }) {
            Ok(planned) => planned,
            Err(error) => return OsdResponse::Object(Err(error)),
        };
        self.count_client_op(&planned.outputs);
        if planned.shards.is_empty() {
            return self
                .after_read(pg, view, planned.version, planned.outputs)
                .await;
        }
        let mut shards = planned.shards;
        let others = positions
            .iter()
            .enumerate()
            .filter_map(|(at, osd)| {
                osd.filter(|o| *o != self.id)
                    .map(|o| (o, std::mem::take(&mut shards[at])))
            })
            .collect();
        let write = Planned {
            outputs: Vec::new(),
            ops: std::mem::take(&mut shards[me]),
            removed: planned.removed,
            version: planned.version,
            others,
        };
        let reqid = (request.client, request.sequence);
        let result = self.write(pg, slot, name, write, reqid).await;
        crate::daemon::written(result, planned.outputs)
    }

    /// The object bytes of each stripe in `stripes` as they are, from the data shards of
    /// `positions`, decoding from any `k` shards when some are missing, stale or corrupt.
    async fn fetch_stripes(
        &self,
        pg: PgId,
        positions: &[Option<OsdId>],
        codec: &Codec,
        name: &str,
        old: &Meta,
        stripes: &BTreeSet<u64>,
    ) -> Result<BTreeMap<u64, Vec<u8>>, String> {
        let layout = codec.layout();
        let (k, unit) = (layout.k(), layout.unit() as u64);
        let mut out = BTreeMap::new();
        // Runs of consecutive stripes, each read with one request per shard.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for stripe in stripes {
            match runs.last_mut() {
                Some((_, end)) if *end == *stripe => *end += 1,
                _ => runs.push((*stripe, stripe + 1)),
            }
        }
        for (first, end) in runs {
            let (offset, len) = (first * unit, (end - first) * unit);
            let read = |at: usize| self.read_shard(pg, positions, at, name, offset, len, old);
            let mut chunks: Vec<Option<Vec<u8>>> =
                futures_util::future::join_all((0..k).map(read)).await;
            if chunks.iter().any(Option::is_none) {
                // A degraded read: the parity shards too, then any k of them.
                let parity = futures_util::future::join_all(
                    (k..k + layout.m())
                        .map(|at| self.read_shard(pg, positions, at, name, offset, len, old)),
                )
                .await;
                chunks.extend(parity);
                let have = chunks.iter().flatten().count();
                if have < k {
                    return Err(format!(
                        "{pg}: only {have} of the {k} shards needed to read {name:?} answered; \
                         waiting for more"
                    ));
                }
                tracing::info!(%pg, name, have, "a degraded read: decoding from {k} shards");
                codec
                    .reconstruct(&mut chunks)
                    .map_err(|e| format!("{pg}: decoding {name:?}: {e}"))?;
            }
            let data: Vec<Vec<u8>> = chunks
                .into_iter()
                .take(k)
                .map(|c| c.expect("present or rebuilt"))
                .collect();
            for stripe in first..end {
                let at = ((stripe - first) * unit) as usize;
                let mut bytes = Vec::with_capacity(layout.stripe_width() as usize);
                for chunk in &data {
                    bytes.extend_from_slice(&chunk[at..at + unit as usize]);
                }
                out.insert(stripe, bytes);
            }
        }
        Ok(out)
    }

    /// `len` bytes at `offset` of the shard at position `at` (zero-padded to `len`), when its
    /// holder answers with the object at `old`'s version and the right position.
    #[allow(clippy::too_many_arguments)]
    async fn read_shard(
        &self,
        pg: PgId,
        positions: &[Option<OsdId>],
        at: usize,
        name: &str,
        offset: u64,
        len: u64,
        old: &Meta,
    ) -> Option<Vec<u8>> {
        let holder = positions.get(at).copied().flatten()?;
        let shard = if holder == self.id {
            let store = &*self.store;
            tokio::task::block_in_place(|| read_local_shard(store, pg, name, offset, len))
                .map_err(|error| tracing::warn!(%pg, name, %error, "reading this shard failed"))
                .ok()
                .flatten()
        } else {
            let request = OsdRequest::ShardRead {
                pg,
                name: name.into(),
                offset,
                len,
            };
            match self
                .call_while_up(holder, &request, SHARD_READ_TIMEOUT)
                .await
            {
                Some(OsdResponse::Shard(shard)) => shard,
                other => {
                    tracing::warn!(%pg, name, osd = holder.0, ?other, "a shard read failed");
                    None
                }
            }
        }?;
        if shard.version != old.version || shard.position != Some(at as u64) {
            tracing::warn!(
                %pg, name, osd = holder.0, version = shard.version, position = ?shard.position,
                "a shard of another version or position; decoding without it"
            );
            return None;
        }
        let mut data = shard.data.into_vec();
        if data.len() as u64 > len {
            return None;
        }
        data.resize(len as usize, 0);
        Some(data)
    }

    /// A holder's answer to [`OsdRequest::ShardRead`].
    pub(crate) fn shard_read(&self, pg: PgId, name: &str, offset: u64, len: u64) -> OsdResponse {
        let store = &*self.store;
        match tokio::task::block_in_place(|| read_local_shard(store, pg, name, offset, len)) {
            Ok(shard) => OsdResponse::Shard(shard),
            Err(error) => crate::daemon::storage_failed(error),
        }
    }
}

/// Bytes of this OSD's shard of `name`, with its metadata (`None` when it has no such object).
fn read_local_shard(
    store: &dyn crate::store::ObjectStore,
    pg: PgId,
    name: &str,
    offset: u64,
    len: u64,
) -> Result<Option<ShardBytes>, StoreError> {
    let coll = pg::collection(pg);
    let meta = match Meta::load(store, coll, name) {
        Ok(meta) if meta.exists => meta,
        Ok(_) => return Ok(None),
        Err(error) => return Err(StoreError::Failed(error.to_string())),
    };
    let data = store.read(coll, name, offset, len)?;
    Ok(Some(ShardBytes {
        version: meta.version,
        position: meta.position().map(|p| p as u64),
        data: data.into(),
    }))
}
