//! [`Payload`]: bulk bytes (object data) that travel beside a frame's body instead of inside it.
//!
//! A frame's MessagePack body holds, for each payload, only where its bytes lie in the frame's
//! data section; the bytes themselves follow the body unchanged. So sending a message hands
//! the payloads' own buffers to the transport, and receiving one slices the data section it
//! read: a 4 MiB write crosses a daemon without being copied by the encoding, and a replica
//! decodes the transaction its primary sent with the data still in the buffer it arrived in.
//!
//! Outside a frame (records written to disk, tests) a payload encodes as ordinary MessagePack
//! bytes, and decoding accepts both forms.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// Shared, immutable bytes that a frame carries beside its body.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Payload(Bytes);

impl Payload {
    /// The bytes, without a copy.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes, without a copy.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The bytes as a vector (a copy unless this payload is their only holder).
    pub fn into_vec(self) -> Vec<u8> {
        Vec::from(self.0)
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Payload {
        Payload(bytes)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload(Bytes::from(bytes))
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Payload {
        Payload(Bytes::copy_from_slice(bytes))
    }
}

impl From<Payload> for Bytes {
    fn from(payload: Payload) -> Bytes {
        payload.0
    }
}

thread_local! {
    /// While a frame is encoded on this thread: the payloads met so far and their total size.
    static COLLECTING: RefCell<Option<(Vec<Bytes>, u64)>> = const { RefCell::new(None) };
    /// While a frame is decoded on this thread: its data section.
    static DATA: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `encode` with payloads collected out of line; returns its result and the payloads in
/// data-section order.
pub(crate) fn collect_payloads<R>(encode: impl FnOnce() -> R) -> (R, Vec<Bytes>) {
    let outer = COLLECTING.with(|c| c.borrow_mut().replace((Vec::new(), 0)));
    let result = encode();
    let collected = COLLECTING.with(|c| {
        let mut c = c.borrow_mut();
        let collected = c.take().map(|(chunks, _)| chunks).unwrap_or_default();
        *c = outer;
        collected
    });
    (result, collected)
}

/// Runs `decode` with `data` as the data section that payloads refer to.
pub(crate) fn with_data<R>(data: Bytes, decode: impl FnOnce() -> R) -> R {
    let outer = DATA.with(|d| d.borrow_mut().replace(data));
    let result = decode();
    DATA.with(|d| *d.borrow_mut() = outer);
    result
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let offset = COLLECTING.with(|c| {
            c.borrow_mut().as_mut().map(|(chunks, total)| {
                let offset = *total;
                *total += self.0.len() as u64;
                chunks.push(self.0.clone());
                offset
            })
        });
        match offset {
            // Out of line: where the bytes lie in the data section.
            Some(offset) => {
                let mut tuple = serializer.serialize_tuple(2)?;
                tuple.serialize_element(&offset)?;
                tuple.serialize_element(&(self.0.len() as u64))?;
                tuple.end()
            }
            None => serializer.serialize_bytes(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        deserializer.deserialize_any(PayloadVisitor)
    }
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes, or the offset and length of bytes in the frame's data section")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Payload, E> {
        Ok(Payload::from(bytes))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Payload, E> {
        Ok(Payload::from(bytes))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
        let offset: u64 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let len: u64 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        DATA.with(|d| {
            let data = d.borrow();
            let data = data
                .as_ref()
                .ok_or_else(|| de::Error::custom("payload reference outside a frame"))?;
            let end = offset
                .checked_add(len)
                .filter(|end| *end <= data.len() as u64)
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "payload at {offset}+{len} lies outside the {}-byte data section",
                        data.len()
                    ))
                })?;
            Ok(Payload(data.slice(offset as usize..end as usize)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Two {
        a: Payload,
        b: Vec<Payload>,
    }

    #[test]
    fn inline_outside_a_frame() {
        let two = Two {
            a: Payload::from(vec![1, 2, 3]),
            b: vec![Payload::from(vec![4])],
        };
        let bytes = rmp_serde::to_vec_named(&two).expect("encodes");
        let back: Two = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(back, two);
    }

    #[test]
    fn out_of_line_shares_the_buffers() {
        let a = Bytes::from(vec![7u8; 1000]);
        let two = Two {
            a: Payload::from(a.clone()),
            b: vec![Payload::from(vec![]), Payload::from(vec![9; 10])],
        };
        let (body, chunks) = collect_payloads(|| rmp_serde::to_vec_named(&two).expect("encodes"));
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].as_ptr(), a.as_ptr(), "the payload's own buffer");
        assert!(body.len() < 100, "the body holds no data");
        let data: Bytes = chunks.concat().into();
        let back: Two = with_data(data.clone(), || rmp_serde::from_slice(&body)).expect("decodes");
        assert_eq!(back, two);
        assert_eq!(
            back.a.as_ptr(),
            data.as_ptr(),
            "a slice of the data section"
        );
    }

    #[test]
    fn refuses_references_outside_the_data() {
        let two = Two {
            a: Payload::from(vec![1; 10]),
            b: vec![],
        };
        let (body, _) = collect_payloads(|| rmp_serde::to_vec_named(&two).expect("encodes"));
        let short = Bytes::from(vec![0; 5]);
        assert!(with_data(short, || rmp_serde::from_slice::<Two>(&body)).is_err());
        assert!(
            rmp_serde::from_slice::<Two>(&body).is_err(),
            "no data section"
        );
    }
}
