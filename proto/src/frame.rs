//! The frame: a fixed 12-byte header followed by a MessagePack body.
//!
//! ```text
//! 0      4        6        7        8              12
//! | "TPF" 1 | version | kind | flags=0 | body length | body ...
//! ```
//!
//! All integers are little-endian. `version` is the protocol version of the body's types; a
//! receiver refuses versions it does not know instead of guessing.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bytes before the body.
pub const FRAME_HEADER_BYTES: usize = 12;
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
const MAGIC: [u8; 4] = *b"TPF1";

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A request that expects one [`Reply`] on the same stream.
    Request = 1,
    /// The reply to a request.
    Reply = 2,
    /// A one-way message; nothing comes back.
    OneWay = 3,
}

/// A checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame carries.
    pub kind: FrameKind,
    /// Length of the body that follows.
    pub body_bytes: u32,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The first bytes are not a Tidepool frame.
    #[error("not a Tidepool frame (bad magic)")]
    BadMagic,
    /// The sender speaks a protocol version this build does not.
    #[error("protocol version {0} is not supported (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    /// Unknown frame kind or reserved bits set.
    #[error("malformed frame header")]
    BadHeader,
    /// The body is larger than the receiver accepts.
    #[error("frame of {got} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced body size.
        got: u64,
        /// The receiver's limit.
        limit: u64,
    },
    /// The stream ended before the frame did.
    #[error("truncated frame")]
    Truncated,
    /// A frame of another kind was expected here.
    #[error("expected a {expected:?} frame, got {got:?}")]
    UnexpectedKind {
        /// What the protocol expects at this point.
        expected: FrameKind,
        /// What arrived.
        got: FrameKind,
    },
    /// The body does not decode as the expected message.
    #[error("malformed message body: {0}")]
    BadBody(#[from] rmp_serde::decode::Error),
    /// The message could not be encoded.
    #[error("message cannot be encoded: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

impl FrameHeader {
    /// Checks the fixed header bytes against the protocol and the size limit.
    pub fn parse(
        bytes: &[u8; FRAME_HEADER_BYTES],
        body_bytes_max: u32,
    ) -> Result<Self, FrameError> {
        if bytes[0..4] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let kind = match bytes[6] {
            1 => FrameKind::Request,
            2 => FrameKind::Reply,
            3 => FrameKind::OneWay,
            _ => return Err(FrameError::BadHeader),
        };
        if bytes[7] != 0 {
            return Err(FrameError::BadHeader);
        }
        let body_bytes = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if body_bytes > body_bytes_max {
            return Err(FrameError::TooLarge {
                got: u64::from(body_bytes),
                limit: u64::from(body_bytes_max),
            });
        }
        Ok(FrameHeader { kind, body_bytes })
    }

    /// Checks that this header announces a frame of `expected` kind.
    pub fn expect(self, expected: FrameKind) -> Result<Self, FrameError> {
        if self.kind != expected {
            return Err(FrameError::UnexpectedKind {
                expected,
                got: self.kind,
            });
        }
        Ok(self)
    }
}

/// Encodes `message` as one frame of `kind`, refusing bodies over `body_bytes_max`.
pub fn encode_frame<T: Serialize + ?Sized>(
    kind: FrameKind,
    message: &T,
    body_bytes_max: u32,
) -> Result<Vec<u8>, FrameError> {
    // Measure first, so that large bodies are written into one allocation instead of being
    // copied each time the buffer doubles.
    let mut counter = Counter(0);
    rmp_serde::encode::write_named(&mut counter, message)?;
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + counter.0);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    bytes.push(kind as u8);
    bytes.push(0);
    bytes.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write_named(&mut bytes, message)?;
    let body_bytes = bytes.len() - FRAME_HEADER_BYTES;
    if body_bytes > body_bytes_max as usize {
        return Err(FrameError::TooLarge {
            got: body_bytes as u64,
            limit: u64::from(body_bytes_max),
        });
    }
    bytes[8..12].copy_from_slice(&(body_bytes as u32).to_le_bytes());
    Ok(bytes)
}

/// A writer that only counts bytes.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes a frame body.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(rmp_serde::from_slice(body)?)
}

/// What a peer sends back when it cannot answer a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RemoteError {
    /// The class of failure, for programs.
    pub code: RemoteErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

/// Classes of failure a peer reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteErrorCode {
    /// The request frame or body was malformed.
    BadRequest,
    /// The peer is overloaded or shutting down; retry later.
    Unavailable,
    /// The request was understood but failed.
    Failed,
}

/// The body of a reply frame.
pub type Reply<T> = Result<T, RemoteError>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Probe {
        name: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    }

    fn header(bytes: &[u8]) -> [u8; FRAME_HEADER_BYTES] {
        bytes[..FRAME_HEADER_BYTES].try_into().expect("12 bytes")
    }

    #[test]
    fn round_trip() {
        let probe = Probe {
            name: "x".into(),
            data: vec![1, 2, 3],
        };
        let frame = encode_frame(FrameKind::Request, &probe, 1 << 20).expect("encodes");
        let parsed = FrameHeader::parse(&header(&frame), 1 << 20).expect("parses");
        assert_eq!(parsed.kind, FrameKind::Request);
        assert_eq!(parsed.body_bytes as usize, frame.len() - FRAME_HEADER_BYTES);
        let back: Probe = decode_body(&frame[FRAME_HEADER_BYTES..]).expect("decodes");
        assert_eq!(back, probe);
    }

    #[test]
    fn refuses_bad_headers() {
        let frame = encode_frame(FrameKind::Reply, &1u32, 1 << 20).expect("encodes");
        let mut bad = header(&frame);
        bad[0] = b'X';
        assert!(matches!(
            FrameHeader::parse(&bad, 1 << 20),
            Err(FrameError::BadMagic)
        ));
        let mut bad = header(&frame);
        bad[4] = 2;
        assert!(matches!(
            FrameHeader::parse(&bad, 1 << 20),
            Err(FrameError::UnsupportedVersion(2))
        ));
        let mut bad = header(&frame);
        bad[6] = 9;
        assert!(matches!(
            FrameHeader::parse(&bad, 1 << 20),
            Err(FrameError::BadHeader)
        ));
        let mut bad = header(&frame);
        bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            FrameHeader::parse(&bad, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            encode_frame(FrameKind::Request, &vec![0u64; 1000], 16),
            Err(FrameError::TooLarge { .. })
        ));
    }

    proptest! {
        /// Rule: no byte string makes the decoder panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if bytes.len() >= FRAME_HEADER_BYTES {
                let _ = FrameHeader::parse(&header(&bytes), 1 << 20);
            }
            let _ = decode_body::<Probe>(&bytes);
            let _ = decode_body::<Reply<Probe>>(&bytes);
        }
    }
}
