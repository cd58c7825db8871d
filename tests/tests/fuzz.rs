//! Fuzz targets: every decoder that a peer, a client or a disk can feed, run over arbitrary
//! bytes and over valid encodings with random damage (bit flips, bytes set, inserted and
//! removed, cuts, lengths inflated to the maximum). Each must answer with an error or a value,
//! never panic and never allocate what a length field claims. The targets run a bounded number
//! of cases in `make test` (`PROPTEST_CASES` runs more); a crasher found is kept as a
//! regression test beside its decoder (60,000 cases of each target found none here; the
//! gateway's parsers had one, kept in `gateway/src/s3.rs`).
//!
//! The toolchain here has no coverage-guided fuzzer on stable, so the damage is structured
//! instead: starting from valid encodings reaches far deeper into each decoder than random
//! bytes do.

use bytes::Bytes;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use tidepool_osd::store::{MemStore, ObjectStore, Op, RocksStore, Transaction};
use tidepool_placement::encoding::{decode, encode};
use tidepool_placement::generate::{self, Layout};
use tidepool_placement::{
    BucketType, ClusterMap, Epoch, Incremental, OsdId, PgId, Placement, PoolKind, Scratch, Weight,
};
use tidepool_proto::frame::{decode_frame, encode_frame, Frame, FrameHeader, FrameKind};
use tidepool_proto::mon::{Beacon, Command, MonRequest, MonResponse, OsdStat, PgStat, Request};
use tidepool_proto::osd::{LogEntry, ObjectOp, ObjectRequest, OsdRequest, OsdResponse, PgInfo};
use tidepool_proto::FRAME_HEADER_BYTES;
use tidepool_tests::project_dir;

/// The largest frame a daemon accepts in these tests.
const LIMIT: u32 = 64 << 20;

/// One edit of a valid encoding.
#[derive(Clone, Debug)]
enum Damage {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Cut(usize),
    /// Four bytes of 0xff: a length or count field claiming the most it can.
    Inflate(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Set(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Insert(at, b)),
        any::<usize>().prop_map(Damage::Remove),
        any::<usize>().prop_map(Damage::Cut),
        any::<usize>().prop_map(Damage::Inflate),
    ]
}

/// `valid` with `edits` applied.
fn damaged(mut bytes: Vec<u8>, edits: &[Damage]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Damage::Flip(at, bit) if !bytes.is_empty() => bytes[at % len] ^= 1 << bit,
            Damage::Set(at, b) if !bytes.is_empty() => bytes[at % len] = b,
            Damage::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
            Damage::Remove(at) if !bytes.is_empty() => {
                bytes.remove(at % len);
            }
            Damage::Cut(at) => bytes.truncate(at % len),
            Damage::Inflate(at) if !bytes.is_empty() => {
                let start = at % len;
                let end = (start + 4).min(bytes.len());
                bytes[start..end].fill(0xff);
            }
            _ => {}
        }
    }
    bytes
}

/// `message` framed as a request.
fn framed<T: serde::Serialize>(message: &T) -> Frame {
    encode_frame(FrameKind::Request, message, LIMIT).expect("encodes")
}

/// The body and data section of `frame`.
fn parts(frame: Frame) -> (Vec<u8>, Vec<Bytes>) {
    (frame.head[FRAME_HEADER_BYTES..].to_vec(), frame.data)
}

/// Decodes `body` and `data` as a `T` the way a daemon does; must not panic.
fn decodes_or_refuses<T: DeserializeOwned>(body: &[u8], data: Vec<Bytes>) {
    let _ = decode_frame::<T>(body, data);
}

fn pg() -> PgId {
    PgId {
        pool: tidepool_placement::PoolId(1),
        seed: 3,
    }
}

/// Valid messages of each kind that crosses the wire, as their framed bodies and data.
fn osd_requests() -> Vec<Frame> {
    let object = ObjectRequest {
        epoch: Epoch(7),
        pg: pg(),
        name: "bucket/key".into(),
        ops: vec![
            ObjectOp::AssertVersion(3),
            ObjectOp::WriteFull(vec![5u8; 5000].into()),
            ObjectOp::SetXattr("v".into(), vec![1, 2]),
            ObjectOp::OmapSet(vec![(b"k".to_vec().into(), b"v".to_vec().into())]),
        ],
        client: "client.1".into(),
        sequence: 9,
    };
    let tx = Transaction {
        ops: vec![Op::WriteFull {
            coll: tidepool_osd::pg::collection(pg()),
            name: "obj".into(),
            data: vec![9u8; 3000].into(),
            sums: None,
        }],
    };
    let entry = LogEntry {
        version: 4,
        epoch: Epoch(7),
        name: "obj".into(),
        delete: false,
        reqid: Some(("client.1".into(), 9)),
    };
    let requests: Vec<tidepool_osd::daemon::PeerRequest> = vec![
        OsdRequest::Object(object),
        OsdRequest::Replicate {
            epoch: Epoch(7),
            pg: pg(),
            entry,
            transaction: tx,
        },
        OsdRequest::Ping {
            from: OsdId(2),
            epoch: Epoch(7),
        },
    ];
    requests.iter().map(framed).collect()
}

fn mon_requests() -> Vec<Frame> {
    let beacon = MonRequest::Beacon(Beacon {
        osd: OsdId(1),
        epoch: Epoch(3),
        stat: OsdStat::default(),
        pgs: vec![PgStat {
            pg: pg(),
            state: "active+clean".into(),
            objects: 1,
            bytes: 2,
            degraded: 0,
            misplaced: 0,
            up: vec![OsdId(1)],
            acting: vec![OsdId(1)],
            epoch: Epoch(3),
            waiting_for: Vec::new(),
            last_scrub: 0,
            last_deep_scrub: 0,
            scrub_errors: 0,
            unrepairable: 0,
        }],
    });
    let command = MonRequest::Command(Request {
        client: "admin".into(),
        sequence: 1,
        command: Command::PoolCreate {
            name: "data".into(),
            kind: PoolKind::Replicated {
                size: 3,
                min_size: 2,
            },
            pg_num: 8,
            failure_domain: BucketType::Osd,
        },
    });
    let subscribe = MonRequest::Subscribe {
        have: Epoch(2),
        wait_ms: 100,
    };
    [beacon, command, subscribe].iter().map(framed).collect()
}

/// A map of 2 hosts × 3 OSDs with a replicated and an erasure pool, and the next incremental.
fn maps() -> (ClusterMap, Incremental) {
    let mut map = Layout {
        hosts: 2,
        osds_per_host: 3,
        weight: Weight::ONE,
    }
    .build();
    for (name, kind) in [
        (
            "data",
            PoolKind::Replicated {
                size: 3,
                min_size: 2,
            },
        ),
        ("ec", PoolKind::erasure(2, 1)),
    ] {
        let pool = generate::pool(&map, name, kind, 16, BucketType::Osd).expect("pool");
        map.pools.insert(pool.id, pool);
    }
    let (_, changes) = generate::add_osd(&map, "host1", Weight::ONE);
    let next = generate::next(&map, changes);
    (map, next)
}

/// A decoded map that passes validation places every PG without panicking.
fn placed(map: &ClusterMap) {
    if map.validate().is_err() {
        return;
    }
    let placement = Placement::new(map);
    let mut scratch = Scratch::default();
    for pool in map.pools.values() {
        for seed in 0..pool.pg_num.min(64) {
            let _ = placement.map_pg(
                PgId {
                    pool: pool.id,
                    seed,
                },
                &mut scratch,
            );
        }
    }
}

/// A map or incremental from a monitor, however damaged: decoded, validated, applied and
/// placed, or refused.
fn map_bytes(map_bytes: &[u8], incremental_bytes: &[u8]) {
    let (valid, _) = maps();
    if let Ok(map) = decode::<ClusterMap>(map_bytes) {
        placed(&map);
    }
    if let Ok(incremental) = decode::<Incremental>(incremental_bytes) {
        if let Ok(next) = valid.apply(&incremental) {
            placed(&next);
        }
    }
}

/// A PG's summary and log read back from a store whose records are these bytes.
fn pg_records(info: Vec<u8>, log: Vec<u8>) {
    let store = MemStore::new();
    let coll = tidepool_osd::pg::collection(pg());
    let entry = LogEntry {
        version: 1,
        epoch: Epoch(1),
        name: "obj".into(),
        delete: false,
        reqid: None,
    };
    let mut ops = vec![Op::CreateCollection(coll)];
    ops.extend(tidepool_osd::pg::record(
        coll,
        &[entry],
        &PgInfo::default(),
        None,
    ));
    // The same keys as the valid records, with these bytes as their values.
    for op in &mut ops {
        if let Op::OmapSet { entries, .. } = op {
            for (key, value) in entries.iter_mut() {
                *value = if key.starts_with(b"log") {
                    log.clone()
                } else {
                    info.clone()
                };
            }
        }
    }
    store.apply(&Transaction { ops }).expect("memory store");
    let _ = tidepool_osd::pg::load(&store, pg());
}

/// The valid encodings of a PG's summary and of one log entry.
fn valid_pg_records() -> (Vec<u8>, Vec<u8>) {
    let info = PgInfo {
        last_update: 9,
        last_epoch: Epoch(4),
        log_tail: 2,
        last_epoch_started: Epoch(4),
    };
    let entry = LogEntry {
        version: 9,
        epoch: Epoch(4),
        name: "bucket/key".into(),
        delete: true,
        reqid: Some(("client.3".into(), 77)),
    };
    (
        rmp_serde::to_vec_named(&info).expect("encodes"),
        rmp_serde::to_vec_named(&entry).expect("encodes"),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000)
    ))]

    /// Target: frame headers, as the first bytes of every stream.
    #[test]
    fn frame_headers(bytes in prop::array::uniform16(any::<u8>()), limit in any::<u32>()) {
        if let Ok(header) = FrameHeader::parse(&bytes, limit) {
            prop_assert!(u64::from(header.body_bytes) + u64::from(header.data_bytes) <= u64::from(limit));
        }
    }

    /// Target: OSD messages (clients' and peers' requests, answers) from arbitrary bytes.
    #[test]
    fn osd_messages_from_noise(body in prop::collection::vec(any::<u8>(), 0..512), data in prop::collection::vec(any::<u8>(), 0..256)) {
        decodes_or_refuses::<tidepool_osd::daemon::PeerRequest>(&body, vec![Bytes::from(data.clone())]);
        decodes_or_refuses::<OsdResponse>(&body, vec![Bytes::from(data)]);
    }

    /// Target: OSD messages from damaged valid ones, their data section cut or grown too.
    #[test]
    fn osd_messages_damaged(which in 0usize..3, edits in prop::collection::vec(damage(), 1..6), data_edits in prop::collection::vec(damage(), 0..3)) {
        let (body, data) = parts(osd_requests().swap_remove(which));
        let data: Vec<Bytes> = data.into_iter().map(|d| Bytes::from(damaged(d.to_vec(), &data_edits))).collect();
        decodes_or_refuses::<tidepool_osd::daemon::PeerRequest>(&damaged(body, &edits), data);
    }

    /// Target: monitor requests and answers, from noise and from damaged valid ones.
    #[test]
    fn monitor_messages(which in 0usize..3, edits in prop::collection::vec(damage(), 1..6), noise in prop::collection::vec(any::<u8>(), 0..256)) {
        let (body, _) = parts(mon_requests().swap_remove(which));
        decodes_or_refuses::<MonRequest>(&damaged(body, &edits), Vec::new());
        decodes_or_refuses::<MonRequest>(&noise, Vec::new());
        decodes_or_refuses::<MonResponse>(&noise, Vec::new());
        let _ = rmp_serde::from_slice::<tidepool_monitor::paxos::Message>(&noise);
    }

    /// Target: maps and incrementals, damaged, then validated, applied and placed.
    #[test]
    fn maps_and_incrementals(map_edits in prop::collection::vec(damage(), 1..6), inc_edits in prop::collection::vec(damage(), 1..6)) {
        let (map, next) = maps();
        map_bytes(&damaged(encode(&map), &map_edits), &damaged(encode(&next), &inc_edits));
    }

    /// Target: PG summaries and log entries read back from disk, damaged or noise.
    #[test]
    fn pg_records_from_disk(info_edits in prop::collection::vec(damage(), 0..5), log_edits in prop::collection::vec(damage(), 0..5), noise in prop::collection::vec(any::<u8>(), 0..64)) {
        let (info, log) = valid_pg_records();
        pg_records(damaged(info, &info_edits), damaged(log, &log_edits));
        pg_records(noise.clone(), noise);
    }
}

proptest! {
    // Each case opens a RocksDB: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000) / 20
    ))]

    /// Target: object metadata (onodes) read back from disk: a store whose records are
    /// damaged opens with an error, or opens and answers reads with values or errors.
    #[test]
    fn object_records_from_disk(edits in prop::collection::vec(damage(), 1..5)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let coll = tidepool_osd::pg::collection(pg());
        {
            let store = RocksStore::open(dir.path()).expect("open");
            store.apply(&Transaction { ops: vec![
                Op::CreateCollection(coll),
                Op::WriteFull { coll, name: "big".into(), data: vec![3u8; 70_000].into(), sums: None },
                Op::WriteFull { coll, name: "small".into(), data: vec![4u8; 100].into(), sums: None },
                Op::SetXattr { coll, name: "small".into(), key: "v".into(), value: vec![1] },
            ]}).expect("write");
        }
        let kv = tidepool_kv::Kv::open(&dir.path().join("db")).expect("kv");
        let damaged_records: Vec<tidepool_kv::Op> = kv
            .scan_prefix(b"O")
            .expect("scan")
            .into_iter()
            .map(|(key, value)| tidepool_kv::Op::Put(key, damaged(value, &edits)))
            .collect();
        kv.write(&damaged_records).expect("write");
        drop(kv);
        if let Ok(store) = RocksStore::open(dir.path()) {
            for name in ["big", "small"] {
                let _ = store.read(coll, name, 0, u64::MAX);
                let _ = store.stat(coll, name);
            }
        }
    }
}

/// Rule: the seed inputs of the coverage-guided targets (`fuzz/seeds/TARGET/`, run by
/// `scripts/fuzz.sh`) are valid encodings of this build: whole frames, message bodies, maps
/// and incrementals. `TIDEPOOL_BLESS=1` rewrites them after a format change.
#[test]
fn seeds_of_the_coverage_guided_targets() {
    let (map, next) = maps();
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, frame) in osd_requests().into_iter().chain(mon_requests()).enumerate() {
        seeds.push((format!("frames/message-{i}"), frame.to_vec()));
        seeds.push((format!("messages/message-{i}"), parts(frame).0));
    }
    seeds.push(("maps/map".into(), encode(&map)));
    seeds.push(("incrementals/add-osd".into(), encode(&next)));
    let dir = project_dir().join("fuzz").join("seeds");
    for (name, bytes) in seeds {
        let path = dir.join(&name);
        if std::env::var_os("TIDEPOOL_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().expect("a folder")).expect("seed folder");
            std::fs::write(&path, &bytes).expect("write seed");
        }
        let stored = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (TIDEPOOL_BLESS=1 writes it)", path.display()));
        assert!(
            stored == bytes,
            "{} is not what this build encodes",
            path.display()
        );
    }
}
