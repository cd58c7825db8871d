//! Storage daemons (docs/osd.md).
//!
//! * [`store`]: the object store — [`store::ObjectStore`], with [`store::MemStore`] in memory
//!   and [`store::RocksStore`] on disk (RocksDB for metadata, blob files for large data).
//!
//! The daemon (PGs, replication, recovery) builds on it.

pub mod store;
