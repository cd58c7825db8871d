//! The erasure plan and its rollback records against a model object, on shards kept in one
//! `MemStore` (a collection per position).
use proptest::prelude::*;
use tidepool_erasure::{Codec, Layout};
use tidepool_proto::osd::{ObjectOp, OpError, OpOutput};
use tidepool_proto::payload::Payload;

use super::*;
use crate::store::{MemStore, ObjectStore, Op, Transaction};

const NAME: &str = "obj";

fn coll(position: usize) -> CollectionId {
    CollectionId {
        pool: 1,
        seed: 0,
        shard: position as u8,
    }
}

/// `k+m` shards of one object in one store.
struct Shards {
    codec: Codec,
    store: MemStore,
    version: u64,
}

impl Shards {
    fn new(k: usize, m: usize, unit: usize) -> Shards {
        let store = MemStore::new();
        for position in 0..k + m {
            store
                .apply(&Transaction {
                    ops: vec![Op::CreateCollection(coll(position))],
                })
                .expect("collection");
        }
        Shards {
            codec: Codec::new(Layout::new(k, m, unit).expect("layout")),
            store,
            version: 0,
        }
    }

    fn positions(&self) -> usize {
        self.codec.layout().k() + self.codec.layout().m()
    }

    /// The stripe's `k` data chunks, rebuilt from the shards at `from` (any `k`).
    fn chunks(&self, stripe: u64, from: &[usize]) -> Vec<Vec<u8>> {
        let layout = self.codec.layout();
        let unit = layout.unit() as u64;
        let mut shards: Vec<Option<Vec<u8>>> = (0..self.positions())
            .map(|p| {
                from.contains(&p).then(|| {
                    let mut chunk = self
                        .store
                        .read(coll(p), NAME, stripe * unit, unit)
                        .map(|b| b.to_vec())
                        .unwrap_or_default();
                    chunk.resize(unit as usize, 0);
                    chunk
                })
            })
            .collect();
        self.codec.reconstruct(&mut shards).expect("k shards");
        shards[..layout.k()]
            .iter()
            .map(|s| s.clone().expect("rebuilt"))
            .collect()
    }

    /// The stripe's object bytes, rebuilt from the shards at `from` (any `k`).
    fn stripe(&self, stripe: u64, from: &[usize]) -> Vec<u8> {
        let layout = self.codec.layout();
        self.codec
            .join(&self.chunks(stripe, from), layout.stripe_width())
            .expect("a stripe")
    }

    /// Plans `steps` as the primary at position 0 does, and applies each shard's part with
    /// its rollback record.
    fn run(&mut self, steps: &[ObjectOp]) -> Result<Vec<OpOutput>, OpError> {
        let old = Meta::load(&self.store, coll(0), NAME)?;
        let mut needed = Needed::default();
        plan(&self.codec, coll(0), NAME, &old, steps, &mut needed)?;
        let k: Vec<usize> = (0..self.codec.layout().k()).collect();
        let mut fetched = Fetched::new(self.codec.layout());
        for stripe in &needed.stripes {
            let chunks = self.chunks(*stripe, &k).into_iter().map(Payload::from);
            fetched.insert(*stripe, 1, chunks.collect());
        }
        let planned = plan(&self.codec, coll(0), NAME, &old, steps, &mut fetched)?;
        if planned.shards.is_empty() {
            return Ok(planned.outputs);
        }
        self.version += 1;
        for (position, ops) in planned.shards.into_iter().enumerate() {
            let ops: Vec<Op> = ops
                .into_iter()
                .map(|op| retarget(op, coll(position)))
                .collect();
            let mut ops = with_rollback(
                &self.store,
                coll(position),
                NAME,
                self.version,
                Some(self.version - 1),
                ops,
            )
            .expect("rollback record");
            if !planned.removed {
                ops.push(Op::SetXattr {
                    coll: coll(position),
                    name: NAME.into(),
                    key: VERSION_XATTR.into(),
                    value: self.version.to_le_bytes().to_vec(),
                });
            }
            self.store
                .apply(&Transaction { ops })
                .expect("shard change");
        }
        Ok(planned.outputs)
    }

    /// The object as the shards at `from` decode it (`None` when it does not exist).
    fn object(&self, from: &[usize]) -> Option<Vec<u8>> {
        let meta = Meta::load(&self.store, coll(from[0]), NAME).expect("meta");
        if !meta.exists {
            return None;
        }
        let layout = self.codec.layout();
        let mut data = Vec::new();
        for stripe in 0..layout.stripes_of(meta.size) {
            data.extend(self.stripe(stripe, from));
        }
        data.truncate(meta.size as usize);
        Some(data)
    }

    fn roll_back(&self, positions: &[usize], version: u64) {
        for p in positions {
            let ops = rollback_ops(&self.store, coll(*p), version)
                .expect("read the record")
                .expect("a record");
            self.store.apply(&Transaction { ops }).expect("rollback");
        }
    }
}

/// `op` on collection `to` instead of its own.
fn retarget(op: Op, to: CollectionId) -> Op {
    match op {
        Op::Create {
            name, exclusive, ..
        } => Op::Create {
            coll: to,
            name,
            exclusive,
        },
        Op::Write {
            name,
            offset,
            data,
            sums,
            ..
        } => Op::Write {
            coll: to,
            name,
            offset,
            data,
            sums,
        },
        Op::Truncate { name, size, .. } => Op::Truncate {
            coll: to,
            name,
            size,
        },
        Op::Remove { name, .. } => Op::Remove { coll: to, name },
        Op::SetXattr {
            name, key, value, ..
        } => Op::SetXattr {
            coll: to,
            name,
            key,
            value,
        },
        Op::RemoveXattr { name, key, .. } => Op::RemoveXattr {
            coll: to,
            name,
            key,
        },
        other => panic!("an erasure plan made {other:?}"),
    }
}

/// A step of the model: a write, an append, a truncate, a full write or an xattr.
#[derive(Clone, Debug)]
enum Step {
    Write(u64, Vec<u8>),
    Append(Vec<u8>),
    Truncate(u64),
    Full(Vec<u8>),
    Xattr(u8),
}

fn step() -> impl Strategy<Value = Step> {
    let bytes = |max: usize| proptest::collection::vec(any::<u8>(), 0..max);
    prop_oneof![
        (0u64..40_000, bytes(20_000)).prop_map(|(o, d)| Step::Write(o, d)),
        bytes(9_000).prop_map(Step::Append),
        (0u64..50_000).prop_map(Step::Truncate),
        bytes(30_000).prop_map(Step::Full),
        any::<u8>().prop_map(Step::Xattr),
    ]
}

/// `data` as a payload received in pieces of uneven sizes, so that some stripes lie in one
/// piece and others span two or more.
fn in_pieces(data: &[u8]) -> Payload {
    let mut pieces = Vec::new();
    let mut rest = data;
    for size in [1000, 333, 4096, 1777, 64].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(size.min(rest.len()));
        pieces.push(bytes::Bytes::copy_from_slice(piece));
        rest = after;
    }
    Payload::from_chunks(pieces)
}

fn apply_model(model: &mut Vec<u8>, step: &Step) -> ObjectOp {
    match step {
        Step::Write(offset, data) => {
            let end = *offset as usize + data.len();
            if model.len() < end {
                model.resize(end, 0);
            }
            model[*offset as usize..end].copy_from_slice(data);
            ObjectOp::Write {
                offset: *offset,
                data: in_pieces(data),
            }
        }
        Step::Append(data) => {
            model.extend_from_slice(data);
            ObjectOp::Append(in_pieces(data))
        }
        Step::Truncate(size) => {
            model.resize(*size as usize, 0);
            ObjectOp::Truncate(*size)
        }
        Step::Full(data) => {
            model.clone_from(data);
            ObjectOp::WriteFull(data.clone().into())
        }
        Step::Xattr(v) => ObjectOp::SetXattr("a".into(), vec![*v]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Rule: after any sequence of writes, appends, truncates and full writes (one or two per
    /// transaction), any `k` of the `k+m` shards decode the model's bytes, ranged reads
    /// return the model's range, and rolling the last change back on every shard gives the
    /// object before it.
    #[test]
    fn shards_follow_the_model(
        (k, m) in prop_oneof![Just((2usize, 1usize)), Just((4, 2)), Just((3, 2))],
        steps in proptest::collection::vec(step(), 1..7),
        pair in any::<bool>(),
        drop in any::<u64>(),
        read in (0u64..60_000, 0u64..30_000),
    ) {
        let mut shards = Shards::new(k, m, 512);
        let mut model: Vec<u8> = Vec::new();
        let mut before: Option<Vec<u8>> = None;
        shards.run(&[ObjectOp::Create { exclusive: true }]).expect("create");
        let chunks: Vec<&[Step]> = if pair { steps.chunks(2).collect() } else { steps.chunks(1).collect() };
        for chunk in chunks {
            before = Some(model.clone());
            let ops: Vec<ObjectOp> = chunk.iter().map(|s| apply_model(&mut model, s)).collect();
            shards.run(&ops).expect("a change");
        }
        // Any k positions: the ones left after dropping up to m, picked by `drop`.
        let n = k + m;
        let mut from: Vec<usize> = (0..n).collect();
        for i in 0..m {
            let at = ((drop >> (8 * i)) as usize) % from.len();
            from.remove(at);
        }
        prop_assert_eq!(shards.object(&from), Some(model.clone()));
        let meta = Meta::load(&shards.store, coll(n - 1), NAME).expect("meta");
        prop_assert_eq!(meta.size, model.len() as u64);
        let out = shards.run(&[ObjectOp::Read { offset: read.0, len: read.1 }]).expect("read");
        let start = (read.0 as usize).min(model.len());
        let end = ((read.0 + read.1) as usize).min(model.len());
        match &out[..] {
            [OpOutput::Data(data)] => prop_assert_eq!(&data.bytes()[..], &model[start..end]),
            other => prop_assert!(false, "{other:?}"),
        }
        // The last change undone everywhere.
        let all: Vec<usize> = (0..n).collect();
        shards.roll_back(&all, shards.version);
        prop_assert_eq!(shards.object(&from), before);
    }
}

/// Rule: the bytes of a write in pieces are read in order, borrowed where the bytes asked for
/// lie in one piece.
#[test]
fn a_cursor_reads_pieces_in_order() {
    let pieces: [&[u8]; 4] = [b"abc", b"defgh", b"", b"ij"];
    let mut cursor = Cursor {
        pieces: &pieces,
        at: 0,
    };
    let taken: Vec<(Vec<u8>, bool)> = [2, 3, 4, 1]
        .into_iter()
        .map(|n| {
            let bytes = cursor.next(n);
            let borrowed = matches!(bytes, Cow::Borrowed(_));
            (bytes.into_owned(), borrowed)
        })
        .collect();
    let expected: Vec<(Vec<u8>, bool)> = vec![
        (b"ab".to_vec(), true),
        (b"cde".to_vec(), false),
        (b"fghi".to_vec(), false),
        (b"j".to_vec(), true),
    ];
    assert_eq!(taken, expected);
}

/// Rule: fetched stripes answer from the data chunks of their run, zeros past a short chunk,
/// and a stripe that was not fetched is an error.
#[test]
fn fetched_stripes_answer_from_their_run() {
    let layout = Layout::new(2, 1, 512).expect("layout");
    let mut fetched = Fetched::new(layout);
    // Stripes 3 and 4: shard 0 holds both units (arrived in pieces that do not follow the
    // units), shard 1 only 600 bytes of its 1,024.
    let zero: Vec<u8> = (0..1024).map(|i| i as u8).collect();
    let one: Vec<u8> = (0..600).map(|i| (i as u8) ^ 0xff).collect();
    fetched.insert(3, 2, vec![in_pieces(&zero), one.clone().into()]);
    let read = |fetched: &mut Fetched, stripe, within| {
        let mut out = Vec::new();
        fetched.extend(stripe, within, &mut out).map(|()| out)
    };
    let stripe_3 = [&zero[..512], &one[..512]].concat();
    assert_eq!(read(&mut fetched, 3, 0..1024).expect("stripe 3"), stripe_3);
    let mut stripe_4 = [&zero[512..], &one[512..]].concat();
    stripe_4.resize(1024, 0);
    assert_eq!(
        read(&mut fetched, 4, 500..700).expect("stripe 4"),
        stripe_4[500..700]
    );
    assert!(read(&mut fetched, 5, 0..8).is_err());
    assert!(read(&mut fetched, 2, 0..8).is_err());
}

/// Rule: a change that reached only some shards is undone on them by its rollback record, and
/// the object decodes as before from any `k` shards.
#[test]
fn a_partial_overwrite_rolls_back() {
    let mut shards = Shards::new(4, 2, 4096);
    let old: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    shards
        .run(&[ObjectOp::WriteFull(old.clone().into())])
        .expect("write");
    shards
        .run(&[ObjectOp::Write {
            offset: 5_000,
            data: vec![9u8; 40_000].into(),
        }])
        .expect("overwrite");
    // Only positions 1, 3 and 5 keep the change's undo; roll it back there as peering would
    // when fewer than k shards had it, after the others "never got it" (rolled back too).
    shards.roll_back(&[0, 1, 2, 3, 4, 5], 2);
    for from in [[0, 1, 2, 3], [2, 3, 4, 5], [0, 2, 4, 5]] {
        assert_eq!(shards.object(&from), Some(old.clone()));
    }
    let meta = Meta::load(&shards.store, coll(0), NAME).expect("meta");
    assert_eq!(meta.version, 1);
}

/// Rule: rolling back the creation of an object removes it; rolling back a removal brings back
/// its bytes and xattrs.
#[test]
fn creates_and_removes_roll_back() {
    let mut shards = Shards::new(2, 1, 512);
    shards
        .run(&[
            ObjectOp::WriteFull(vec![1u8; 3000].into()),
            ObjectOp::SetXattr("x".into(), b"y".to_vec()),
        ])
        .expect("create");
    shards.run(&[ObjectOp::Remove]).expect("remove");
    assert_eq!(shards.object(&[0, 1]), None);
    shards.roll_back(&[0, 1, 2], 2);
    assert_eq!(shards.object(&[1, 2]), Some(vec![1u8; 3000]));
    let out = shards.run(&[ObjectOp::GetXattrs]).expect("xattrs");
    assert!(
        matches!(&out[..], [OpOutput::Xattrs(x)] if x.get("x").map(|v| v.as_slice()) == Some(&b"y"[..]))
    );
    // A creation undone: nothing left.
    let mut fresh = Shards::new(2, 1, 512);
    fresh
        .run(&[ObjectOp::WriteFull(vec![2u8; 700].into())])
        .expect("create");
    fresh.roll_back(&[0, 1, 2], 1);
    assert_eq!(fresh.object(&[0, 2]), None);
    assert_eq!(
        fresh.store.list(coll(1), None, 10).expect("list"),
        Vec::<String>::new()
    );
}

/// Rule: omap is refused on erasure pools, and nothing is planned.
#[test]
fn omap_is_not_supported() {
    let mut shards = Shards::new(2, 1, 512);
    let error = shards
        .run(&[ObjectOp::OmapSet(vec![(
            b"k".to_vec().into(),
            b"v".to_vec().into(),
        )])])
        .expect_err("refused");
    assert!(matches!(error, OpError::NotSupported(_)), "{error:?}");
}

/// Rule: only the record of the newest change stays on a shard.
#[test]
fn older_rollback_records_are_dropped() {
    let mut shards = Shards::new(2, 1, 512);
    for i in 0..4u8 {
        shards
            .run(&[ObjectOp::Append(vec![i; 700].into())])
            .expect("append");
    }
    let names = shards.store.list(coll(2), None, 100).expect("list");
    assert_eq!(names, vec![rollback_name(4), NAME.to_string()]);
}
