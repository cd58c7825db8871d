//! Monitors: the cluster map replicated by Multi-Paxos.
//!
//! * [`paxos`]: the consensus core, a deterministic state machine without IO (see
//!   docs/monitor.md). Its simulator lives in `tests/simulation.rs`.
//!
//! The map service and the daemon shell come next (docs/monitor.md).

pub mod paxos;
