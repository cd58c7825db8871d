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
