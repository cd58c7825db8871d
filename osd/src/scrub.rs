//! Scrub's comparison, pure: every holder's scrub map of a PG in, what is wrong where and how
//! to repair it out. See docs/scrub.md.
//!
//! A copy whose bytes fail their checksums is known to be bad: it never decides anything.
//! Whether an object exists is decided by a strict majority of the holders; what it holds, by
//! the intact copies (all of them when they agree, else a strict majority of them). Where
//! neither decides, the object has no provably good copy and nothing is repaired.

use std::collections::{BTreeMap, BTreeSet};

use tidepool_erasure::{Codec, ParityCheck};
use tidepool_placement::OsdId;

use crate::ec::{self, POSITION_XATTR, SIZE_XATTR};
use crate::pg::{self, VERSION_XATTR};
use crate::store::{CollectionId, ObjectStore, StoreError};

pub use tidepool_proto::scrub::{
    Digest, Field, Inconsistency, ObjectScrub, Problem, ScrubMap, ScrubReport,
};

/// What an intact copy says about the object.
fn content_of(copy: &ObjectScrub) -> Option<Content> {
    copy.error.is_none().then_some(Content {
        version: copy.version,
        size: copy.size,
        xattrs: copy.xattrs,
        omap: copy.omap,
        data: copy.data,
    })
}

/// What an intact copy says, compared across holders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Content {
    version: u64,
    size: u64,
    xattrs: Digest,
    omap: Digest,
    data: Option<Digest>,
}

/// Omap entries read per store call while digesting an object's omap.
const OMAP_PAGE: usize = 1024;

/// Objects listed per store call.
const LIST_PAGE: usize = 1024;

/// This holder's scrub map of the objects of the PG in collection `coll` named after `after`
/// up to and including `until` (`None`: from the first, to the last), all but the PG's own,
/// with its version, logical size (an erasure shard's from its size xattr) and the digests of
/// its xattrs (without its version and an erasure shard's position, which are compared apart
/// or differ by shard) and omap. When `deep`, every byte is read through its checksums (each
/// block's crc32c, each blob's blake3) and digested, and an erasure shard's bytes are folded
/// by the stripe unit `fold` (see [`tidepool_erasure::fold`]); a copy that fails them gets the
/// error instead, and so does one whose metadata cannot be read.
pub fn map_of(
    store: &dyn ObjectStore,
    coll: CollectionId,
    deep: bool,
    fold: Option<usize>,
    after: Option<&str>,
    until: Option<&str>,
) -> Result<ScrubMap, StoreError> {
    let mut map = ScrubMap::new();
    let mut after = after.map(str::to_owned);
    loop {
        let names = store.list(coll, after.as_deref(), LIST_PAGE)?;
        let Some(last) = names.last().cloned() else {
            return Ok(map);
        };
        for name in names.into_iter().filter(|n| !ec::is_internal(n)) {
            if until.is_some_and(|until| name.as_str() > until) {
                return Ok(map);
            }
            match object_of(store, coll, &name, deep, fold) {
                Ok(Some(object)) => {
                    map.insert(name, object);
                }
                // Removed since the listing.
                Ok(None) => {}
                Err(error) => {
                    map.insert(name, unreadable(error));
                }
            }
        }
        after = Some(last);
    }
}

/// The last name of the chunk of this holder's objects after `after` that a scrub compares
/// next: at most `objects` objects and, past the first, `bytes` bytes. `None` when the chunk
/// runs to the end of the PG (its holders' maps then take every name after `after`).
pub fn chunk_end(
    store: &dyn ObjectStore,
    coll: CollectionId,
    after: Option<&str>,
    objects: usize,
    bytes: u64,
) -> Result<Option<String>, StoreError> {
    let (mut count, mut total) = (0, 0);
    let mut after = after.map(str::to_owned);
    loop {
        let names = store.list(coll, after.as_deref(), objects.clamp(1, LIST_PAGE))?;
        let Some(last) = names.last().cloned() else {
            return Ok(None);
        };
        for name in names.into_iter().filter(|n| !ec::is_internal(n)) {
            total += store.stat(coll, &name).map_or(0, |s| s.size);
            count += 1;
            if count >= objects || total >= bytes {
                return Ok(Some(name));
            }
        }
        after = Some(last);
    }
}

/// A copy whose metadata could not be read.
fn unreadable(error: StoreError) -> ObjectScrub {
    ObjectScrub {
        version: 0,
        size: 0,
        xattrs: [0; 32],
        omap: [0; 32],
        data: None,
        fold: None,
        error: Some(error.to_string()),
    }
}

fn object_of(
    store: &dyn ObjectStore,
    coll: CollectionId,
    name: &str,
    deep: bool,
    fold: Option<usize>,
) -> Result<Option<ObjectScrub>, StoreError> {
    let xattrs = match store.xattrs(coll, name) {
        Ok(xattrs) => xattrs,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(other) => return Err(other),
    };
    let logical = xattrs
        .get(SIZE_XATTR)
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_le_bytes);
    let size = match logical {
        Some(size) => size,
        None => store.stat(coll, name)?.size,
    };
    let mut digest = blake3::Hasher::new();
    for (key, value) in &xattrs {
        if key != VERSION_XATTR && key != POSITION_XATTR {
            hash_entry(&mut digest, key.as_bytes(), value);
        }
    }
    let xattrs_digest = *digest.finalize().as_bytes();
    let mut digest = blake3::Hasher::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.omap_list(coll, name, after.as_deref(), OMAP_PAGE)?;
        for (key, value) in &page {
            hash_entry(&mut digest, key, value);
        }
        match page.last() {
            Some((key, _)) if page.len() == OMAP_PAGE => after = Some(key.clone()),
            _ => break,
        }
    }
    let omap = *digest.finalize().as_bytes();
    let (data, folded, error) = if deep {
        match store.read_copy(coll, name) {
            Ok(bytes) => (
                Some(*blake3::hash(&bytes).as_bytes()),
                fold.map(|unit| tidepool_erasure::fold(unit, &bytes).into()),
                None,
            ),
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(error) => (None, None, Some(error.to_string())),
        }
    } else {
        (None, None, None)
    };
    Ok(Some(ObjectScrub {
        version: pg::version_of(&xattrs),
        size,
        xattrs: xattrs_digest,
        omap,
        data,
        fold: folded,
        error,
    }))
}

/// Feeds one key and value to `digest`, each after its length, so that no two different
/// lists of entries feed it the same bytes.
fn hash_entry(digest: &mut blake3::Hasher, key: &[u8], value: &[u8]) {
    digest.update(&(key.len() as u64).to_le_bytes());
    digest.update(key);
    digest.update(&(value.len() as u64).to_le_bytes());
    digest.update(value);
}

/// A repair that makes the holders agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Write the object to `to` as the authoritative holders `from` have it (in an erasure
    /// pool, rebuild the shards of `to` from those of `from`).
    Copy {
        /// The object.
        object: String,
        /// Holders of the authoritative copy (or shards).
        from: Vec<OsdId>,
        /// Holders to write.
        to: Vec<OsdId>,
    },
    /// Remove the object from holders that have it although it does not exist.
    Remove {
        /// The object.
        object: String,
        /// Holders to remove it from.
        on: Vec<OsdId>,
    },
}

/// The outcome of comparing the holders' maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every inconsistency found, by object then holder.
    pub inconsistencies: Vec<Inconsistency>,
    /// The repairs that make every holder agree with a provably good copy.
    pub repairs: Vec<Repair>,
    /// Objects with no provably good copy: reported, never repaired.
    pub unrepairable: Vec<String>,
}

/// Compares the scrub maps of every holder of a PG, in position order. `codec` is an erasure
/// pool's: its shards hold different bytes, so their data digests are not compared, `k` of
/// them rebuild an object, and their folds, when every holder sent one, must be one code word.
pub fn compare(maps: &[(OsdId, ScrubMap)], codec: Option<&Codec>) -> Verdict {
    let names: BTreeSet<&String> = maps.iter().flat_map(|(_, map)| map.keys()).collect();
    let mut verdict = Verdict::default();
    for name in names {
        let copies: Vec<(OsdId, Option<&ObjectScrub>)> = maps
            .iter()
            .map(|(osd, map)| (*osd, map.get(name)))
            .collect();
        compare_object(name, &copies, codec, &mut verdict);
    }
    verdict
}

fn compare_object(
    name: &str,
    copies: &[(OsdId, Option<&ObjectScrub>)],
    codec: Option<&Codec>,
    verdict: &mut Verdict,
) {
    let shards = codec.is_some();
    let rebuild_from = codec.map_or(1, |c| c.layout().k());
    let content = |copy: &ObjectScrub| {
        content_of(copy).map(|mut c| {
            if shards {
                c.data = None;
            }
            c
        })
    };
    let holders = copies.len();
    let present = copies.iter().filter(|(_, c)| c.is_some()).count();
    let majority = |votes: usize, of: usize| 2 * votes > of;
    let exists = if majority(present, holders) {
        true
    } else if majority(holders - present, holders) {
        false
    } else {
        return disagree(name, copies, verdict);
    };
    if !exists {
        let on: Vec<OsdId> = copies
            .iter()
            .filter(|(_, c)| c.is_some())
            .map(|(osd, _)| *osd)
            .collect();
        if on.is_empty() {
            return;
        }
        for osd in &on {
            verdict.inconsistencies.push(Inconsistency {
                object: name.into(),
                holder: *osd,
                problem: Problem::Stray,
            });
        }
        verdict.repairs.push(Repair::Remove {
            object: name.into(),
            on,
        });
        return;
    }
    // What the intact copies say, and how many say it.
    let mut said: BTreeMap<Content, usize> = BTreeMap::new();
    for copy in copies.iter().filter_map(|(_, c)| *c) {
        if let Some(content) = content(copy) {
            *said.entry(content).or_default() += 1;
        }
    }
    let intact: usize = said.values().sum();
    let authority = match said.iter().max_by_key(|(_, votes)| **votes) {
        Some((content, votes)) if said.len() == 1 || majority(*votes, intact) => *content,
        _ => return disagree(name, copies, verdict),
    };
    let (mut from, mut to) = (Vec::new(), Vec::new());
    for (osd, copy) in copies {
        let problem = match copy {
            None => Some(Problem::Missing),
            Some(copy) => match content(copy) {
                None => Some(Problem::ReadError(copy.error.clone().unwrap_or_default())),
                Some(c) if c == authority => None,
                Some(c) => Some(Problem::Differs(differing(&c, &authority))),
            },
        };
        match problem {
            None => from.push(*osd),
            Some(problem) => {
                to.push(*osd);
                verdict.inconsistencies.push(Inconsistency {
                    object: name.into(),
                    holder: *osd,
                    problem,
                });
            }
        }
    }
    if to.is_empty() {
        if let Some(codec) = codec {
            check_parity(name, copies, codec, verdict);
        }
        return;
    }
    if from.len() < rebuild_from {
        // Too few good shards to rebuild the others.
        verdict.unrepairable.push(name.into());
        return;
    }
    verdict.repairs.push(Repair::Copy {
        object: name.into(),
        from,
        to,
    });
}

/// The object's holders disagree and none is provably right: every copy is reported (a bad
/// one as such), none repaired.
fn disagree(name: &str, copies: &[(OsdId, Option<&ObjectScrub>)], verdict: &mut Verdict) {
    for (osd, copy) in copies {
        let problem = match copy.and_then(|c| c.error.clone()) {
            Some(error) => Problem::ReadError(error),
            None => Problem::Disagrees,
        };
        verdict.inconsistencies.push(Inconsistency {
            object: name.into(),
            holder: *osd,
            problem,
        });
    }
    verdict.unrepairable.push(name.into());
}

/// Checks that the folds of an object's shards, intact and agreeing on everything else, are
/// one code word. A shard that is not, although it passes its checksums, is not provably bad:
/// the one the others agree without is named (or every holder, when none is), and nothing is
/// repaired.
fn check_parity(
    name: &str,
    copies: &[(OsdId, Option<&ObjectScrub>)],
    codec: &Codec,
    verdict: &mut Verdict,
) {
    let folds: Option<Vec<&[u8]>> = copies
        .iter()
        .map(|(_, copy)| copy.and_then(|c| c.fold.as_deref().map(|f| &f[..])))
        .collect();
    // Without a fold from every position (a shallow scrub), there is nothing to check.
    let Some(folds) = folds else { return };
    let blamed: Vec<OsdId> = match codec.check_folds(&folds) {
        Ok(ParityCheck::Agrees) => return,
        Ok(ParityCheck::Wrong(at)) => vec![copies[at].0],
        Ok(ParityCheck::Unknown) | Err(_) => copies.iter().map(|(osd, _)| *osd).collect(),
    };
    for holder in blamed {
        verdict.inconsistencies.push(Inconsistency {
            object: name.into(),
            holder,
            problem: Problem::Parity,
        });
    }
    verdict.unrepairable.push(name.into());
}

fn differing(copy: &Content, authority: &Content) -> Vec<Field> {
    [
        (copy.version != authority.version, Field::Version),
        (copy.size != authority.size, Field::Size),
        (copy.xattrs != authority.xattrs, Field::Xattrs),
        (copy.omap != authority.omap, Field::Omap),
        (copy.data != authority.data, Field::Data),
    ]
    .into_iter()
    .filter_map(|(differs, field)| differs.then_some(field))
    .collect()
}

#[cfg(test)]
mod tests;
