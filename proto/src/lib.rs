//! Wire formats shared by every daemon and client: the framed, versioned envelope that carries
//! each message, the errors a peer may send back, the monitor protocol ([`mon`]) and the
//! cluster-wide options ([`config`]).
//!
//! Pure: no IO, no async. The messenger reads a [`FrameHeader`]'s fixed bytes, checks them, and
//! only then reads (and allocates) the body, so an oversized or malformed frame is refused before
//! it costs memory.

pub mod config;
pub mod frame;
pub mod mon;
pub mod osd;

pub use frame::{
    decode_body, encode_frame, FrameError, FrameHeader, FrameKind, RemoteError, RemoteErrorCode,
    Reply, FRAME_HEADER_BYTES, PROTOCOL_VERSION,
};
