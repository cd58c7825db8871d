//! [`Payload`]: bulk bytes (object data) that travel beside a frame's body instead of inside it.
//!
//! A frame's MessagePack body holds, for each payload, only where its bytes lie in the frame's
//! data section; the bytes themselves follow the body unchanged. So sending a message hands
//! the payloads' own buffers to the transport, and receiving one slices the data section as it
//! arrived: a 4 MiB write crosses a daemon without being copied by the encoding, and a replica
//! decodes the transaction its primary sent with the data still in the buffers it arrived in.
//!
//! A received data section is a list of chunks (the transport's packets), and a payload that
//! spans several stays in pieces: whoever streams it on ([`Payload::into_chunks`], a gateway
//! answering a GET) never copies it, and whoever needs it in one piece (`Deref`, a store writing
//! it to disk) gets one copy, made once, at a block-aligned address that direct IO can use.
//!
//! Outside a frame (records written to disk, tests) a payload encodes as ordinary MessagePack
//! bytes, and decoding accepts both forms.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

use crate::buffers;

/// Where bytes joined from pieces start: a disk block, so that a store writing them with
/// direct IO needs no copy to align them.
pub const JOIN_ALIGN: usize = 4096;

/// Shared, immutable bytes that a frame carries beside its body: one buffer, or the pieces of
/// a received data section it spans.
#[derive(Clone, Default)]
pub struct Payload(Repr);

#[derive(Clone)]
enum Repr {
    One(Bytes),
    /// Two or more non-empty pieces, and the bytes in one buffer once somebody asked for it.
    Pieces {
        pieces: Arc<[Bytes]>,
        len: usize,
        joined: Arc<OnceLock<Bytes>>,
    },
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::One(Bytes::new())
    }
}

impl Payload {
    /// A payload of `pieces`, none of them empty.
    fn from_pieces(mut pieces: Vec<Bytes>) -> Payload {
        if pieces.len() <= 1 {
            return Payload(Repr::One(pieces.pop().unwrap_or_default()));
        }
        let len = pieces.iter().map(Bytes::len).sum();
        Payload(Repr::Pieces {
            pieces: pieces.into(),
            len,
            joined: Arc::default(),
        })
    }

    /// A payload of `chunks` in order, held as they are (the inverse of
    /// [`Payload::into_chunks`]).
    pub fn from_chunks(chunks: Vec<Bytes>) -> Payload {
        Payload::from_pieces(chunks.into_iter().filter(|c| !c.is_empty()).collect())
    }

    /// Number of bytes (without joining pieces).
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::One(bytes) => bytes.len(),
            Repr::Pieces { len, .. } => *len,
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in one buffer (joined on first use if they arrived in pieces).
    pub fn bytes(&self) -> &Bytes {
        match &self.0 {
            Repr::One(bytes) => bytes,
            Repr::Pieces {
                pieces,
                len,
                joined,
            } => joined.get_or_init(|| join(pieces, *len)),
        }
    }

    /// The bytes in one buffer (joined if they arrived in pieces).
    pub fn into_bytes(self) -> Bytes {
        match self.0 {
            Repr::One(bytes) => bytes,
            Repr::Pieces { .. } => self.bytes().clone(),
        }
    }

    /// The bytes as they are held, in order, without a copy: one buffer, or the pieces they
    /// arrived in. No piece is empty.
    pub fn into_chunks(self) -> Vec<Bytes> {
        match self.0 {
            Repr::One(bytes) if bytes.is_empty() => Vec::new(),
            Repr::One(bytes) => vec![bytes],
            Repr::Pieces { pieces, joined, .. } => match joined.get() {
                Some(bytes) => vec![bytes.clone()],
                None => pieces.to_vec(),
            },
        }
    }

    /// The bytes as they are held, in order, without a copy or a join: one buffer, or the
    /// pieces they arrived in.
    pub fn pieces(&self) -> Vec<&[u8]> {
        match &self.0 {
            Repr::One(bytes) => vec![bytes],
            Repr::Pieces { pieces, joined, .. } => match joined.get() {
                Some(bytes) => vec![bytes],
                None => pieces.iter().map(|p| &p[..]).collect(),
            },
        }
    }

    /// The bytes as a vector (a copy unless this payload is their only holder).
    pub fn into_vec(self) -> Vec<u8> {
        Vec::from(self.into_bytes())
    }
}

/// `pieces` in one buffer that starts at a [`JOIN_ALIGN`]ed address; a large one comes from
/// (and returns to) [`buffers::LARGE`].
fn join(pieces: &[Bytes], len: usize) -> Bytes {
    let Some(mut buffer) = buffers::LARGE.take(len + JOIN_ALIGN) else {
        // A fresh buffer: only the bytes before the start are zeroed; the data is copied once.
        let mut buffer = Vec::with_capacity(len + JOIN_ALIGN);
        let start = (JOIN_ALIGN - buffer.as_ptr() as usize % JOIN_ALIGN) % JOIN_ALIGN;
        buffer.resize(start, 0);
        for piece in pieces {
            buffer.extend_from_slice(piece);
        }
        return Bytes::from(buffer).slice(start..);
    };
    let start = (JOIN_ALIGN - buffer.as_ptr() as usize % JOIN_ALIGN) % JOIN_ALIGN;
    let mut at = start;
    for piece in pieces {
        buffer[at..at + piece.len()].copy_from_slice(piece);
        at += piece.len();
    }
    buffers::LARGE.share(buffer, start..at)
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.len() == other.len() && **self == **other
    }
}

impl Eq for Payload {}

impl PartialOrd for Payload {
    fn partial_cmp(&self, other: &Payload) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Payload {
    fn cmp(&self, other: &Payload) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl Hash for Payload {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Payload {
        Payload(Repr::One(bytes))
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload(Repr::One(Bytes::from(bytes)))
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Payload {
        Payload(Repr::One(Bytes::copy_from_slice(bytes)))
    }
}

impl From<Payload> for Bytes {
    fn from(payload: Payload) -> Bytes {
        payload.into_bytes()
    }
}

/// A received data section: its chunks in order and where each starts.
#[derive(Debug, Default)]
pub(crate) struct DataSection {
    chunks: Vec<Bytes>,
    /// `starts[i]` is the offset of `chunks[i]`; one more entry holds the total length.
    starts: Vec<u64>,
}

impl DataSection {
    pub(crate) fn new(chunks: Vec<Bytes>) -> DataSection {
        let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let mut starts = Vec::with_capacity(chunks.len() + 1);
        let mut offset = 0u64;
        starts.push(0);
        for chunk in &chunks {
            offset += chunk.len() as u64;
            starts.push(offset);
        }
        DataSection { chunks, starts }
    }

    fn len(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    /// The payload at `offset..end` (which lies inside the section), sharing the chunks.
    fn slice(&self, offset: u64, end: u64) -> Payload {
        if offset == end {
            return Payload::default();
        }
        // The chunk holding `offset`: the last one starting at or before it.
        let first = self.starts.partition_point(|start| *start <= offset) - 1;
        let mut pieces = Vec::new();
        for (chunk, start) in self.chunks[first..].iter().zip(&self.starts[first..]) {
            if *start >= end {
                break;
            }
            let from = offset.saturating_sub(*start) as usize;
            let to = (end - start).min(chunk.len() as u64) as usize;
            pieces.push(chunk.slice(from..to));
        }
        Payload::from_pieces(pieces)
    }
}

thread_local! {
    /// While a frame is encoded on this thread: the payloads met so far and their total size.
    static COLLECTING: RefCell<Option<(Vec<Bytes>, u64)>> = const { RefCell::new(None) };
    /// While a frame is decoded on this thread: its data section.
    static DATA: RefCell<Option<DataSection>> = const { RefCell::new(None) };
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
pub(crate) fn with_data<R>(data: DataSection, decode: impl FnOnce() -> R) -> R {
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
                *total += self.len() as u64;
                chunks.extend(self.clone().into_chunks());
                offset
            })
        });
        match offset {
            // Out of line: where the bytes lie in the data section.
            Some(offset) => {
                let mut tuple = serializer.serialize_tuple(2)?;
                tuple.serialize_element(&offset)?;
                tuple.serialize_element(&(self.len() as u64))?;
                tuple.end()
            }
            None => serializer.serialize_bytes(self),
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
                .filter(|end| *end <= data.len())
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "payload at {offset}+{len} lies outside the {}-byte data section",
                        data.len()
                    ))
                })?;
            Ok(data.slice(offset, end))
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
        assert_eq!(chunks.len(), 2, "nothing for the empty payload");
        assert_eq!(chunks[0].as_ptr(), a.as_ptr(), "the payload's own buffer");
        assert!(body.len() < 100, "the body holds no data");
        let data: Bytes = chunks.concat().into();
        let back: Two = with_data(DataSection::new(vec![data.clone()]), || {
            rmp_serde::from_slice(&body)
        })
        .expect("decodes");
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
        let short = DataSection::new(vec![Bytes::from(vec![0; 5])]);
        assert!(with_data(short, || rmp_serde::from_slice::<Two>(&body)).is_err());
        assert!(
            rmp_serde::from_slice::<Two>(&body).is_err(),
            "no data section"
        );
    }

    /// A data section of `data` cut into chunks of the given lengths (the rest in a last one).
    fn chunked(data: &[u8], lengths: &[usize]) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        let mut rest = data;
        for len in lengths {
            let (chunk, tail) = rest.split_at((*len).min(rest.len()));
            chunks.push(Bytes::copy_from_slice(chunk));
            rest = tail;
        }
        chunks.push(Bytes::copy_from_slice(rest));
        chunks
    }

    #[test]
    fn payloads_spanning_chunks_stay_in_pieces_until_joined() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let chunks = chunked(&data, &[3_000, 0, 3_000, 1]);
        let section = DataSection::new(chunks.clone());

        let spanning = section.slice(1_000, 9_000);
        assert_eq!(spanning.len(), 8_000);
        let pieces = spanning.clone().into_chunks();
        assert_eq!(pieces.len(), 4, "the non-empty chunks it touches");
        assert_eq!(pieces[0].as_ptr(), chunks[0][1_000..].as_ptr(), "no copy");
        assert_eq!(pieces.concat(), &data[1_000..9_000]);

        let joined: &[u8] = &spanning;
        assert_eq!(joined, &data[1_000..9_000]);
        assert_eq!(
            joined.as_ptr() as usize % JOIN_ALIGN,
            0,
            "joined at a block"
        );
        assert_eq!(
            spanning.clone().into_chunks(),
            vec![spanning.bytes().clone()],
            "once joined, the joined buffer"
        );

        // A large payload is joined into a pooled buffer, at a block too.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let section = DataSection::new(chunked(&big, &[65_000, 1_000_000, 7]));
        let spanning = section.slice(10, 2_999_990);
        let joined: &[u8] = &spanning;
        assert_eq!(joined, &big[10..2_999_990]);
        assert_eq!(
            joined.as_ptr() as usize % JOIN_ALIGN,
            0,
            "joined at a block"
        );
        let section = DataSection::new(chunks.clone());

        let inside = section.slice(3_100, 3_200);
        assert_eq!(inside.clone().into_chunks().len(), 1);
        assert_eq!(
            inside.as_ptr(),
            chunks[2][100..].as_ptr(),
            "a slice of one chunk"
        );
        assert!(section.slice(500, 500).into_chunks().is_empty());
    }

    #[test]
    fn every_slice_of_a_chunked_section_is_exact() {
        let data: Vec<u8> = (0..600u32).map(|i| (i % 256) as u8).collect();
        for lengths in [&[600][..], &[1, 1, 1], &[100, 0, 250, 7], &[599]] {
            let section = DataSection::new(chunked(&data, lengths));
            for offset in (0..=600).step_by(37) {
                for end in (offset..=600).step_by(53) {
                    let payload = section.slice(offset as u64, end as u64);
                    assert_eq!(payload.len(), end - offset);
                    assert_eq!(payload.clone().into_chunks().concat(), &data[offset..end]);
                    assert_eq!(&payload[..], &data[offset..end]);
                }
            }
        }
    }

    #[test]
    fn a_pieced_payload_is_sent_as_its_pieces() {
        let chunks = chunked(&[5u8; 5_000], &[2_000, 2_000]);
        let payload = DataSection::new(chunks.clone()).slice(0, 5_000);
        let two = Two {
            a: payload.clone(),
            b: vec![],
        };
        let (body, sent) = collect_payloads(|| rmp_serde::to_vec_named(&two).expect("encodes"));
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[1].as_ptr(), chunks[1].as_ptr(), "no copy");
        let back: Two =
            with_data(DataSection::new(sent), || rmp_serde::from_slice(&body)).expect("decodes");
        assert_eq!(back.a, payload);
    }
}
