//! The durable key-value store under the monitors and the OSDs: RocksDB, written in atomic
//! batches that are synced before the call returns.
//!
//! Fail-stop: after a failed write the store refuses all further work ([`KvError::PreviousIo`]);
//! the daemon above must stop and let its peers repair, never carry on with state it may not
//! have.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// RocksDB reported an error (IO, corruption, a full disk).
    #[error("store: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// An earlier write failed; the store accepts nothing more.
    #[error("an earlier write failed; the store is stopped")]
    PreviousIo,
}

/// A key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// One change of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Removes `key`.
    Delete(Vec<u8>),
    /// Removes every key in `[from, to)`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// A RocksDB database written only through synced batches.
#[derive(Debug)]
pub struct Kv {
    db: rocksdb::DB,
    failed: AtomicBool,
}

impl Kv {
    /// Opens (creating when missing) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Kv, KvError> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.set_paranoid_checks(true);
        // Bloom filters: a lookup of a key that does not exist (a new object's metadata) skips
        // the table files that cannot hold it instead of searching each.
        let mut tables = rocksdb::BlockBasedOptions::default();
        tables.set_bloom_filter(10.0, false);
        options.set_block_based_table_factory(&tables);
        // A Bloom filter over the memtable's whole keys too: most lookups on the write path are
        // of keys that do not exist yet (a new object's metadata), and without it each one
        // searches the whole memtable skiplist. A hundredth of the memtable's 64 MiB is
        // 5 Mbit, ten bits a key for half a million keys (a tenth left each OSD about 10 MiB
        // larger after `bench/objects.sh`'s phases).
        options.set_memtable_prefix_bloom_ratio(0.01);
        options.set_memtable_whole_key_filtering(true);
        // No block compression, as BlueStore configures its RocksDB: what is stored here is
        // metadata and small object data, often already compressed or random, and compressing
        // it costs every flush and compaction CPU that the data path needs.
        options.set_compression_type(rocksdb::DBCompressionType::None);
        // Recycled WAL files: a synced append overwrites allocated blocks, so the sync does not
        // also write a new file size.
        options.set_recycle_log_file_num(4);
        Ok(Kv {
            db: rocksdb::DB::open(&options, dir)?,
            failed: AtomicBool::new(false),
        })
    }

    fn check(&self) -> Result<(), KvError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(KvError::PreviousIo);
        }
        Ok(())
    }

    /// Applies `ops` atomically and syncs them to disk before returning.
    pub fn write(&self, ops: &[Op]) -> Result<(), KvError> {
        self.check()?;
        let mut batch = rocksdb::WriteBatch::default();
        for op in ops {
            match op {
                Op::Put(key, value) => batch.put(key, value),
                Op::Delete(key) => batch.delete(key),
                Op::DeleteRange(from, to) => batch.delete_range(from, to),
            }
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).inspect_err(|_| {
            self.failed.store(true, Ordering::Release);
        })?;
        Ok(())
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.check()?;
        Ok(self.db.get(key)?)
    }

    /// Every key/value pair whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Pair>, KvError> {
        self.scan_from(prefix, prefix, usize::MAX)
    }

    /// Up to `max` pairs whose key starts with `prefix`, from `start` on, in key order.
    pub fn scan_from(&self, start: &[u8], prefix: &[u8], max: usize) -> Result<Vec<Pair>, KvError> {
        self.check()?;
        let mode = rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward);
        let mut pairs = Vec::new();
        for item in self.db.iterator(mode) {
            let (key, value) = item?;
            if !key.starts_with(prefix) || pairs.len() >= max {
                break;
            }
            pairs.push((key.into_vec(), value.into_vec()));
        }
        Ok(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let kv = Kv::open(dir.path()).expect("open");
            kv.write(&[
                Op::Put(b"a/1".to_vec(), b"one".to_vec()),
                Op::Put(b"a/2".to_vec(), b"two".to_vec()),
                Op::Put(b"b/1".to_vec(), b"other".to_vec()),
            ])
            .expect("write");
            kv.write(&[Op::Delete(b"a/1".to_vec())]).expect("delete");
        }
        let kv = Kv::open(dir.path()).expect("reopen");
        assert_eq!(kv.get(b"a/1").expect("get"), None);
        assert_eq!(
            kv.scan_prefix(b"a/").expect("scan"),
            vec![(b"a/2".to_vec(), b"two".to_vec())]
        );
        kv.write(&[Op::DeleteRange(b"a/".to_vec(), b"a0".to_vec())])
            .expect("range");
        assert!(kv.scan_prefix(b"a/").expect("scan").is_empty());
        assert_eq!(kv.get(b"b/1").expect("get"), Some(b"other".to_vec()));
    }
}
