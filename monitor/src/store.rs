//! The monitor's durable state in RocksDB: the Paxos records, and the map built from the
//! committed slots, written together in one synced batch per step.
//!
//! Keys: `paxos/promised`, `paxos/accepted/<slot>`, `paxos/log/<slot>` (slots as 20-digit
//! decimals, so key order is slot order), `paxos/trimmed` (the last slot dropped from the log),
//! `map/state` (the [`MapState`]) and `map/inc/<epoch>` (each incremental, for subscribers
//! catching up; trimmed with the log).

use std::path::Path;

use tidepool_kv::{Kv, KvError, Op};

use crate::paxos::{Ballot, Durable, Record, Slot, Value};
use crate::service::MapState;

const PROMISED: &[u8] = b"paxos/promised";
const TRIMMED: &[u8] = b"paxos/trimmed";
const ACCEPTED: &str = "paxos/accepted/";
const LOG: &str = "paxos/log/";
const STATE: &[u8] = b"map/state";
const INCREMENTAL: &str = "map/inc/";

/// Why the store failed or holds something unreadable.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key-value store failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A stored record does not decode: the store is corrupt.
    #[error("corrupt record under {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoding error.
        reason: String,
    },
}

fn key(prefix: &str, number: u64) -> Vec<u8> {
    format!("{prefix}{number:020}").into_bytes()
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("monitor records always encode")
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// A monitor's store.
#[derive(Debug)]
pub struct MonStore {
    kv: Kv,
}

impl MonStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<MonStore, StoreError> {
        Ok(MonStore { kv: Kv::open(dir)? })
    }

    /// Loads the Paxos state and the map state (genesis when new).
    pub fn load(&self) -> Result<(Durable, MapState), StoreError> {
        let mut durable = Durable::default();
        if let Some(bytes) = self.kv.get(PROMISED)? {
            durable.promised = decode::<Ballot>(PROMISED, &bytes)?;
        }
        for (key, bytes) in self.kv.scan_prefix(ACCEPTED.as_bytes())? {
            let (slot, ballot, value): (Slot, Ballot, Value) = decode(&key, &bytes)?;
            durable.accepted.insert(slot, (ballot, value));
        }
        if let Some(bytes) = self.kv.get(TRIMMED)? {
            durable.trimmed = decode::<Slot>(TRIMMED, &bytes)?;
        }
        for (key, bytes) in self.kv.scan_prefix(LOG.as_bytes())? {
            let (slot, value): (Slot, Value) = decode(&key, &bytes)?;
            durable.log.insert(slot, value);
        }
        let state = match self.kv.get(STATE)? {
            Some(bytes) => decode(STATE, &bytes)?,
            None => MapState::genesis(),
        };
        Ok((durable, state))
    }

    /// The batch operations that persist `records`, then the map state and new incrementals.
    pub fn ops(
        records: &[Record],
        state: Option<&MapState>,
        incrementals: &[tidepool_placement::Incremental],
    ) -> Vec<Op> {
        let mut ops = Vec::with_capacity(records.len() + 1 + incrementals.len());
        for record in records {
            match record {
                Record::Promised(ballot) => ops.push(Op::Put(PROMISED.to_vec(), encode(ballot))),
                Record::Accepted {
                    slot,
                    ballot,
                    value,
                } => ops.push(Op::Put(
                    key(ACCEPTED, *slot),
                    encode(&(slot, ballot, value)),
                )),
                Record::Committed { slot, value } => {
                    ops.push(Op::Delete(key(ACCEPTED, *slot)));
                    ops.push(Op::Put(key(LOG, *slot), encode(&(slot, value))));
                }
                Record::Trimmed { through } => {
                    ops.push(Op::DeleteRange(key(LOG, 0), key(LOG, through + 1)));
                    ops.push(Op::Put(TRIMMED.to_vec(), encode(through)));
                }
                Record::Installed { slot } => {
                    ops.push(Op::DeleteRange(key(LOG, 0), key(LOG, u64::MAX)));
                    ops.push(Op::DeleteRange(key(ACCEPTED, 0), key(ACCEPTED, slot + 1)));
                    ops.push(Op::Put(TRIMMED.to_vec(), encode(slot)));
                }
            }
        }
        for incremental in incrementals {
            ops.push(Op::Put(
                key(INCREMENTAL, incremental.epoch.0),
                tidepool_placement::encoding::encode(incremental),
            ));
        }
        if let Some(state) = state {
            ops.push(Op::Put(STATE.to_vec(), encode(state)));
        }
        ops
    }

    /// The operation that drops the incrementals up to epoch `through` (subscribers further
    /// behind get the whole map).
    pub fn trim_incrementals(through: u64) -> Op {
        Op::DeleteRange(key(INCREMENTAL, 0), key(INCREMENTAL, through + 1))
    }

    /// The incrementals from epoch `from` on, as stored (at most `max`).
    pub fn incrementals(&self, from: u64, max: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .kv
            .scan_from(&key(INCREMENTAL, from), INCREMENTAL.as_bytes(), max)?
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect())
    }

    /// Writes `ops` atomically, synced.
    pub fn write(&self, ops: &[Op]) -> Result<(), StoreError> {
        Ok(self.kv.write(ops)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::Proposal;

    /// Rule: what a step persisted is exactly what a restart loads.
    #[test]
    fn records_survive_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ballot = Ballot { round: 3, rank: 1 };
        let value = vec![Proposal(b"x".to_vec())];
        let records = vec![
            Record::Promised(ballot),
            Record::Accepted {
                slot: 1,
                ballot,
                value: value.clone(),
            },
            Record::Accepted {
                slot: 2,
                ballot,
                value: value.clone(),
            },
            Record::Committed {
                slot: 1,
                value: value.clone(),
            },
            Record::Committed {
                slot: 2,
                value: value.clone(),
            },
            Record::Trimmed { through: 1 },
            Record::Accepted {
                slot: 3,
                ballot,
                value: value.clone(),
            },
        ];
        let mut expected = Durable::default();
        records.iter().for_each(|r| expected.apply(r));
        let state = MapState::genesis();
        {
            let store = MonStore::open(dir.path()).expect("open");
            store
                .write(&MonStore::ops(&records, Some(&state), &[]))
                .expect("write");
        }
        let store = MonStore::open(dir.path()).expect("reopen");
        let (durable, loaded) = store.load().expect("load");
        assert_eq!(durable, expected);
        assert_eq!(durable.commit(), 2);
        assert_eq!(durable.trimmed, 1);
        assert_eq!(loaded, state);
    }
}
