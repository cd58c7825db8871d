//! The client library: how admin tools, OSDs, gateways and applications reach a cluster.
//!
//! * [`mon`]: [`MonClient`], which finds the monitors' leader, makes map changes exactly once,
//!   reads under the monitors' leases and follows the map through subscriptions.

//! * [`objects`]: [`ObjectClient`], object transactions sent to each PG's primary, resent
//!   when the map changes.

pub mod mon;
pub mod objects;

pub use mon::{ClientError, MonClient};
pub use objects::{ObjectClient, ObjectError};
