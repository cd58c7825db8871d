//! The primary's side of erasure pools: a client transaction planned over stripes
//! ([`crate::ec`]), the old stripes it needs fetched from the data shards (decoded from any
//! `k` when some are missing, stale or corrupt), and each holder handed its own shard of the
//! change. See docs/erasure.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_bytes::ByteBuf;
use tidepool_erasure::Codec;
use tidepool_placement::{OsdId, PgId};
use tidepool_proto::osd::{
    ObjectRequest, ObjectState, OpError, OsdRequest, OsdResponse, ShardBytes,
};
use tidepool_proto::payload::Payload;

use crate::daemon::{MapView, Osd};
use crate::ec::{self, Meta};
use crate::pg::{self, Planned};
use crate::shell::PgSlot;
use crate::store::StoreError;

/// How long a shard read may take before its shard counts as missing.
const SHARD_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a shard's bytes are not at hand.
#[derive(Debug)]
enum Missing {
    /// Its holder is down, did not answer, or has another version: it may come back.
    Away,
    /// Its holder read it and it failed its checksums: it stays bad until repaired.
    Bad,
}

/// Why a read of stripes cannot decode them.
#[derive(Debug)]
enum Short {
    /// Too few shards answered; more may, later.
    Waiting(String),
    /// Too few good shards exist: the bytes are lost until a shard is repaired.
    Lost(String),
}

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
        let mut needed = ec::Needed::default();
        if let Err(error) = ec::plan(&codec, coll, &name, &old, &request.ops, &mut needed) {
            return OsdResponse::Object(Err(error));
        }
        let mut stripes = match self
            .fetch_stripes(pg, &positions, &codec, &name, &old, &needed.stripes)
            .await
        {
            Ok(stripes) => stripes,
            Err(Short::Waiting(reason)) => return OsdResponse::Failed(reason),
            Err(Short::Lost(reason)) => return OsdResponse::Object(Err(OpError::Storage(reason))),
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
    ) -> Result<ec::Fetched, Short> {
        let layout = codec.layout();
        let (k, unit) = (layout.k(), layout.unit() as u64);
        let mut out = ec::Fetched::new(layout);
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
            let version = old.version;
            let read = |at: usize| self.read_shard(pg, positions, at, name, offset, len, version);
            let chunks: Vec<Result<Payload, Missing>> =
                futures_util::future::join_all((0..k).map(read)).await;
            if chunks.iter().all(Result::is_ok) {
                out.insert(first, end - first, chunks.into_iter().flatten().collect());
                continue;
            }
            // A degraded read: the parity shards too, then any k of them.
            let parity = futures_util::future::join_all((k..k + layout.m()).map(read)).await;
            let chunks: Vec<Result<Payload, Missing>> = chunks.into_iter().chain(parity).collect();
            let bad = chunks
                .iter()
                .filter(|c| matches!(c, Err(Missing::Bad)))
                .count();
            let mut chunks: Vec<Option<Vec<u8>>> = chunks
                .into_iter()
                .map(|c| c.ok().map(|c| padded(c, len)))
                .collect();
            let have = chunks.iter().flatten().count();
            if chunks.len() - bad < k {
                // Shards that fail their checksums do not come back: no point waiting.
                return Err(Short::Lost(format!(
                    "{pg}: {bad} shards of {name:?} fail their checksums; fewer than the {k} \
                     needed are good"
                )));
            }
            if have < k {
                return Err(Short::Waiting(format!(
                    "{pg}: only {have} of the {k} shards needed to read {name:?} answered; \
                     waiting for more"
                )));
            }
            tracing::info!(%pg, name, have, "a degraded read: decoding from {k} shards");
            codec
                .reconstruct(&mut chunks)
                .map_err(|e| Short::Lost(format!("{pg}: decoding {name:?}: {e}")))?;
            let data = chunks
                .into_iter()
                .take(k)
                .map(|c| c.expect("present or rebuilt").into())
                .collect();
            out.insert(first, end - first, data);
        }
        Ok(out)
    }

    /// `len` bytes at `offset` of the shard at position `at` (fewer past the shard's end), when
    /// its holder answers with the object at `version` and the right position.
    #[allow(clippy::too_many_arguments)]
    async fn read_shard(
        &self,
        pg: PgId,
        positions: &[Option<OsdId>],
        at: usize,
        name: &str,
        offset: u64,
        len: u64,
        version: u64,
    ) -> Result<Payload, Missing> {
        let holder = positions.get(at).copied().flatten().ok_or(Missing::Away)?;
        let shard = if holder == self.id {
            let store = &*self.store;
            match tokio::task::block_in_place(|| read_local_shard(store, pg, name, offset, len)) {
                Ok(shard) => shard,
                Err(error) => {
                    tracing::warn!(%pg, name, %error, "reading this shard failed; decoding around it");
                    self.found_bad_copy(pg);
                    return Err(Missing::Bad);
                }
            }
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
                Some(OsdResponse::Failed(reason)) => {
                    tracing::warn!(%pg, name, osd = holder.0, reason, "a shard read failed; decoding around it");
                    self.found_bad_copy(pg);
                    return Err(Missing::Bad);
                }
                other => {
                    tracing::warn!(%pg, name, osd = holder.0, ?other, "a shard read failed");
                    None
                }
            }
        }
        .ok_or(Missing::Away)?;
        if shard.version != version || shard.position != Some(at as u64) {
            tracing::warn!(
                %pg, name, osd = holder.0, version = shard.version, position = ?shard.position,
                "a shard of another version or position; decoding without it"
            );
            return Err(Missing::Away);
        }
        if shard.data.len() as u64 > len {
            return Err(Missing::Away);
        }
        Ok(shard.data)
    }

    /// Objects `names` of `pg` as the holder `to` keeps them: whole copies from this OSD in a
    /// replicated pool; in an erasure pool, the shard of `to`'s position, rebuilt from `k`
    /// others at the version this OSD's shard has.
    pub(crate) async fn objects_for(
        &self,
        pg: PgId,
        to: OsdId,
        names: &[String],
    ) -> Result<Vec<(String, Option<ObjectState>)>, String> {
        let view = self.view();
        let Some(codec) = view.codec(pg.pool) else {
            return self.read_objects(pg, names);
        };
        let mapping = view
            .placement
            .map_pg(pg, &mut tidepool_placement::Scratch::default())
            .ok_or_else(|| format!("{pg}: no such PG"))?;
        let positions = mapping.acting;
        // A holder serves its position; a backfill target (an empty position of `pg_temp`)
        // takes the position placement gives it.
        let at = positions
            .iter()
            .position(|o| *o == Some(to))
            .or_else(|| mapping.up.iter().position(|o| *o == Some(to)))
            .ok_or_else(|| format!("{pg}: osd.{} holds no position of it", to.0))?;
        let coll = pg::collection(pg);
        let mut objects = Vec::with_capacity(names.len());
        for name in names {
            let meta = Meta::load(&*self.store, coll, name).map_err(|e| e.to_string())?;
            if !meta.exists {
                objects.push((name.clone(), None));
                continue;
            }
            let data = self
                .rebuild_shard(pg, &positions, &codec, name, meta.version, meta.size, at)
                .await?;
            objects.push((name.clone(), Some(shard_state(name, meta.xattrs, at, data))));
        }
        Ok(objects)
    }

    /// Objects `names` of `pg` for this OSD's own shard (at position `at`), as the holder
    /// `source` has them: their metadata from `source`, their bytes rebuilt from `k` shards.
    pub(crate) async fn own_shards_from(
        &self,
        pg: PgId,
        source: OsdId,
        names: &[String],
    ) -> Result<Vec<(String, Option<ObjectState>)>, String> {
        let view = self.view();
        let (Some(codec), Some(positions)) = (view.codec(pg.pool), view.positions(pg)) else {
            return Err(format!("{pg} is not a PG of an erasure pool"));
        };
        let at = positions
            .iter()
            .position(|o| *o == Some(self.id))
            .ok_or_else(|| format!("{pg}: this OSD holds no position of it"))?;
        let mut objects = Vec::with_capacity(names.len());
        for name in names {
            let request = OsdRequest::ShardRead {
                pg,
                name: name.clone(),
                offset: 0,
                len: 0,
            };
            let meta = match self
                .call_while_up(source, &request, SHARD_READ_TIMEOUT)
                .await
            {
                Some(OsdResponse::Shard(Some(shard))) => shard,
                Some(OsdResponse::Shard(None)) => {
                    objects.push((name.clone(), None));
                    continue;
                }
                other => {
                    return Err(format!(
                        "osd.{} did not say what {name:?} is: {other:?}",
                        source.0
                    ))
                }
            };
            let xattrs: BTreeMap<String, Vec<u8>> = meta
                .xattrs
                .into_iter()
                .map(|(k, v)| (k, v.into_vec()))
                .collect();
            let size = Meta {
                exists: true,
                xattrs: xattrs.clone(),
                ..Meta::default()
            }
            .logical_size();
            let data = self
                .rebuild_shard(pg, &positions, &codec, name, meta.version, size, at)
                .await?;
            objects.push((name.clone(), Some(shard_state(name, xattrs, at, data))));
        }
        Ok(objects)
    }

    /// The shard at position `at` of object `name` (at `version`, of `size` bytes), rebuilt
    /// from `k` shards at other positions.
    #[allow(clippy::too_many_arguments)]
    async fn rebuild_shard(
        &self,
        pg: PgId,
        positions: &[Option<OsdId>],
        codec: &Codec,
        name: &str,
        version: u64,
        size: u64,
        at: usize,
    ) -> Result<Vec<u8>, String> {
        let layout = codec.layout();
        let (k, n) = (layout.k(), layout.k() + layout.m());
        let len = layout.shard_len(size);
        let others: Vec<usize> = (0..n).filter(|p| *p != at).collect();
        let read = |p: usize| async move {
            let chunk = self
                .read_shard(pg, positions, p, name, 0, len, version)
                .await;
            chunk.ok().map(|c| padded(c, len))
        };
        let mut chunks: Vec<Option<Vec<u8>>> = vec![None; n];
        // k shards first; the others only when some of those fail.
        let (first, rest) = others.split_at(k.min(others.len()));
        for (p, chunk) in first
            .iter()
            .zip(futures_util::future::join_all(first.iter().copied().map(read)).await)
        {
            chunks[*p] = chunk;
        }
        if chunks.iter().flatten().count() < k {
            for (p, chunk) in rest
                .iter()
                .zip(futures_util::future::join_all(rest.iter().copied().map(read)).await)
            {
                chunks[*p] = chunk;
            }
        }
        let have = chunks.iter().flatten().count();
        if have < k {
            return Err(format!(
                "{pg}: only {have} of the {k} shards needed to rebuild {name:?} (version {version}) answered"
            ));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        codec
            .reconstruct(&mut chunks)
            .map_err(|e| format!("{pg}: rebuilding {name:?}: {e}"))?;
        Ok(chunks[at].take().expect("rebuilt"))
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

/// A shard read's bytes zero-padded to `len`, as the codec takes them.
fn padded(chunk: Payload, len: u64) -> Vec<u8> {
    let mut bytes = chunk.into_vec();
    bytes.resize(len as usize, 0);
    bytes
}

/// Object `name`'s shard at position `at`: `data`, and `xattrs` with that position.
fn shard_state(
    name: &str,
    mut xattrs: BTreeMap<String, Vec<u8>>,
    at: usize,
    data: Vec<u8>,
) -> ObjectState {
    xattrs.insert(
        ec::POSITION_XATTR.into(),
        (at as u64).to_le_bytes().to_vec(),
    );
    ObjectState {
        name: name.into(),
        data: data.into(),
        xattrs: xattrs
            .into_iter()
            .map(|(k, v)| (k, ByteBuf::from(v)))
            .collect(),
        omap: Vec::new(),
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
        xattrs: meta
            .xattrs
            .into_iter()
            .map(|(k, v)| (k, ByteBuf::from(v)))
            .collect(),
        data: data.into(),
    }))
}
