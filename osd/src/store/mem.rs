//! [`MemStore`]: the object store in memory. The reference for the store's semantics: a
//! transaction works on a copy of what it touches and replaces it only when every op applied.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::{
    read_end, CollectionId, CollectionUsage, Commit, ObjectStat, ObjectStore, OmapEntry, Op,
    StoreError, StoreUsage, Transaction,
};

#[derive(Clone, Debug, Default)]
struct Object {
    data: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
    omap: BTreeMap<Vec<u8>, Vec<u8>>,
}

type Collection = BTreeMap<String, Object>;

/// The object store in memory.
#[derive(Debug, Default)]
pub struct MemStore {
    collections: Mutex<BTreeMap<CollectionId, Collection>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<CollectionId, Collection>> {
        // Every update replaces whole collections after it succeeded, so a poisoned lock still
        // guards a consistent map.
        self.collections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_object<T>(
        &self,
        coll: CollectionId,
        name: &str,
        f: impl FnOnce(&Object) -> T,
    ) -> Result<T, StoreError> {
        let collections = self.lock();
        let objects = collections
            .get(&coll)
            .ok_or(StoreError::NoCollection(coll))?;
        let object = objects.get(name).ok_or_else(|| StoreError::NotFound {
            coll,
            name: name.to_owned(),
        })?;
        Ok(f(object))
    }
}

/// Applies `op` to `collections` (a working copy).
fn apply_op(
    collections: &mut BTreeMap<CollectionId, Collection>,
    op: &Op,
) -> Result<(), StoreError> {
    super::check_size(op)?;
    let coll = op.collection();
    match op {
        Op::CreateCollection(_) => {
            if collections.contains_key(&coll) {
                return Err(StoreError::CollectionExists(coll));
            }
            collections.insert(coll, Collection::new());
            return Ok(());
        }
        Op::RemoveCollection(_) => {
            collections
                .remove(&coll)
                .ok_or(StoreError::NoCollection(coll))?;
            return Ok(());
        }
        _ => {}
    }
    let objects = collections
        .get_mut(&coll)
        .ok_or(StoreError::NoCollection(coll))?;
    let missing = |name: &str| StoreError::NotFound {
        coll,
        name: name.to_owned(),
    };
    match op {
        Op::CreateCollection(_) | Op::RemoveCollection(_) => {}
        Op::Create {
            name, exclusive, ..
        } => {
            if objects.contains_key(name) {
                if *exclusive {
                    return Err(StoreError::Exists {
                        coll,
                        name: name.clone(),
                    });
                }
            } else {
                objects.insert(name.clone(), Object::default());
            }
        }
        Op::Write {
            name, offset, data, ..
        } => {
            let object = objects.entry(name.clone()).or_default();
            let offset = usize::try_from(*offset)
                .map_err(|_| StoreError::Failed("offset beyond memory".into()))?;
            let end = offset + data.len();
            if object.data.len() < end {
                object.data.resize(end, 0);
            }
            object.data[offset..end].copy_from_slice(data);
        }
        Op::WriteFull { name, data, .. } => {
            objects.entry(name.clone()).or_default().data = data.to_vec();
        }
        Op::Truncate { name, size, .. } => {
            let object = objects.get_mut(name).ok_or_else(|| missing(name))?;
            let size = usize::try_from(*size)
                .map_err(|_| StoreError::Failed("size beyond memory".into()))?;
            object.data.resize(size, 0);
        }
        Op::Remove { name, .. } => {
            objects.remove(name).ok_or_else(|| missing(name))?;
        }
        Op::SetXattr {
            name, key, value, ..
        } => {
            let object = objects.entry(name.clone()).or_default();
            object.xattrs.insert(key.clone(), value.clone());
        }
        Op::RemoveXattr { name, key, .. } => {
            let object = objects.get_mut(name).ok_or_else(|| missing(name))?;
            object.xattrs.remove(key);
        }
        Op::OmapSet { name, entries, .. } => {
            let object = objects.entry(name.clone()).or_default();
            for (key, value) in entries {
                object.omap.insert(key.clone(), value.clone());
            }
        }
        Op::OmapRemove { name, keys, .. } => {
            let object = objects.get_mut(name).ok_or_else(|| missing(name))?;
            for key in keys {
                object.omap.remove(key);
            }
        }
        Op::OmapClear { name, .. } => {
            objects
                .get_mut(name)
                .ok_or_else(|| missing(name))?
                .omap
                .clear();
        }
    }
    Ok(())
}

impl ObjectStore for MemStore {
    fn submit(&self, tx: &Transaction) -> Result<Commit, StoreError> {
        let mut collections = self.lock();
        // Work on copies of the touched collections; replace them only if every op applied.
        let mut working: BTreeMap<CollectionId, Collection> = tx
            .collections()
            .into_iter()
            .filter_map(|coll| collections.get(&coll).map(|c| (coll, c.clone())))
            .collect();
        let touched = tx.collections();
        for op in &tx.ops {
            apply_op(&mut working, op)?;
        }
        for coll in touched {
            match working.remove(&coll) {
                Some(objects) => collections.insert(coll, objects),
                None => collections.remove(&coll),
            };
        }
        Ok(Commit::done(Ok(())))
    }

    fn read(
        &self,
        coll: CollectionId,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, StoreError> {
        self.with_object(coll, name, |object| {
            let size = object.data.len() as u64;
            let end = read_end(size, offset, len);
            let start = offset.min(end);
            Bytes::copy_from_slice(&object.data[start as usize..end as usize])
        })
    }

    fn stat(&self, coll: CollectionId, name: &str) -> Result<ObjectStat, StoreError> {
        self.with_object(coll, name, |object| ObjectStat {
            size: object.data.len() as u64,
        })
    }

    fn xattrs(
        &self,
        coll: CollectionId,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        self.with_object(coll, name, |object| object.xattrs.clone())
    }

    fn omap_get(
        &self,
        coll: CollectionId,
        name: &str,
        keys: &[Vec<u8>],
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        self.with_object(coll, name, |object| {
            keys.iter()
                .filter_map(|k| object.omap.get(k).map(|v| (k.clone(), v.clone())))
                .collect()
        })
    }

    fn omap_list(
        &self,
        coll: CollectionId,
        name: &str,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<OmapEntry>, StoreError> {
        self.with_object(coll, name, |object| {
            object
                .omap
                .iter()
                .filter(|(k, _)| start_after.is_none_or(|after| k.as_slice() > after))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    fn list(
        &self,
        coll: CollectionId,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let collections = self.lock();
        let objects = collections
            .get(&coll)
            .ok_or(StoreError::NoCollection(coll))?;
        Ok(objects
            .keys()
            .filter(|name| start_after.is_none_or(|after| name.as_str() > after))
            .take(limit)
            .cloned()
            .collect())
    }

    fn collections(&self) -> Result<Vec<CollectionId>, StoreError> {
        Ok(self.lock().keys().copied().collect())
    }

    fn usage(&self) -> Result<StoreUsage, StoreError> {
        let stored: u64 = self
            .lock()
            .values()
            .flat_map(|objects| objects.values())
            .map(|object| object.data.len() as u64)
            .sum();
        Ok(StoreUsage {
            total_bytes: u64::MAX,
            available_bytes: u64::MAX - stored,
            stored_bytes: stored,
        })
    }

    fn collection_usage(&self, coll: CollectionId) -> Result<CollectionUsage, StoreError> {
        let collections = self.lock();
        let objects = collections
            .get(&coll)
            .ok_or(StoreError::NoCollection(coll))?;
        Ok(CollectionUsage {
            objects: objects.len() as u64,
            bytes: objects.values().map(|o| o.data.len() as u64).sum(),
        })
    }
}
