//! Monitors: the cluster map replicated by Multi-Paxos (sans-IO core and daemon shell). Built in the monitor milestone; see docs/ARCHITECTURE.md.
