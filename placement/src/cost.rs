//! Fixed-point `-log2(u)`: the cost of a straw2 draw, without floating point.
//!
//! A straw2 draw of an item with weight `w` and uniform value `u` in (0, 1] is `ln(u) / w`; the
//! largest draw wins. Equivalently the smallest `-log2(u) / w` wins, which is what we compute:
//! `cost(h)` is `-log2((h + 1) / 2^32)` in 32.32 fixed point, from a 1,025-entry table built at
//! compile time and linear interpolation between its entries.

/// `TABLE[j]` is `log2(1 + j/1024)` in 0.32 fixed point, truncated; `TABLE[1024]` is exactly 1.0.
static TABLE: [u64; 1025] = build_table();

const TABLE_BITS: u32 = 10;
const REMAINDER_BITS: u32 = 32 - TABLE_BITS;

const fn build_table() -> [u64; 1025] {
    let mut table = [0u64; 1025];
    let mut j = 0;
    while j < 1024 {
        table[j] = log2_fraction(1024 + j as u128);
        j += 1;
    }
    table[1024] = 1 << 32;
    table
}

/// `log2(numerator / 1024)` for a numerator in `1024..2048`, as 0.32 fixed point, by repeated
/// squaring in 2.62 fixed point (each squaring yields one bit of the logarithm).
const fn log2_fraction(numerator: u128) -> u64 {
    const ONE: u128 = 1 << 62;
    let mut y = numerator << 52; // numerator / 1024 in 2.62
    let mut result = 0u64;
    let mut bit = 31i32;
    while bit >= 0 {
        y = (y * y) >> 62;
        if y >= 2 * ONE {
            y >>= 1;
            result |= 1 << bit;
        }
        bit -= 1;
    }
    result
}

/// `log2(v)` for `v` in `1..=2^32`, in 32.32 fixed point; non-decreasing in `v`.
#[inline(always)]
fn log2_q32(v: u64) -> u64 {
    debug_assert!((1..=1 << 32).contains(&v));
    let whole = 63 - v.leading_zeros() as u64;
    // The 32 bits after the leading one: the fraction `t` in `v = 2^whole * (1 + t)`.
    let t = ((v << (63 - whole)) >> 31) & 0xffff_ffff;
    let index = (t >> REMAINDER_BITS) as usize;
    let remainder = t & ((1 << REMAINDER_BITS) - 1);
    let low = TABLE[index];
    let high = TABLE[index + 1];
    let fraction = low + (((high - low) * remainder) >> REMAINDER_BITS);
    (whole << 32) + fraction
}

/// The cost of drawing `h`: `-log2((h + 1) / 2^32)` in 32.32 fixed point, at most `32 << 32`.
/// A larger `h` never costs more.
#[inline(always)]
pub fn cost(h: u32) -> u64 {
    (32u64 << 32) - log2_q32(u64::from(h) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_at_powers_of_two() {
        for k in 0..=32u64 {
            assert_eq!(log2_q32(1 << k), k << 32, "log2(2^{k})");
        }
        assert_eq!(cost(u32::MAX), 0);
        assert_eq!(cost(0), 32 << 32);
    }

    #[test]
    fn close_to_the_real_logarithm() {
        // Checked against floating point in the test only; the library never uses it.
        let mut v = 1u64;
        while v <= 1 << 32 {
            let expected = (v as f64).log2();
            let got = log2_q32(v) as f64 / 4_294_967_296.0;
            assert!(
                (expected - got).abs() < 1e-6,
                "log2({v}) = {expected}, got {got}"
            );
            v = v * 3 / 2 + 1;
        }
    }

    #[test]
    fn monotone() {
        let mut previous = 0;
        for step in 0..1_000_000u64 {
            let v = 1 + step * 4294;
            let value = log2_q32(v);
            assert!(value >= previous, "log2 decreased at {v}");
            previous = value;
        }
        let mut previous = 0;
        for v in (1u64 << 32) - 100_000..=(1u64 << 32) {
            let value = log2_q32(v);
            assert!(value >= previous);
            previous = value;
        }
    }

    #[test]
    fn table_known_answers() {
        assert_eq!(TABLE[0], 0);
        assert_eq!(TABLE[512], 0x95c0_1a39);
        assert_eq!(TABLE[1023], 0xffd1_d28e);
    }
}
