//! The object store under an OSD: collections (one per PG) of objects with data, xattrs and
//! omap, changed only by atomic, durable transactions. See docs/osd.md.
//!
//! [`MemStore`] keeps everything in memory (unit tests, simulation); [`RocksStore`] is the real
//! one: metadata in RocksDB, large data in blob files written once. Both pass the same suite
//! (`osd/tests/store.rs`).

mod block;
mod mem;
mod rocks;

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tidepool_proto::Payload;

pub use mem::MemStore;
pub use rocks::RocksStore;

/// A collection: the objects of one PG (and one shard of it, in erasure-coded pools).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CollectionId {
    /// The pool.
    pub pool: u32,
    /// The PG's index in the pool.
    pub seed: u32,
    /// The shard ([`CollectionId::NO_SHARD`] in replicated pools).
    pub shard: u8,
}

impl CollectionId {
    /// The shard of collections in replicated pools.
    pub const NO_SHARD: u8 = u8::MAX;

    /// The collection of a PG of a replicated pool.
    pub fn replicated(pool: u32, seed: u32) -> CollectionId {
        CollectionId {
            pool,
            seed,
            shard: Self::NO_SHARD,
        }
    }
}

impl std::fmt::Display for CollectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:x}", self.pool, self.seed)?;
        if self.shard != Self::NO_SHARD {
            write!(f, "s{}", self.shard)?;
        }
        Ok(())
    }
}

/// One change in a [`Transaction`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Creates an empty collection.
    CreateCollection(CollectionId),
    /// Removes a collection and every object in it.
    RemoveCollection(CollectionId),
    /// Creates an empty object; with `exclusive`, fails if it exists.
    Create {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
        /// Fail if it exists.
        exclusive: bool,
    },
    /// Writes `data` at `offset` (creating the object; the gap before it reads as zeros).
    Write {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Payload,
        /// Their checksums, when the sender computed them ([`Transaction::add_checksums`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sums: Option<Checksums>,
    },
    /// Replaces the object's data with `data` (creating the object).
    WriteFull {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
        /// The bytes.
        data: Payload,
        /// Their checksums, when the sender computed them ([`Transaction::add_checksums`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sums: Option<Checksums>,
    },
    /// Cuts or extends (with zeros) the object to `size`.
    Truncate {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
        /// The new size.
        size: u64,
    },
    /// Removes the object, its xattrs and its omap.
    Remove {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
    },
    /// Sets an xattr (creating the object).
    SetXattr {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
        /// The attribute.
        key: String,
        /// Its value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes an xattr (nothing when absent).
    RemoveXattr {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
        /// The attribute.
        key: String,
    },
    /// Sets omap entries (creating the object).
    OmapSet {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
        /// Keys and values.
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Removes omap entries (absent keys are skipped).
    OmapRemove {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// Removes every omap entry of the object.
    OmapClear {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
    },
}

impl Op {
    /// The collection the op works in.
    pub fn collection(&self) -> CollectionId {
        match self {
            Op::CreateCollection(coll) | Op::RemoveCollection(coll) => *coll,
            Op::Create { coll, .. }
            | Op::Write { coll, .. }
            | Op::WriteFull { coll, .. }
            | Op::Truncate { coll, .. }
            | Op::Remove { coll, .. }
            | Op::SetXattr { coll, .. }
            | Op::RemoveXattr { coll, .. }
            | Op::OmapSet { coll, .. }
            | Op::OmapRemove { coll, .. }
            | Op::OmapClear { coll, .. } => *coll,
        }
    }
}

/// The unit of the crc32c checksums.
pub const CHECKSUM_BLOCK: usize = 4096;
/// Writes of at least this many bytes go to a blob file; smaller ones stay in RocksDB. Their
/// checksums are computed by the primary ([`Transaction::add_checksums`]).
pub const BLOB_MIN_BYTES: usize = 64 * 1024;

/// The checksums a store keeps of written bytes: a crc32c per [`CHECKSUM_BLOCK`] and a blake3
/// hash of the whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    /// crc32c of each block (the last may be short).
    pub crcs: Vec<u32>,
    /// blake3 of all the bytes.
    #[serde(with = "serde_bytes")]
    pub hash: Vec<u8>,
}

impl Checksums {
    /// The checksums of `bytes`.
    pub fn of(bytes: &[u8]) -> Checksums {
        Checksums {
            crcs: bytes.chunks(CHECKSUM_BLOCK).map(crc32c).collect(),
            hash: blake3::hash(bytes).as_bytes().to_vec(),
        }
    }

    /// Whether these can be checksums of `len` bytes (a peer's claim is checked this far).
    pub fn fits(&self, len: usize) -> bool {
        self.crcs.len() == len.div_ceil(CHECKSUM_BLOCK) && self.hash.len() == blake3::OUT_LEN
    }
}

/// The crc32c (Castagnoli) of `block`, by the faster library on this CPU: crc-fast's 512-bit
/// carry-less folding where the CPU has AVX-512 (26 GiB/s on 4 KiB blocks against 16 for the
/// `crc32c` crate), else the `crc32c` crate's three interleaved SSE4.2 `crc32` streams (5.7-6.2
/// against 2.6-3.3 GB/s for crc-fast on blocks not yet in cache, without AVX-512). Every block
/// of every read is checked (docs/BENCHMARKS.md).
pub fn crc32c(block: &[u8]) -> u32 {
    static WIDE: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(tidepool_proto::cpu::avx512_vector_crypto);
    if *WIDE {
        // A CRC-32 fits in the low 32 bits.
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, block) as u32
    } else {
        crc32c::crc32c(block)
    }
}

/// Changes applied together: all of them or none, durable when [`ObjectStore::apply`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The changes, in order.
    pub ops: Vec<Op>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Transaction {
        Transaction::default()
    }

    /// Adds `op`.
    pub fn push(&mut self, op: Op) -> &mut Transaction {
        self.ops.push(op);
        self
    }

    /// Computes the checksums of large writes, so that the replicas this transaction is sent
    /// to store them instead of computing them again (a sixth of all CPU under 4 MiB writes
    /// went to each holder hashing the same bytes). They receive the bytes under QUIC's
    /// authenticated encryption, so the bytes they store are the bytes that were summed.
    pub fn add_checksums(&mut self) {
        for op in &mut self.ops {
            if let Op::Write { data, sums, .. } | Op::WriteFull { data, sums, .. } = op {
                if sums.is_none() && data.len() >= BLOB_MIN_BYTES {
                    *sums = Some(Checksums::of(data));
                }
            }
        }
    }

    /// The data bytes the transaction writes.
    pub fn written_bytes(&self) -> u64 {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Write { data, .. } | Op::WriteFull { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Whether submitting it does more than read RocksDB's caches: it has large data to write
    /// or a whole collection to remove. Async code submits such transactions off its threads.
    pub fn is_heavy(&self) -> bool {
        self.ops.iter().any(|op| match op {
            Op::Write { data, .. } | Op::WriteFull { data, .. } => data.len() >= BLOB_MIN_BYTES,
            Op::RemoveCollection(_) => true,
            _ => false,
        })
    }

    /// The collections the transaction touches, sorted, without repeats.
    pub fn collections(&self) -> Vec<CollectionId> {
        let mut colls: Vec<CollectionId> = self.ops.iter().map(Op::collection).collect();
        colls.sort_unstable();
        colls.dedup();
        colls
    }
}

/// An omap key and its value.
pub type OmapEntry = (Vec<u8>, Vec<u8>);

/// An object's size and attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectStat {
    /// Bytes of data.
    pub size: u64,
}

/// Disk usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Capacity of the disk the store is on.
    pub total_bytes: u64,
    /// Bytes free on it.
    pub available_bytes: u64,
    /// Bytes of object data stored.
    pub stored_bytes: u64,
}

/// What one collection holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectionUsage {
    /// Objects in it.
    pub objects: u64,
    /// Their bytes of data.
    pub bytes: u64,
}

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such collection.
    #[error("collection {0} does not exist")]
    NoCollection(CollectionId),
    /// The collection exists.
    #[error("collection {0} already exists")]
    CollectionExists(CollectionId),
    /// No such object.
    #[error("object {name:?} does not exist in {coll}")]
    NotFound {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
    },
    /// The object exists (exclusive create).
    #[error("object {name:?} already exists in {coll}")]
    Exists {
        /// Where.
        coll: CollectionId,
        /// The object.
        name: String,
    },
    /// The operation asks for something no object may hold.
    #[error("invalid operation: {0}")]
    Invalid(String),
    /// Stored bytes fail their checksum.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The disk failed (a write, a sync, a full disk); the store refuses everything from now on.
    #[error("the store failed and stopped: {0}")]
    Failed(String),
}

/// Objects in collections, changed by atomic, durable transactions.
pub trait ObjectStore: Send + Sync + 'static {
    /// Starts `tx`: checks it (one that cannot apply fails here and changes nothing), writes
    /// its large data and queues the rest; the [`Commit`] resolves once all of it is durable.
    /// Until then, other transactions on its collections and reads of them wait; transactions
    /// on other collections go on, and share their sync with it.
    fn submit(&self, tx: &Transaction) -> Result<Commit, StoreError>;

    /// Applies `tx`: all of it or nothing; durable when this returns `Ok`. Not for async code,
    /// which awaits [`ObjectStore::submit`]'s [`Commit`] instead.
    fn apply(&self, tx: &Transaction) -> Result<(), StoreError> {
        self.submit(tx)?.wait()
    }

    /// `len` bytes from `offset` (fewer at the end of the object; `u64::MAX` for the rest).
    fn read(
        &self,
        coll: CollectionId,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, StoreError>;

    /// The whole object for a copy to another OSD (recovery, backfill): besides the crc32c
    /// of every block that each read checks, every whole chunk is checked against its blake3
    /// hash, so a copy carries exactly the bytes first written.
    fn read_copy(&self, coll: CollectionId, name: &str) -> Result<Bytes, StoreError> {
        self.read(coll, name, 0, u64::MAX)
    }

    /// The object's size.
    fn stat(&self, coll: CollectionId, name: &str) -> Result<ObjectStat, StoreError>;

    /// Every xattr of the object.
    fn xattrs(
        &self,
        coll: CollectionId,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, StoreError>;

    /// The values of `keys` that exist.
    fn omap_get(
        &self,
        coll: CollectionId,
        name: &str,
        keys: &[Vec<u8>],
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError>;

    /// Up to `limit` omap entries in key order, after `start_after` when given.
    fn omap_list(
        &self,
        coll: CollectionId,
        name: &str,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<OmapEntry>, StoreError>;

    /// Up to `limit` object names of the collection in order, after `start_after` when given.
    fn list(
        &self,
        coll: CollectionId,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Every collection.
    fn collections(&self) -> Result<Vec<CollectionId>, StoreError>;

    /// Disk usage.
    fn usage(&self) -> Result<StoreUsage, StoreError>;

    /// The objects of a collection and their bytes, known without listing them.
    fn collection_usage(&self, coll: CollectionId) -> Result<CollectionUsage, StoreError>;
}

/// A submitted transaction on its way to disk (see [`ObjectStore::submit`]): await it in async
/// code, or [`Commit::wait`] for it elsewhere.
#[must_use = "a transaction is durable only once its commit resolves"]
#[derive(Debug)]
pub struct Commit(CommitState);

#[derive(Debug)]
enum CommitState {
    Done(std::future::Ready<Result<(), StoreError>>),
    Queued(tokio::sync::oneshot::Receiver<Result<(), StoreError>>),
}

impl Commit {
    /// A commit already decided.
    pub fn done(result: Result<(), StoreError>) -> Commit {
        Commit(CommitState::Done(std::future::ready(result)))
    }

    /// A commit that `sender` will decide.
    fn queued() -> (tokio::sync::oneshot::Sender<Result<(), StoreError>>, Commit) {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (sender, Commit(CommitState::Queued(receiver)))
    }

    /// Blocks until the transaction is durable (or failed). Not on an async runtime's thread.
    pub fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            CommitState::Done(ready) => ready.into_inner(),
            CommitState::Queued(receiver) => receiver.blocking_recv().unwrap_or_else(stopped),
        }
    }
}

/// The answer for a commit whose store stopped before deciding it.
fn stopped(_: tokio::sync::oneshot::error::RecvError) -> Result<(), StoreError> {
    Err(StoreError::Failed(
        "the store stopped before the commit".into(),
    ))
}

impl std::future::Future for Commit {
    type Output = Result<(), StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            CommitState::Done(ready) => std::pin::Pin::new(ready).poll(cx),
            CommitState::Queued(receiver) => std::pin::Pin::new(receiver)
                .poll(cx)
                .map(|answer| answer.unwrap_or_else(stopped)),
        }
    }
}

/// The largest object, as Ceph's `osd_max_object_size`: bigger data is striped over objects.
pub const OBJECT_BYTES_MAX: u64 = 128 << 20;

/// Checks that `op` keeps its object within [`OBJECT_BYTES_MAX`].
fn check_size(op: &Op) -> Result<(), StoreError> {
    let end = match op {
        Op::Write { offset, data, .. } => offset.checked_add(data.len() as u64),
        Op::WriteFull { data, .. } => Some(data.len() as u64),
        Op::Truncate { size, .. } => Some(*size),
        _ => Some(0),
    };
    match end {
        Some(end) if end <= OBJECT_BYTES_MAX => Ok(()),
        _ => Err(StoreError::Invalid(format!(
            "objects hold at most {OBJECT_BYTES_MAX} bytes"
        ))),
    }
}

/// The end of a read of `len` bytes from `offset` in an object of `size` bytes.
fn read_end(size: u64, offset: u64, len: u64) -> u64 {
    offset.saturating_add(len).min(size).max(offset.min(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        // The check values of CRC-32/ISCSI, and blocks past the vector kernels' thresholds.
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        let block: Vec<u8> = (0..CHECKSUM_BLOCK).map(|i| (i * 7 % 251) as u8).collect();
        let bitwise = block.iter().fold(!0u32, |mut crc, byte| {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
            crc
        });
        assert_eq!(crc32c(&block), !bitwise);
    }

    /// Rule: both libraries give the same sums, so a disk written on one CPU reads on another.
    #[test]
    fn both_crc32c_libraries_agree() {
        let data: Vec<u8> = (0..3 * CHECKSUM_BLOCK + 5)
            .map(|i| (i * 13 % 256) as u8)
            .collect();
        for len in [0, 1, 15, 64, 255, 4095, CHECKSUM_BLOCK, data.len()] {
            let fast = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &data[..len]) as u32;
            assert_eq!(fast, ::crc32c::crc32c(&data[..len]), "{len} bytes");
        }
    }
}
