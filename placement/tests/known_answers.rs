//! Placement results and encodings pinned to files in `testdata/`: a change to either would move
//! data in running clusters or make stored maps unreadable, so it must be deliberate.
//!
//! Set `TIDEPOOL_BLESS=1` to rewrite the files after an intended change (with a new tunables
//! version for placement).

use std::fmt::Write as _;
use std::path::PathBuf;

use tidepool_placement::encoding::{decode, encode};
use tidepool_placement::generate::{next, pool, Layout};
use tidepool_placement::{
    BucketType, Change, ClusterMap, Incremental, OsdId, PgActivation, PgId, Placement, PoolKind,
    Scratch, Weight,
};

fn testdata(name: &str) -> PathBuf {
    manifest_dir().join("testdata").join(name)
}

fn check_bytes(name: &str, actual: &[u8]) {
    let path = testdata(name);
    if std::env::var_os("TIDEPOOL_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write testdata");
    }
    let expected = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (TIDEPOOL_BLESS=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the computed value",
        path.display()
    );
}

/// Two pools over 4 hosts x 3 OSDs with mixed weights, one OSD out and one down.
fn fixture_map() -> ClusterMap {
    let mut map = Layout {
        hosts: 4,
        osds_per_host: 3,
        weight: Weight::ONE,
    }
    .build();
    let replicated = pool(
        &map,
        "rbd",
        PoolKind::Replicated {
            size: 3,
            min_size: 2,
        },
        32,
        BucketType::Host,
    )
    .expect("root");
    map = map
        .apply(&next(&map, vec![Change::CreatePool(replicated)]))
        .expect("applies");
    let erasure = pool(&map, "ec", PoolKind::erasure(2, 1), 16, BucketType::Osd).expect("root");
    let changes = vec![
        Change::CreatePool(erasure),
        Change::SetOsdWeight {
            id: OsdId(4),
            weight: "2.5".parse().expect("weight"),
        },
        Change::SetOsdIn {
            id: OsdId(7),
            is_in: false,
        },
        Change::SetOsdUp {
            id: OsdId(2),
            up: false,
        },
    ];
    map.apply(&next(&map, changes)).expect("applies")
}

/// Rule: the same map places every placement group on the same OSDs, forever.
#[test]
fn mappings_are_pinned() {
    let map = fixture_map();
    let placement = Placement::new(&map);
    let mut scratch = Scratch::default();
    let mut text = String::new();
    for pool in map.pools.values() {
        for seed in 0..pool.pg_num {
            let pg = PgId {
                pool: pool.id,
                seed,
            };
            let mapping = placement.map_pg(pg, &mut scratch).expect("pg exists");
            let show = |osds: &[Option<OsdId>]| {
                osds.iter()
                    .map(|o| o.map_or("-".to_owned(), |o| o.0.to_string()))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            writeln!(
                text,
                "{pg} raw [{}] up [{}] primary {:?}",
                show(&mapping.raw),
                show(&mapping.up),
                mapping.primary.map(|o| o.0)
            )
            .expect("write to string");
        }
    }
    check_bytes("mappings-v1.txt", text.as_bytes());
}

/// Rule: erasure-coded placement leaves a down OSD's position empty instead of shifting.
#[test]
fn erasure_down_is_a_hole() {
    let map = fixture_map();
    let placement = Placement::new(&map);
    let ec = map.pool_by_name("ec").expect("pool").id;
    let mut scratch = Scratch::default();
    let mut saw_hole = false;
    for seed in 0..16 {
        let mapping = placement
            .map_pg(PgId { pool: ec, seed }, &mut scratch)
            .expect("pg exists");
        assert_eq!(mapping.up.len(), 3);
        for (raw, up) in mapping.raw.iter().zip(&mapping.up) {
            if *raw == Some(OsdId(2)) {
                assert_eq!(*up, None);
                saw_hole = true;
            } else {
                assert_eq!(raw, up);
            }
        }
    }
    assert!(saw_hole, "osd.2 holds some position of the ec pool");
}

/// Rule: encodings written by version 1 (before `pg_active`) still decode, to the same
/// values.
#[test]
fn version_1_encodings_decode() {
    let map = fixture_map();
    let stored = std::fs::read(testdata("map-v1.bin")).expect("fixture");
    assert_eq!(&stored[4..6], &1u16.to_le_bytes());
    assert_eq!(decode::<ClusterMap>(&stored).expect("decodes"), map);

    let incremental = Incremental {
        epoch: map.epoch.next(),
        changes: vec![Change::SetOsdIn {
            id: OsdId(7),
            is_in: true,
        }],
    };
    let stored = std::fs::read(testdata("incremental-v1.bin")).expect("fixture");
    assert_eq!(
        decode::<Incremental>(&stored).expect("decodes"),
        incremental
    );
}

/// Rule: encodings written by version 2 decode to the same values.
#[test]
fn version_2_encodings_decode() {
    let mut map = fixture_map();
    let pg = PgId {
        pool: *map.pools.keys().next().expect("a pool"),
        seed: 3,
    };
    let activation = PgActivation {
        epoch: map.epoch,
        acting: vec![OsdId(1), OsdId(4), OsdId(8)],
    };
    map.pg_active.insert(pg, activation.clone());
    let stored = std::fs::read(testdata("map-v2.bin")).expect("fixture");
    assert_eq!(&stored[4..6], &2u16.to_le_bytes());
    assert_eq!(decode::<ClusterMap>(&stored).expect("decodes"), map);

    let incremental = Incremental {
        epoch: map.epoch.next(),
        changes: vec![Change::SetPgActive { pg, activation }],
    };
    let stored = std::fs::read(testdata("incremental-v2.bin")).expect("fixture");
    assert_eq!(
        decode::<Incremental>(&stored).expect("decodes"),
        incremental
    );
}

/// Rule: encodings written by version 3 (OSDs' `full` flag, and the change that sets it)
/// decode to the same values.
#[test]
fn version_3_encodings_decode() {
    let mut map = fixture_map();
    map.osds.get_mut(&OsdId(5)).expect("osd.5").full = true;
    let stored = std::fs::read(testdata("map-v3.bin")).expect("fixture");
    assert_eq!(&stored[4..6], &3u16.to_le_bytes());
    assert_eq!(decode::<ClusterMap>(&stored).expect("decodes"), map);

    let incremental = Incremental {
        epoch: map.epoch.next(),
        changes: vec![Change::SetOsdFull {
            id: OsdId(5),
            full: false,
        }],
    };
    let stored = std::fs::read(testdata("incremental-v3.bin")).expect("fixture");
    assert_eq!(
        decode::<Incremental>(&stored).expect("decodes"),
        incremental
    );
}

/// Rule: encodings written by version 4 (an erasure pool's stripe unit) decode to the same
/// values; this build writes version 4. A version 3 erasure pool reads with the default unit.
#[test]
fn version_4_encodings_decode() {
    let mut map = fixture_map();
    for pool in map.pools.values_mut() {
        if let PoolKind::Erasure { stripe_unit, .. } = &mut pool.kind {
            *stripe_unit = 16384;
        }
    }
    check_bytes("map-v4.bin", &encode(&map));
    let stored = std::fs::read(testdata("map-v4.bin")).expect("fixture");
    assert_eq!(&stored[4..6], &4u16.to_le_bytes());
    assert_eq!(decode::<ClusterMap>(&stored).expect("decodes"), map);
    let v3 = decode::<ClusterMap>(&std::fs::read(testdata("map-v3.bin")).expect("fixture"))
        .expect("decodes");
    let ec = v3.pool_by_name("ec").expect("pool");
    assert_eq!(ec.kind, PoolKind::erasure(2, 1));
}

/// Rule: truncated, foreign or future records are refused with an error, never a panic.
#[test]
fn bad_encodings_are_refused() {
    let bytes = encode(&fixture_map());
    for cut in 0..bytes.len() {
        assert!(
            decode::<ClusterMap>(&bytes[..cut]).is_err(),
            "prefix of {cut} bytes"
        );
    }
    assert!(
        decode::<Incremental>(&bytes).is_err(),
        "a map is not an incremental"
    );
    let mut future = bytes.clone();
    future[4] = 9;
    assert!(decode::<ClusterMap>(&future).is_err());
}

/// This package's folder, read when the test runs: a test binary built from another checkout of
/// the same tree (sharing the target folder) must still look in this one.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .expect("cargo sets CARGO_MANIFEST_DIR when it runs tests")
}
