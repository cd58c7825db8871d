//! Storage daemons: object store, replication, erasure coding, peering and recovery. Built in the storage-daemon milestone; see docs/ARCHITECTURE.md.
