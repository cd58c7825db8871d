//! Manifests, pure: which stripe reads cover a range of an object, the manifest of an object
//! with some of its bytes replaced by newly written data (only the stripes touched are new),
//! and the stripes an old manifest names that a new one no longer does. See docs/buckets.md
//! and docs/mount.md.
//!
//! A segment names bytes `offset..offset + size` of one data id's byte stream, whose stripe
//! `n` holds bytes `n × stripe_bytes..(n + 1) × stripe_bytes`; a segment with no data id is a
//! hole, read as zeros.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::records::Segment;

/// A stripe read: the stripe's data pool (`None`: the default), the stripe (`None`: a hole,
/// zeros), the offset in the stripe, the length.
pub type Piece = (Option<String>, Option<String>, u64, u64);

/// The stripe reads that cover `range` of the concatenated `segments`.
pub fn pieces(segments: &[Segment], range: Range<u64>) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut base = 0u64;
    for segment in segments {
        let seg_range = base..base + segment.size;
        base += segment.size;
        let start = range.start.max(seg_range.start);
        let end = range.end.min(seg_range.end);
        if start >= end {
            continue;
        }
        if segment.is_hole() {
            out.push((None, None, 0, end - start));
            continue;
        }
        let stripe_bytes = segment.stripe_bytes.max(1);
        let mut at = segment.offset + (start - seg_range.start);
        let stop = segment.offset + (end - seg_range.start);
        while at < stop {
            let n = at / stripe_bytes;
            let within = at % stripe_bytes;
            let len = (stripe_bytes - within).min(stop - at);
            out.push((segment.pool.clone(), Some(segment.stripe(n)), within, len));
            at += len;
        }
    }
    out
}

/// The segments of bytes `range` of the object `segments` describe (past its end: a hole).
pub fn slice(segments: &[Segment], range: Range<u64>) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut base = 0u64;
    for segment in segments {
        let seg_range = base..base + segment.size;
        base += segment.size;
        let start = range.start.max(seg_range.start);
        let end = range.end.min(seg_range.end);
        if start < end {
            out.push(Segment {
                offset: segment.offset + (start - seg_range.start),
                size: end - start,
                ..segment.clone()
            });
        }
    }
    if range.end > base.max(range.start) {
        out.push(Segment::hole(range.end - base.max(range.start)));
    }
    out
}

/// The manifest of an object of `size` bytes whose bytes are those of `base` except where
/// `writes` (each a start offset and the segment of new data there, in order, not
/// overlapping) put new data; past the end of `base`, bytes no write covers are a hole.
/// Adjacent pieces of one data id are joined.
pub fn splice(base: &[Segment], size: u64, writes: &[(u64, Segment)]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut at = 0u64;
    for (start, segment) in writes {
        let from = (*start).clamp(at, size);
        if from > at {
            out.extend(slice(base, at..from));
            at = from;
        }
        let end = start.saturating_add(segment.size).min(size);
        if end > at {
            out.push(Segment {
                offset: segment.offset + (at - start),
                size: end - at,
                ..segment.clone()
            });
            at = end;
        }
    }
    if size > at {
        out.extend(slice(base, at..size));
    }
    join(out)
}

/// `segments` with neighbours that continue one another (one data id, consecutive bytes, or
/// two holes) joined, and empty ones left out.
pub fn join(segments: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    for segment in segments.into_iter().filter(|s| s.size > 0) {
        if let Some(last) = out.last_mut() {
            let continues = last.prefix == segment.prefix
                && last.pool == segment.pool
                && last.stripe_bytes == segment.stripe_bytes
                && (segment.is_hole() || last.offset + last.size == segment.offset);
            if continues {
                last.size += segment.size;
                continue;
            }
        }
        out.push(segment);
    }
    out
}

/// The stripes of the object `segments` describe (by number, `stripe_bytes` each from its
/// start) that more than `max` segments share, with how many, busiest first: those worth
/// writing again whole. A segment that covers a stripe whole is alone in it, so only the
/// first and the last stripe of each segment are counted.
pub fn crowded(segments: &[Segment], stripe_bytes: u64, max: usize) -> Vec<(u64, usize)> {
    let stripe_bytes = stripe_bytes.max(1);
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    let mut base = 0u64;
    for segment in segments.iter().filter(|s| s.size > 0) {
        let first = base / stripe_bytes;
        let last = (base + segment.size - 1) / stripe_bytes;
        *counts.entry(first).or_default() += 1;
        if last != first {
            *counts.entry(last).or_default() += 1;
        }
        base += segment.size;
    }
    let mut out: Vec<(usize, u64)> = counts
        .into_iter()
        .filter(|(_, count)| *count > max)
        .map(|(n, count)| (count, n))
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    out.into_iter().map(|(count, n)| (n, count)).collect()
}

/// The stripes of `segments`, by data pool and data id, with each one's stripe bytes.
fn stripes_named(segments: &[Segment]) -> BTreeMap<(Option<String>, String, u64), BTreeSet<u64>> {
    let mut named: BTreeMap<_, BTreeSet<u64>> = BTreeMap::new();
    for segment in segments.iter().filter(|s| !s.is_hole() && s.size > 0) {
        named
            .entry((
                segment.pool.clone(),
                segment.prefix.clone(),
                segment.stripe_bytes,
            ))
            .or_default()
            .extend(segment.stripe_range());
    }
    named
}

/// The stripes that `old` names and `new` does not, as segments of whole stripes: what
/// becomes garbage when `new` replaces `old`.
pub fn unreferenced(old: &[Segment], new: &[Segment]) -> Vec<Segment> {
    let kept = stripes_named(new);
    let mut out = Vec::new();
    for ((pool, prefix, stripe_bytes), stripes) in stripes_named(old) {
        let keep = kept.get(&(pool.clone(), prefix.clone(), stripe_bytes));
        let mut run: Option<Range<u64>> = None;
        let gone = stripes
            .into_iter()
            .filter(|n| keep.is_none_or(|k| !k.contains(n)));
        let mut push = |run: Range<u64>| {
            out.push(Segment {
                prefix: prefix.clone(),
                offset: run.start * stripe_bytes,
                size: (run.end - run.start) * stripe_bytes,
                stripe_bytes,
                pool: pool.clone(),
            })
        };
        for n in gone {
            run = match run {
                Some(r) if r.end == n => Some(r.start..n + 1),
                Some(r) => {
                    push(r);
                    Some(n..n + 1)
                }
                None => Some(n..n + 1),
            };
        }
        if let Some(r) = run {
            push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests;
