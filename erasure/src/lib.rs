//! Erasure coding for erasure pools, pure: the codec ([`Codec`], Reed–Solomon over GF(2⁸)) and
//! the stripe layout ([`Layout`]): which stripes and chunks a range of an object touches, where
//! they lie on each shard, and the shard writes that put new bytes anywhere in an object,
//! re-encoding only the stripes they touch. See docs/erasure.md.
//!
//! An object is cut into stripes of `k × unit` bytes; stripe `s` keeps its data chunk `j` at
//! offset `s × unit` of shard `j`, and its parity chunks at the same offset of shards
//! `k..k+m`. Any `k` shards rebuild the rest.

use std::ops::Range;

use reed_solomon_erasure::galois_8::{self, ReedSolomon};

/// The codec's id, kept in a pool's profile: shards of another codec do not decode with this
/// one.
pub const CODEC_ID: &str = "rs-vandermonde-gf8";

/// Most shards in a pool (`k + m`), as placement allows.
pub const WIDTH_MAX: usize = 32;

/// Why a profile or a decode was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErasureError {
    /// The numbers of an erasure profile make no sense.
    #[error("invalid erasure profile: {0}")]
    Profile(String),
    /// Fewer than `k` shards of a stripe are at hand.
    #[error("only {have} of the {need} shards needed are available")]
    TooFewShards {
        /// Shards at hand.
        have: usize,
        /// Shards needed (`k`).
        need: usize,
    },
    /// The shards at hand disagree in length, or do not fit the layout.
    #[error("shards do not fit the layout: {0}")]
    Shape(String),
}

/// How an erasure pool cuts its objects: `k` data and `m` parity shards, `unit` bytes of each
/// stripe on each shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    k: usize,
    m: usize,
    unit: usize,
}

impl Layout {
    /// The layout of `k+m` with stripe unit `unit` bytes: `k ≥ 2`, `m ≥ 1`, `k + m ≤ 32`, and
    /// a unit that is a positive multiple of 512 bytes up to 1 MiB.
    pub fn new(k: usize, m: usize, unit: usize) -> Result<Layout, ErasureError> {
        if k < 2 {
            return Err(ErasureError::Profile(format!(
                "k must be at least 2, not {k}"
            )));
        }
        if m < 1 {
            return Err(ErasureError::Profile("m must be at least 1".into()));
        }
        if k + m > WIDTH_MAX {
            return Err(ErasureError::Profile(format!(
                "k + m must be at most {WIDTH_MAX}, not {}",
                k + m
            )));
        }
        if unit == 0 || !unit.is_multiple_of(512) || unit > 1 << 20 {
            return Err(ErasureError::Profile(format!(
                "the stripe unit must be a multiple of 512 bytes up to 1 MiB, not {unit}"
            )));
        }
        Ok(Layout { k, m, unit })
    }

    /// Data shards.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Parity shards.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Bytes of each stripe on each shard.
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// Object bytes per stripe (`k × unit`).
    pub fn stripe_width(&self) -> u64 {
        (self.k * self.unit) as u64
    }

    /// Stripes an object of `size` bytes has.
    pub fn stripes_of(&self, size: u64) -> u64 {
        size.div_ceil(self.stripe_width())
    }

    /// The length of each shard of an object of `size` bytes.
    pub fn shard_len(&self, size: u64) -> u64 {
        self.stripes_of(size) * self.unit as u64
    }

    /// The pieces of data chunks that bytes `range` of an object lie in, in object order.
    pub fn extents(&self, range: &Range<u64>) -> Vec<Extent> {
        let unit = self.unit as u64;
        let mut out = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let chunk = at / unit;
            let within = at % unit;
            let len = (unit - within).min(range.end - at);
            let stripe = chunk / self.k as u64;
            out.push(Extent {
                shard: (chunk % self.k as u64) as usize,
                shard_offset: stripe * unit + within,
                object_offset: at,
                len,
            });
            at += len;
        }
        out
    }
}

/// A piece of one data chunk: `len` bytes at `shard_offset` of shard `shard`, which are the
/// object's bytes at `object_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// The data shard (`0..k`).
    pub shard: usize,
    /// Where on that shard.
    pub shard_offset: u64,
    /// Where in the object.
    pub object_offset: u64,
    /// How many bytes.
    pub len: u64,
}

/// The Reed–Solomon codec of a layout.
#[derive(Debug)]
pub struct Codec {
    layout: Layout,
    rs: ReedSolomon,
}

impl Codec {
    /// The codec of `layout`.
    pub fn new(layout: Layout) -> Codec {
        // The layout's checks (1 ≤ m, 2 ≤ k, k + m ≤ 32) are within what the codec takes.
        let rs = ReedSolomon::new(layout.k, layout.m).expect("a checked layout");
        Codec { layout, rs }
    }

    /// Its layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Every shard of an object, or of a run of whole stripes, whose bytes are `data`
    /// (zero-padded to whole stripes).
    pub fn encode(&self, data: &[u8]) -> Vec<Vec<u8>> {
        let width = self.layout.stripe_width() as usize;
        self.encode_stripes(&data.chunks(width).collect::<Vec<_>>())
    }

    /// Every shard of a run of consecutive stripes whose object bytes are `stripes`, each at
    /// most a stripe wide (zero-padded to it): data chunks are dealt out to their shards, then
    /// every parity byte is computed in one pass over the shards. The code works byte position
    /// by byte position, so coding the stripes side by side gives each stripe's own parity.
    pub fn encode_stripes(&self, stripes: &[&[u8]]) -> Vec<Vec<u8>> {
        let (k, m, unit) = (self.layout.k, self.layout.m, self.layout.unit);
        let len = stripes.len() * unit;
        // Each data shard built by appending its units, so that no byte is written twice.
        let mut shards: Vec<Vec<u8>> = Vec::with_capacity(k + m);
        for shard in 0..k {
            let mut bytes = Vec::with_capacity(len);
            for stripe in stripes {
                debug_assert!(stripe.len() <= k * unit, "a stripe wider than the layout's");
                let from = (shard * unit).min(stripe.len());
                let to = ((shard + 1) * unit).min(stripe.len());
                bytes.extend_from_slice(&stripe[from..to]);
                bytes.resize(bytes.len() + unit - (to - from), 0);
            }
            shards.push(bytes);
        }
        shards.extend((0..m).map(|_| vec![0; len]));
        if len > 0 {
            self.rs
                .encode(&mut shards)
                .expect("shards of one length, as many as the codec has");
        }
        shards
    }

    /// Rebuilds the missing shards (`None`) in place from any `k` present ones, which must be
    /// of one length, a whole number of stripe units.
    pub fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError> {
        let width = self.layout.k + self.layout.m;
        if shards.len() != width {
            return Err(ErasureError::Shape(format!(
                "{} shards, not {width}",
                shards.len()
            )));
        }
        let have = shards.iter().filter(|s| s.is_some()).count();
        if have < self.layout.k {
            return Err(ErasureError::TooFewShards {
                have,
                need: self.layout.k,
            });
        }
        let mut lengths = shards.iter().flatten().map(Vec::len);
        let len = lengths.next().unwrap_or(0);
        if lengths.any(|l| l != len) || !len.is_multiple_of(self.layout.unit) {
            return Err(ErasureError::Shape(
                "shards of different lengths, or not whole stripe units".into(),
            ));
        }
        if len == 0 {
            shards.iter_mut().for_each(|s| *s = Some(Vec::new()));
            return Ok(());
        }
        self.rs
            .reconstruct(shards)
            .map_err(|e| ErasureError::Shape(e.to_string()))
    }

    /// The object of `size` bytes that the data shards hold.
    pub fn join(&self, data_shards: &[Vec<u8>], size: u64) -> Result<Vec<u8>, ErasureError> {
        let unit = self.layout.unit;
        let need = self.layout.shard_len(size) as usize;
        if data_shards.len() < self.layout.k || data_shards.iter().any(|s| s.len() < need) {
            return Err(ErasureError::Shape(format!(
                "an object of {size} bytes needs {} data shards of {need} bytes",
                self.layout.k
            )));
        }
        let mut out = Vec::with_capacity(need * self.layout.k);
        for stripe in 0..need / unit {
            for shard in &data_shards[..self.layout.k] {
                out.extend_from_slice(&shard[stripe * unit..(stripe + 1) * unit]);
            }
        }
        out.truncate(size as usize);
        Ok(out)
    }
}

/// A shard folded into one stripe unit, for checking parity without moving the shards: the
/// sum over its stripes `s` of `2^s × unit_s` in GF(2⁸), byte position by byte position (a
/// short last unit counts as zero-padded). The code is linear in each byte position, so the
/// folds of an object's shards are themselves a code word: [`Codec::check_folds`] re-encodes
/// the data shards' folds and compares the parity shards'. A change confined to one stripe
/// always changes the fold; changes in several stripes could cancel only if they are related
/// across every byte position they touch.
pub fn fold(unit: usize, shard: &[u8]) -> Vec<u8> {
    let mut folded = vec![0; unit];
    let mut coefficient = 1u8;
    for stripe in shard.chunks(unit.max(1)) {
        galois_8::mul_slice_xor(coefficient, stripe, &mut folded[..stripe.len()]);
        coefficient = galois_8::mul(coefficient, 2);
    }
    folded
}

/// What the folds of an object's shards say about its parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParityCheck {
    /// The shards form one code word.
    Agrees,
    /// They would, but for the shard at this position: the others agree, and rebuild it.
    Wrong(usize),
    /// They do not, and no single shard is to blame (more than one is wrong, or `m` is 1).
    Unknown,
}

impl Codec {
    /// Checks the folds ([`fold`]) of every shard of an object, by position: whether the
    /// parity shards' are what the data shards' encode, and if not, whether exactly one
    /// shard disagrees with all the others (which needs `m ≥ 2`: with one parity shard,
    /// any `k` shards make a code word, so none is provably the wrong one).
    pub fn check_folds(&self, folds: &[&[u8]]) -> Result<ParityCheck, ErasureError> {
        let (k, m, unit) = (self.layout.k, self.layout.m, self.layout.unit);
        if folds.len() != k + m || folds.iter().any(|f| f.len() != unit) {
            return Err(ErasureError::Shape(format!(
                "{} folds, not {} of {unit} bytes",
                folds.len(),
                k + m
            )));
        }
        let whole: Vec<&[u8]> = folds.to_vec();
        if self.rs.verify(&whole).unwrap_or(false) {
            return Ok(ParityCheck::Agrees);
        }
        // Each shard left out in turn: do `k` of the others rebuild every other one?
        let mut blamed = None;
        for out in 0..k + m {
            let mut shards: Vec<Option<Vec<u8>>> = vec![None; k + m];
            let mut kept = 0;
            for (at, fold) in folds.iter().enumerate() {
                if at != out && kept < k {
                    shards[at] = Some(fold.to_vec());
                    kept += 1;
                }
            }
            self.reconstruct(&mut shards)?;
            let rest_agree = (0..k + m)
                .filter(|at| *at != out)
                .all(|at| shards[at].as_deref() == Some(folds[at]));
            if rest_agree {
                if blamed.is_some() {
                    return Ok(ParityCheck::Unknown);
                }
                blamed = Some(out);
            }
        }
        Ok(blamed.map_or(ParityCheck::Unknown, ParityCheck::Wrong))
    }
}

#[cfg(test)]
mod tests;
