//! Wire formats shared by every daemon and client: the framed, versioned envelope that carries
//! each message, the errors a peer may send back, the monitor protocol ([`mon`]), scrub's
//! messages ([`scrub`]) and the cluster-wide options ([`config`]).
//!
//! Pure: no IO, no async. The messenger reads a [`FrameHeader`]'s fixed bytes, checks them, and
//! only then reads (and allocates) the body, so an oversized or malformed frame is refused before
//! it costs memory. Bulk data travels as [`Payload`]s in the frame's data section, beside the
//! body, so neither side copies it to encode or decode.

pub mod buffers;
pub mod config;
pub mod cpu;
pub mod frame;
pub mod mon;
pub mod osd;
pub mod payload;
pub mod scrub;

pub use frame::{
    decode_body, decode_frame, encode_frame, Frame, FrameError, FrameHeader, FrameKind,
    RemoteError, RemoteErrorCode, Reply, FRAME_HEADER_BYTES, PROTOCOL_VERSION,
};
pub use payload::Payload;
