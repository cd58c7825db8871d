//! The client library: how admin tools, OSDs, gateways and applications reach a cluster.
//!
//! * [`mon`]: [`MonClient`], which finds the monitors' leader, makes map changes exactly once,
//!   reads under the monitors' leases and follows the map through subscriptions.

pub mod mon;

pub use mon::{ClientError, MonClient};
