//! Storage daemons (docs/osd.md).
//!
//! * [`store`]: the object store — [`store::ObjectStore`], with [`store::MemStore`] in memory
//!   and [`store::RocksStore`] on disk (RocksDB for metadata, blob files for large data).
//! * [`pg`]: a PG's copy on one OSD: its log and summary, object transactions, whole-object
//!   reads and writes for recovery.
//! * [`peering`]: the decisions of peering without IO: whom to ask, whether the PG may go
//!   active, the authority, how each holder catches up, who serves the PG while new holders
//!   backfill, what a holder does with a primary's change.
//! * [`fence`]: fences and read leases, which keep an OSD with an older view of a PG from
//!   acknowledging writes or serving reads.
//! * [`scrub`]: a holder's scrub map of a PG, and scrub's comparison of the holders' maps:
//!   what is wrong where, and the repairs that a provably good copy allows; `scrubber`: the
//!   primary's scrub of a PG on request.
//! * [`throttle`]: recovery throttles whose limits change at runtime.
//! * [`daemon`]: the OSD process: maps, boot, beacons, heartbeats, replication; with
//!   `recovery`, peering, log-based recovery, backfill behind `pg_temp`, stray removal.

pub mod daemon;
pub mod ec;
pub mod fence;
pub mod machine;
pub mod peering;
pub mod pg;
mod recovery;
pub mod scrub;
mod scrubber;
mod shards;
mod shell;
pub mod store;
pub mod throttle;
