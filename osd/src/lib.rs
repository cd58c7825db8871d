//! Storage daemons (docs/osd.md).
//!
//! * [`store`]: the object store — [`store::ObjectStore`], with [`store::MemStore`] in memory
//!   and [`store::RocksStore`] on disk (RocksDB for metadata, blob files for large data).
//! * [`pg`]: a PG's copy on one OSD: its log and summary, object transactions, whole-object
//!   reads and writes for recovery.
//! * [`daemon`]: the OSD process: maps, boot, beacons, heartbeats, replication, recovery.

pub mod daemon;
pub mod pg;
pub mod store;
