use proptest::prelude::*;

use super::*;

/// A layout of small, varied shapes (units of 512 B keep the cases fast).
fn layouts() -> impl Strategy<Value = Layout> {
    (
        2usize..9,
        1usize..5,
        prop_oneof![Just(512usize), Just(1024), Just(4096)],
    )
        .prop_map(|(k, m, unit)| Layout::new(k, m, unit).expect("valid"))
}

/// `shards` with the positions in `lost` (taken modulo the width, at most `m` of them) gone.
fn lose(shards: &[Vec<u8>], lost: &[usize], m: usize) -> Vec<Option<Vec<u8>>> {
    let mut kept: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
    let width = shards.len();
    for position in lost.iter().take(m) {
        kept[position % width] = None;
    }
    kept
}

proptest! {
    /// Rule: the folds of an object's shards agree with its parity; a change confined to one
    /// stripe of one shard is always seen, and blamed on that shard when `m ≥ 2` (with one
    /// parity shard, none can be blamed); changes to two shards are always seen when `m ≥ 2`.
    #[test]
    fn folds_check_parity_and_find_the_changed_shard(
        layout in layouts(),
        len in 1usize..40_000,
        seed in any::<u8>(),
        changes in prop::collection::vec((any::<usize>(), any::<usize>(), 1u8..), 1..3),
    ) {
        let codec = Codec::new(layout);
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1) ^ seed).collect();
        let mut shards = codec.encode(&data);
        let folds = |shards: &[Vec<u8>]| -> Vec<Vec<u8>> {
            shards.iter().map(|s| fold(layout.unit(), s)).collect()
        };
        let check = |folds: &[Vec<u8>]| {
            let folds: Vec<&[u8]> = folds.iter().map(Vec::as_slice).collect();
            codec.check_folds(&folds).expect("k + m folds of a unit")
        };
        prop_assert_eq!(check(&folds(&shards)), ParityCheck::Agrees);
        let width = layout.k() + layout.m();
        let mut changed = std::collections::BTreeSet::new();
        for (shard, at, flip) in &changes {
            // Distinct shards, one byte each.
            let shard = (shard + changed.len()) % width;
            if !changed.insert(shard) {
                continue;
            }
            let len = shards[shard].len();
            shards[shard][at % len] ^= flip;
        }
        let found = check(&folds(&shards));
        match (changed.len(), layout.m()) {
            (1, 1) => prop_assert_eq!(found, ParityCheck::Unknown),
            (1, _) => prop_assert_eq!(
                found,
                ParityCheck::Wrong(*changed.first().expect("one"))
            ),
            (_, 1) => {}
            _ => prop_assert_ne!(found, ParityCheck::Agrees),
        }
    }
}

proptest! {
    /// Rule: any `k` of the `k + m` shards rebuild every byte, for any size (0 B, odd sizes,
    /// sizes just off a stripe).
    #[test]
    fn any_k_shards_rebuild_every_byte(
        layout in layouts(),
        len in 0usize..40_000,
        seed in any::<u8>(),
        lost in prop::collection::vec(any::<usize>(), 0..5),
    ) {
        let codec = Codec::new(layout);
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1) ^ seed).collect();
        let shards = codec.encode(&data);
        prop_assert!(shards.iter().all(|s| s.len() as u64 == layout.shard_len(len as u64)));
        let mut kept = lose(&shards, &lost, layout.m());
        codec.reconstruct(&mut kept).expect("k shards are enough");
        let rebuilt: Vec<Vec<u8>> = kept.into_iter().map(|s| s.expect("rebuilt")).collect();
        prop_assert_eq!(&rebuilt, &shards);
        prop_assert_eq!(codec.join(&rebuilt[..layout.k()], len as u64).expect("joins"), data);
    }

    /// Rule: stripes coded side by side from pieces of their own (each at most a stripe,
    /// short ones zero-padded) code as the object bytes laid end to end do.
    #[test]
    fn stripes_in_pieces_code_as_one_buffer(
        layout in layouts(),
        lens in prop::collection::vec(0usize..20_000, 0..6),
        seed in any::<u8>(),
    ) {
        let codec = Codec::new(layout);
        let width = layout.stripe_width() as usize;
        let stripes: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(s, len)| (0..len % (width + 1)).map(|i| (i + s) as u8 ^ seed).collect())
            .collect();
        let mut whole = Vec::new();
        for stripe in &stripes {
            let at = whole.len();
            whole.extend_from_slice(stripe);
            whole.resize(at + width, 0);
        }
        let pieces: Vec<&[u8]> = stripes.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(codec.encode_stripes(&pieces), codec.encode(&whole));
    }

    /// Rule: the extents of a range cover it exactly, in object order, each within one chunk,
    /// and name where the encoding put those bytes.
    #[test]
    fn extents_name_where_each_byte_lies(
        layout in layouts(),
        len in 1usize..30_000,
        start in 0u64..30_000,
        span in 0u64..30_000,
    ) {
        let codec = Codec::new(layout);
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let shards = codec.encode(&data);
        let start = start % len as u64;
        let range = start..(start + span).min(len as u64);
        let extents = layout.extents(&range);
        let mut at = range.start;
        for extent in &extents {
            prop_assert_eq!(extent.object_offset, at);
            prop_assert!(extent.len > 0 && extent.len <= layout.unit() as u64);
            let on_shard = &shards[extent.shard]
                [extent.shard_offset as usize..(extent.shard_offset + extent.len) as usize];
            prop_assert_eq!(on_shard, &data[at as usize..(at + extent.len) as usize]);
            at += extent.len;
        }
        prop_assert_eq!(at, range.end);
        let width = layout.stripe_width();
        prop_assert!(extents.iter().all(|e| e.shard_offset / layout.unit() as u64 == e.object_offset / width));
    }
}

/// Rule: profiles that make no sense are refused with the reason.
#[test]
fn nonsense_profiles_are_refused() {
    for (k, m, unit) in [
        (1, 1, 4096),
        (4, 0, 4096),
        (30, 3, 4096),
        (4, 2, 0),
        (4, 2, 1000),
        (4, 2, 2 << 20),
    ] {
        assert!(
            matches!(Layout::new(k, m, unit), Err(ErasureError::Profile(_))),
            "{k}+{m} unit {unit}"
        );
    }
    assert!(Layout::new(2, 1, 4096).is_ok());
    assert!(Layout::new(28, 4, 4096).is_ok());
}

/// Rule: fewer than `k` shards are refused, not guessed from.
#[test]
fn fewer_than_k_shards_are_refused() {
    let codec = Codec::new(Layout::new(4, 2, 512).expect("valid"));
    let shards = codec.encode(&[7u8; 5000]);
    let mut kept: Vec<Option<Vec<u8>>> = shards.into_iter().map(Some).collect();
    kept[0] = None;
    kept[2] = None;
    kept[5] = None;
    assert_eq!(
        codec.reconstruct(&mut kept),
        Err(ErasureError::TooFewShards { have: 3, need: 4 })
    );
}
