//! Storage daemons (docs/osd.md).
//!
//! * [`store`]: the object store — [`store::ObjectStore`], with [`store::MemStore`] in memory
//!   and [`store::RocksStore`] on disk (RocksDB for metadata, blob files for large data).
//! * [`pg`]: a PG's copy on one OSD: its log and summary, object transactions, whole-object
//!   reads and writes for recovery.
//! * [`peering`]: the decisions of peering without IO: the authority, how each holder
//!   catches up, who serves the PG while new holders backfill.
//! * [`throttle`]: recovery throttles whose limits change at runtime.
//! * [`daemon`]: the OSD process: maps, boot, beacons, heartbeats, replication; with
//!   `recovery`, peering, log-based recovery, backfill behind `pg_temp`, stray removal.

pub mod daemon;
pub mod peering;
pub mod pg;
mod recovery;
pub mod store;
pub mod throttle;
