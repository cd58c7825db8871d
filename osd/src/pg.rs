//! A placement group's copy on one OSD: its log and summary in the store, the execution of
//! object transactions on the primary, and the helpers recovery uses to read and write whole
//! objects.
//!
//! Layout in the PG's collection: user objects by name; the meta object [`META`] whose omap
//! holds `info` (the [`PgInfo`]), `log.<version>` (each [`LogEntry`], versions as 20 digits)
//! and `scrub` (the [`ScrubRecord`] of the PG's last scrubs). Every object carries its PG
//! version in the xattr [`VERSION_XATTR`].

use std::collections::BTreeMap;

use serde_bytes::ByteBuf;
use tidepool_placement::PgId;
use tidepool_proto::osd::{LogEntry, ObjectOp, ObjectState, OpError, OpOutput, PgInfo};
use tidepool_proto::scrub::ScrubRecord;

use crate::store::{CollectionId, ObjectStore, Op, StoreError, Transaction};

/// The PG's meta object (a name no client may use: it starts with NUL).
pub const META: &str = "\0pgmeta";
/// The xattr holding an object's PG version (clients may not use names starting with NUL).
pub const VERSION_XATTR: &str = "\0v";
const INFO_KEY: &[u8] = b"info";
const SCRUB_KEY: &[u8] = b"scrub";
const LOG_PREFIX: &str = "log.";

/// The collection of a replicated PG.
pub fn collection(pg: PgId) -> CollectionId {
    CollectionId::replicated(pg.pool.0, pg.seed)
}

fn log_key(version: u64) -> Vec<u8> {
    format!("{LOG_PREFIX}{version:020}").into_bytes()
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("PG records encode")
}

fn storage(error: StoreError) -> OpError {
    match error {
        StoreError::NotFound { .. } => OpError::NotFound,
        StoreError::Exists { .. } => OpError::Exists,
        StoreError::Invalid(reason) => OpError::Invalid(reason),
        other => OpError::Storage(other.to_string()),
    }
}

/// Checks a client's object name.
pub fn check_name(name: &str) -> Result<(), OpError> {
    if name.is_empty() || name.len() > 4096 || name.starts_with('\0') {
        return Err(OpError::Invalid(
            "object names are 1 to 4096 bytes and do not start with NUL".into(),
        ));
    }
    Ok(())
}

/// Checks a client's xattr name (names starting with NUL are the PG's own).
pub fn check_xattr_name(key: &str) -> Result<(), OpError> {
    if key.starts_with('\0') {
        return Err(OpError::Invalid(
            "xattr names may not start with NUL".into(),
        ));
    }
    Ok(())
}

/// The PG's summary and log as stored (`None` when this OSD holds no copy).
pub fn load(
    store: &dyn ObjectStore,
    pg: PgId,
) -> Result<Option<(PgInfo, Vec<LogEntry>)>, StoreError> {
    let coll = collection(pg);
    let info = match store.omap_get(coll, META, &[INFO_KEY.to_vec()]) {
        Ok(found) => match found.get(INFO_KEY) {
            Some(bytes) => rmp_serde::from_slice(bytes)
                .map_err(|e| StoreError::Corrupt(format!("PG {coll} info: {e}")))?,
            None => PgInfo::default(),
        },
        Err(StoreError::NoCollection(_)) => return Ok(None),
        Err(StoreError::NotFound { .. }) => PgInfo::default(),
        Err(other) => return Err(other),
    };
    let mut entries = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = match store.omap_list(coll, META, after.as_deref(), 1024) {
            Ok(page) => page,
            Err(StoreError::NotFound { .. }) => break,
            Err(other) => return Err(other),
        };
        let Some(last) = page.last() else { break };
        after = Some(last.0.clone());
        for (key, value) in page {
            if key.starts_with(LOG_PREFIX.as_bytes()) {
                let entry: LogEntry = rmp_serde::from_slice(&value)
                    .map_err(|e| StoreError::Corrupt(format!("PG {coll} log: {e}")))?;
                entries.push(entry);
            }
        }
    }
    Ok(Some((info, entries)))
}

/// The record of the PG's last scrubs as this holder keeps it (`None`: none kept).
pub fn scrub_record(store: &dyn ObjectStore, pg: PgId) -> Result<Option<ScrubRecord>, StoreError> {
    let coll = collection(pg);
    match store.omap_get(coll, META, &[SCRUB_KEY.to_vec()]) {
        Ok(found) => found
            .get(SCRUB_KEY)
            .map(|bytes| {
                rmp_serde::from_slice(bytes)
                    .map_err(|e| StoreError::Corrupt(format!("PG {coll} scrub record: {e}")))
            })
            .transpose(),
        Err(StoreError::NoCollection(_) | StoreError::NotFound { .. }) => Ok(None),
        Err(other) => Err(other),
    }
}

/// The op that keeps `record` as the PG's scrub record.
pub fn keep_scrub_record(pg: PgId, record: &ScrubRecord) -> Op {
    Op::OmapSet {
        coll: collection(pg),
        name: META.into(),
        entries: vec![(SCRUB_KEY.to_vec(), encode(record))],
    }
}

/// The ops that record `entries` and `info` in the PG's log, trimming what falls out of it.
pub fn record(
    coll: CollectionId,
    entries: &[LogEntry],
    info: &PgInfo,
    trim: Option<(u64, u64)>,
) -> Vec<Op> {
    let mut set: Vec<(Vec<u8>, Vec<u8>)> = entries
        .iter()
        .map(|e| (log_key(e.version), encode(e)))
        .collect();
    set.push((INFO_KEY.to_vec(), encode(info)));
    let mut ops = vec![Op::OmapSet {
        coll,
        name: META.into(),
        entries: set,
    }];
    if let Some((from, to)) = trim {
        if from <= to {
            ops.push(Op::OmapRemove {
                coll,
                name: META.into(),
                keys: (from..=to).map(log_key).collect(),
            });
        }
    }
    ops
}

/// The object's PG version (0 when it has none).
pub fn version_of(xattrs: &BTreeMap<String, Vec<u8>>) -> u64 {
    xattrs
        .get(VERSION_XATTR)
        .and_then(|v| v.as_slice().try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// What a transaction does, worked out on the primary before anything is written.
#[derive(Debug, Default)]
pub struct Planned {
    /// One output per step.
    pub outputs: Vec<OpOutput>,
    /// The store ops of the writes (empty for a read-only transaction).
    pub ops: Vec<Op>,
    /// Whether the object is gone at the end.
    pub removed: bool,
    /// The object's version before the transaction.
    pub version: u64,
    /// Erasure pools: each other holder's shard ops (`ops` are this OSD's shard's).
    pub others: Vec<(tidepool_placement::OsdId, Vec<Op>)>,
}

/// Whether planning `step` may read much from the store: object data, or omap entries.
pub fn reads_much(step: &ObjectOp) -> bool {
    matches!(
        step,
        ObjectOp::Read { .. }
            | ObjectOp::OmapGet(_)
            | ObjectOp::OmapList { .. }
            | ObjectOp::CompareOmap(..)
    )
}

/// Works out `steps` against the object `name` of `coll` as it is now. Reads and guards see
/// the object as it was before the transaction; writes apply in order.
pub fn plan(
    store: &dyn ObjectStore,
    coll: CollectionId,
    name: &str,
    steps: Vec<ObjectOp>,
) -> Result<Planned, OpError> {
    let (mut exists, mut size, xattrs) = match store.stat(coll, name) {
        Ok(stat) => (true, stat.size, store.xattrs(coll, name).map_err(storage)?),
        Err(StoreError::NotFound { .. }) => (false, 0, BTreeMap::new()),
        Err(other) => return Err(storage(other)),
    };
    let existed = exists;
    let version = version_of(&xattrs);
    let mut planned = Planned {
        version,
        ..Planned::default()
    };
    // Steps are taken by value so that written data moves into the store ops uncopied.
    for step in steps {
        let output = match step {
            ObjectOp::Create { exclusive } => {
                if exists && exclusive {
                    return Err(OpError::Exists);
                }
                planned.ops.push(Op::Create {
                    coll,
                    name: name.into(),
                    exclusive: false,
                });
                exists = true;
                OpOutput::None
            }
            ObjectOp::WriteFull(data) => {
                size = data.len() as u64;
                planned.ops.push(Op::WriteFull {
                    coll,
                    name: name.into(),
                    data,
                    sums: None,
                });
                exists = true;
                OpOutput::None
            }
            ObjectOp::Write { offset, data } => {
                size = size.max(offset.saturating_add(data.len() as u64));
                planned.ops.push(Op::Write {
                    coll,
                    name: name.into(),
                    offset,
                    data,
                    sums: None,
                });
                exists = true;
                OpOutput::None
            }
            ObjectOp::Append(data) => {
                let len = data.len() as u64;
                planned.ops.push(Op::Write {
                    coll,
                    name: name.into(),
                    offset: size,
                    data,
                    sums: None,
                });
                exists = true;
                size += len;
                OpOutput::None
            }
            ObjectOp::Truncate(new_size) => {
                if !exists {
                    return Err(OpError::NotFound);
                }
                planned.ops.push(Op::Truncate {
                    coll,
                    name: name.into(),
                    size: new_size,
                });
                size = new_size;
                OpOutput::None
            }
            ObjectOp::Remove => {
                if !exists {
                    return Err(OpError::NotFound);
                }
                planned.ops.push(Op::Remove {
                    coll,
                    name: name.into(),
                });
                exists = false;
                size = 0;
                OpOutput::None
            }
            ObjectOp::SetXattr(key, value) => {
                check_xattr_name(&key)?;
                planned.ops.push(Op::SetXattr {
                    coll,
                    name: name.into(),
                    key,
                    value,
                });
                exists = true;
                OpOutput::None
            }
            ObjectOp::RemoveXattr(key) => {
                check_xattr_name(&key)?;
                if !exists {
                    return Err(OpError::NotFound);
                }
                planned.ops.push(Op::RemoveXattr {
                    coll,
                    name: name.into(),
                    key,
                });
                OpOutput::None
            }
            ObjectOp::OmapSet(entries) => {
                planned.ops.push(Op::OmapSet {
                    coll,
                    name: name.into(),
                    entries: entries
                        .into_iter()
                        .map(|(k, v)| (k.into_vec(), v.into_vec()))
                        .collect(),
                });
                exists = true;
                OpOutput::None
            }
            ObjectOp::OmapRemove(keys) => {
                if !exists {
                    return Err(OpError::NotFound);
                }
                planned.ops.push(Op::OmapRemove {
                    coll,
                    name: name.into(),
                    keys: keys.into_iter().map(|k| k.into_vec()).collect(),
                });
                OpOutput::None
            }
            ObjectOp::Read { offset, len } => {
                if !existed {
                    return Err(OpError::NotFound);
                }
                let data = store.read(coll, name, offset, len).map_err(storage)?;
                OpOutput::Data(data.into())
            }
            ObjectOp::Stat => {
                if !existed {
                    return Err(OpError::NotFound);
                }
                let size = store.stat(coll, name).map_err(storage)?.size;
                OpOutput::Stat { size, version }
            }
            ObjectOp::GetXattrs => {
                if !existed {
                    return Err(OpError::NotFound);
                }
                OpOutput::Xattrs(
                    xattrs
                        .iter()
                        .filter(|(k, _)| !k.starts_with('\0'))
                        .map(|(k, v)| (k.clone(), ByteBuf::from(v.clone())))
                        .collect(),
                )
            }
            ObjectOp::OmapGet(keys) => {
                if !existed {
                    return Err(OpError::NotFound);
                }
                let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
                let found = store.omap_get(coll, name, &keys).map_err(storage)?;
                OpOutput::Omap(
                    found
                        .into_iter()
                        .map(|(k, v)| (ByteBuf::from(k), ByteBuf::from(v)))
                        .collect(),
                )
            }
            ObjectOp::OmapList { start_after, limit } => {
                if !existed {
                    return Err(OpError::NotFound);
                }
                let page = store
                    .omap_list(
                        coll,
                        name,
                        start_after.as_ref().map(|k| k.as_slice()),
                        limit as usize,
                    )
                    .map_err(storage)?;
                OpOutput::Omap(
                    page.into_iter()
                        .map(|(k, v)| (ByteBuf::from(k), ByteBuf::from(v)))
                        .collect(),
                )
            }
            ObjectOp::AssertVersion(expected) => {
                if version != expected {
                    return Err(OpError::GuardFailed(format!(
                        "version is {version}, not {expected}"
                    )));
                }
                OpOutput::None
            }
            ObjectOp::CompareXattr(key, expected) => {
                let actual = xattrs.get(&key).map(|v| v.as_slice());
                if actual != expected.as_ref().map(|v| v.as_slice()) {
                    return Err(OpError::GuardFailed(format!("xattr {key:?} differs")));
                }
                OpOutput::None
            }
            ObjectOp::CompareOmap(key, expected) => {
                let actual = if existed {
                    store
                        .omap_get(coll, name, std::slice::from_ref(&key.to_vec()))
                        .map_err(storage)?
                        .into_iter()
                        .next()
                        .map(|(_, value)| value)
                } else {
                    None
                };
                if actual.as_deref() != expected.as_ref().map(|v| v.as_slice()) {
                    return Err(OpError::GuardFailed("omap value differs".into()));
                }
                OpOutput::None
            }
        };
        planned.outputs.push(output);
    }
    planned.removed = !exists;
    Ok(planned)
}

/// The transaction that makes a planned change as PG version `entry.version` after `info`,
/// with its log entry, and the summary after it (trimming the log to `keep` entries; a holder
/// further behind is backfilled).
pub fn commit_tx(
    coll: CollectionId,
    name: &str,
    planned: &mut Planned,
    entry: &LogEntry,
    info: &PgInfo,
    keep: u64,
) -> (Transaction, PgInfo) {
    let mut ops = std::mem::take(&mut planned.ops);
    if !planned.removed {
        ops.push(Op::SetXattr {
            coll,
            name: name.into(),
            key: VERSION_XATTR.into(),
            value: entry.version.to_le_bytes().to_vec(),
        });
    }
    let next = advance(info, entry, keep);
    let trim = (next.log_tail > info.log_tail).then(|| (info.log_tail + 1, next.log_tail));
    ops.extend(record(coll, std::slice::from_ref(entry), &next, trim));
    (Transaction { ops }, next)
}

/// The summary after appending `entry` to `info`, keeping `keep` entries.
pub fn advance(info: &PgInfo, entry: &LogEntry, keep: u64) -> PgInfo {
    let mut next = PgInfo {
        last_update: entry.version,
        last_epoch: entry.epoch,
        log_tail: info.log_tail,
        last_epoch_started: info.last_epoch_started,
    };
    if next.last_update.saturating_sub(next.log_tail) > keep {
        next.log_tail = next.last_update - keep;
    }
    next
}

/// The summary a transaction of [`commit_tx`] records (what a replica takes over from its
/// primary, trimming included).
pub fn recorded_info(tx: &Transaction) -> Option<PgInfo> {
    tx.ops.iter().find_map(|op| match op {
        Op::OmapSet { name, entries, .. } if name == META => entries
            .iter()
            .find(|(key, _)| key == INFO_KEY)
            .and_then(|(_, value)| rmp_serde::from_slice(value).ok()),
        _ => None,
    })
}

/// Reads an object whole (`None` when it does not exist).
pub fn read_state(
    store: &dyn ObjectStore,
    coll: CollectionId,
    name: &str,
) -> Result<Option<ObjectState>, StoreError> {
    let data = match store.read_copy(coll, name) {
        Ok(data) => data,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(other) => return Err(other),
    };
    let xattrs = store
        .xattrs(coll, name)?
        .into_iter()
        .map(|(k, v)| (k, ByteBuf::from(v)))
        .collect();
    let mut omap = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.omap_list(coll, name, after.as_deref(), 4096)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0.clone());
        omap.extend(
            page.into_iter()
                .map(|(k, v)| (ByteBuf::from(k), ByteBuf::from(v))),
        );
    }
    Ok(Some(ObjectState {
        name: name.into(),
        data: data.into(),
        xattrs,
        omap,
    }))
}

/// The ops that make `name` exactly `state` (or remove it), whatever is there now.
pub fn write_state(
    store: &dyn ObjectStore,
    coll: CollectionId,
    name: &str,
    state: Option<&ObjectState>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    if store.stat(coll, name).is_ok() {
        ops.push(Op::Remove {
            coll,
            name: name.into(),
        });
    }
    if let Some(state) = state {
        ops.extend(create_state(coll, name, state));
    }
    ops
}

/// The ops that create `name` as `state` where no object of that name exists.
pub fn create_state(coll: CollectionId, name: &str, state: &ObjectState) -> Vec<Op> {
    let mut ops = vec![Op::WriteFull {
        coll,
        name: name.into(),
        data: state.data.clone(),
        sums: None,
    }];
    for (key, value) in &state.xattrs {
        ops.push(Op::SetXattr {
            coll,
            name: name.into(),
            key: key.clone(),
            value: value.to_vec(),
        });
    }
    if !state.omap.is_empty() {
        ops.push(Op::OmapSet {
            coll,
            name: name.into(),
            entries: state
                .omap
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;
    use tidepool_proto::osd::{ObjectOp, OpError};

    use super::plan;
    use crate::store::{CollectionId, MemStore, ObjectStore, Op, Transaction};

    fn key(text: &str) -> ByteBuf {
        ByteBuf::from(text.as_bytes().to_vec())
    }

    /// Plans `steps` on object `o` and applies what they write; the guard outcome.
    fn run(store: &MemStore, steps: Vec<ObjectOp>) -> Result<(), OpError> {
        let coll = CollectionId::replicated(1, 0);
        let planned = plan(store, coll, "o", steps)?;
        store
            .apply(&Transaction { ops: planned.ops })
            .expect("apply");
        Ok(())
    }

    /// Rule: `CompareOmap` passes only when the key's value is exactly the expected one, with
    /// an absent key (or object) matching `None`; a failed guard writes nothing.
    #[test]
    fn compare_omap_guards_the_whole_transaction() {
        let store = MemStore::new();
        let coll = CollectionId::replicated(1, 0);
        store
            .apply(&Transaction {
                ops: vec![Op::CreateCollection(coll)],
            })
            .expect("collection");
        let set = |v: &str| ObjectOp::OmapSet(vec![(key("k"), key(v))]);
        run(
            &store,
            vec![ObjectOp::CompareOmap(key("k"), None), set("1")],
        )
        .expect("absent");
        let stale = run(
            &store,
            vec![ObjectOp::CompareOmap(key("k"), None), set("2")],
        );
        assert!(matches!(stale, Err(OpError::GuardFailed(_))), "{stale:?}");
        let wrong = run(
            &store,
            vec![ObjectOp::CompareOmap(key("k"), Some(key("9"))), set("2")],
        );
        assert!(matches!(wrong, Err(OpError::GuardFailed(_))), "{wrong:?}");
        run(
            &store,
            vec![ObjectOp::CompareOmap(key("k"), Some(key("1"))), set("2")],
        )
        .expect("matching value");
        let value = store.omap_get(coll, "o", &[b"k".to_vec()]).expect("get");
        assert_eq!(
            value.get(b"k".as_slice()).map(Vec::as_slice),
            Some(&b"2"[..])
        );
        run(&store, vec![ObjectOp::CompareOmap(key("other"), None)]).expect("absent key");
    }
}
