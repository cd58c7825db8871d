//! `tidepool osd store DIR ...`: a stopped OSD's store, looked at and changed by hand, as
//! `ceph-objectstore-tool` does for Ceph: list a PG's objects, remove one, write its bytes,
//! set an xattr or an omap entry. For the operator who must take a bad copy out of the way,
//! and for the tests that make one holder differ from the others. The change bypasses the
//! PG's log: the next scrub finds it, and repair undoes it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use tidepool_osd::store::{ObjectStore, Op, RocksStore, Transaction};
use tidepool_placement::PgId;

/// What `tidepool osd store` does.
#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// The PG's objects (the PG's own bookkeeping left out).
    List {
        /// The PG (`1.1f`).
        pgid: PgId,
    },
    /// Remove an object, with its xattrs and omap.
    Remove {
        /// The PG (`1.1f`).
        pgid: PgId,
        /// The object.
        name: String,
    },
    /// Replace an object's bytes with a file's (creating it); its xattrs and omap stay.
    Write {
        /// The PG (`1.1f`).
        pgid: PgId,
        /// The object.
        name: String,
        /// The file.
        file: PathBuf,
    },
    /// Set an xattr of an object.
    SetXattr {
        /// The PG (`1.1f`).
        pgid: PgId,
        /// The object.
        name: String,
        key: String,
        value: String,
    },
    /// Set an omap entry of an object.
    SetOmap {
        /// The PG (`1.1f`).
        pgid: PgId,
        /// The object.
        name: String,
        key: String,
        value: String,
    },
}

/// Runs `action` on the store of the stopped OSD whose folder is `data`.
pub fn run(data: PathBuf, action: StoreAction) -> Result<()> {
    let dir = tidepool_osd::daemon::store_dir(&data);
    let store = RocksStore::open(&dir).with_context(|| {
        format!(
            "opening the store in {} (is its OSD still running? stop it first)",
            dir.display()
        )
    })?;
    let coll = |pg: PgId| tidepool_osd::pg::collection(pg);
    let op = match action {
        StoreAction::List { pgid } => {
            let mut after: Option<String> = None;
            loop {
                let names = store.list(coll(pgid), after.as_deref(), 1024)?;
                let Some(last) = names.last().cloned() else {
                    return Ok(());
                };
                for name in names.iter().filter(|n| !tidepool_osd::ec::is_internal(n)) {
                    println!("{name}");
                }
                after = Some(last);
            }
        }
        StoreAction::Remove { pgid, name } => {
            store.stat(coll(pgid), &name)?;
            Op::Remove {
                coll: coll(pgid),
                name,
            }
        }
        StoreAction::Write { pgid, name, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            Op::WriteFull {
                coll: coll(pgid),
                name,
                data: bytes.into(),
                sums: None,
            }
        }
        StoreAction::SetXattr {
            pgid,
            name,
            key,
            value,
        } => {
            store.stat(coll(pgid), &name)?;
            Op::SetXattr {
                coll: coll(pgid),
                name,
                key,
                value: value.into_bytes(),
            }
        }
        StoreAction::SetOmap {
            pgid,
            name,
            key,
            value,
        } => {
            store.stat(coll(pgid), &name)?;
            Op::OmapSet {
                coll: coll(pgid),
                name,
                entries: vec![(key.into_bytes(), value.into_bytes())],
            }
        }
    };
    store.apply(&Transaction { ops: vec![op] })?;
    Ok(())
}
