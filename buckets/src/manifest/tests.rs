//! The manifest arithmetic against a byte model: any base, any writes, any new size.

use proptest::prelude::*;

use super::*;

const STRIPE: u64 = 10;

fn segment(prefix: &str, offset: u64, size: u64) -> Segment {
    Segment {
        prefix: prefix.into(),
        offset,
        size,
        stripe_bytes: STRIPE,
        pool: None,
    }
}

/// The byte at `at` of data id `prefix`'s stream.
fn byte(prefix: &str, at: u64) -> u8 {
    let id = prefix
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31) + u64::from(b));
    (id.wrapping_mul(131).wrapping_add(at.wrapping_mul(17)) % 251) as u8 + 1
}

/// The bytes `segments` describe, read stripe by stripe as `pieces` says.
fn read(segments: &[Segment]) -> Vec<u8> {
    let size: u64 = segments.iter().map(|s| s.size).sum();
    let mut out = Vec::new();
    for (_, stripe, within, len) in pieces(segments, 0..size) {
        match stripe {
            None => out.extend(std::iter::repeat_n(0, len as usize)),
            Some(name) => {
                let (prefix, n) = name.rsplit_once('.').expect("prefix.n");
                let n: u64 = n.parse().expect("stripe number");
                assert!(within + len <= STRIPE, "a read past its stripe");
                out.extend((0..len).map(|i| byte(prefix, n * STRIPE + within + i)));
            }
        }
    }
    out
}

#[test]
fn pieces_cover_exactly_the_range() {
    let segments = [segment("a", 0, 25), segment("b", 0, 7)];
    let reads = |range: Range<u64>| -> Vec<(String, u64, u64)> {
        pieces(&segments, range)
            .into_iter()
            .map(|(_, n, o, l)| (n.expect("data"), o, l))
            .collect()
    };
    assert_eq!(
        reads(0..32),
        [
            ("a.0".to_string(), 0, 10),
            ("a.1".to_string(), 0, 10),
            ("a.2".to_string(), 0, 5),
            ("b.0".to_string(), 0, 7),
        ]
    );
    assert_eq!(
        reads(12..27),
        [
            ("a.1".to_string(), 2, 8),
            ("a.2".to_string(), 0, 5),
            ("b.0".to_string(), 0, 2),
        ]
    );
    assert!(pieces(&segments, 32..32).is_empty());
    // A segment that starts inside its data id reads from there.
    assert_eq!(
        pieces(&[segment("c", 15, 10)], 0..10)
            .into_iter()
            .map(|(_, n, o, l)| (n.expect("data"), o, l))
            .collect::<Vec<_>>(),
        [("c.1".to_string(), 5, 5), ("c.2".to_string(), 0, 5)]
    );
}

/// A base of 1 to 4 segments of random data ids, offsets and sizes (some holes).
fn bases() -> impl Strategy<Value = Vec<Segment>> {
    prop::collection::vec((0u8..4, 0u64..30, 0u64..40), 1..5).prop_map(|parts| {
        parts
            .into_iter()
            .enumerate()
            .map(|(i, (kind, offset, size))| {
                if kind == 0 {
                    Segment::hole(size)
                } else {
                    segment(&format!("base{}", i % 3), offset, size)
                }
            })
            .collect()
    })
}

proptest! {
    /// Rule: a spliced manifest reads as the base with the writes laid over it, cut or
    /// zero-extended to the new size; its pieces never cross a stripe.
    #[test]
    fn a_splice_reads_as_the_writes_over_the_base(
        base in bases(),
        writes in prop::collection::vec((0u64..20, 1u64..25), 0..4),
        size in 0u64..150,
    ) {
        let mut model = read(&base);
        let mut placed = Vec::new();
        let mut at = 0;
        for (i, (gap, len)) in writes.into_iter().enumerate() {
            let start = at + gap;
            let data = segment(&format!("new{i}"), 0, len);
            let bytes = read(std::slice::from_ref(&data));
            if model.len() < (start + len) as usize {
                model.resize((start + len) as usize, 0);
            }
            model[start as usize..(start + len) as usize].copy_from_slice(&bytes);
            placed.push((start, data));
            at = start + len;
        }
        model.resize(size as usize, 0);
        let spliced = splice(&base, size, &placed);
        prop_assert_eq!(read(&spliced), model);
        prop_assert!(spliced.iter().all(|s| s.size > 0));
        // Neighbours that continue one another were joined.
        for pair in spliced.windows(2) {
            prop_assert!(join(pair.to_vec()).len() == 2, "{:?}", pair);
        }
    }

    /// Rule: the garbage of replacing a manifest is exactly the stripes the old one names and
    /// the new one does not.
    #[test]
    fn garbage_is_what_the_new_manifest_no_longer_names(
        base in bases(),
        writes in prop::collection::vec((0u64..20, 1u64..25), 0..4),
        size in 0u64..150,
    ) {
        let mut placed = Vec::new();
        let mut at = 0;
        for (i, (gap, len)) in writes.into_iter().enumerate() {
            placed.push((at + gap, segment(&format!("new{i}"), 0, len)));
            at += gap + len;
        }
        let new = splice(&base, size, &placed);
        let garbage = unreferenced(&base, &new);
        let named = |segments: &[Segment]| -> BTreeSet<String> {
            segments
                .iter()
                .filter(|s| !s.is_hole() && s.size > 0)
                .flat_map(|s| s.stripe_range().map(move |n| s.stripe(n)))
                .collect()
        };
        let (old, kept, gone) = (named(&base), named(&new), named(&garbage));
        prop_assert!(gone.is_disjoint(&kept));
        let expected: BTreeSet<String> = old.difference(&kept).cloned().collect();
        prop_assert_eq!(gone, expected);
    }
}

/// Rule: a slice past the end of the data is a hole; a slice of nothing is nothing.
#[test]
fn slices_past_the_end_are_holes() {
    let base = [segment("a", 0, 25)];
    assert_eq!(
        slice(&base, 20..40),
        [segment("a", 20, 5), Segment::hole(15)]
    );
    assert!(slice(&base, 5..5).is_empty());
    assert_eq!(slice(&[], 0..8), [Segment::hole(8)]);
}

#[test]
fn crowded_stripes_are_those_more_segments_share() {
    // Stripe 0: three pieces; stripe 1: one segment across it and into stripe 2; stripe 2:
    // that segment's end and a hole.
    let segments = vec![
        segment("a", 0, 3),
        segment("b", 40, 3),
        segment("c", 3, 4),
        segment("d", 0, 15),
        Segment::hole(5),
    ];
    assert_eq!(crowded(&segments, STRIPE, 2), vec![(0, 3)]);
    assert_eq!(crowded(&segments, STRIPE, 1), vec![(0, 3), (2, 2)]);
    assert!(crowded(&segments, STRIPE, 4).is_empty());
    // A long segment counts in its first and last stripe only.
    assert!(crowded(&[segment("a", 0, 1000)], STRIPE, 1).is_empty());
}
