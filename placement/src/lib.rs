//! Cluster map types, incremental maps and the CRUSH-like placement function.
//!
//! This crate is pure: no IO, no async, no clock, no floating point. Every client and daemon
//! computes placement itself, so the results must agree bit for bit on every machine.
//!
//! * [`ClusterMap`]: the desired state of the cluster at one epoch; [`Incremental`] and
//!   [`ClusterMap::apply`] move it forward one epoch.
//! * [`Placement`]: a map compiled for fast mapping of object → placement group → OSDs.
//! * [`encoding`]: versioned binary encodings of maps and incrementals.

pub mod analysis;
pub mod encoding;
pub mod generate;
pub mod hash;
pub mod incremental;
pub mod map;
pub mod weight;

mod cost;
mod select;

pub use incremental::{ApplyError, Change, Incremental};
pub use map::{
    limits, Ancestor, Bucket, BucketId, BucketType, ClusterMap, Epoch, MapError, Osd, OsdId,
    PgActivation, PgId, Pool, PoolId, PoolKind, Rule, Tunables, STRIPE_UNIT_DEFAULT,
};
pub use select::{PgMapping, Placement, Scratch};
pub use weight::Weight;
