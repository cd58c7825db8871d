//! Fixed-point placement weights: 16.16, so every node computes the same placement.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A placement weight in units of 1/65536 (16.16 fixed point), conventionally the disk size in
/// TiB. Zero means "never place data here".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Weight(pub u32);

impl Weight {
    /// One unit of weight (`1.0`).
    pub const ONE: Weight = Weight(1 << 16);
    /// No weight: the item is never chosen.
    pub const ZERO: Weight = Weight(0);

    /// A whole number of weight units, saturating at the largest representable weight.
    pub const fn from_units(units: u32) -> Weight {
        if units >= (1 << 16) {
            Weight(u32::MAX)
        } else {
            Weight(units << 16)
        }
    }

    /// The raw 16.16 value.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Whether the weight is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Why a weight string did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WeightParseError {
    /// The text is not a non-negative decimal number such as `1`, `0.5` or `3.64`.
    #[error("weight {0:?} is not a non-negative decimal number")]
    NotDecimal(String),
    /// The number is larger than 65535.99998.
    #[error("weight {0:?} is too large (at most 65535.99998)")]
    TooLarge(String),
}

impl FromStr for Weight {
    type Err = WeightParseError;

    /// Parses a decimal such as `2`, `0.5` or `1.8190` without floating point; the fraction is
    /// rounded to the nearest 1/65536.
    fn from_str(text: &str) -> Result<Weight, WeightParseError> {
        let not_decimal = || WeightParseError::NotDecimal(text.to_owned());
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(not_decimal());
        }
        let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok(whole) || !digits_ok(fraction) || fraction.len() > 12 {
            return Err(not_decimal());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| WeightParseError::TooLarge(text.to_owned()))?
        };
        let mut fraction_raw = 0u64;
        if !fraction.is_empty() {
            let numerator: u64 = fraction.parse().map_err(|_| not_decimal())?;
            let denominator = 10u64.pow(fraction.len() as u32);
            fraction_raw = (numerator * 65536 * 2 + denominator) / (2 * denominator);
        }
        let raw = whole
            .checked_mul(65536)
            .and_then(|w| w.checked_add(fraction_raw))
            .filter(|&raw| raw <= u64::from(u32::MAX))
            .ok_or_else(|| WeightParseError::TooLarge(text.to_owned()))?;
        Ok(Weight(raw as u32))
    }
}

impl fmt::Display for Weight {
    /// Four decimals, rounded, like `ceph osd tree`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ten_thousandths = (u64::from(self.0) * 10_000 + 32_768) >> 16;
        write!(
            f,
            "{}.{:04}",
            ten_thousandths / 10_000,
            ten_thousandths % 10_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<u32, ()>) {
        let got = text.parse::<Weight>().map(|w| w.raw()).map_err(|_| ());
        assert_eq!(got, expected, "parsing {text:?}");
    }

    #[test]
    fn parses_decimals_without_floats() {
        check("1", Ok(65536));
        check("0.5", Ok(32768));
        check(".25", Ok(16384));
        check("2.", Ok(131072));
        check("1.8190", Ok(119_210));
        check("65535.99998", Ok(u32::MAX));
        check("65536", Err(()));
        check("-1", Err(()));
        check("1e3", Err(()));
        check("", Err(()));
        check(".", Err(()));
        check("1.2.3", Err(()));
    }

    #[test]
    fn displays_four_decimals() {
        assert_eq!(Weight::ONE.to_string(), "1.0000");
        assert_eq!(Weight(32768).to_string(), "0.5000");
        assert_eq!(Weight(119_210).to_string(), "1.8190");
        assert_eq!(Weight::ZERO.to_string(), "0.0000");
    }
}
