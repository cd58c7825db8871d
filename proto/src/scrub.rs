//! Scrub's messages: a holder's view of each object of a PG (its scrub map), and what a scrub
//! found. The comparison itself is the OSDs' (`tidepool_osd::scrub`); see docs/scrub.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tidepool_placement::{OsdId, PgId};

/// A digest (blake3).
pub type Digest = [u8; 32];

/// One holder's view of one object in a scrub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectScrub {
    /// Its PG version.
    pub version: u64,
    /// Its logical size.
    pub size: u64,
    /// The digest of its xattrs (without its version, and for a shard without its position).
    pub xattrs: Digest,
    /// The digest of its omap.
    pub omap: Digest,
    /// The digest of its bytes as read, in a deep scrub.
    pub data: Option<Digest>,
    /// An erasure shard's fold (`tidepool_erasure::fold`), in a deep scrub: the primary checks
    /// the parity of the object's shards with it, without moving them.
    pub fold: Option<serde_bytes::ByteBuf>,
    /// Why its bytes or metadata could not be read (a checksum that does not match): the copy
    /// is bad.
    pub error: Option<String>,
}

/// A holder's scrub map: its objects of the PG (the PG's own left out), by name.
pub type ScrubMap = BTreeMap<String, ObjectScrub>;

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
    /// An erasure shard that passes its checksums, yet the shards are not one code word: when
    /// one holder is named, the others agree without it; when every holder is, none can be
    /// blamed. Its copy is not provably bad, so nothing is repaired.
    Parity,
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

/// What a scrub of one PG found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// The PG.
    pub pg: PgId,
    /// Whether every byte was read.
    pub deep: bool,
    /// The holders compared, the primary first.
    pub holders: Vec<OsdId>,
    /// Objects compared.
    pub objects: u64,
    /// Every inconsistency found, by object then holder.
    pub inconsistencies: Vec<Inconsistency>,
    /// Objects with no provably good copy.
    pub unrepairable: Vec<String>,
    /// Objects repaired after the scrub (asked for with it), each on the holders it was
    /// written to or removed from.
    pub repaired: Vec<(String, Vec<OsdId>)>,
}

/// What a PG's last scrubs found, and when they ran. Every holder keeps it (in the PG's meta
/// object); the primary reports it with the PG's statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubRecord {
    /// When the last scrub, shallow or deep, finished (seconds since the Unix epoch; 0: never).
    pub last_scrub: u64,
    /// When the last deep scrub finished (0: never).
    pub last_deep_scrub: u64,
    /// The inconsistencies found and not repaired since: the last deep scrub's that only a
    /// deep scrub sees (bytes), and the last scrub's others.
    pub inconsistencies: Vec<Inconsistency>,
    /// Objects among them with no provably good copy.
    pub unrepairable: Vec<String>,
}

impl Problem {
    /// Whether only a deep scrub finds it: the copy's bytes fail their checksums or differ.
    pub fn is_deep(&self) -> bool {
        match self {
            Problem::ReadError(_) | Problem::Parity => true,
            Problem::Differs(fields) => fields.contains(&Field::Data),
            _ => false,
        }
    }
}

impl ScrubRecord {
    /// The record after a scrub of the whole PG that finished at `at` (seconds since the Unix
    /// epoch) and left `found` and `unrepairable`. A deep scrub's findings replace the
    /// record's; a shallow scrub's replace all but what only a deep scrub sees.
    pub fn after(
        &self,
        deep: bool,
        at: u64,
        found: Vec<Inconsistency>,
        unrepairable: Vec<String>,
    ) -> ScrubRecord {
        let mut record = if deep {
            ScrubRecord {
                last_deep_scrub: at,
                ..ScrubRecord::default()
            }
        } else {
            let kept: Vec<Inconsistency> = self
                .inconsistencies
                .iter()
                .filter(|i| i.problem.is_deep())
                .cloned()
                .collect();
            let unrepairable = self
                .unrepairable
                .iter()
                .filter(|o| kept.iter().any(|i| &i.object == *o))
                .cloned()
                .collect();
            ScrubRecord {
                last_deep_scrub: self.last_deep_scrub,
                inconsistencies: kept,
                unrepairable,
                ..ScrubRecord::default()
            }
        };
        record.last_scrub = at;
        for found in found {
            if !record.inconsistencies.contains(&found) {
                record.inconsistencies.push(found);
            }
        }
        for object in unrepairable {
            if !record.unrepairable.contains(&object) {
                record.unrepairable.push(object);
            }
        }
        record
            .inconsistencies
            .sort_by(|a, b| (&a.object, a.holder).cmp(&(&b.object, b.holder)));
        record.unrepairable.sort();
        record
    }

    /// Errors found and not repaired.
    pub fn errors(&self) -> u64 {
        self.inconsistencies.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(object: &str, holder: u32, problem: Problem) -> Inconsistency {
        Inconsistency {
            object: object.into(),
            holder: OsdId(holder),
            problem,
        }
    }

    /// Rule: a shallow scrub keeps the last deep scrub's findings on bytes and replaces the
    /// rest; a deep scrub replaces everything.
    #[test]
    fn shallow_scrubs_keep_what_only_deep_ones_see() {
        let rot = found("a", 1, Problem::ReadError("crc".into()));
        let data = found("b", 2, Problem::Differs(vec![Field::Data]));
        let gone = found("c", 0, Problem::Missing);
        let record = ScrubRecord::default().after(
            true,
            10,
            vec![rot.clone(), data.clone(), gone.clone()],
            vec!["b".into(), "c".into()],
        );
        assert_eq!((record.last_scrub, record.last_deep_scrub), (10, 10));
        assert_eq!(record.errors(), 3);
        let stray = found("d", 1, Problem::Stray);
        let shallow = record.after(false, 20, vec![stray.clone()], vec![]);
        assert_eq!((shallow.last_scrub, shallow.last_deep_scrub), (20, 10));
        assert_eq!(shallow.inconsistencies, vec![rot, data, stray]);
        assert_eq!(shallow.unrepairable, vec!["b".to_string()]);
        let clean = shallow.after(true, 30, vec![], vec![]);
        assert_eq!(clean.errors(), 0);
        assert!(clean.unrepairable.is_empty());
    }
}
