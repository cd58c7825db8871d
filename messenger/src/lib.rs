//! The transport shared by every daemon and client: QUIC (quinn) with mutual TLS under a
//! per-cluster certificate authority.
//!
//! * [`tls`]: the cluster CA, certificates for daemons and clients, and the rustls/quinn
//!   configurations that refuse any peer without a certificate from the cluster CA.
//! * [`Messenger`]: one QUIC endpoint that serves requests and sends them, with one cached
//!   connection per peer, a new stream per request, bounded message sizes and bounded
//!   concurrency, and reconnection after a peer restarts.
//!
//! Frames are [`tidepool_proto::frame`]s; a malformed, truncated or oversized frame fails that
//! stream with an error and never the process.

pub mod tls;

mod endpoint;
mod socket;

pub use endpoint::{Messenger, MessengerConfig, MessengerError, Peer, Service};
pub use tls::{ClusterCa, Identity, TlsError};
