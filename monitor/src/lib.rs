//! Monitors: the cluster map replicated by Multi-Paxos (docs/monitor.md).
//!
//! * [`paxos`]: the consensus core, a deterministic state machine without IO. Its simulator
//!   lives in `tests/simulation.rs`.
//! * [`service`]: the map service's replicated state machine: the commands of each committed
//!   slot turn the map of one epoch into the next.
//!
//! The leader's failure policy, the daemon shell and the admin commands come next.

#[cfg(feature = "daemon")]
pub mod daemon;
pub mod paxos;
pub mod service;
#[cfg(feature = "daemon")]
pub mod store;
