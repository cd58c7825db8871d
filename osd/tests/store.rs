//! The object store suite, run on both stores: semantics, atomicity, checksums, a model-based
//! property test against `MemStore`, and crash consistency of `RocksStore` (a child process
//! killed with SIGKILL while it writes).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use proptest::prelude::*;
use tidepool_osd::store::{
    Checksums, CollectionId, CollectionUsage, MemStore, ObjectStore, Op, RocksStore, StoreError,
    Transaction,
};

const COLL: CollectionId = CollectionId {
    pool: 1,
    seed: 7,
    shard: CollectionId::NO_SHARD,
};

fn tx(ops: Vec<Op>) -> Transaction {
    Transaction { ops }
}

fn write(name: &str, offset: u64, data: &[u8]) -> Op {
    Op::Write {
        coll: COLL,
        name: name.into(),
        offset,
        data: data.to_vec().into(),
        sums: None,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn with_coll<S: ObjectStore>(store: S) -> S {
    store
        .apply(&tx(vec![Op::CreateCollection(COLL)]))
        .expect("create collection");
    store
}

/// Runs `check` on a fresh `MemStore` and a fresh `RocksStore`.
fn on_both(check: impl Fn(&dyn ObjectStore)) {
    check(&with_coll(MemStore::new()));
    let dir = tempfile::tempdir().expect("tempdir");
    check(&with_coll(RocksStore::open(dir.path()).expect("open")));
}

/// Rule: writes, overwrites, truncates and removes read back as a byte array would.
#[test]
fn data_reads_back_as_written() {
    on_both(|store| {
        let big = pattern(300_000, 1);
        store.apply(&tx(vec![write("o", 0, &big)])).expect("write");
        assert_eq!(store.read(COLL, "o", 0, u64::MAX).expect("read"), big);
        // An overwrite in the middle of a blob, a small one, and one past the end.
        let mut model = big.clone();
        let patch = pattern(70_000, 2);
        store
            .apply(&tx(vec![write("o", 100_003, &patch)]))
            .expect("patch");
        model[100_003..170_003].copy_from_slice(&patch);
        store
            .apply(&tx(vec![write("o", 5, b"hello")]))
            .expect("small");
        model[5..10].copy_from_slice(b"hello");
        store
            .apply(&tx(vec![write("o", 300_010, b"tail")]))
            .expect("past end");
        model.extend_from_slice(&[0; 10]);
        model.extend_from_slice(b"tail");
        assert_eq!(store.read(COLL, "o", 0, u64::MAX).expect("read"), model);
        assert_eq!(
            store.read(COLL, "o", 99_999, 10).expect("range"),
            model[99_999..100_009]
        );
        assert_eq!(
            store.read(COLL, "o", 400_000, 10).expect("past end"),
            &b""[..]
        );
        assert_eq!(
            store.stat(COLL, "o").expect("stat").size,
            model.len() as u64
        );
        store
            .apply(&tx(vec![Op::Truncate {
                coll: COLL,
                name: "o".into(),
                size: 150_000,
            }]))
            .expect("truncate");
        model.truncate(150_000);
        assert_eq!(store.read(COLL, "o", 0, u64::MAX).expect("read"), model);
        store
            .apply(&tx(vec![Op::WriteFull {
                coll: COLL,
                name: "o".into(),
                data: b"new".to_vec().into(),
                sums: None,
            }]))
            .expect("write full");
        assert_eq!(
            store.read(COLL, "o", 0, u64::MAX).expect("read"),
            &b"new"[..]
        );
        store
            .apply(&tx(vec![Op::Remove {
                coll: COLL,
                name: "o".into(),
            }]))
            .expect("remove");
        assert!(matches!(
            store.read(COLL, "o", 0, 1),
            Err(StoreError::NotFound { .. })
        ));
    });
}

/// Rule: a transaction whose last op fails changes nothing at all.
#[test]
fn transactions_are_all_or_nothing() {
    on_both(|store| {
        store
            .apply(&tx(vec![write("kept", 0, b"before")]))
            .expect("setup");
        let failing = tx(vec![
            write("kept", 0, &pattern(100_000, 3)),
            write("new", 0, b"x"),
            Op::OmapSet {
                coll: COLL,
                name: "new".into(),
                entries: vec![(b"k".to_vec(), b"v".to_vec())],
            },
            Op::Create {
                coll: COLL,
                name: "kept".into(),
                exclusive: true,
            },
        ]);
        assert!(matches!(
            store.apply(&failing),
            Err(StoreError::Exists { .. })
        ));
        assert_eq!(
            store.read(COLL, "kept", 0, u64::MAX).expect("read"),
            &b"before"[..]
        );
        assert!(matches!(
            store.stat(COLL, "new"),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.list(COLL, None, 10).expect("list"), vec!["kept"]);
        let elsewhere = CollectionId::replicated(9, 9);
        assert_eq!(
            store.apply(&tx(vec![Op::Write {
                coll: elsewhere,
                name: "x".into(),
                offset: 0,
                data: vec![1].into(),
                sums: None,
            }])),
            Err(StoreError::NoCollection(elsewhere))
        );
        assert!(matches!(
            store.apply(&tx(vec![write("huge", u64::MAX - 1, b"xx")])),
            Err(StoreError::Invalid(_))
        ));
    });
}

/// Rule: xattrs and omap are kept per object, listed in order with start-after and limit, and
/// go with the object.
#[test]
fn xattrs_and_omap() {
    on_both(|store| {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..20u8)
            .map(|i| (format!("key{i:02}").into_bytes(), vec![i]))
            .collect();
        store
            .apply(&tx(vec![
                Op::SetXattr {
                    coll: COLL,
                    name: "o".into(),
                    key: "etag".into(),
                    value: b"abc".to_vec(),
                },
                Op::OmapSet {
                    coll: COLL,
                    name: "o".into(),
                    entries: entries.clone(),
                },
                Op::OmapSet {
                    coll: COLL,
                    name: "o2".into(),
                    entries: vec![(b"key00".to_vec(), b"other".to_vec())],
                },
            ]))
            .expect("set");
        assert_eq!(store.xattrs(COLL, "o").expect("xattrs")["etag"], b"abc");
        let page = store.omap_list(COLL, "o", Some(b"key04"), 3).expect("list");
        assert_eq!(page, entries[5..8].to_vec());
        assert_eq!(store.omap_list(COLL, "o", None, 100).expect("all"), entries);
        let got = store
            .omap_get(COLL, "o", &[b"key03".to_vec(), b"nope".to_vec()])
            .expect("get");
        assert_eq!(got, BTreeMap::from([(b"key03".to_vec(), vec![3])]));
        store
            .apply(&tx(vec![
                Op::OmapRemove {
                    coll: COLL,
                    name: "o".into(),
                    keys: vec![b"key00".to_vec(), b"key01".to_vec()],
                },
                Op::RemoveXattr {
                    coll: COLL,
                    name: "o".into(),
                    key: "etag".into(),
                },
            ]))
            .expect("remove");
        assert_eq!(
            store.omap_list(COLL, "o", None, 1).expect("first")[0].0,
            b"key02"
        );
        assert!(store.xattrs(COLL, "o").expect("xattrs").is_empty());
        store
            .apply(&tx(vec![
                Op::Remove {
                    coll: COLL,
                    name: "o".into(),
                },
                Op::Create {
                    coll: COLL,
                    name: "o".into(),
                    exclusive: true,
                },
            ]))
            .expect("recreate");
        assert!(store
            .omap_list(COLL, "o", None, 10)
            .expect("empty")
            .is_empty());
        assert_eq!(
            store.omap_list(COLL, "o2", None, 10).expect("o2")[0].1,
            b"other"
        );
        // Entries written in an earlier transaction go with the object too.
        for ops in [
            vec![Op::Remove {
                coll: COLL,
                name: "o2".into(),
            }],
            vec![Op::Create {
                coll: COLL,
                name: "o2".into(),
                exclusive: true,
            }],
        ] {
            store.apply(&tx(ops)).expect("remove, then create");
        }
        assert!(store
            .omap_list(COLL, "o2", None, 10)
            .expect("empty")
            .is_empty());
    });
}

/// Rule: objects list in name order with start-after and limit; each collection's object count
/// and bytes follow its changes; removing a collection removes everything in it.
#[test]
fn listing_and_collections() {
    on_both(|store| {
        let names = ["b", "a/1", "a", "a/2", "c\u{e9}"];
        store
            .apply(&tx(names
                .iter()
                .map(|n| write(n, 0, n.as_bytes()))
                .collect()))
            .expect("write");
        assert_eq!(
            store.list(COLL, None, 100).expect("list"),
            vec!["a", "a/1", "a/2", "b", "c\u{e9}"]
        );
        let usage = |coll| store.collection_usage(coll).expect("usage");
        assert_eq!(
            usage(COLL),
            CollectionUsage {
                objects: 5,
                bytes: 11
            }
        );
        assert_eq!(
            store.list(COLL, Some("a/1"), 2).expect("page"),
            vec!["a/2", "b"]
        );
        let other = CollectionId::replicated(1, 8);
        store
            .apply(&tx(vec![Op::CreateCollection(other)]))
            .expect("create");
        assert_eq!(store.collections().expect("colls"), vec![COLL, other]);
        assert_eq!(usage(other), CollectionUsage::default());
        store
            .apply(&tx(vec![
                Op::RemoveCollection(COLL),
                Op::CreateCollection(COLL),
                write("a", 0, b"fresh"),
            ]))
            .expect("remove and recreate");
        assert_eq!(store.list(COLL, None, 100).expect("list"), vec!["a"]);
        assert_eq!(
            usage(COLL),
            CollectionUsage {
                objects: 1,
                bytes: 5
            }
        );
        assert_eq!(
            store.read(COLL, "a", 0, u64::MAX).expect("read"),
            &b"fresh"[..]
        );
        assert!(matches!(
            store.apply(&tx(vec![Op::CreateCollection(other)])),
            Err(StoreError::CollectionExists(_))
        ));
        store
            .apply(&tx(vec![Op::RemoveCollection(other)]))
            .expect("remove");
        assert!(matches!(
            store.collection_usage(other),
            Err(StoreError::NoCollection(_))
        ));
    });
}

/// Rule: transactions submitted before any is waited for all commit, those on one collection
/// in the order they were submitted (a large write included), and a failed one changes nothing
/// and does not stop the others.
#[test]
fn submitted_transactions_commit_in_order() {
    on_both(|store| {
        let other = CollectionId::replicated(1, 9);
        let large = pattern(300_000, 3);
        let commits = vec![
            store.submit(&tx(vec![Op::CreateCollection(other)])),
            store.submit(&tx(vec![write("x", 0, b"first")])),
            store.submit(&tx(vec![write("x", 5, b"-second")])),
            store.submit(&tx(vec![write("big", 0, &large)])),
            store.submit(&tx(vec![Op::Truncate {
                coll: COLL,
                name: "missing".into(),
                size: 0,
            }])),
            store.submit(&tx(vec![write("x", 12, b"-third")])),
        ];
        let results: Vec<_> = commits
            .into_iter()
            .map(|c| c.and_then(|c| c.wait()))
            .collect();
        assert!(matches!(results[4], Err(StoreError::NotFound { .. })));
        for (i, result) in results.iter().enumerate() {
            assert!(i == 4 || result.is_ok(), "transaction {i}: {result:?}");
        }
        assert_eq!(
            store.read(COLL, "x", 0, u64::MAX).expect("read"),
            &b"first-second-third"[..]
        );
        assert_eq!(store.read(COLL, "big", 0, u64::MAX).expect("read"), large);
        assert_eq!(store.collections().expect("colls"), vec![COLL, other]);
    });
}

/// Rule: the on-disk store survives a reopen with its free space rebuilt around the data
/// objects use, and detects a corrupted block (by its crc32c in every read, by the chunk's
/// blake3 hash in a copy for another OSD).
#[test]
fn rocks_store_reopens_and_detects_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(200_000, 4);
    let space = {
        let store = with_coll(RocksStore::open(dir.path()).expect("open"));
        store.apply(&tx(vec![write("o", 0, &data)])).expect("write");
        store.block_space()
    };
    let store = RocksStore::open(dir.path()).expect("reopen");
    assert_eq!(store.block_space(), space, "the same space is free");
    assert_eq!(space.0 - space.1, 200_704, "one blob in whole blocks");
    assert_eq!(store.read(COLL, "o", 0, u64::MAX).expect("read"), data);
    assert_eq!(store.read_copy(COLL, "o").expect("copy"), data);
    // Flip one byte in the second block (the only blob is the block file's first).
    let block = dir.path().join("block");
    let mut bytes = std::fs::read(&block).expect("block file");
    bytes[5000] ^= 0x40;
    std::fs::write(&block, &bytes).expect("corrupt");
    assert!(matches!(
        store.read(COLL, "o", 4096, 10),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.read(COLL, "o", 0, u64::MAX),
        Err(StoreError::Corrupt(_))
    ));
    // A copy for another OSD is checked against the chunk's blake3 hash.
    assert!(matches!(
        store.read_copy(COLL, "o"),
        Err(StoreError::Corrupt(reason)) if reason.contains("blake3")
    ));
    assert_eq!(
        store.read(COLL, "o", 9000, 10).expect("other blocks"),
        data[9000..9010]
    );
}

/// Rule: checksums a sender computed are stored as the store's own (a later corruption is
/// caught by them); ones that cannot fit the bytes are ignored and computed again.
#[test]
fn checksums_sent_with_a_write_are_kept_when_they_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = with_coll(RocksStore::open(dir.path()).expect("open"));
    let data = pattern(300_000, 9);
    let mut shared = tx(vec![write("shared", 0, &data)]);
    shared.add_checksums();
    assert!(matches!(&shared.ops[0], Op::Write { sums: Some(_), .. }));
    store.apply(&shared).expect("write");
    let mut bogus = tx(vec![write("bogus", 0, &data)]);
    if let Op::Write { sums, .. } = &mut bogus.ops[0] {
        *sums = Some(Checksums {
            crcs: vec![1, 2, 3],
            hash: vec![0; 32],
        });
    }
    store.apply(&bogus).expect("write");
    for name in ["shared", "bogus"] {
        assert_eq!(store.read(COLL, name, 0, u64::MAX).expect("read"), data);
        assert_eq!(
            store.read(COLL, name, 70_000, 9).expect("range"),
            data[70_000..70_009]
        );
    }
    // Sums that fit but do not match are kept too, so the store did not compute its own:
    // reads of those bytes then fail their checks instead of returning them.
    let mut forged = tx(vec![write("forged", 0, &data)]);
    if let Op::Write { sums, .. } = &mut forged.ops[0] {
        let mut wrong = Checksums::of(&data);
        wrong.crcs[17] ^= 1;
        wrong.hash[0] ^= 1;
        *sums = Some(wrong);
    }
    store.apply(&forged).expect("write");
    assert!(matches!(
        store.read(COLL, "forged", 17 * 4096, 10),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.read(COLL, "forged", 0, u64::MAX),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(
        store
            .read(COLL, "forged", 0, 10)
            .expect("blocks whose crc matches"),
        data[..10]
    );
}

#[derive(Clone, Debug)]
enum ModelOp {
    Write(u8, u64, usize, u8),
    WriteFull(u8, usize, u8),
    Truncate(u8, u64),
    Remove(u8),
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (0..3u8, 0..400_000u64, 0..150_000usize, any::<u8>())
            .prop_map(|(o, off, len, seed)| ModelOp::Write(o, off, len, seed)),
        1 => (0..3u8, 0..150_000usize, any::<u8>()).prop_map(|(o, len, seed)| ModelOp::WriteFull(o, len, seed)),
        1 => (0..3u8, 0..500_000u64).prop_map(|(o, size)| ModelOp::Truncate(o, size)),
        1 => (0..3u8).prop_map(ModelOp::Remove),
    ]
}

fn to_op(op: &ModelOp) -> Op {
    let name = |o: &u8| format!("obj{o}");
    match op {
        ModelOp::Write(o, offset, len, seed) => write(&name(o), *offset, &pattern(*len, *seed)),
        ModelOp::WriteFull(o, len, seed) => Op::WriteFull {
            coll: COLL,
            name: name(o),
            data: pattern(*len, *seed).into(),
            sums: None,
        },
        ModelOp::Truncate(o, size) => Op::Truncate {
            coll: COLL,
            name: name(o),
            size: *size,
        },
        ModelOp::Remove(o) => Op::Remove {
            coll: COLL,
            name: name(o),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

    /// Rule: any sequence of writes, truncates and removes (one or two per transaction) leaves
    /// `RocksStore` holding exactly what `MemStore` holds, in every range, also after a reopen.
    #[test]
    fn rocks_store_matches_the_model(ops in proptest::collection::vec(model_op(), 1..16)) {
        let model = with_coll(MemStore::new());
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rocks = with_coll(RocksStore::open(dir.path()).expect("open"));
        for pair in ops.chunks(2) {
            let t = tx(pair.iter().map(to_op).collect());
            let (a, b) = (model.apply(&t), rocks.apply(&t));
            prop_assert_eq!(a, b);
            prop_assert_eq!(rocks.collection_usage(COLL), model.collection_usage(COLL));
        }
        for reopen in [false, true] {
            if reopen {
                drop(rocks);
                rocks = RocksStore::open(dir.path()).expect("reopen");
            }
            prop_assert_eq!(rocks.collection_usage(COLL), model.collection_usage(COLL));
            for o in 0..3u8 {
                let name = format!("obj{o}");
                let expected = model.read(COLL, &name, 0, u64::MAX);
                prop_assert_eq!(&rocks.read(COLL, &name, 0, u64::MAX), &expected);
                if let Ok(bytes) = expected {
                    let (start, len) = (bytes.len() as u64 / 3, 10_000);
                    prop_assert_eq!(
                        rocks.read(COLL, &name, start, len).expect("range"),
                        model.read(COLL, &name, start, len).expect("range")
                    );
                }
            }
        }
    }
}

/// The child half of the crash test: writes forever, printing each acknowledged transaction.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("TIDEPOOL_CRASH_DIR") else {
        return;
    };
    let store = RocksStore::open(std::path::Path::new(&dir)).expect("open");
    let _ = store.apply(&tx(vec![Op::CreateCollection(COLL)]));
    for i in 1u64.. {
        // Alternate large (blob) and small (inline) values; both objects always agree.
        let len = if i % 2 == 0 { 100_000 } else { 1_000 };
        let mut data = pattern(len, i as u8);
        data[..8].copy_from_slice(&i.to_le_bytes());
        store
            .apply(&tx(vec![
                Op::WriteFull {
                    coll: COLL,
                    name: "a".into(),
                    data: data.clone().into(),
                    sums: None,
                },
                write("b", 0, &data),
                Op::Truncate {
                    coll: COLL,
                    name: "b".into(),
                    size: len as u64,
                },
                Op::OmapSet {
                    coll: COLL,
                    name: "a".into(),
                    entries: vec![(b"i".to_vec(), i.to_le_bytes().to_vec())],
                },
            ]))
            .expect("apply");
        println!("ack {i}");
    }
}

/// Rule: a store reopened after its process was killed mid-write holds every acknowledged
/// transaction whole and nothing half-applied, and all space no object uses is free.
#[test]
fn rocks_store_survives_sigkill() {
    for (round, acks_before_kill) in [17u64, 40, 73].into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env("TIDEPOOL_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut acked = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if let Some(n) = line.strip_prefix("ack ") {
                acked = n.parse().expect("number");
                if acked >= acks_before_kill {
                    break;
                }
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        assert!(
            acked >= acks_before_kill,
            "round {round}: child stopped early"
        );

        let store = RocksStore::open(dir.path()).expect("reopen after the crash");
        let a = store.read(COLL, "a", 0, u64::MAX).expect("a");
        let b = store.read(COLL, "b", 0, u64::MAX).expect("b");
        assert_eq!(a, b, "round {round}: a transaction was half applied");
        let i = u64::from_le_bytes(a[..8].try_into().expect("8 bytes"));
        assert!(
            i >= acked,
            "round {round}: acknowledged {acked} but found {i}"
        );
        let omap = store.omap_get(COLL, "a", &[b"i".to_vec()]).expect("omap");
        assert_eq!(
            omap[b"i".as_slice()],
            i.to_le_bytes(),
            "round {round}: omap agrees"
        );
        let (size, free) = store.block_space();
        assert!(
            size - free <= 2 * 102_400,
            "round {round}: {} bytes in use for two objects of at most 100,000",
            size - free
        );
    }
}

/// The child half of the failed-write test, run where no file may grow past a few MiB: the
/// store's block file cannot grow (as on a full disk), so its first large write fails.
#[test]
fn failed_write_child() {
    let Some(dir) = std::env::var_os("TIDEPOOL_FAILED_WRITE_DIR") else {
        return;
    };
    let store = with_coll(RocksStore::open(std::path::Path::new(&dir)).expect("open"));
    store
        .apply(&tx(vec![write("kept", 0, b"before")]))
        .expect("a small write needs no block space");
    assert!(matches!(
        store.apply(&tx(vec![write("big", 0, &pattern(100_000, 5))])),
        Err(StoreError::Failed(_))
    ));
    assert!(matches!(
        store.apply(&tx(vec![write("small", 0, b"x")])),
        Err(StoreError::Failed(_))
    ));
    assert!(matches!(
        store.read(COLL, "kept", 0, u64::MAX),
        Err(StoreError::Failed(_))
    ));
    println!("failed as it should");
}

/// Rule: once a write fails, the store refuses everything after it, reads included, and a
/// reopen on a healthy disk finds every earlier transaction intact and nothing of the failed
/// one.
#[test]
fn a_failed_write_stops_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `ulimit -f` counts 512- or 1,024-byte blocks, depending on the shell: 8 or 16 MiB, room
    // for RocksDB's files but not for the block file's first growth. Writes past the limit
    // fail with EFBIG instead of raising SIGXFSZ, ignored before the exec.
    let output = Command::new("sh")
        .args([
            "-c",
            "ulimit -f 16384 && trap '' XFSZ && exec \"$0\" --exact failed_write_child --nocapture --test-threads=1",
        ])
        .arg(std::env::current_exe().expect("test binary"))
        .env("TIDEPOOL_FAILED_WRITE_DIR", dir.path())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("failed as it should"),
        "child: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let store = RocksStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.read(COLL, "kept", 0, u64::MAX).expect("read"),
        &b"before"[..]
    );
    assert!(matches!(
        store.stat(COLL, "big"),
        Err(StoreError::NotFound { .. })
    ));
}
