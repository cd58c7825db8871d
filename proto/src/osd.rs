//! The OSD protocol: clients' object operations (sent to a PG's primary), and what OSDs send
//! each other to replicate writes and bring a PG's holders up to date.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tidepool_placement::{Epoch, OsdId, PgId};

use crate::Payload;

/// One step of an object transaction. Steps run in order on the primary; guards that fail, and
/// any step that fails, abort the whole transaction, which then changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectOp {
    /// Creates the object empty; with `exclusive`, fails if it exists.
    Create {
        /// Fail if it exists.
        exclusive: bool,
    },
    /// Replaces the data.
    WriteFull(Payload),
    /// Writes at an offset.
    Write {
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Payload,
    },
    /// Appends to the data.
    Append(Payload),
    /// Cuts or extends the data.
    Truncate(u64),
    /// Removes the object.
    Remove,
    /// Reads a range (`len` `u64::MAX` for the rest).
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes wanted.
        len: u64,
    },
    /// Size and version.
    Stat,
    /// Every xattr.
    GetXattrs,
    /// Sets an xattr.
    SetXattr(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// Removes an xattr.
    RemoveXattr(String),
    /// Omap values of the keys that exist.
    OmapGet(Vec<serde_bytes::ByteBuf>),
    /// Sets omap entries.
    OmapSet(Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>),
    /// Removes omap keys.
    OmapRemove(Vec<serde_bytes::ByteBuf>),
    /// Omap entries in key order after `start_after`, at most `limit`.
    OmapList {
        /// Start after this key.
        start_after: Option<serde_bytes::ByteBuf>,
        /// At most this many.
        limit: u32,
    },
    /// Guard: the object's version is `0` (absent) or equals this.
    AssertVersion(u64),
    /// Guard: the xattr equals this value (`None`: the xattr is absent).
    CompareXattr(String, Option<serde_bytes::ByteBuf>),
    /// Guard: the omap value of the key equals this (`None`: the key is absent, or the object
    /// is). Makes a read-modify-write of one omap entry safe, as Ceph's `omap_cmp` does.
    CompareOmap(serde_bytes::ByteBuf, Option<serde_bytes::ByteBuf>),
}

impl ObjectOp {
    /// Whether a transaction of `ops` needs space a full OSD does not have: it writes data,
    /// omap entries, xattrs or a new object and frees nothing. Transactions that remove
    /// something (an S3 delete also records its garbage) still pass, so that space can be
    /// freed, as Ceph lets deletes through a full cluster.
    pub fn needs_space(ops: &[ObjectOp]) -> bool {
        let grows = ops.iter().any(|op| match op {
            ObjectOp::WriteFull(data) | ObjectOp::Append(data) => !data.is_empty(),
            ObjectOp::Write { data, .. } => !data.is_empty(),
            ObjectOp::Create { .. } | ObjectOp::SetXattr(..) | ObjectOp::OmapSet(_) => true,
            _ => false,
        });
        let frees = ops.iter().any(|op| {
            matches!(
                op,
                ObjectOp::Remove
                    | ObjectOp::Truncate(_)
                    | ObjectOp::RemoveXattr(_)
                    | ObjectOp::OmapRemove(_)
            )
        });
        grows && !frees
    }

    /// Whether the step changes the object.
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            ObjectOp::Read { .. }
                | ObjectOp::Stat
                | ObjectOp::GetXattrs
                | ObjectOp::OmapGet(_)
                | ObjectOp::OmapList { .. }
                | ObjectOp::AssertVersion(_)
                | ObjectOp::CompareXattr(..)
                | ObjectOp::CompareOmap(..)
        )
    }
}

/// What a step returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpOutput {
    /// Nothing to return.
    None,
    /// Bytes read.
    Data(Payload),
    /// Size and version.
    Stat {
        /// Bytes.
        size: u64,
        /// The PG version of the object's last change.
        version: u64,
    },
    /// Xattrs.
    Xattrs(BTreeMap<String, serde_bytes::ByteBuf>),
    /// Omap entries.
    Omap(Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>),
}

/// Why an object transaction failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// The object does not exist.
    #[error("no such object")]
    NotFound,
    /// The object exists (exclusive create).
    #[error("the object already exists")]
    Exists,
    /// A guard did not hold.
    #[error("a precondition failed: {0}")]
    GuardFailed(String),
    /// No such pool.
    #[error("no such pool")]
    NoPool,
    /// Fewer than `min_size` holders are up: writes wait for more.
    #[error("only {up} of the {min_size} copies needed are up; writes are refused until more are")]
    Undersized {
        /// Holders up.
        up: usize,
        /// Holders needed.
        min_size: usize,
    },
    /// A holder's disk is full: writes of data are refused until space is freed (objects
    /// removed) or OSDs are added.
    #[error("no space left: {0} full; remove objects or add OSDs")]
    Full(String),
    /// The request is malformed (a bad name, a range too large).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The OSD's disk failed or holds corrupt data.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The pool does not support the operation (omap on an erasure-coded pool).
    #[error("not supported: {0}")]
    NotSupported(String),
}

/// A client's object transaction, sent to the PG's primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRequest {
    /// The map epoch the client computed placement with.
    pub epoch: Epoch,
    /// The object's PG.
    pub pg: PgId,
    /// The object's name.
    pub name: String,
    /// The steps.
    pub ops: Vec<ObjectOp>,
    /// Who asks and the request's number, so a resend after a primary change applies once.
    pub client: String,
    /// Grows per request of the client.
    pub sequence: u64,
}

/// A PG log entry: one change to one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The PG version it made (grows by one per change).
    pub version: u64,
    /// The map epoch of the primary that made it.
    pub epoch: Epoch,
    /// The object.
    pub name: String,
    /// Whether the change removed the object.
    pub delete: bool,
    /// The request that made it (client, sequence).
    pub reqid: Option<(String, u64)>,
}

/// A PG holder's summary of its copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgInfo {
    /// The newest version it holds.
    pub last_update: u64,
    /// The epoch of the entry at `last_update`.
    pub last_epoch: Epoch,
    /// Entries after this version are in its log; older ones were trimmed.
    pub log_tail: u64,
    /// The epoch of the newest interval whose activation this copy took part in (set by the
    /// primary when it activates, carried to replicas with the next change). A history from a
    /// newer interval beats any from an older one, however long.
    #[serde(default)]
    pub last_epoch_started: Epoch,
}

/// An object's whole state, as recovery copies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectState {
    /// The object.
    pub name: String,
    /// Its data.
    pub data: Payload,
    /// Its xattrs (the version among them).
    pub xattrs: BTreeMap<String, serde_bytes::ByteBuf>,
    /// Its omap.
    pub omap: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
}

/// Bytes of one shard of an object of an erasure pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardBytes {
    /// The object's PG version on this shard.
    pub version: u64,
    /// The shard's position in the acting set, as its metadata says.
    pub position: Option<u64>,
    /// The object's xattrs on this shard (its logical size, version and position among them).
    pub xattrs: BTreeMap<String, serde_bytes::ByteBuf>,
    /// The bytes read.
    pub data: Payload,
}

/// Requests between clients and OSDs, and between OSDs.
///
/// `T` is the store transaction a primary replicates: a type of the OSDs, which send it as a
/// typed part of the message so that its data travels as [`Payload`]s. Others see it as bytes
/// and never send it.
#[derive(Debug, Serialize, Deserialize)]
pub enum OsdRequest<T = serde_bytes::ByteBuf> {
    /// A client's object transaction.
    Object(ObjectRequest),
    /// From a primary: apply this change of a PG, the store transaction the primary applied,
    /// with its log entry.
    Replicate {
        /// The primary's epoch.
        epoch: Epoch,
        /// The PG.
        pg: PgId,
        /// The entry.
        entry: LogEntry,
        /// The transaction.
        transaction: T,
    },
    /// From a primary peering under map `epoch`: this holder's PG summary and newest entry.
    /// Answering fences the PG on the holder: from then on it takes no change, push or
    /// activation from a primary whose epoch is older than `epoch` (docs/osd.md, "Fencing").
    PgQuery {
        /// The PG.
        pg: PgId,
        /// The asker's map epoch.
        epoch: Epoch,
    },
    /// From a primary: the log entries after `after` (when still kept).
    PgLog {
        /// The PG.
        pg: PgId,
        /// Entries after this version.
        after: u64,
    },
    /// From a primary or a client: the names of the PG's objects, in order, after
    /// `start_after`.
    PgList {
        /// The PG.
        pg: PgId,
        /// Start after this name.
        start_after: Option<String>,
    },
    /// From a primary: whole objects of the PG (for recovery).
    PgRead {
        /// The PG.
        pg: PgId,
        /// The objects.
        names: Vec<String>,
    },
    /// From the primary of an erasure pool's PG: `len` bytes at `offset` of this holder's
    /// shard of object `name`.
    ShardRead {
        /// The PG.
        pg: PgId,
        /// The object.
        name: String,
        /// Where on the shard.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// From a primary: bring this holder up to date.
    PgPush {
        /// The primary's map epoch (refused when older than the holder's fence).
        epoch: Epoch,
        /// The PG.
        pg: PgId,
        /// Start over from an empty copy first (backfill).
        reset: bool,
        /// Objects to write (whole) or, with `None`, remove.
        objects: Vec<(String, Option<ObjectState>)>,
        /// Log entries to append (or the whole log, with `reset`).
        entries: Vec<LogEntry>,
        /// The summary once applied (set with the last push of a recovery).
        info: Option<PgInfo>,
    },
    /// From an OSD that holds a copy of a PG outside the PG's placement, to the PG's primary:
    /// may that stray copy go? `Ack` when the PG is active and clean without it.
    StrayCheck {
        /// The PG.
        pg: PgId,
        /// The OSD holding the stray copy.
        from: OsdId,
        /// The asker's epoch.
        epoch: Epoch,
    },
    /// Liveness between OSDs that share PGs.
    Ping {
        /// The sender.
        from: OsdId,
        /// Its epoch.
        epoch: Epoch,
    },
    /// From the primary of an erasure pool's PG, in peering: undo `entry`, this holder's
    /// newest change, which reached too few shards to stand (docs/erasure.md, "Peering").
    PgUndo {
        /// The primary's map epoch (refused when older than the holder's fence).
        epoch: Epoch,
        /// The PG.
        pg: PgId,
        /// The change.
        entry: LogEntry,
    },
    /// From a client (an operator): scrub the PG now, this OSD being its primary, and answer
    /// what the scrub found (docs/scrub.md).
    PgScrub {
        /// The PG.
        pg: PgId,
        /// Read and check every byte too.
        deep: bool,
        /// Then repair every inconsistency that has a provably good copy.
        repair: bool,
    },
    /// From a primary scrubbing the PG: this holder's scrub map of one chunk of it, the
    /// objects named after `after` up to and including `until` (`None`: from the first, to
    /// the last).
    ScrubMap {
        /// The PG.
        pg: PgId,
        /// Read and check every byte too.
        deep: bool,
        /// The chunk's objects come after this name.
        after: Option<String>,
        /// The chunk's last name.
        until: Option<String>,
    },
    /// From the primary after a scrub of the PG: keep this record of it (every holder keeps
    /// it, so the next primary knows when the PG was last scrubbed and what was found).
    ScrubRecorded {
        /// The PG.
        pg: PgId,
        /// The record.
        record: crate::scrub::ScrubRecord,
    },
    /// From a client (an operator): the record of the PG's last scrubs, this OSD being its
    /// primary.
    PgScrubRecord {
        /// The PG.
        pg: PgId,
    },
}

/// Answers of OSDs.
#[derive(Debug, Serialize, Deserialize)]
pub enum OsdResponse {
    /// The transaction's outcome: the version it made (or read) and one output per step.
    Object(Result<(u64, Vec<OpOutput>), OpError>),
    /// The request's epoch is older than this OSD's: fetch the newer map and resend.
    StaleEpoch {
        /// This OSD's epoch.
        have: Epoch,
    },
    /// This OSD is not the PG's primary in its map: recompute and resend.
    NotPrimary,
    /// Done.
    Ack,
    /// A holder's summary (`None`: it holds no copy) and its newest entry, with the read
    /// leases it granted to other OSDs that may still run (`(osd, milliseconds left)`): the
    /// asker serves no read of the PG before they have run out.
    PgInfo {
        /// The copy.
        copy: Option<(PgInfo, Option<LogEntry>)>,
        /// Leases still running, granted under maps older than the query's.
        leases: Vec<(OsdId, u64)>,
    },
    /// Log entries (`None`: trimmed past the requested version).
    PgLog(Option<Vec<LogEntry>>),
    /// Object names; `done` when the list is complete.
    PgList {
        /// Names.
        names: Vec<String>,
        /// Whether there are no more.
        done: bool,
    },
    /// Whole objects (`None` for those that do not exist).
    PgObjects(Vec<(String, Option<ObjectState>)>),
    /// Bytes of a holder's shard of an object, with the object's version and the shard's
    /// position as its metadata says (`None`: the holder has no such object).
    Shard(Option<ShardBytes>),
    /// A holder is behind the entry it was sent (it missed earlier ones): recover it first.
    Behind,
    /// The request failed on this OSD.
    Failed(String),
    /// A holder's scrub map of a PG.
    ScrubMap(crate::scrub::ScrubMap),
    /// What a scrub of a PG found.
    Scrubbed(crate::scrub::ScrubReport),
    /// The record of a PG's last scrubs.
    ScrubRecord(crate::scrub::ScrubRecord),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    /// Rule: a full OSD refuses what adds data, entries or objects and frees nothing; removals
    /// (with the garbage records an S3 delete adds beside them), reads and empty writes pass.
    #[test]
    fn what_needs_space() {
        let bytes = |n: usize| Payload::from(vec![1u8; n]);
        let entry = || vec![(ByteBuf::from(b"k".to_vec()), ByteBuf::from(b"v".to_vec()))];
        let needs = [
            vec![ObjectOp::WriteFull(bytes(10))],
            vec![ObjectOp::Append(bytes(1))],
            vec![ObjectOp::Write {
                offset: 5,
                data: bytes(3),
            }],
            vec![ObjectOp::Create { exclusive: true }],
            vec![ObjectOp::OmapSet(entry())],
            vec![
                ObjectOp::AssertVersion(3),
                ObjectOp::SetXattr("a".into(), vec![1]),
            ],
        ];
        for ops in needs {
            assert!(ObjectOp::needs_space(&ops), "{ops:?}");
        }
        let passes = [
            vec![ObjectOp::Remove],
            vec![ObjectOp::WriteFull(bytes(0))],
            vec![ObjectOp::Read { offset: 0, len: 9 }],
            vec![
                ObjectOp::OmapRemove(vec![ByteBuf::from(b"k".to_vec())]),
                ObjectOp::OmapSet(entry()),
            ],
            vec![ObjectOp::Truncate(0)],
        ];
        for ops in passes {
            assert!(!ObjectOp::needs_space(&ops), "{ops:?}");
        }
    }
}
