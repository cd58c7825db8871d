//! Erasure pools on the OSD: a client transaction planned over stripes, and each shard's part of
//! it with what undoes it. See docs/erasure.md.
//!
//! The primary plans a transaction in two passes over the same code: a first pass records the
//! old stripes it needs (the stripes a write covers only in part, the stripes a read covers),
//! the shell fetches them from the data shards (decoding when some are missing), and the
//! second pass makes the outputs and, for every position of the acting set, the store ops of
//! that shard. Every shard keeps the object's logical size, version, position and the client's
//! xattrs whole, so any `k` shards answer a `stat` and rebuild the others.
//!
//! A holder applies its shard ops with a rollback record ([`with_rollback`]): the bytes the
//! change overwrites or cuts off and the xattrs it replaces go into a rollback object first, in
//! the same store transaction, so that peering can undo a change that reached fewer than `k`
//! shards ([`rollback_ops`]). A change's rollback record is dropped when the next change of
//! the PG arrives: the primary sends a change only after the one before was acknowledged by
//! every holder, so it is durable on enough shards to be rolled forward.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tidepool_erasure::{Codec, Layout};
use tidepool_proto::osd::{ObjectOp, OpError, OpOutput};
use tidepool_proto::payload::Payload;

use crate::pg::VERSION_XATTR;
use crate::store::{CollectionId, ObjectStore, Op, StoreError};

/// The xattr holding the object's logical size, on every shard.
pub const SIZE_XATTR: &str = "\0z";
/// The xattr holding the shard's position in the acting set (`0..k+m`).
pub const POSITION_XATTR: &str = "\0p";
/// The xattr of a rollback object holding its [`Rollback`] record.
const ROLLBACK_XATTR: &str = "\0r";
/// Rollback objects' names start with this (clients' names never start with NUL).
pub const ROLLBACK_PREFIX: &str = "\0rb.";

/// The rollback object of the change that made PG version `version`.
pub fn rollback_name(version: u64) -> String {
    format!("{ROLLBACK_PREFIX}{version:020}")
}

/// Whether `name` is an object of the PG's own bookkeeping, not a client's.
pub fn is_internal(name: &str) -> bool {
    name.starts_with('\0')
}

/// An object's state on a shard, as its metadata says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Whether the object exists.
    pub exists: bool,
    /// Its logical size.
    pub size: u64,
    /// Its PG version.
    pub version: u64,
    /// Every xattr, the internal ones (names starting with NUL) among them.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Meta {
    /// The object `name` of `coll` as this shard holds it.
    pub fn load(store: &dyn ObjectStore, coll: CollectionId, name: &str) -> Result<Meta, OpError> {
        match store.xattrs(coll, name) {
            Ok(xattrs) => Ok(Meta {
                exists: true,
                size: u64_xattr(&xattrs, SIZE_XATTR),
                version: u64_xattr(&xattrs, VERSION_XATTR),
                xattrs,
            }),
            Err(StoreError::NotFound { .. }) => Ok(Meta::default()),
            Err(other) => Err(OpError::Storage(other.to_string())),
        }
    }

    /// The logical size its xattrs record.
    pub fn logical_size(&self) -> u64 {
        u64_xattr(&self.xattrs, SIZE_XATTR)
    }

    /// The position of the shard that holds this metadata, when it says.
    pub fn position(&self) -> Option<usize> {
        self.xattrs
            .get(POSITION_XATTR)
            .and_then(|v| v.as_slice().try_into().ok())
            .map(|b| u64::from_le_bytes(b) as usize)
    }
}

fn u64_xattr(xattrs: &BTreeMap<String, Vec<u8>>, key: &str) -> u64 {
    xattrs
        .get(key)
        .and_then(|v| v.as_slice().try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Where the old stripes a plan reads come from.
pub trait OldStripes {
    /// Appends bytes `within` of stripe `stripe` as they were before the transaction (zeros
    /// past the object's end) to `out`.
    fn extend(
        &mut self,
        stripe: u64,
        within: Range<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), OpError>;

    /// Whether this pass only records the stripes asked for: the plan then stops before it
    /// codes the shards.
    fn recording(&self) -> bool {
        false
    }
}

/// The first pass: records the stripes asked for and appends nothing (its outputs are not
/// used).
#[derive(Debug, Default)]
pub struct Needed {
    /// The stripes the plan reads.
    pub stripes: BTreeSet<u64>,
}

impl OldStripes for Needed {
    fn extend(
        &mut self,
        stripe: u64,
        _within: Range<usize>,
        _out: &mut Vec<u8>,
    ) -> Result<(), OpError> {
        self.stripes.insert(stripe);
        Ok(())
    }

    fn recording(&self) -> bool {
        true
    }
}

/// The second pass: old stripes as the shell read them from the data shards, in runs of
/// consecutive stripes with the `k` data chunks of each run.
#[derive(Debug)]
pub struct Fetched {
    layout: Layout,
    /// By first stripe: the end of the run and its data chunks, which may be short (zeros
    /// past their end).
    runs: BTreeMap<u64, (u64, Vec<Chunk>)>,
}

/// A data chunk as it arrived: its pieces, each with its offset in the chunk.
#[derive(Debug)]
struct Chunk {
    pieces: Vec<(usize, Bytes)>,
    len: usize,
}

impl Chunk {
    fn new(payload: Payload) -> Chunk {
        let mut len = 0;
        let pieces = payload
            .into_chunks()
            .into_iter()
            .map(|piece| {
                let at = len;
                len += piece.len();
                (at, piece)
            })
            .collect();
        Chunk { pieces, len }
    }

    /// Appends bytes `from..to` of the chunk to `out`, zeros past its end.
    fn extend(&self, from: usize, to: usize, out: &mut Vec<u8>) {
        let have = to.min(self.len).max(from);
        // The piece holding `from`: the last one starting at or before it.
        let first = self.pieces.partition_point(|(at, _)| *at <= from);
        let mut at = from;
        for (start, piece) in &self.pieces[first.saturating_sub(1)..] {
            if at >= have {
                break;
            }
            let end = (start + piece.len()).min(have);
            out.extend_from_slice(&piece[at - start..end - start]);
            at = end;
        }
        out.resize(out.len() + (to - at), 0);
    }
}

impl Fetched {
    /// Nothing fetched yet, for stripes of `layout`.
    pub fn new(layout: Layout) -> Fetched {
        Fetched {
            layout,
            runs: BTreeMap::new(),
        }
    }

    /// The stripes from `first` on whose data shards hold `chunks` (one per data shard, each
    /// the units of those stripes, at most `stripes` of them).
    pub fn insert(&mut self, first: u64, stripes: u64, chunks: Vec<Payload>) {
        debug_assert_eq!(chunks.len(), self.layout.k());
        let chunks = chunks.into_iter().map(Chunk::new).collect();
        self.runs.insert(first, (first + stripes, chunks));
    }
}

impl OldStripes for Fetched {
    fn extend(
        &mut self,
        stripe: u64,
        within: Range<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), OpError> {
        let (first, (_, chunks)) = self
            .runs
            .range(..=stripe)
            .next_back()
            .filter(|(_, (end, _))| stripe < *end)
            .ok_or_else(|| OpError::Storage(format!("stripe {stripe} was not read")))?;
        let unit = self.layout.unit();
        let base = (stripe - first) as usize * unit;
        let mut at = within.start;
        while at < within.end {
            let (shard, into) = (at / unit, at % unit);
            let to = within.end.min((shard + 1) * unit);
            let from = base + into;
            match chunks.get(shard) {
                Some(chunk) => chunk.extend(from, from + (to - at), out),
                None => out.resize(out.len() + (to - at), 0),
            }
            at = to;
        }
        Ok(())
    }
}

/// A transaction worked out for an erasure pool.
#[derive(Debug, Default)]
pub struct EcPlan {
    /// One output per step.
    pub outputs: Vec<OpOutput>,
    /// For each position, the store ops on the object (without the version xattr and the log,
    /// which the commit adds); empty for a read-only transaction.
    pub shards: Vec<Vec<Op>>,
    /// Whether the object is gone at the end.
    pub removed: bool,
    /// The object's version before the transaction.
    pub version: u64,
    /// Client bytes written.
    pub written: u64,
}

fn not_supported() -> OpError {
    OpError::NotSupported(
        "omap is not supported on erasure-coded pools; keep it on a replicated pool".into(),
    )
}

/// Plans `steps` on object `name` of an erasure pool with `codec`, whose state before is
/// `old`. Reads and guards see the object as it was; writes apply in order.
pub fn plan(
    codec: &Codec,
    coll: CollectionId,
    name: &str,
    old: &Meta,
    steps: &[ObjectOp],
    stripes: &mut dyn OldStripes,
) -> Result<EcPlan, OpError> {
    let layout = codec.layout();
    let width = layout.stripe_width();
    let mut exists = old.exists;
    let mut size = old.size;
    let mut xattrs = old.xattrs.clone();
    // Stripes at or past this one hold no old bytes any more (a truncate, a full write).
    let mut old_valid = layout.stripes_of(old.size);
    // The stripes changed, as whole object bytes: borrowed from a write that covers them whole.
    let mut dirty: BTreeMap<u64, Cow<[u8]>> = BTreeMap::new();
    let mut reset = false;
    let mut plan = EcPlan {
        version: old.version,
        ..EcPlan::default()
    };
    let mut wrote = false;
    for step in steps {
        let output = match step {
            ObjectOp::Create { exclusive } => {
                if exists && *exclusive {
                    return Err(OpError::Exists);
                }
                exists = true;
                wrote = true;
                OpOutput::None
            }
            ObjectOp::WriteFull(data) | ObjectOp::Write { data, .. } | ObjectOp::Append(data) => {
                let offset = match step {
                    ObjectOp::WriteFull(_) => {
                        dirty.clear();
                        old_valid = 0;
                        reset = true;
                        size = 0;
                        0
                    }
                    ObjectOp::Write { offset, .. } => *offset,
                    _ => size,
                };
                if offset
                    .checked_add(data.len() as u64)
                    .is_none_or(|end| end > MAX_SIZE)
                {
                    return Err(OpError::Invalid("a write past 16 TiB".into()));
                }
                write_at(
                    &mut dirty,
                    stripes,
                    width,
                    old_valid,
                    &mut size,
                    offset,
                    &data.pieces(),
                )?;
                plan.written += data.len() as u64;
                exists = true;
                wrote = true;
                OpOutput::None
            }
            ObjectOp::Truncate(new_size) => {
                if !exists {
                    return Err(OpError::NotFound);
                }
                if *new_size > MAX_SIZE {
                    return Err(OpError::Invalid("a size past 16 TiB".into()));
                }
                if *new_size < size {
                    // The new last stripe keeps its bytes up to the new end, zeros past it.
                    let last = new_size / width;
                    let keep = (new_size % width) as usize;
                    dirty.retain(|s, _| *s <= last);
                    if keep > 0 {
                        let stripe = stripe_mut(&mut dirty, stripes, width, old_valid, last)?;
                        stripe[keep..].fill(0);
                    } else {
                        dirty.remove(&last);
                    }
                    old_valid = old_valid.min(new_size.div_ceil(width));
                }
                size = *new_size;
                wrote = true;
                OpOutput::None
            }
            ObjectOp::Remove => {
                if !exists {
                    return Err(OpError::NotFound);
                }
                dirty.clear();
                old_valid = 0;
                reset = true;
                size = 0;
                exists = false;
                xattrs.retain(|k, _| k.starts_with('\0'));
                wrote = true;
                OpOutput::None
            }
            ObjectOp::SetXattr(key, value) => {
                crate::pg::check_xattr_name(key)?;
                xattrs.insert(key.clone(), value.clone());
                exists = true;
                wrote = true;
                OpOutput::None
            }
            ObjectOp::RemoveXattr(key) => {
                crate::pg::check_xattr_name(key)?;
                if !exists {
                    return Err(OpError::NotFound);
                }
                xattrs.remove(key);
                wrote = true;
                OpOutput::None
            }
            ObjectOp::OmapSet(_)
            | ObjectOp::OmapRemove(_)
            | ObjectOp::OmapGet(_)
            | ObjectOp::OmapList { .. }
            | ObjectOp::CompareOmap(..) => return Err(not_supported()),
            ObjectOp::Read { offset, len } => {
                if !old.exists {
                    return Err(OpError::NotFound);
                }
                let end = offset.saturating_add(*len).min(old.size);
                let mut data = Vec::with_capacity(end.saturating_sub(*offset) as usize);
                let mut at = *offset;
                while at < end {
                    let stripe = at / width;
                    let start = stripe * width;
                    let to = end.min(start + width);
                    stripes.extend(
                        stripe,
                        (at - start) as usize..(to - start) as usize,
                        &mut data,
                    )?;
                    at = to;
                }
                OpOutput::Data(data.into())
            }
            ObjectOp::Stat => {
                if !old.exists {
                    return Err(OpError::NotFound);
                }
                OpOutput::Stat {
                    size: old.size,
                    version: old.version,
                }
            }
            ObjectOp::GetXattrs => {
                if !old.exists {
                    return Err(OpError::NotFound);
                }
                OpOutput::Xattrs(
                    old.xattrs
                        .iter()
                        .filter(|(k, _)| !k.starts_with('\0'))
                        .map(|(k, v)| (k.clone(), ByteBuf::from(v.clone())))
                        .collect(),
                )
            }
            ObjectOp::AssertVersion(expected) => {
                if old.version != *expected {
                    return Err(OpError::GuardFailed(format!(
                        "version is {}, not {expected}",
                        old.version
                    )));
                }
                OpOutput::None
            }
            ObjectOp::CompareXattr(key, expected) => {
                let actual = old.xattrs.get(key).map(|v| v.as_slice());
                if actual != expected.as_ref().map(|v| v.as_slice()) {
                    return Err(OpError::GuardFailed(format!("xattr {key:?} differs")));
                }
                OpOutput::None
            }
        };
        plan.outputs.push(output);
    }
    plan.removed = !exists;
    if !wrote || stripes.recording() {
        return Ok(plan);
    }
    plan.shards = shard_ops(
        codec, coll, name, old, exists, size, reset, old_valid, &dirty, &xattrs,
    );
    Ok(plan)
}

/// Objects of erasure pools stay below 16 TiB, so that shard offsets never overflow.
const MAX_SIZE: u64 = 1 << 44;

/// The stripe `stripe` as it will be, taken into `dirty` as bytes of its own (from the old
/// bytes while they are valid, else zeros).
fn stripe_mut<'a, 'd>(
    dirty: &'a mut BTreeMap<u64, Cow<'d, [u8]>>,
    stripes: &mut dyn OldStripes,
    width: u64,
    old_valid: u64,
    stripe: u64,
) -> Result<&'a mut Vec<u8>, OpError> {
    let bytes = match dirty.entry(stripe) {
        std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
        std::collections::btree_map::Entry::Vacant(entry) => {
            let mut bytes = Vec::with_capacity(width as usize);
            if stripe < old_valid {
                stripes.extend(stripe, 0..width as usize, &mut bytes)?;
            }
            // Zeros past the old bytes (all of it in the first pass, which reads none).
            bytes.resize(width as usize, 0);
            entry.insert(Cow::Owned(bytes))
        }
    };
    Ok(bytes.to_mut())
}

/// Takes the bytes of `pieces` (one write's data, as it arrived) into the stripes they cover
/// from `offset` on.
fn write_at<'d>(
    dirty: &mut BTreeMap<u64, Cow<'d, [u8]>>,
    stripes: &mut dyn OldStripes,
    width: u64,
    old_valid: u64,
    size: &mut u64,
    offset: u64,
    pieces: &[&'d [u8]],
) -> Result<(), OpError> {
    let end = offset + pieces.iter().map(|p| p.len() as u64).sum::<u64>();
    let mut data = Cursor { pieces, at: 0 };
    let mut at = offset;
    while at < end {
        let stripe = at / width;
        let start = stripe * width;
        let to = end.min(start + width);
        let new = data.next((to - at) as usize);
        if at == start && to == start + width {
            // Covered whole: nothing old to read, and nothing to copy when the stripe's bytes
            // arrived in one piece.
            dirty.insert(stripe, new);
        } else {
            stripe_mut(dirty, stripes, width, old_valid, stripe)?
                [(at - start) as usize..(to - start) as usize]
                .copy_from_slice(&new);
        }
        at = to;
    }
    *size = (*size).max(end);
    Ok(())
}

/// Bytes held in pieces, read front to back.
struct Cursor<'p, 'd> {
    pieces: &'p [&'d [u8]],
    /// How far into the first piece.
    at: usize,
}

impl<'d> Cursor<'_, 'd> {
    /// The next `n` bytes (there must be as many): borrowed when they lie in one piece.
    fn next(&mut self, n: usize) -> Cow<'d, [u8]> {
        while let Some((&first, rest)) = self.pieces.split_first() {
            if self.at < first.len() {
                if first.len() - self.at >= n {
                    let bytes = &first[self.at..self.at + n];
                    self.at += n;
                    return Cow::Borrowed(bytes);
                }
                break;
            }
            (self.pieces, self.at) = (rest, 0);
        }
        let mut bytes = Vec::with_capacity(n);
        while let Some((&first, rest)) = self.pieces.split_first() {
            if bytes.len() == n {
                break;
            }
            let take = (n - bytes.len()).min(first.len() - self.at);
            bytes.extend_from_slice(&first[self.at..self.at + take]);
            self.at += take;
            if self.at == first.len() {
                (self.pieces, self.at) = (rest, 0);
            }
        }
        debug_assert_eq!(bytes.len(), n, "fewer bytes than asked for");
        Cow::Owned(bytes)
    }
}

/// Each position's store ops: the touched stripes re-encoded and written at their shard
/// offsets, the shard's length, and every xattr of the object as it ends.
#[allow(clippy::too_many_arguments)]
fn shard_ops(
    codec: &Codec,
    coll: CollectionId,
    name: &str,
    old: &Meta,
    exists: bool,
    size: u64,
    reset: bool,
    old_valid: u64,
    dirty: &BTreeMap<u64, Cow<[u8]>>,
    xattrs: &BTreeMap<String, Vec<u8>>,
) -> Vec<Vec<Op>> {
    let layout = codec.layout();
    let unit = layout.unit() as u64;
    let positions = layout.k() + layout.m();
    let mut shards: Vec<Vec<Op>> = vec![Vec::new(); positions];
    if !exists {
        if old.exists {
            for ops in &mut shards {
                ops.push(Op::Remove {
                    coll,
                    name: name.into(),
                });
            }
        }
        return shards;
    }
    let stripes = layout.stripes_of(size);
    if reset && old.exists {
        for ops in &mut shards {
            ops.push(Op::Remove {
                coll,
                name: name.into(),
            });
        }
    }
    for ops in &mut shards {
        ops.push(Op::Create {
            coll,
            name: name.into(),
            exclusive: false,
        });
    }
    // Stripes whose old bytes the transaction cut off go first, so that a later write past
    // them leaves zeros there, not the old bytes.
    let mut old_len = if reset { 0 } else { layout.shard_len(old.size) };
    if old_valid * unit < old_len {
        old_len = old_valid * unit;
        for ops in &mut shards {
            ops.push(Op::Truncate {
                coll,
                name: name.into(),
                size: old_len,
            });
        }
    }
    // Runs of consecutive touched stripes below the end, each coded in one call.
    let mut runs: Vec<(u64, Vec<&[u8]>)> = Vec::new();
    for (stripe, bytes) in dirty.range(..stripes) {
        match runs.last_mut() {
            Some((first, run)) if *first + run.len() as u64 == *stripe => run.push(bytes),
            _ => runs.push((*stripe, vec![bytes])),
        }
    }
    for (first, run) in runs {
        for (position, bytes) in codec.encode_stripes(&run).into_iter().enumerate() {
            shards[position].push(Op::Write {
                coll,
                name: name.into(),
                offset: first * unit,
                data: bytes.into(),
                sums: None,
            });
        }
    }
    let shard_len = layout.shard_len(size);
    let written_end = dirty
        .range(..stripes)
        .next_back()
        .map_or(0, |(s, _)| (s + 1) * unit);
    if shard_len != old_len.max(written_end) {
        for ops in &mut shards {
            ops.push(Op::Truncate {
                coll,
                name: name.into(),
                size: shard_len,
            });
        }
    }
    for (position, ops) in shards.iter_mut().enumerate() {
        let mut set = xattrs.clone();
        set.insert(SIZE_XATTR.into(), size.to_le_bytes().to_vec());
        set.insert(
            POSITION_XATTR.into(),
            (position as u64).to_le_bytes().to_vec(),
        );
        // The version xattr is the commit's.
        set.remove(VERSION_XATTR);
        if !reset {
            for key in old.xattrs.keys() {
                if !set.contains_key(key) && key != VERSION_XATTR {
                    ops.push(Op::RemoveXattr {
                        coll,
                        name: name.into(),
                        key: key.clone(),
                    });
                }
            }
        }
        for (key, value) in set {
            if reset || old.xattrs.get(&key) != Some(&value) {
                ops.push(Op::SetXattr {
                    coll,
                    name: name.into(),
                    key,
                    value,
                });
            }
        }
    }
    shards
}

/// What undoes one change on one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Rollback {
    /// The object.
    name: String,
    /// Whether it existed before.
    existed: bool,
    /// Its shard length before.
    len: u64,
    /// Its xattrs before.
    xattrs: BTreeMap<String, ByteBuf>,
    /// The old bytes kept in the rollback object, at their own offsets: `(offset, len)`.
    extents: Vec<(u64, u64)>,
}

/// `ops`, a change that makes PG version `version` to the object `name` of `coll` on this
/// shard, preceded by its rollback record, and followed by the removal of the record of the
/// change before (`previous`, when this shard has one).
pub fn with_rollback(
    store: &dyn ObjectStore,
    coll: CollectionId,
    name: &str,
    version: u64,
    previous: Option<u64>,
    ops: Vec<Op>,
) -> Result<Vec<Op>, StoreError> {
    let (existed, len, xattrs) = match store.stat(coll, name) {
        Ok(stat) => (true, stat.size, store.xattrs(coll, name)?),
        Err(StoreError::NotFound { .. }) => (false, 0, BTreeMap::new()),
        Err(other) => return Err(other),
    };
    let record_name = rollback_name(version);
    let mut record = Rollback {
        name: name.into(),
        existed,
        len,
        xattrs: xattrs
            .into_iter()
            .map(|(k, v)| (k, ByteBuf::from(v)))
            .collect(),
        extents: Vec::new(),
    };
    let mut out = vec![Op::Create {
        coll,
        name: record_name.clone(),
        exclusive: false,
    }];
    if existed {
        // The old bytes the change overwrites or cuts off.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for op in &ops {
            match op {
                Op::Write { offset, data, .. } => {
                    let end = (offset + data.len() as u64).min(len);
                    if *offset < end {
                        ranges.push((*offset, end - offset));
                    }
                }
                Op::Truncate { size, .. } if *size < len => ranges.push((*size, len - size)),
                Op::Remove { .. } | Op::WriteFull { .. } if len > 0 => ranges.push((0, len)),
                _ => {}
            }
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (offset, len) in ranges {
            match merged.last_mut() {
                Some((o, l)) if offset <= *o + *l => *l = (*l).max(offset + len - *o),
                _ => merged.push((offset, len)),
            }
        }
        for (offset, len) in &merged {
            let data = store.read(coll, name, *offset, *len)?;
            out.push(Op::Write {
                coll,
                name: record_name.clone(),
                offset: *offset,
                data: data.into(),
                sums: None,
            });
        }
        record.extents = merged;
    }
    out.push(Op::SetXattr {
        coll,
        name: record_name,
        key: ROLLBACK_XATTR.into(),
        value: rmp_serde::to_vec_named(&record).expect("rollback records encode"),
    });
    out.extend(ops);
    if let Some(previous) = previous {
        if previous != version && store.stat(coll, &rollback_name(previous)).is_ok() {
            out.push(Op::Remove {
                coll,
                name: rollback_name(previous),
            });
        }
    }
    Ok(out)
}

/// The ops that undo the change that made PG version `version` on this shard, from its
/// rollback record; `None` when the shard has no record of it (the change never reached it).
pub fn rollback_ops(
    store: &dyn ObjectStore,
    coll: CollectionId,
    version: u64,
) -> Result<Option<Vec<Op>>, StoreError> {
    let record_name = rollback_name(version);
    let xattrs = match store.xattrs(coll, &record_name) {
        Ok(xattrs) => xattrs,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(other) => return Err(other),
    };
    let record: Rollback = xattrs
        .get(ROLLBACK_XATTR)
        .ok_or_else(|| StoreError::Corrupt(format!("{coll} {record_name:?}: no record")))
        .and_then(|bytes| {
            rmp_serde::from_slice(bytes)
                .map_err(|e| StoreError::Corrupt(format!("{coll} {record_name:?}: {e}")))
        })?;
    let name = record.name.clone();
    let now = match store.stat(coll, &name) {
        Ok(stat) => Some(stat.size),
        Err(StoreError::NotFound { .. }) => None,
        Err(other) => return Err(other),
    };
    let mut ops = Vec::new();
    if now.is_some() {
        ops.push(Op::Remove {
            coll,
            name: name.clone(),
        });
    }
    if record.existed {
        // The object as it was: today's bytes where the change did not write, the kept ones
        // where it did.
        let mut data = match now {
            Some(_) => store.read(coll, &name, 0, record.len)?.to_vec(),
            None => Vec::new(),
        };
        data.resize(record.len as usize, 0);
        for (offset, len) in &record.extents {
            let kept = store.read(coll, &record_name, *offset, *len)?;
            data[*offset as usize..(*offset + *len) as usize].copy_from_slice(&kept);
        }
        ops.push(Op::WriteFull {
            coll,
            name: name.clone(),
            data: data.into(),
            sums: None,
        });
        for (key, value) in record.xattrs {
            ops.push(Op::SetXattr {
                coll,
                name: name.clone(),
                key,
                value: value.into_vec(),
            });
        }
    }
    ops.push(Op::Remove {
        coll,
        name: record_name,
    });
    Ok(Some(ops))
}

#[cfg(test)]
mod tests;
