//! Monitors: the cluster map replicated by Multi-Paxos (docs/monitor.md).
//!
//! * [`paxos`]: the consensus core, a deterministic state machine without IO. Its simulator
//!   lives in `tests/simulation.rs`.
//! * [`service`]: the map service's replicated state machine: the commands of each committed
//!   slot turn the map of one epoch into the next.
//! * [`policy`]: the leader's failure policy (beacons and failure reports → down → out).
//! * [`authorize`]: who may ask what, by the entity its certificate names.
//! * [`store`] and [`daemon`] (feature `daemon`): RocksDB and the QUIC shell around them.

pub mod authorize;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
mod metrics;
pub mod paxos;
pub mod policy;
pub mod service;
#[cfg(feature = "daemon")]
pub mod store;
