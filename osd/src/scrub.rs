//! Scrub's comparison, pure: every holder's scrub map of a PG in, what is wrong where and how
//! to repair it out. See docs/scrub.md.
//!
//! A copy whose bytes fail their checksums is known to be bad: it never decides anything.
//! Whether an object exists is decided by a strict majority of the holders; what it holds, by
//! the intact copies (all of them when they agree, else a strict majority of them). Where
//! neither decides, the object has no provably good copy and nothing is repaired.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tidepool_placement::OsdId;

/// A digest (blake3).
pub type Digest = [u8; 32];

/// One holder's view of one object in a scrub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectScrub {
    /// Its PG version.
    pub version: u64,
    /// Its logical size.
    pub size: u64,
    /// The digest of its xattrs (for a shard, without its position).
    pub xattrs: Digest,
    /// The digest of its omap.
    pub omap: Digest,
    /// The digest of its bytes as read, in a deep scrub of a replicated pool.
    pub data: Option<Digest>,
    /// Why its bytes or metadata could not be read (a checksum that does not match): the copy
    /// is bad.
    pub error: Option<String>,
}

impl ObjectScrub {
    /// What this copy says about the object, when it is intact.
    fn content(&self) -> Option<Content> {
        self.error.is_none().then_some(Content {
            version: self.version,
            size: self.size,
            xattrs: self.xattrs,
            omap: self.omap,
            data: self.data,
        })
    }
}

/// A holder's scrub map: its objects of the PG (internal ones left out), by name.
pub type ScrubMap = BTreeMap<String, ObjectScrub>;

/// What an intact copy says, compared across holders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Content {
    version: u64,
    size: u64,
    xattrs: Digest,
    omap: Digest,
    data: Option<Digest>,
}

/// A field of an object in which a copy differs from the authoritative one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Its version.
    Version,
    /// Its size.
    Size,
    /// Its xattrs.
    Xattrs,
    /// Its omap.
    Omap,
    /// Its bytes.
    Data,
}

/// What is wrong with one holder's copy of an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The object exists, and this holder lacks it.
    Missing,
    /// The object does not exist, and this holder has it.
    Stray,
    /// Its bytes or metadata fail their checksums.
    ReadError(String),
    /// It differs from the authoritative copy in these fields.
    Differs(Vec<Field>),
    /// The holders disagree and none of them is provably right.
    Disagrees,
}

/// One inconsistency: an object, a holder, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inconsistency {
    /// The object.
    pub object: String,
    /// The holder.
    pub holder: OsdId,
    /// What is wrong with its copy.
    pub problem: Problem,
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

/// Compares the scrub maps of every holder of a PG. `rebuild_from` is how many intact copies
/// rebuild an object: 1 in a replicated pool, `k` in an erasure pool (whose shards hold
/// different bytes, so their data digests are not compared).
pub fn compare(maps: &[(OsdId, ScrubMap)], rebuild_from: usize) -> Verdict {
    let names: BTreeSet<&String> = maps.iter().flat_map(|(_, map)| map.keys()).collect();
    let mut verdict = Verdict::default();
    for name in names {
        let copies: Vec<(OsdId, Option<&ObjectScrub>)> = maps
            .iter()
            .map(|(osd, map)| (*osd, map.get(name)))
            .collect();
        compare_object(name, &copies, rebuild_from, &mut verdict);
    }
    verdict
}

fn compare_object(
    name: &str,
    copies: &[(OsdId, Option<&ObjectScrub>)],
    rebuild_from: usize,
    verdict: &mut Verdict,
) {
    let shards = rebuild_from > 1;
    let content = |copy: &ObjectScrub| {
        copy.content().map(|mut c| {
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
