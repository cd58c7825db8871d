//! Versioned binary encodings of maps and incrementals, for disk and wire.
//!
//! Layout: a 4-byte magic naming the record type, a little-endian `u16` format version, then the
//! record as MessagePack with named fields. Decoding accepts every version ever written and
//! migrates it to the current types; fixtures written by each version are decoded in tests.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::incremental::Incremental;
use crate::map::ClusterMap;

/// A record type with a versioned encoding.
pub trait Versioned: Serialize + DeserializeOwned {
    /// Names the record type at the start of its encoding.
    const MAGIC: [u8; 4];
    /// The version written by this build.
    const VERSION: u16;
}

/// Version 2 added the record of each PG's last activation (`pg_active`, and the change that
/// sets it); a version 1 map has none. Version 3 added each OSD's `full` flag (and the change
/// that sets it); earlier maps have none full. Version 4 added an erasure pool's stripe unit;
/// earlier erasure pools have the default, 4 KiB (none stored data before it).
impl Versioned for ClusterMap {
    const MAGIC: [u8; 4] = *b"TPMP";
    const VERSION: u16 = 4;
}

impl Versioned for Incremental {
    const MAGIC: [u8; 4] = *b"TPIN";
    const VERSION: u16 = 4;
}

/// Why bytes did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the header, or a different record type.
    #[error("not a {expected} record")]
    WrongMagic {
        /// The record type that was expected.
        expected: &'static str,
    },
    /// Written by a newer version of Tidepool.
    #[error("format version {found} is newer than this build understands ({supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },
    /// The body is malformed.
    #[error("malformed body: {0}")]
    Body(#[from] rmp_serde::decode::Error),
}

/// Encodes `record` in its current version.
pub fn encode<T: Versioned>(record: &T) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    bytes.extend_from_slice(&T::MAGIC);
    bytes.extend_from_slice(&T::VERSION.to_le_bytes());
    // Serialising plain data into a Vec cannot fail: every type here has string keys and no
    // custom serialiser that errors.
    rmp_serde::encode::write_named(&mut bytes, record)
        .expect("encoding placement records into memory cannot fail");
    bytes
}

/// Decodes a record written by this or any earlier version.
pub fn decode<T: Versioned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let wrong_magic = DecodeError::WrongMagic {
        expected: std::any::type_name::<T>(),
    };
    if bytes.len() < 6 || bytes[..4] != T::MAGIC {
        return Err(wrong_magic);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    match version {
        // Versions 2 to 4 only added fields with defaults (and incremental changes), so
        // earlier records decode as they are.
        1..=4 => Ok(rmp_serde::from_slice(&bytes[6..])?),
        found => Err(DecodeError::UnsupportedVersion {
            found,
            supported: T::VERSION,
        }),
    }
}
