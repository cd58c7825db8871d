//! The frame: a fixed 16-byte header, a MessagePack body, and a data section.
//!
//! ```text
//! 0      4        6        7        8              12             16
//! | "TPF1" | version | kind | flags=0 | body length | data length | body ... | data ...
//! ```
//!
//! All integers are little-endian. `version` is the protocol version of the body's types; a
//! receiver refuses versions it does not know instead of guessing. The data section holds the
//! bytes of the message's [`Payload`](crate::Payload)s, which the body refers to by offset and
//! length, so bulk data is neither copied into the body nor out of it.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::payload::{collect_payloads, with_data, DataSection};

/// Bytes before the body.
pub const FRAME_HEADER_BYTES: usize = 16;
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 2;
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
    /// Length of the data section after the body.
    pub data_bytes: u32,
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
    /// The stream went on after the frame (a stream carries exactly one).
    #[error("bytes after the end of the frame")]
    Trailing,
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
    /// Checks the fixed header bytes against the protocol and the size limit (of body and
    /// data together).
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
        let data_bytes = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let total = u64::from(body_bytes) + u64::from(data_bytes);
        if total > u64::from(body_bytes_max) {
            return Err(FrameError::TooLarge {
                got: total,
                limit: u64::from(body_bytes_max),
            });
        }
        Ok(FrameHeader {
            kind,
            body_bytes,
            data_bytes,
        })
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

/// An encoded frame: the header and body in one buffer, then the data section as the
/// payloads' own buffers.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Header and body.
    pub head: Bytes,
    /// The data section, in order.
    pub data: Vec<Bytes>,
}

impl Frame {
    /// The frame's pieces in order, ready to hand to a transport without copying.
    pub fn chunks(&self) -> Vec<Bytes> {
        let mut chunks = Vec::with_capacity(1 + self.data.len());
        chunks.push(self.head.clone());
        chunks.extend(self.data.iter().filter(|d| !d.is_empty()).cloned());
        chunks
    }

    /// The whole frame in one buffer (a copy; for tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks().concat()
    }
}

/// Encodes `message` as one frame of `kind`, refusing frames over `body_bytes_max` (body and
/// data together).
pub fn encode_frame<T: Serialize + ?Sized>(
    kind: FrameKind,
    message: &T,
    body_bytes_max: u32,
) -> Result<Frame, FrameError> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    head.push(kind as u8);
    head.push(0);
    head.extend_from_slice(&[0; 8]);
    let (encoded, data) = collect_payloads(|| rmp_serde::encode::write_named(&mut head, message));
    encoded?;
    let body_bytes = (head.len() - FRAME_HEADER_BYTES) as u64;
    let data_bytes: u64 = data.iter().map(|d| d.len() as u64).sum();
    if body_bytes + data_bytes > u64::from(body_bytes_max) {
        return Err(FrameError::TooLarge {
            got: body_bytes + data_bytes,
            limit: u64::from(body_bytes_max),
        });
    }
    // Both fit in a u32: their sum is under `body_bytes_max`.
    head[8..12].copy_from_slice(&(body_bytes as u32).to_le_bytes());
    head[12..16].copy_from_slice(&(data_bytes as u32).to_le_bytes());
    Ok(Frame {
        head: head.into(),
        data,
    })
}

/// Decodes a frame's body, whose payloads lie in `data` (the frame's data section, in the
/// chunks it arrived in; a payload spanning several keeps them as its pieces).
pub fn decode_frame<T: DeserializeOwned>(body: &[u8], data: Vec<Bytes>) -> Result<T, FrameError> {
    with_data(DataSection::new(data), || Ok(rmp_serde::from_slice(body)?))
}

/// Decodes a frame body that carries no data section.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    decode_frame(body, Vec::new())
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
        bulk: Vec<crate::Payload>,
    }

    fn header(bytes: &[u8]) -> [u8; FRAME_HEADER_BYTES] {
        bytes[..FRAME_HEADER_BYTES].try_into().expect("12 bytes")
    }

    #[test]
    fn round_trip() {
        let probe = Probe {
            name: "x".into(),
            data: vec![1, 2, 3],
            bulk: vec![vec![4; 5000].into(), vec![].into(), vec![6; 7].into()],
        };
        let frame = encode_frame(FrameKind::Request, &probe, 1 << 20).expect("encodes");
        assert_eq!(
            frame.chunks().len(),
            3,
            "head and the two non-empty payloads"
        );
        let frame = frame.to_vec();
        let parsed = FrameHeader::parse(&header(&frame), 1 << 20).expect("parses");
        assert_eq!(parsed.kind, FrameKind::Request);
        assert_eq!(parsed.data_bytes, 5007);
        let body_end = FRAME_HEADER_BYTES + parsed.body_bytes as usize;
        assert_eq!(body_end + parsed.data_bytes as usize, frame.len());
        let data = Bytes::copy_from_slice(&frame[body_end..]);
        let back: Probe = decode_frame(&frame[FRAME_HEADER_BYTES..body_end], vec![data.clone()])
            .expect("decodes");
        assert_eq!(back, probe);
        assert_eq!(back.bulk[0].as_ptr(), data.as_ptr(), "no copy of the data");
        assert!(decode_body::<Probe>(&frame[FRAME_HEADER_BYTES..body_end]).is_err());
    }

    #[test]
    fn refuses_bad_headers() {
        let frame = encode_frame(FrameKind::Reply, &1u32, 1 << 20)
            .expect("encodes")
            .to_vec();
        let mut bad = header(&frame);
        bad[0] = b'X';
        assert!(matches!(
            FrameHeader::parse(&bad, 1 << 20),
            Err(FrameError::BadMagic)
        ));
        let mut bad = header(&frame);
        bad[4] = 1;
        assert!(matches!(
            FrameHeader::parse(&bad, 1 << 20),
            Err(FrameError::UnsupportedVersion(1))
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
        let mut bad = header(&frame);
        bad[12..16].copy_from_slice(&(1u32 << 20).to_le_bytes());
        assert!(
            matches!(
                FrameHeader::parse(&bad, 1 << 20),
                Err(FrameError::TooLarge { .. })
            ),
            "body and data count together"
        );
        let bulk = Probe {
            name: String::new(),
            data: vec![],
            bulk: vec![vec![0; 100].into()],
        };
        assert!(matches!(
            encode_frame(FrameKind::Request, &bulk, 64),
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
            let data = Bytes::from(bytes.clone());
            let _ = decode_frame::<Probe>(&bytes, vec![data.slice(..bytes.len() / 2), data.slice(bytes.len() / 2..)]);
        }

        /// Rule: payload references anywhere decode or fail cleanly, never out of bounds.
        #[test]
        fn payload_references_are_checked(offset in any::<u64>(), len in any::<u64>(), have in 0usize..64, cut in 0usize..64) {
            let body = rmp_serde::to_vec(&("n", (offset, len))).expect("encodes");
            let data = Bytes::from(vec![1u8; have]);
            let cut = cut.min(have);
            let decoded = decode_frame::<(String, crate::Payload)>(&body, vec![data.slice(..cut), data.slice(cut..)]);
            let inside = offset.checked_add(len).is_some_and(|end| end <= have as u64);
            prop_assert_eq!(decoded.is_ok(), inside);
            if let Ok((_, payload)) = decoded {
                prop_assert_eq!(payload.len() as u64, len);
            }
        }
    }
}
