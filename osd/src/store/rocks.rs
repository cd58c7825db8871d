//! [`RocksStore`]: metadata, omap and small data in RocksDB; large data in blobs in the block
//! file, written once into free space and synced before the metadata that points at them
//! commits. See docs/osd.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tidepool_kv::{Kv, Op as KvOp};
use tidepool_proto::buffers;

use super::block::BlockFile;
use super::{
    crc32c, read_end, Checksums, CollectionId, CollectionUsage, Commit, ObjectStat, ObjectStore,
    OmapEntry, Op, StoreError, StoreUsage, Transaction, BLOB_MIN_BYTES, CHECKSUM_BLOCK,
};

/// The unit of the crc32c checksums.
const BLOCK: u64 = CHECKSUM_BLOCK as u64;

/// Blob data at a block-aligned address, followed by zeros to a whole block, as direct IO
/// needs it. Data that arrives aligned and in whole blocks (a received payload, joined at a
/// block by `tidepool_proto::Payload`) is used where it is; other data is copied once.
#[derive(Debug)]
struct AlignedBlob {
    /// Whole blocks from an aligned address.
    padded: Bytes,
}

impl AlignedBlob {
    fn new(data: &Bytes) -> AlignedBlob {
        let block = BLOCK as usize;
        if (data.as_ptr() as usize).is_multiple_of(block) && data.len().is_multiple_of(block) {
            return AlignedBlob {
                padded: data.clone(),
            };
        }
        let padded = data.len().div_ceil(block) * block;
        let mut storage = Vec::with_capacity(padded + block);
        let start = (block - storage.as_ptr() as usize % block) % block;
        // Only the bytes around the data are zeroed; the data is copied once.
        storage.resize(start, 0);
        storage.extend_from_slice(data);
        storage.resize(start + padded, 0);
        AlignedBlob {
            padded: Bytes::from(storage).slice(start..),
        }
    }

    /// The data and its padding: whole blocks from an aligned address.
    fn padded(&self) -> &[u8] {
        &self.padded
    }
}
/// Lock stripes: transactions on different collections plan and commit concurrently. Many
/// stripes, because a transaction holds its stripes until its group commit is on disk and
/// another on the same stripe waits for that.
const STRIPES: usize = 1024;

/// The most transactions one group commit takes.
const GROUP_MAX: usize = 256;

/// How a read of blob data is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Against the crc32c of every 4 KiB block read, as every read is.
    Blocks,
    /// A whole blob against its blake3 hash (other reads by block): for copies to other OSDs.
    Hash,
}

/// The memory the onode cache may use.
const ONODE_CACHE_BYTES: usize = 32 << 20;

/// An object: its collection and name.
type ObjectKey = (CollectionId, String);

/// Recently used onodes, decoded: every write of a PG loads its log object's onode, and an
/// object written or read is often soon touched again. Two generations approximate LRU order:
/// a hit moves an onode into the young generation; when that outgrows half the budget it
/// becomes the old one, and the old one is dropped.
///
/// The cache holds committed onodes only. Whoever loads or changes an object holds its
/// stripe's lock, and the commit thread updates the cache before releasing the locks of the
/// transactions it committed.
#[derive(Debug, Default)]
struct OnodeCache {
    young: HashMap<ObjectKey, Arc<Onode>>,
    old: HashMap<ObjectKey, Arc<Onode>>,
    young_bytes: usize,
}

impl OnodeCache {
    fn get(&mut self, key: &ObjectKey) -> Option<Arc<Onode>> {
        if let Some(onode) = self.young.get(key) {
            return Some(onode.clone());
        }
        let (key, onode) = self.old.remove_entry(key)?;
        self.put(key, onode.clone());
        Some(onode)
    }

    /// The memory an entry takes.
    fn size(key: &ObjectKey, onode: &Onode) -> usize {
        key.1.len() + onode.footprint()
    }

    fn put(&mut self, key: ObjectKey, onode: Arc<Onode>) {
        self.remove(&key);
        self.young_bytes += Self::size(&key, &onode);
        self.young.insert(key, onode);
        if self.young_bytes > ONODE_CACHE_BYTES / 2 {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
    }

    fn remove(&mut self, key: &ObjectKey) {
        if let Some(previous) = self.young.remove(key) {
            self.young_bytes -= Self::size(key, &previous);
        }
        self.old.remove(key);
    }

    fn remove_collection(&mut self, coll: CollectionId) {
        self.young.retain(|key, _| key.0 != coll);
        self.old.retain(|key, _| key.0 != coll);
        self.young_bytes = self.young.iter().map(|(k, o)| Self::size(k, o)).sum();
    }
}

/// Where an extent's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Place {
    /// In the onode, with a crc32c per block and a blake3 hash.
    Inline {
        bytes: ByteBuf,
        crcs: Vec<u32>,
        hash: ByteBuf,
    },
    /// In blob `id`, from byte `at`.
    Blob { id: u64, at: u64 },
}

/// A range of the object held in one place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Extent {
    offset: u64,
    len: u64,
    place: Place,
}

impl Extent {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// A blob: where its bytes are in the block file, how many, and their checksums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct BlobMeta {
    /// Its first byte's place in the block file (block-aligned).
    offset: u64,
    len: u64,
    crcs: Vec<u32>,
    hash: ByteBuf,
}

impl BlobMeta {
    /// The space it takes in the block file: `(start, len)` in whole blocks.
    fn space(&self) -> (u64, u64) {
        (self.offset, self.len.div_ceil(BLOCK) * BLOCK)
    }
}

/// An object's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Onode {
    size: u64,
    xattrs: BTreeMap<String, ByteBuf>,
    /// Sorted by offset, never overlapping, all below `size` (gaps read as zeros).
    extents: Vec<Extent>,
    /// The blobs the extents use.
    blobs: BTreeMap<u64, BlobMeta>,
    /// Whether the object may have omap entries: set by its first omap write. Removing or
    /// clearing an object without them deletes no key range, as a range deletion costs every
    /// later read until RocksDB flushes it (7.8 fragments the memtable's range tombstones
    /// again on each read). Onodes stored before the flag existed read as having entries.
    #[serde(default = "may_have_omap")]
    omap: bool,
}

fn may_have_omap() -> bool {
    true
}

/// The checksums the sender computed when they fit the bytes, else computed here.
fn checksums(bytes: &[u8], sent: Option<&Checksums>) -> Checksums {
    match sent {
        Some(sums) if sums.fits(bytes.len()) => sums.clone(),
        _ => Checksums::of(bytes),
    }
}

fn inline(bytes: Vec<u8>, sent: Option<&Checksums>) -> Place {
    let sums = checksums(&bytes, sent);
    Place::Inline {
        crcs: sums.crcs,
        hash: ByteBuf::from(sums.hash),
        bytes: ByteBuf::from(bytes),
    }
}

impl Onode {
    /// About how many bytes of memory it takes.
    fn footprint(&self) -> usize {
        let extents: usize = self
            .extents
            .iter()
            .map(|e| match &e.place {
                Place::Inline { bytes, crcs, .. } => 96 + bytes.len() + 4 * crcs.len(),
                Place::Blob { .. } => 48,
            })
            .sum();
        let blobs: usize = self.blobs.values().map(|b| 96 + 4 * b.crcs.len()).sum();
        let xattrs: usize = self
            .xattrs
            .iter()
            .map(|(k, v)| 64 + k.len() + v.len())
            .sum();
        64 + extents + blobs + xattrs
    }

    /// Drops the bytes in `[start, end)`, keeping what is on either side.
    fn punch(&mut self, start: u64, end: u64) {
        let mut kept = Vec::with_capacity(self.extents.len() + 1);
        for extent in self.extents.drain(..) {
            if extent.end() <= start || extent.offset >= end {
                kept.push(extent);
                continue;
            }
            if extent.offset < start {
                kept.push(slice(&extent, extent.offset, start));
            }
            if extent.end() > end {
                kept.push(slice(&extent, end, extent.end()));
            }
        }
        self.extents = kept;
    }

    /// Puts `place` (holding `len` bytes) at `offset`.
    fn insert(&mut self, offset: u64, len: u64, place: Place) {
        self.punch(offset, offset + len);
        let at = self.extents.partition_point(|e| e.offset < offset);
        self.extents.insert(at, Extent { offset, len, place });
        self.size = self.size.max(offset + len);
    }

    fn truncate(&mut self, size: u64) {
        self.punch(size, u64::MAX);
        self.size = size;
    }

    /// Forgets blobs no extent uses; returns them.
    fn unused_blobs(&mut self) -> Vec<(u64, BlobMeta)> {
        let used: BTreeSet<u64> = self
            .extents
            .iter()
            .filter_map(|e| match e.place {
                Place::Blob { id, .. } => Some(id),
                Place::Inline { .. } => None,
            })
            .collect();
        let (kept, unused) = std::mem::take(&mut self.blobs)
            .into_iter()
            .partition(|(id, _)| used.contains(id));
        self.blobs = kept;
        unused.into_iter().collect()
    }
}

/// The part `[start, end)` of `extent` (which covers it).
fn slice(extent: &Extent, start: u64, end: u64) -> Extent {
    let skip = start - extent.offset;
    let place = match &extent.place {
        Place::Inline { bytes, .. } => inline(
            bytes[skip as usize..(end - extent.offset) as usize].to_vec(),
            None,
        ),
        Place::Blob { id, at } => Place::Blob {
            id: *id,
            at: at + skip,
        },
    };
    Extent {
        offset: start,
        len: end - start,
        place,
    }
}

fn coll_bytes(coll: CollectionId) -> [u8; 9] {
    let mut out = [0; 9];
    out[..4].copy_from_slice(&coll.pool.to_be_bytes());
    out[4..8].copy_from_slice(&coll.seed.to_be_bytes());
    out[8] = coll.shard;
    out
}

fn coll_key(coll: CollectionId) -> Vec<u8> {
    let mut key = vec![b'C'];
    key.extend_from_slice(&coll_bytes(coll));
    key
}

fn onode_prefix(coll: CollectionId) -> Vec<u8> {
    let mut key = vec![b'O'];
    key.extend_from_slice(&coll_bytes(coll));
    key
}

fn onode_key(coll: CollectionId, name: &str) -> Vec<u8> {
    let mut key = onode_prefix(coll);
    key.extend_from_slice(name.as_bytes());
    key
}

fn omap_coll_prefix(coll: CollectionId) -> Vec<u8> {
    let mut key = vec![b'M'];
    key.extend_from_slice(&coll_bytes(coll));
    key
}

fn omap_prefix(coll: CollectionId, name: &str) -> Vec<u8> {
    let mut key = omap_coll_prefix(coll);
    key.extend_from_slice(&(name.len() as u32).to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

fn decode_coll(bytes: &[u8]) -> Option<CollectionId> {
    let bytes: &[u8; 9] = bytes.try_into().ok()?;
    Some(CollectionId {
        pool: u32::from_be_bytes(bytes[..4].try_into().ok()?),
        seed: u32::from_be_bytes(bytes[4..8].try_into().ok()?),
        shard: bytes[8],
    })
}

fn kv_failed(error: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(error.to_string())
}

/// The object store on a disk: RocksDB in `<dir>/db`, blob data in the block file
/// `<dir>/block`.
///
/// A transaction is planned and its large data written (into free space of the block file) by
/// the thread that submits it, under the write locks of its collections' stripes; its metadata
/// then joins a queue. One commit thread takes everything queued, syncs the block file once
/// for all of it, and commits its metadata in one synced RocksDB batch (a group commit:
/// concurrent transactions share the syncs), then releases each transaction's locks and tells
/// its submitter. See docs/osd.md.
#[derive(Debug)]
pub struct RocksStore {
    shared: Arc<Shared>,
    dir: PathBuf,
    next_blob: AtomicU64,
    stripes: Vec<Arc<StripeLock>>,
    /// The commit thread's queue (`None` once dropped, which ends the thread).
    commits: Option<mpsc::Sender<Pending>>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// Its size, when it has one (as BlueStore on a file of fixed size); else the disk's.
    capacity: Option<u64>,
}

type StripeLock = parking_lot::RwLock<()>;

/// What the submitters and the commit thread share.
#[derive(Debug)]
struct Shared {
    kv: Kv,
    block: BlockFile,
    /// The collections that exist and what each holds, kept in memory as transactions
    /// commit: a collection's existence is checked by every operation.
    collections: Mutex<HashMap<CollectionId, CollectionUsage>>,
    onodes: Mutex<OnodeCache>,
    failed: Mutex<Option<String>>,
    /// Its metrics, once the OSD registered them.
    metrics: std::sync::OnceLock<StoreMetrics>,
}

/// The store's Prometheus metrics: group commits and the space of its two files.
#[derive(Debug)]
struct StoreMetrics {
    commit_seconds: tidepool_metrics::Histogram,
    group_transactions: tidepool_metrics::Histogram,
    /// `block_size`, `block_free` and `rocksdb` bytes, as of the last group commit.
    bytes: tidepool_metrics::IntGaugeVec,
}

/// A planned transaction waiting for its group commit.
struct Pending {
    batch: Vec<KvOp>,
    plan: Plan,
    /// Whether it wrote blob data, which the block file's sync makes durable.
    wrote_blobs: bool,
    /// The write locks of its stripes, released once it is on disk.
    locks: Vec<parking_lot::ArcRwLockWriteGuard<parking_lot::RawRwLock, ()>>,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        // Closing the queue ends the commit thread once it has committed what was queued.
        self.commits = None;
        if let Some(thread) = self.committer.take() {
            let _ = thread.join();
        }
    }
}

/// What a transaction changes, gathered before anything is written.
#[derive(Default)]
struct Plan {
    /// Final state of each touched object (`None`: removed).
    onodes: BTreeMap<ObjectKey, Option<Onode>>,
    /// Whether each touched collection exists at the end.
    collections: BTreeMap<CollectionId, bool>,
    /// Collections removed by this transaction.
    removed: BTreeSet<CollectionId>,
    /// RocksDB operations other than onodes, in transaction order.
    kv: Vec<KvOp>,
    /// Blobs to write before the commit.
    new_blobs: BTreeMap<u64, AlignedBlob>,
    /// Space of committed blobs, free once the commit is on disk: `(start, len)`.
    freed: Vec<(u64, u64)>,
    /// Each touched object that existed before the transaction, as it was.
    before: BTreeMap<ObjectKey, Arc<Onode>>,
}

impl RocksStore {
    /// Opens (or creates) the store in `dir`. The block file's free space is everything no
    /// object uses (so space written by a transaction a crash cut short is free again).
    pub fn open(dir: &Path) -> Result<RocksStore, StoreError> {
        if dir.join("blobs").exists() {
            return Err(StoreError::Failed(format!(
                "{} holds a store of an earlier layout (a blob file per blob); \
                 this version keeps blob data in one block file: start from an empty folder",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(kv_failed)?;
        let kv = Kv::open(&dir.join("db")).map_err(kv_failed)?;
        let mut highest = 0;
        let mut used = Vec::new();
        let mut usage: HashMap<CollectionId, CollectionUsage> = HashMap::new();
        for (key, _) in kv.scan_prefix(b"C").map_err(kv_failed)? {
            if let Some(coll) = decode_coll(&key[1..]) {
                usage.insert(coll, CollectionUsage::default());
            }
        }
        for (key, bytes) in kv.scan_prefix(b"O").map_err(kv_failed)? {
            let onode: Onode = decode_onode(&key, &bytes)?;
            if let Some(counted) = key
                .get(1..10)
                .and_then(decode_coll)
                .and_then(|coll| usage.get_mut(&coll))
            {
                counted.objects += 1;
                counted.bytes += onode.size;
            }
            for (id, blob) in &onode.blobs {
                highest = highest.max(*id);
                used.push(blob.space());
            }
        }
        let block = BlockFile::open(&dir.join("block"), used).map_err(kv_failed)?;
        let shared = Arc::new(Shared {
            kv,
            block,
            collections: Mutex::new(usage),
            onodes: Mutex::default(),
            failed: Mutex::new(None),
            metrics: std::sync::OnceLock::new(),
        });
        let (commits, queue) = mpsc::channel();
        let committer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store-commit".into())
                .spawn(move || shared.commit_loop(&queue))
                .map_err(kv_failed)?
        };
        Ok(RocksStore {
            shared,
            dir: dir.to_owned(),
            next_blob: AtomicU64::new(highest + 1),
            stripes: (0..STRIPES).map(|_| Arc::default()).collect(),
            commits: Some(commits),
            committer: Some(committer),
            capacity: None,
        })
    }

    /// Gives the store a size: its usage counts its block file's data and its RocksDB files
    /// against it, rather than the free space of the whole disk.
    pub fn with_capacity(mut self, bytes: Option<u64>) -> RocksStore {
        self.capacity = bytes;
        self
    }

    /// Counts its group commits (latency and transactions per group) and the space of its
    /// files in `registry` (`tidepool_osd_store_…`).
    pub fn with_metrics(
        self,
        registry: &tidepool_metrics::Registry,
    ) -> Result<RocksStore, tidepool_metrics::MetricsError> {
        use tidepool_metrics as metrics;
        let group_buckets: Vec<f64> = (0..=GROUP_MAX.ilog2())
            .map(|i| f64::from(1u32 << i))
            .collect();
        let group_transactions = metrics::register(
            registry,
            metrics::Histogram::with_opts(
                metrics::HistogramOpts::new(
                    "tidepool_osd_store_group_transactions",
                    "Transactions committed together by one group commit (one data sync, one batch)",
                )
                .buckets(group_buckets),
            ),
        )?;
        let _ = self.shared.metrics.set(StoreMetrics {
            commit_seconds: metrics::latency(
                registry,
                "tidepool_osd_store_commit_seconds",
                "Time of one group commit: the block file's sync and the metadata batch",
            )?,
            group_transactions,
            bytes: metrics::gauges(
                registry,
                "tidepool_osd_store_file_bytes",
                "The store's files: the block file's size and free bytes, RocksDB's files",
                &["kind"],
            )?,
        });
        Ok(self)
    }

    /// The block file's size and how many of its bytes are free.
    pub fn block_space(&self) -> (u64, u64) {
        self.shared.block.space()
    }

    /// Bytes of RocksDB's files (the metadata).
    fn metadata_bytes(&self) -> Result<u64, StoreError> {
        Ok(std::fs::read_dir(self.dir.join("db"))
            .map_err(kv_failed)?
            .flatten()
            .filter_map(|entry| entry.metadata().ok())
            .map(|m| m.len())
            .sum())
    }

    fn stripe(coll: CollectionId) -> usize {
        let mixed = u64::from(coll.pool)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(u64::from(coll.seed))
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            .wrapping_add(u64::from(coll.shard));
        (mixed % STRIPES as u64) as usize
    }
}

impl Shared {
    fn check(&self) -> Result<(), StoreError> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(reason) => Err(StoreError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Stops the store for good: nothing is written or read after a failed write.
    fn fail(&self, reason: String) -> StoreError {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get_or_insert(reason.clone());
        StoreError::Failed(reason)
    }

    fn lock_collections(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<CollectionId, CollectionUsage>> {
        self.collections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a committed plan's changes into the collections' usage.
    fn count(&self, plan: &Plan) {
        let mut usage = self.lock_collections();
        for coll in &plan.removed {
            usage.remove(coll);
        }
        for (coll, exists) in &plan.collections {
            if *exists {
                usage.entry(*coll).or_default();
            } else {
                usage.remove(coll);
            }
        }
        for (key, onode) in &plan.onodes {
            let Some(counted) = usage.get_mut(&key.0) else {
                continue;
            };
            // Objects of a collection removed by this transaction went with it.
            let before = plan
                .before
                .get(key)
                .filter(|_| !plan.removed.contains(&key.0));
            if let Some(onode) = before {
                counted.objects = counted.objects.saturating_sub(1);
                counted.bytes = counted.bytes.saturating_sub(onode.size);
            }
            if let Some(onode) = onode {
                counted.objects += 1;
                counted.bytes += onode.size;
            }
        }
    }

    fn lock_onodes(&self) -> std::sync::MutexGuard<'_, OnodeCache> {
        self.onodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a committed plan's onodes in the cache.
    fn cache(&self, plan: Plan) {
        let mut cache = self.lock_onodes();
        for coll in &plan.removed {
            cache.remove_collection(*coll);
        }
        for (key, onode) in plan.onodes {
            match onode {
                Some(onode) => cache.put(key, Arc::new(onode)),
                None => cache.remove(&key),
            }
        }
    }

    /// Whether `coll` exists (committed), from the table kept in memory.
    fn has_collection(&self, coll: CollectionId) -> bool {
        self.lock_collections().contains_key(&coll)
    }

    /// The commit thread: syncs the blob data of every transaction queued, then commits their
    /// metadata in one synced batch, then tells their submitters, until the queue closes.
    fn commit_loop(&self, queue: &mpsc::Receiver<Pending>) {
        while let Ok(first) = queue.recv() {
            let start = std::time::Instant::now();
            let mut group = vec![first];
            group.extend(queue.try_iter().take(GROUP_MAX - 1));
            let group_size = group.len();
            let mut batch = Vec::new();
            for pending in &mut group {
                batch.append(&mut pending.batch);
            }
            let result = self
                .check()
                .and_then(|()| {
                    if !group.iter().any(|pending| pending.wrote_blobs) {
                        return Ok(());
                    }
                    self.block
                        .sync()
                        .map_err(|error| self.fail(format!("syncing object data: {error}")))
                })
                .and_then(|()| {
                    self.kv
                        .write(&batch)
                        .map_err(|error| self.fail(format!("committing metadata: {error}")))
                });
            for pending in group {
                if result.is_ok() {
                    // Nothing on disk references this space any more, and no reader is in
                    // it: readers of these objects wait for the locks released below.
                    self.block.release(pending.plan.freed.iter().copied());
                    self.count(&pending.plan);
                    self.cache(pending.plan);
                }
                drop(pending.locks);
                let _ = pending.done.send(result.clone());
            }
            if let Some(metrics) = self.metrics.get() {
                metrics
                    .commit_seconds
                    .observe(start.elapsed().as_secs_f64());
                metrics.group_transactions.observe(group_size as f64);
                let (size, free) = self.block.space();
                let as_gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                metrics
                    .bytes
                    .with_label_values(&["block_size"])
                    .set(as_gauge(size));
                metrics
                    .bytes
                    .with_label_values(&["block_free"])
                    .set(as_gauge(free));
            }
        }
    }
}

impl RocksStore {
    fn collection_exists(&self, plan: &Plan, coll: CollectionId) -> Result<bool, StoreError> {
        if let Some(exists) = plan.collections.get(&coll) {
            return Ok(*exists);
        }
        Ok(self.shared.has_collection(coll))
    }

    /// The committed onode of an object, from the cache or else from RocksDB (then cached).
    /// The caller holds the object's stripe lock.
    fn load(&self, coll: CollectionId, name: &str) -> Result<Option<Arc<Onode>>, StoreError> {
        let key = (coll, name.to_owned());
        if let Some(onode) = self.shared.lock_onodes().get(&key) {
            return Ok(Some(onode));
        }
        let stored = onode_key(coll, name);
        let Some(bytes) = self.shared.kv.get(&stored).map_err(kv_failed)? else {
            return Ok(None);
        };
        let onode = Arc::new(decode_onode(&stored, &bytes)?);
        self.shared.lock_onodes().put(key, onode.clone());
        Ok(Some(onode))
    }

    /// The working onode of an object in `plan` (loaded on first use).
    fn working<'p>(
        &self,
        plan: &'p mut Plan,
        coll: CollectionId,
        name: &str,
    ) -> Result<&'p mut Option<Onode>, StoreError> {
        let key = (coll, name.to_owned());
        if !plan.onodes.contains_key(&key) {
            // A collection removed earlier in this transaction still has its objects on disk.
            let loaded = if plan.removed.contains(&coll) {
                None
            } else {
                self.load(coll, name)?
            };
            if let Some(onode) = &loaded {
                plan.before.insert(key.clone(), onode.clone());
            }
            plan.onodes
                .insert(key.clone(), loaded.map(Arc::unwrap_or_clone));
        }
        Ok(plan.onodes.get_mut(&key).expect("inserted above"))
    }

    /// Frees the blobs an object no longer uses: blobs of this transaction are not written at
    /// all; the space of committed ones is free once the commit is on disk.
    fn release(plan: &mut Plan, blobs: impl IntoIterator<Item = (u64, BlobMeta)>) {
        for (id, blob) in blobs {
            if plan.new_blobs.remove(&id).is_none() {
                plan.freed.push(blob.space());
            }
        }
    }

    fn write_at(
        &self,
        plan: &mut Plan,
        onode: &mut Onode,
        offset: u64,
        data: &Bytes,
        sums: Option<&Checksums>,
    ) {
        let len = data.len() as u64;
        if data.is_empty() {
            onode.size = onode.size.max(offset);
            return;
        }
        if data.len() >= BLOB_MIN_BYTES {
            let id = self.next_blob.fetch_add(1, Ordering::Relaxed);
            let sums = checksums(data, sums);
            onode.blobs.insert(
                id,
                BlobMeta {
                    // Placed once the transaction is planned whole.
                    offset: 0,
                    len,
                    crcs: sums.crcs,
                    hash: ByteBuf::from(sums.hash),
                },
            );
            onode.insert(offset, len, Place::Blob { id, at: 0 });
            plan.new_blobs.insert(id, AlignedBlob::new(data));
        } else {
            onode.insert(offset, len, inline(data.to_vec(), sums));
        }
    }

    fn plan_op(&self, plan: &mut Plan, op: &Op) -> Result<(), StoreError> {
        super::check_size(op)?;
        let coll = op.collection();
        let exists = self.collection_exists(plan, coll)?;
        match op {
            Op::CreateCollection(_) => {
                if exists {
                    return Err(StoreError::CollectionExists(coll));
                }
                plan.kv.push(KvOp::Put(coll_key(coll), Vec::new()));
                plan.collections.insert(coll, true);
                return Ok(());
            }
            Op::RemoveCollection(_) => {
                if !exists {
                    return Err(StoreError::NoCollection(coll));
                }
                // Every object goes, and with it every blob (committed or planned).
                let mut names: BTreeSet<String> = BTreeSet::new();
                let prefix = onode_prefix(coll);
                for (key, _) in self.shared.kv.scan_prefix(&prefix).map_err(kv_failed)? {
                    names.insert(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
                }
                names.extend(
                    plan.onodes
                        .keys()
                        .filter(|(c, _)| *c == coll)
                        .map(|(_, n)| n.clone()),
                );
                for name in names {
                    if let Some(onode) = self.working(plan, coll, &name)?.take() {
                        Self::release(plan, onode.blobs);
                    }
                    plan.onodes.remove(&(coll, name));
                }
                plan.kv
                    .push(KvOp::DeleteRange(prefix.clone(), prefix_end(&prefix)));
                let omap = omap_coll_prefix(coll);
                plan.kv
                    .push(KvOp::DeleteRange(omap.clone(), prefix_end(&omap)));
                plan.kv.push(KvOp::Delete(coll_key(coll)));
                plan.collections.insert(coll, false);
                plan.removed.insert(coll);
                return Ok(());
            }
            _ if !exists => return Err(StoreError::NoCollection(coll)),
            _ => {}
        }
        let missing = |name: &str| StoreError::NotFound {
            coll,
            name: name.to_owned(),
        };
        match op {
            Op::CreateCollection(_) | Op::RemoveCollection(_) => {}
            Op::Create {
                name, exclusive, ..
            } => {
                let slot = self.working(plan, coll, name)?;
                if slot.is_some() {
                    if *exclusive {
                        return Err(StoreError::Exists {
                            coll,
                            name: name.clone(),
                        });
                    }
                } else {
                    *slot = Some(Onode::default());
                }
            }
            Op::Write {
                name,
                offset,
                data,
                sums,
                ..
            } => {
                let mut onode = self.working(plan, coll, name)?.take().unwrap_or_default();
                self.write_at(plan, &mut onode, *offset, data.bytes(), sums.as_ref());
                let unused = onode.unused_blobs();
                Self::release(plan, unused);
                *self.working(plan, coll, name)? = Some(onode);
            }
            Op::WriteFull {
                name, data, sums, ..
            } => {
                let mut onode = self.working(plan, coll, name)?.take().unwrap_or_default();
                onode.truncate(0);
                self.write_at(plan, &mut onode, 0, data.bytes(), sums.as_ref());
                let unused = onode.unused_blobs();
                Self::release(plan, unused);
                *self.working(plan, coll, name)? = Some(onode);
            }
            Op::Truncate { name, size, .. } => {
                let mut onode = self
                    .working(plan, coll, name)?
                    .take()
                    .ok_or_else(|| missing(name))?;
                onode.truncate(*size);
                let unused = onode.unused_blobs();
                Self::release(plan, unused);
                *self.working(plan, coll, name)? = Some(onode);
            }
            Op::Remove { name, .. } => {
                let onode = self
                    .working(plan, coll, name)?
                    .take()
                    .ok_or_else(|| missing(name))?;
                Self::release(plan, onode.blobs);
                if onode.omap {
                    let prefix = omap_prefix(coll, name);
                    plan.kv
                        .push(KvOp::DeleteRange(prefix.clone(), prefix_end(&prefix)));
                }
            }
            Op::SetXattr {
                name, key, value, ..
            } => {
                let slot = self.working(plan, coll, name)?;
                slot.get_or_insert_with(Onode::default)
                    .xattrs
                    .insert(key.clone(), ByteBuf::from(value.clone()));
            }
            Op::RemoveXattr { name, key, .. } => {
                let slot = self.working(plan, coll, name)?;
                slot.as_mut()
                    .ok_or_else(|| missing(name))?
                    .xattrs
                    .remove(key);
            }
            Op::OmapSet { name, entries, .. } => {
                self.working(plan, coll, name)?
                    .get_or_insert_with(Onode::default)
                    .omap = true;
                let prefix = omap_prefix(coll, name);
                for (key, value) in entries {
                    let mut full = prefix.clone();
                    full.extend_from_slice(key);
                    plan.kv.push(KvOp::Put(full, value.clone()));
                }
            }
            Op::OmapRemove { name, keys, .. } => {
                if self.working(plan, coll, name)?.is_none() {
                    return Err(missing(name));
                }
                let prefix = omap_prefix(coll, name);
                for key in keys {
                    let mut full = prefix.clone();
                    full.extend_from_slice(key);
                    plan.kv.push(KvOp::Delete(full));
                }
            }
            Op::OmapClear { name, .. } => {
                let onode = self
                    .working(plan, coll, name)?
                    .as_mut()
                    .ok_or_else(|| missing(name))?;
                if std::mem::take(&mut onode.omap) {
                    let prefix = omap_prefix(coll, name);
                    plan.kv
                        .push(KvOp::DeleteRange(prefix.clone(), prefix_end(&prefix)));
                }
            }
        }
        Ok(())
    }

    /// Places the new blobs of a plan in free space of the block file and writes them there
    /// (synced later, once for the whole group commit). The data goes straight to the disk
    /// (`O_DIRECT`), not through the page cache: it is written once and read back rarely soon
    /// after, and copying it into the cache cost a fifth of all CPU under 4 MiB writes.
    fn write_blobs(&self, plan: &mut Plan) -> std::io::Result<()> {
        if plan.new_blobs.is_empty() {
            return Ok(());
        }
        for onode in plan.onodes.values_mut().flatten() {
            for (id, meta) in &mut onode.blobs {
                if let Some(blob) = plan.new_blobs.get(id) {
                    let blocks = blob.padded();
                    meta.offset = self.shared.block.allocate(blocks.len() as u64)?;
                    // The padding after the data is never read: the length is in `meta`.
                    self.shared.block.write(meta.offset, blocks)?;
                }
            }
        }
        Ok(())
    }

    /// Reads `[start, end)` of blob `id`, checked against the crc32c of every block it
    /// touches, or, for a whole blob read with [`Check::Hash`], against its blake3 hash.
    ///
    /// Like writes, reads go straight from the disk (`O_DIRECT`) into a block-aligned buffer
    /// whose bytes are then handed on without another copy; a buffered read through the page
    /// cache cost a copy of every byte (an eighth of all CPU under 4 MiB reads). Where the file
    /// system refuses direct IO, the read is buffered.
    fn read_blob(
        &self,
        id: u64,
        meta: &BlobMeta,
        (start, end): (u64, u64),
        check: Check,
    ) -> Result<Bytes, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("blob {id:016x}: {what}"));
        if start > end || end > meta.len {
            return Err(corrupt(format!(
                "an extent names bytes {start}..{end} of a {}-byte blob",
                meta.len
            )));
        }
        let first = start / BLOCK * BLOCK;
        let last = end.div_ceil(BLOCK) * BLOCK;
        // Whole checksum blocks: the last one ends at the blob's end.
        let wanted = (last.min(meta.len) - first) as usize;
        let block = BLOCK as usize;
        let span = (last - first) as usize;
        // A large buffer is reused (`buffers::LARGE`): a fresh one of megabytes costs a page
        // fault and a zeroed page per 4 KiB.
        let mut buffer = buffers::LARGE
            .take(span + block)
            .unwrap_or_else(|| vec![0; span + block]);
        let at = (block - buffer.as_ptr() as usize % block) % block;
        // Whole blocks from a block-aligned offset into a block-aligned address.
        let got = self
            .shared
            .block
            .read(meta.offset + first, &mut buffer[at..at + span])
            .map_err(|e| corrupt(e.to_string()))?;
        if got < wanted {
            return Err(corrupt(format!("short read: {got} of {wanted} bytes")));
        }
        let data = buffers::LARGE.share(buffer, at..at + wanted);
        if check == Check::Hash && first == 0 && end == meta.len {
            if blake3::hash(&data).as_bytes()[..] != meta.hash[..] {
                return Err(corrupt("fails its blake3 hash".into()));
            }
        } else {
            for (i, block) in data.chunks(block).enumerate() {
                let index = (first / BLOCK) as usize + i;
                if meta.crcs.get(index) != Some(&crc32c(block)) {
                    return Err(corrupt(format!("block {index} fails its crc32c")));
                }
            }
        }
        Ok(data.slice((start - first) as usize..(end - first) as usize))
    }

    /// `len` bytes of an object from `offset`, each checked as `check` says.
    fn read_checked(
        &self,
        coll: CollectionId,
        name: &str,
        (offset, len): (u64, u64),
        check: Check,
    ) -> Result<Bytes, StoreError> {
        self.read_locked(coll, || {
            let onode = self.onode(coll, name)?;
            let blob = |id: &u64| {
                onode.blobs.get(id).ok_or_else(|| {
                    StoreError::Corrupt(format!("{name:?} in {coll} names a missing blob"))
                })
            };
            let end = read_end(onode.size, offset, len);
            let start = offset.min(end);
            // One blob extent covering the whole range (a whole-object read of a large object
            // written at once): its bytes are the answer, without another copy.
            if let [extent] = onode.extents.as_slice() {
                if let Place::Blob { id, at } = extent.place {
                    if extent.offset <= start && extent.end() >= end && start < end {
                        let from = at + (start - extent.offset);
                        return self.read_blob(id, blob(&id)?, (from, from + (end - start)), check);
                    }
                }
            }
            let mut out = vec![0; (end - start) as usize];
            for extent in &onode.extents {
                let (a, b) = (extent.offset.max(start), extent.end().min(end));
                if a >= b {
                    continue;
                }
                let target = &mut out[(a - start) as usize..(b - start) as usize];
                match &extent.place {
                    Place::Inline { bytes, crcs, hash } => {
                        let sums = Checksums::of(bytes);
                        if sums.crcs != *crcs || sums.hash != hash.as_slice() {
                            return Err(StoreError::Corrupt(format!(
                                "inline data of {name:?} in {coll} fails its checksum"
                            )));
                        }
                        let skip = (a - extent.offset) as usize;
                        target.copy_from_slice(&bytes[skip..skip + target.len()]);
                    }
                    Place::Blob { id, at } => {
                        let from = at + (a - extent.offset);
                        let bytes =
                            self.read_blob(*id, blob(id)?, (from, from + (b - a)), check)?;
                        target.copy_from_slice(&bytes);
                    }
                }
            }
            Ok(out.into())
        })
    }

    fn read_locked<T>(
        &self,
        coll: CollectionId,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.shared.check()?;
        let _guard = self.stripes[Self::stripe(coll)].read();
        f()
    }

    fn onode(&self, coll: CollectionId, name: &str) -> Result<Arc<Onode>, StoreError> {
        if !self.shared.has_collection(coll) {
            return Err(StoreError::NoCollection(coll));
        }
        self.load(coll, name)?.ok_or_else(|| StoreError::NotFound {
            coll,
            name: name.to_owned(),
        })
    }
}

fn decode_onode(key: &[u8], bytes: &[u8]) -> Result<Onode, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "object metadata under {:?}: {e}",
            String::from_utf8_lossy(key)
        ))
    })
}

impl ObjectStore for RocksStore {
    fn submit(&self, tx: &Transaction) -> Result<Commit, StoreError> {
        self.shared.check()?;
        let mut stripes: Vec<usize> = tx.collections().into_iter().map(Self::stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let locks: Vec<_> = stripes
            .iter()
            .map(|&s| self.stripes[s].write_arc())
            .collect();
        let mut plan = Plan::default();
        for op in &tx.ops {
            self.plan_op(&mut plan, op)?;
        }
        // Data first; the commit thread syncs it before the metadata that points at it.
        // Space written here and never committed is free again at the next open.
        if let Err(error) = self.write_blobs(&mut plan) {
            return Err(self.shared.fail(format!("writing object data: {error}")));
        }
        let mut batch = std::mem::take(&mut plan.kv);
        for (object, onode) in &plan.onodes {
            let key = onode_key(object.0, &object.1);
            match onode {
                // An onode the transaction left as it was (the PG log object's, whose omap
                // alone changes) is not written again.
                Some(onode) if plan.before.get(object).is_some_and(|was| **was == *onode) => {}
                Some(onode) => batch.push(KvOp::Put(
                    key,
                    rmp_serde::to_vec(onode).expect("onodes encode"),
                )),
                None => batch.push(KvOp::Delete(key)),
            }
        }
        // The blobs are written; the commit thread needs only the plan's bookkeeping.
        let wrote_blobs = !std::mem::take(&mut plan.new_blobs).is_empty();
        let (done, commit) = Commit::queued();
        let pending = Pending {
            batch,
            plan,
            wrote_blobs,
            locks,
            done,
        };
        let queue = self
            .commits
            .as_ref()
            .expect("the queue lives as long as the store");
        queue
            .send(pending)
            .map_err(|_| StoreError::Failed("the commit thread stopped".into()))?;
        Ok(commit)
    }

    fn read(
        &self,
        coll: CollectionId,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, StoreError> {
        self.read_checked(coll, name, (offset, len), Check::Blocks)
    }

    fn read_copy(&self, coll: CollectionId, name: &str) -> Result<Bytes, StoreError> {
        self.read_checked(coll, name, (0, u64::MAX), Check::Hash)
    }

    fn stat(&self, coll: CollectionId, name: &str) -> Result<ObjectStat, StoreError> {
        self.read_locked(coll, || {
            Ok(ObjectStat {
                size: self.onode(coll, name)?.size,
            })
        })
    }

    fn xattrs(
        &self,
        coll: CollectionId,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        self.read_locked(coll, || {
            Ok(self
                .onode(coll, name)?
                .xattrs
                .iter()
                .map(|(k, v)| (k.clone(), v.to_vec()))
                .collect())
        })
    }

    fn omap_get(
        &self,
        coll: CollectionId,
        name: &str,
        keys: &[Vec<u8>],
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        self.read_locked(coll, || {
            self.onode(coll, name)?;
            let prefix = omap_prefix(coll, name);
            let mut found = BTreeMap::new();
            for key in keys {
                let mut full = prefix.clone();
                full.extend_from_slice(key);
                if let Some(value) = self.shared.kv.get(&full).map_err(kv_failed)? {
                    found.insert(key.clone(), value);
                }
            }
            Ok(found)
        })
    }

    fn omap_list(
        &self,
        coll: CollectionId,
        name: &str,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<OmapEntry>, StoreError> {
        self.read_locked(coll, || {
            self.onode(coll, name)?;
            let prefix = omap_prefix(coll, name);
            let mut start = prefix.clone();
            if let Some(after) = start_after {
                start.extend_from_slice(after);
                // The smallest key after `after`.
                start.push(0);
            }
            Ok(self
                .shared
                .kv
                .scan_from(&start, &prefix, limit)
                .map_err(kv_failed)?
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_vec(), v))
                .collect())
        })
    }

    fn list(
        &self,
        coll: CollectionId,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.read_locked(coll, || {
            if !self.shared.has_collection(coll) {
                return Err(StoreError::NoCollection(coll));
            }
            let prefix = onode_prefix(coll);
            let mut start = prefix.clone();
            if let Some(after) = start_after {
                start.extend_from_slice(after.as_bytes());
                start.push(0);
            }
            Ok(self
                .shared
                .kv
                .scan_from(&start, &prefix, limit)
                .map_err(kv_failed)?
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
                .collect())
        })
    }

    fn collections(&self) -> Result<Vec<CollectionId>, StoreError> {
        self.shared.check()?;
        let mut colls: Vec<CollectionId> = self.shared.lock_collections().keys().copied().collect();
        colls.sort_by_key(|c| coll_key(*c));
        Ok(colls)
    }

    fn usage(&self) -> Result<StoreUsage, StoreError> {
        if let Some(metrics) = self.shared.metrics.get() {
            let metadata = self.metadata_bytes()?;
            metrics
                .bytes
                .with_label_values(&["rocksdb"])
                .set(i64::try_from(metadata).unwrap_or(i64::MAX));
        }
        let stat = rustix::fs::statvfs(&self.dir).map_err(kv_failed)?;
        // Free space inside the block file is available too.
        let (size, free) = self.shared.block.space();
        let disk_available = stat
            .f_bavail
            .saturating_mul(stat.f_frsize)
            .saturating_add(free);
        let (total_bytes, available_bytes) = match self.capacity {
            None => (stat.f_blocks.saturating_mul(stat.f_frsize), disk_available),
            Some(capacity) => {
                let metadata = self.metadata_bytes()?;
                let used = (size - free).saturating_add(metadata);
                (capacity, capacity.saturating_sub(used).min(disk_available))
            }
        };
        Ok(StoreUsage {
            total_bytes,
            available_bytes,
            stored_bytes: self
                .shared
                .lock_collections()
                .values()
                .map(|u| u.bytes)
                .sum(),
        })
    }

    fn collection_usage(&self, coll: CollectionId) -> Result<CollectionUsage, StoreError> {
        self.shared.check()?;
        self.shared
            .lock_collections()
            .get(&coll)
            .copied()
            .ok_or(StoreError::NoCollection(coll))
    }
}

#[cfg(test)]
mod aligned_tests {
    use super::{AlignedBlob, Bytes, BLOCK};

    #[test]
    fn aligned_blobs_hold_the_data_then_zeros_to_a_whole_block() {
        for len in [1usize, 4095, 4096, 4097, 65_536, 100_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            let blob = AlignedBlob::new(&Bytes::from(data.clone()));
            let padded = blob.padded();
            assert_eq!(&padded[..len], &data[..]);
            assert_eq!(
                padded.as_ptr() as usize % BLOCK as usize,
                0,
                "aligned address"
            );
            assert_eq!(padded.len() % BLOCK as usize, 0, "whole blocks");
            assert!(padded.len() - len < BLOCK as usize);
            assert!(padded[len..].iter().all(|&b| b == 0), "zero padding");
        }
    }

    #[test]
    fn aligned_whole_blocks_are_used_in_place() {
        let block = BLOCK as usize;
        let mut storage = vec![3u8; 3 * block];
        let start = (block - storage.as_ptr() as usize % block) % block;
        storage.truncate(start + 2 * block);
        let data = Bytes::from(storage).slice(start..);
        let blob = AlignedBlob::new(&data);
        assert_eq!(blob.padded().as_ptr(), data.as_ptr(), "no copy");
        assert_eq!(blob.padded(), &data[..]);
    }
}

#[cfg(test)]
mod omap_flag_tests {
    use super::*;

    const COLL: CollectionId = CollectionId {
        pool: 1,
        seed: 0,
        shard: 0,
    };

    /// The key ranges a transaction of `ops` would delete, planned against `store`.
    fn range_deletes(store: &RocksStore, ops: &[Op]) -> usize {
        let mut plan = Plan::default();
        for op in ops {
            store.plan_op(&mut plan, op).expect("plans");
        }
        plan.kv
            .iter()
            .filter(|op| matches!(op, KvOp::DeleteRange(..)))
            .count()
    }

    /// Rule: a store with a size reports that size, and its data and RocksDB files count
    /// against it; removing the data gives the space back.
    #[test]
    fn a_sized_store_counts_its_data_against_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 256 << 20;
        let store = RocksStore::open(dir.path())
            .expect("open")
            .with_capacity(Some(size));
        let empty = store.usage().expect("usage");
        assert_eq!(empty.total_bytes, size);
        assert!(empty.available_bytes < size, "RocksDB's files count");
        assert!(empty.available_bytes > size - (1 << 20), "{empty:?}");
        store
            .apply(&Transaction {
                ops: vec![
                    Op::CreateCollection(COLL),
                    Op::WriteFull {
                        coll: COLL,
                        name: "big".into(),
                        data: vec![7u8; 8 << 20].into(),
                        sums: None,
                    },
                ],
            })
            .expect("write");
        let written = store.usage().expect("usage");
        assert!(
            written.available_bytes <= empty.available_bytes - (8 << 20),
            "{empty:?} then {written:?}"
        );
        store
            .apply(&Transaction {
                ops: vec![Op::Remove {
                    coll: COLL,
                    name: "big".into(),
                }],
            })
            .expect("remove");
        let removed = store.usage().expect("usage");
        assert!(
            removed.available_bytes > written.available_bytes + (7 << 20),
            "{written:?} then {removed:?}"
        );
    }

    /// Rule: removing or clearing an object that never had omap entries deletes no key range;
    /// one that had them (in an earlier transaction, so the flag went through RocksDB) does.
    #[test]
    fn only_objects_with_omap_entries_delete_a_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let create = |name: &str| Op::Create {
            coll: COLL,
            name: name.into(),
            exclusive: false,
        };
        store
            .apply(&Transaction {
                ops: vec![
                    Op::CreateCollection(COLL),
                    create("plain"),
                    create("indexed"),
                    Op::OmapSet {
                        coll: COLL,
                        name: "indexed".into(),
                        entries: vec![(b"k".to_vec(), b"v".to_vec())],
                    },
                ],
            })
            .expect("write");
        drop(store);
        let store = RocksStore::open(dir.path()).expect("reopen");
        let remove = |name: &str| Op::Remove {
            coll: COLL,
            name: name.into(),
        };
        let clear = |name: &str| Op::OmapClear {
            coll: COLL,
            name: name.into(),
        };
        assert_eq!(range_deletes(&store, &[remove("plain")]), 0);
        assert_eq!(range_deletes(&store, &[clear("plain")]), 0);
        assert_eq!(range_deletes(&store, &[remove("indexed")]), 1);
        assert_eq!(range_deletes(&store, &[clear("indexed")]), 1);
        assert_eq!(
            range_deletes(&store, &[clear("indexed"), remove("indexed")]),
            1,
            "a cleared object has nothing left to delete"
        );
    }

    /// Rule: an onode stored before the omap flag existed reads as having omap entries, so
    /// removing it still deletes them.
    #[test]
    fn onodes_without_the_flag_may_have_omap_entries() {
        #[derive(Serialize)]
        struct Before {
            size: u64,
            xattrs: BTreeMap<String, ByteBuf>,
            extents: Vec<Extent>,
            blobs: BTreeMap<u64, BlobMeta>,
        }
        let bytes = rmp_serde::to_vec(&Before {
            size: 0,
            xattrs: BTreeMap::new(),
            extents: Vec::new(),
            blobs: BTreeMap::new(),
        })
        .expect("encode");
        let onode = decode_onode(b"Oold", &bytes).expect("decode");
        assert!(onode.omap);
        assert!(!Onode::default().omap, "a new object has none");
    }
}
