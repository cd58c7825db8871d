//! Client library: subscribes to maps, computes placement, sends operations to primaries. Built with the storage daemons; see docs/ARCHITECTURE.md.
