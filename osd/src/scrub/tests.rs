//! The comparison against every case docs/scrub.md names, and a property: whatever one holder
//! of three suffers, the repairs bring it back to the other two.

use proptest::prelude::*;

use super::*;
use crate::store::{Op, RocksStore, Transaction};

fn copy(version: u64, size: u64) -> ObjectScrub {
    ObjectScrub {
        version,
        size,
        xattrs: [1; 32],
        omap: [2; 32],
        data: Some([version as u8; 32]),
        fold: None,
        error: None,
    }
}

fn bad(version: u64) -> ObjectScrub {
    ObjectScrub {
        error: Some("blob 0000000000000007: crc32c of block 3 does not match".into()),
        ..copy(version, 10)
    }
}

/// Three holders (osd.0 to osd.2) whose maps hold `objects[i]` as object "o".
fn maps(objects: [Option<ObjectScrub>; 3]) -> Vec<(OsdId, ScrubMap)> {
    objects
        .into_iter()
        .enumerate()
        .map(|(i, object)| {
            let map = object.map(|o| ("o".to_string(), o)).into_iter().collect();
            (OsdId(i as u32), map)
        })
        .collect()
}

fn problem(holder: u32, problem: Problem) -> Inconsistency {
    Inconsistency {
        object: "o".into(),
        holder: OsdId(holder),
        problem,
    }
}

fn copy_to(from: &[u32], to: &[u32]) -> Repair {
    Repair::Copy {
        object: "o".into(),
        from: from.iter().map(|o| OsdId(*o)).collect(),
        to: to.iter().map(|o| OsdId(*o)).collect(),
    }
}

/// Rule: holders that agree are consistent.
#[test]
fn agreeing_holders_are_clean() {
    let verdict = compare(
        &maps([Some(copy(4, 10)), Some(copy(4, 10)), Some(copy(4, 10))]),
        None,
    );
    assert_eq!(verdict, Verdict::default());
}

/// Rule: a copy that fails its checksums is bad, and is repaired from an intact one, even
/// when it is the only intact one left (its checksums prove it).
#[test]
fn a_bad_copy_is_known_not_voted_on() {
    let verdict = compare(
        &maps([Some(bad(4)), Some(copy(4, 10)), Some(copy(4, 10))]),
        None,
    );
    assert!(matches!(
        &verdict.inconsistencies[..],
        [Inconsistency {
            holder: OsdId(0),
            problem: Problem::ReadError(_),
            ..
        }]
    ));
    assert_eq!(verdict.repairs, [copy_to(&[1, 2], &[0])]);
    let verdict = compare(&maps([Some(bad(4)), Some(bad(4)), Some(copy(4, 10))]), None);
    assert_eq!(verdict.repairs, [copy_to(&[2], &[0, 1])]);
    assert!(verdict.unrepairable.is_empty());
}

/// Rule: every copy bad: reported, nothing repaired.
#[test]
fn every_copy_bad_is_unrepairable() {
    let verdict = compare(&maps([Some(bad(4)), Some(bad(4)), Some(bad(4))]), None);
    assert_eq!(verdict.unrepairable, ["o"]);
    assert!(verdict.repairs.is_empty());
    assert_eq!(verdict.inconsistencies.len(), 3);
}

/// Rule: an object missing on one holder is copied to it; one stray on one holder is removed.
#[test]
fn missing_and_stray_objects_follow_the_majority() {
    let verdict = compare(&maps([None, Some(copy(4, 10)), Some(copy(4, 10))]), None);
    assert_eq!(verdict.inconsistencies, [problem(0, Problem::Missing)]);
    assert_eq!(verdict.repairs, [copy_to(&[1, 2], &[0])]);
    let verdict = compare(&maps([Some(copy(4, 10)), None, None]), None);
    assert_eq!(verdict.inconsistencies, [problem(0, Problem::Stray)]);
    assert_eq!(
        verdict.repairs,
        [Repair::Remove {
            object: "o".into(),
            on: vec![OsdId(0)]
        }]
    );
}

/// Rule: a holder whose metadata, omap or bytes changed behind the PG's back is repaired to
/// what the others agree on, and the fields that differ are named.
#[test]
fn a_diverged_copy_is_repaired_to_the_majority() {
    let mut changed = copy(4, 10);
    changed.omap = [9; 32];
    changed.size = 11;
    let verdict = compare(
        &maps([Some(copy(4, 10)), Some(changed), Some(copy(4, 10))]),
        None,
    );
    assert_eq!(
        verdict.inconsistencies,
        [problem(1, Problem::Differs(vec![Field::Size, Field::Omap]))]
    );
    assert_eq!(verdict.repairs, [copy_to(&[0, 2], &[1])]);
}

/// Rule: with no strict majority, nothing is repaired: two holders that disagree, three that
/// all differ, an object on one holder of two.
#[test]
fn no_majority_is_unrepairable() {
    let two = |a: Option<ObjectScrub>, b: Option<ObjectScrub>| {
        let mut m = maps([a, b, None]);
        m.pop();
        compare(&m, None)
    };
    for verdict in [
        two(Some(copy(4, 10)), Some(copy(5, 10))),
        two(Some(copy(4, 10)), None),
        compare(
            &maps([Some(copy(3, 10)), Some(copy(4, 10)), Some(copy(5, 10))]),
            None,
        ),
        compare(
            &maps([Some(copy(4, 10)), Some(copy(5, 10)), Some(bad(4))]),
            None,
        ),
    ] {
        assert_eq!(verdict.unrepairable, ["o"], "{verdict:?}");
        assert!(verdict.repairs.is_empty(), "{verdict:?}");
        assert!(!verdict.inconsistencies.is_empty());
    }
}

/// Rule: shards of an erasure pool hold different bytes: their data digests are not compared,
/// and a bad shard is rebuilt only from at least `k` good ones.
#[test]
fn shards_are_rebuilt_from_k_good_ones() {
    let shard = |data: u8| ObjectScrub {
        data: Some([data; 32]),
        ..copy(4, 10)
    };
    let codec = Some(two_and_one());
    let codec = codec.as_ref();
    let verdict = compare(
        &maps([Some(shard(1)), Some(shard(2)), Some(shard(3))]),
        codec,
    );
    assert_eq!(verdict, Verdict::default());
    let verdict = compare(&maps([Some(shard(1)), Some(bad(4)), Some(shard(3))]), codec);
    assert_eq!(verdict.repairs, [copy_to(&[0, 2], &[1])]);
    let verdict = compare(&maps([Some(shard(1)), Some(bad(4)), None]), codec);
    assert_eq!(verdict.unrepairable, ["o"]);
    assert!(verdict.repairs.is_empty());
}

fn two_and_one() -> Codec {
    Codec::new(tidepool_erasure::Layout::new(2, 1, 512).expect("layout"))
}

/// Holders osd.0.. of the shards of `data` under `codec`, each with its fold; `change` flips
/// one byte of the shards at these positions, which still pass their checksums.
fn folded_shards(codec: &Codec, data: &[u8], change: &[usize]) -> Vec<(OsdId, ScrubMap)> {
    let unit = codec.layout().unit();
    let mut shards = codec.encode(data);
    for at in change {
        shards[*at][unit + 7] ^= 0x5a;
    }
    shards
        .iter()
        .enumerate()
        .map(|(i, shard)| {
            let object = ObjectScrub {
                data: Some(*blake3::hash(shard).as_bytes()),
                fold: Some(tidepool_erasure::fold(unit, shard).into()),
                ..copy(4, data.len() as u64)
            };
            (OsdId(i as u32), [("o".to_string(), object)].into())
        })
        .collect()
}

/// Rule: a deep scrub of an erasure pool checks that the shards' folds are one code word. A
/// shard that passes its checksums but is not is never rebuilt (it is not provably bad): with
/// `m ≥ 2` the one the others agree without is named, with one parity shard every holder is.
#[test]
fn shards_whose_parity_disagrees_are_named_never_repaired() {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
    let two_two = Codec::new(tidepool_erasure::Layout::new(2, 2, 512).expect("layout"));
    for codec in [two_two, two_and_one()] {
        let m = codec.layout().m();
        assert_eq!(
            compare(&folded_shards(&codec, &data, &[]), Some(&codec)),
            Verdict::default()
        );
        for changed in 0..codec.layout().k() + m {
            let verdict = compare(&folded_shards(&codec, &data, &[changed]), Some(&codec));
            let named: Vec<u32> = verdict.inconsistencies.iter().map(|i| i.holder.0).collect();
            if m >= 2 {
                assert_eq!(named, [changed as u32], "{verdict:?}");
            } else {
                assert_eq!(named, [0, 1, 2], "{verdict:?}");
            }
            assert!(verdict
                .inconsistencies
                .iter()
                .all(|i| i.problem == Problem::Parity));
            assert!(verdict.repairs.is_empty());
            assert_eq!(verdict.unrepairable, ["o"]);
        }
    }
    // Two changed shards of 2+2: named all, never one of them alone.
    let codec = Codec::new(tidepool_erasure::Layout::new(2, 2, 512).expect("layout"));
    let verdict = compare(&folded_shards(&codec, &data, &[0, 3]), Some(&codec));
    assert_eq!(verdict.unrepairable, ["o"]);
    // A shallow scrub's maps carry no folds: nothing to check.
    let mut shallow = folded_shards(&codec, &data, &[1]);
    for (_, map) in &mut shallow {
        map.values_mut().for_each(|o| o.fold = None);
    }
    assert_eq!(compare(&shallow, Some(&codec)), Verdict::default());
}

/// What one holder of three may suffer.
#[derive(Clone, Debug)]
enum Harm {
    Rot,
    Lose,
    Stray,
    Diverge(u8),
}

proptest! {
    /// Rule: whatever harms one holder of three (each object on its own), the verdict names
    /// exactly the harmed objects on that holder, and its repairs make every holder's map
    /// equal to the others'.
    #[test]
    fn repairs_converge_one_harmed_holder(
        objects in proptest::collection::vec((1u64..50, 0u64..1000), 0..12),
        harms in proptest::collection::vec(
            prop_oneof![Just(Harm::Rot), Just(Harm::Lose), Just(Harm::Stray), (2u8..5).prop_map(Harm::Diverge)],
            0..6,
        ),
        victim in 0usize..3,
    ) {
        let good: ScrubMap = objects
            .iter()
            .enumerate()
            .map(|(i, (v, s))| (format!("o{i}"), copy(*v, *s)))
            .collect();
        let mut harmed = good.clone();
        let mut expected = BTreeSet::new();
        for (i, harm) in harms.iter().enumerate() {
            let name = format!("o{i}");
            match (harm, good.get(&name)) {
                (Harm::Rot, Some(c)) => { harmed.insert(name.clone(), ObjectScrub { error: Some("rot".into()), ..c.clone() }); }
                (Harm::Lose, Some(_)) => { harmed.remove(&name); }
                (Harm::Diverge(d), Some(c)) => { harmed.insert(name.clone(), ObjectScrub { xattrs: [*d; 32], ..c.clone() }); }
                (Harm::Stray, None) => { harmed.insert(name.clone(), copy(1, 1)); }
                _ => continue,
            }
            expected.insert(name);
        }
        let mut all: Vec<(OsdId, ScrubMap)> = (0..3).map(|o| (OsdId(o), good.clone())).collect();
        all[victim].1 = harmed;
        let verdict = compare(&all, None);
        prop_assert!(verdict.unrepairable.is_empty());
        let named: BTreeSet<String> = verdict.inconsistencies.iter().map(|i| i.object.clone()).collect();
        prop_assert_eq!(&named, &expected);
        prop_assert!(verdict.inconsistencies.iter().all(|i| i.holder == OsdId(victim as u32)));
        for repair in &verdict.repairs {
            match repair {
                Repair::Copy { object, from, to } => {
                    let source = from.first().expect("a source");
                    let good_copy = all[source.0 as usize].1[object].clone();
                    for osd in to {
                        all[osd.0 as usize].1.insert(object.clone(), good_copy.clone());
                    }
                }
                Repair::Remove { object, on } => {
                    for osd in on {
                        all[osd.0 as usize].1.remove(object);
                    }
                }
            }
        }
        prop_assert!(all.iter().all(|(_, map)| *map == good));
    }
}

const COLL: CollectionId = CollectionId {
    pool: 1,
    seed: 3,
    shard: CollectionId::NO_SHARD,
};

/// A store in a temporary folder holding, in `COLL`: "big" (200,000 bytes, a blob of its
/// own), "small" with an xattr and two omap entries, and the PG's own "\0meta".
fn holder() -> (tempfile::TempDir, RocksStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStore::open(dir.path()).expect("open");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let ops = vec![
        Op::CreateCollection(COLL),
        Op::Write {
            coll: COLL,
            name: "big".into(),
            offset: 0,
            data: big.into(),
            sums: None,
        },
        Op::SetXattr {
            coll: COLL,
            name: "big".into(),
            key: VERSION_XATTR.into(),
            value: 7u64.to_le_bytes().to_vec(),
        },
        Op::Write {
            coll: COLL,
            name: "small".into(),
            offset: 0,
            data: b"hello".to_vec().into(),
            sums: None,
        },
        Op::SetXattr {
            coll: COLL,
            name: "small".into(),
            key: "user.colour".into(),
            value: b"blue".to_vec(),
        },
        Op::OmapSet {
            coll: COLL,
            name: "small".into(),
            entries: vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
            ],
        },
        Op::Write {
            coll: COLL,
            name: "\0meta".into(),
            offset: 0,
            data: b"the PG's own".to_vec().into(),
            sums: None,
        },
    ];
    store.apply(&Transaction { ops }).expect("objects");
    (dir, store)
}

/// Rule: holders with the same objects have the same scrub maps, shallow and deep; the PG's
/// own objects are left out.
#[test]
fn equal_holders_have_equal_maps() {
    let ((_a, a), (_b, b)) = (holder(), holder());
    for deep in [false, true] {
        let (map_a, map_b) = (
            map_of(&a, COLL, deep, None, None, None).expect("a"),
            map_of(&b, COLL, deep, None, None, None).expect("b"),
        );
        assert_eq!(map_a, map_b);
        assert_eq!(map_a.keys().collect::<Vec<_>>(), ["big", "small"]);
        assert_eq!((map_a["big"].version, map_a["big"].size), (7, 200_000));
        assert_eq!(map_a["big"].data.is_some(), deep);
    }
}

/// Rule: a byte flipped on disk is found by a deep scrub (not by a shallow one, which reads
/// no data), named on that holder, and repaired from the others.
#[test]
fn a_deep_scrub_finds_a_flipped_byte() {
    let (_a, a) = holder();
    let (b_dir, b) = holder();
    let (_c, c) = holder();
    let block = b_dir.path().join("block");
    let mut bytes = std::fs::read(&block).expect("block file");
    bytes[70_000] ^= 0x08;
    std::fs::write(&block, &bytes).expect("flip a byte");
    let maps = |deep| -> Vec<(OsdId, ScrubMap)> {
        [&a, &b, &c]
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    OsdId(i as u32),
                    map_of(s, COLL, deep, None, None, None).expect("map"),
                )
            })
            .collect()
    };
    assert_eq!(compare(&maps(false), None), Verdict::default());
    let verdict = compare(&maps(true), None);
    assert!(
        matches!(
            &verdict.inconsistencies[..],
            [Inconsistency { object, holder: OsdId(1), problem: Problem::ReadError(_) }] if object == "big"
        ),
        "{verdict:?}"
    );
    assert_eq!(
        verdict.repairs,
        [Repair::Copy {
            object: "big".into(),
            from: vec![OsdId(0), OsdId(2)],
            to: vec![OsdId(1)]
        }]
    );
}

/// Rule: an omap entry or an xattr changed on one holder changes its digests, and nothing else.
#[test]
fn changed_metadata_shows_in_its_digest() {
    let (_a, a) = holder();
    let before = map_of(&a, COLL, false, None, None, None).expect("map");
    let change = |op: Op| {
        a.apply(&Transaction { ops: vec![op] }).expect("change");
        map_of(&a, COLL, false, None, None, None).expect("map")
    };
    let after = change(Op::OmapSet {
        coll: COLL,
        name: "small".into(),
        entries: vec![(b"b".to_vec(), b"3".to_vec())],
    });
    assert_ne!(after["small"].omap, before["small"].omap);
    assert_eq!(after["small"].xattrs, before["small"].xattrs);
    let again = change(Op::SetXattr {
        coll: COLL,
        name: "small".into(),
        key: "user.colour".into(),
        value: b"red".to_vec(),
    });
    assert_ne!(again["small"].xattrs, after["small"].xattrs);
    assert_eq!(again["big"], before["big"]);
}

/// Rule: the chunks a scrub walks, each ended where the primary's chunk ends, cover every
/// object exactly once, also one that only another holder has (past the primary's last), and
/// a chunk holds at most its object count, or one object past its bytes.
#[test]
fn chunks_cover_every_object_once() {
    let (_a, a) = holder();
    let ops: Vec<Op> = (0..10)
        .map(|i| Op::Write {
            coll: COLL,
            name: format!("obj{i}"),
            offset: 0,
            data: vec![i as u8; 1000].into(),
            sums: None,
        })
        .collect();
    a.apply(&Transaction { ops }).expect("objects");
    let whole = map_of(&a, COLL, true, None, None, None).expect("map");
    assert_eq!(whole.len(), 12);
    for (objects, bytes) in [(3, u64::MAX), (100, 2500), (1, 0)] {
        let mut after: Option<String> = None;
        let mut seen = ScrubMap::new();
        let mut chunks = 0;
        loop {
            let until = chunk_end(&a, COLL, after.as_deref(), objects, bytes).expect("chunk");
            let chunk =
                map_of(&a, COLL, true, None, after.as_deref(), until.as_deref()).expect("map");
            let before_last: u64 = chunk.values().rev().skip(1).map(|o| o.size).sum();
            assert!(
                chunk.len() <= objects && before_last < bytes.max(1),
                "{objects} {bytes}: {} objects, {before_last} bytes before the last",
                chunk.len()
            );
            for (name, object) in chunk {
                assert!(
                    seen.insert(name, object).is_none(),
                    "an object in two chunks"
                );
            }
            chunks += 1;
            match until {
                Some(until) => after = Some(until),
                None => break,
            }
        }
        assert_eq!(seen, whole, "{objects} {bytes}");
        assert!(chunks > 1, "{objects} {bytes}: one chunk");
    }
    // The primary's last chunk runs to the end: it takes a name only another holder has.
    let (_b, b) = holder();
    let until = chunk_end(&b, COLL, Some("big"), 10, u64::MAX).expect("chunk");
    assert_eq!(until, None);
    let tail = map_of(&a, COLL, false, None, Some("big"), None).expect("map");
    assert_eq!(tail.len(), 11);
}

/// Rule: rot under an object that was partly overwritten is found too (its first blob and the
/// overwrite's alike).
#[test]
fn rot_under_an_overwritten_object_is_found() {
    let (dir, store) = holder();
    let big: Vec<u8> = (0..1_050_000u32).map(|i| (i % 253) as u8).collect();
    let write = |name: &str, offset: u64, data: Vec<u8>| {
        let ops = vec![Op::Write {
            coll: COLL,
            name: name.into(),
            offset,
            data: data.into(),
            sums: None,
        }];
        store.apply(&Transaction { ops }).expect("write");
    };
    write("shard", 0, big);
    write("shard", 250, vec![7; 17_500]);
    let block = dir.path().join("block");
    let mut bytes = std::fs::read(&block).expect("block file");
    for at in (100..bytes.len()).step_by(4096) {
        bytes[at] ^= 0x20;
    }
    std::fs::write(&block, &bytes).expect("rot");
    let map = map_of(&store, COLL, true, None, None, None).expect("map");
    assert!(map["shard"].error.is_some(), "{:?}", map["shard"]);
}
