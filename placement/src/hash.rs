//! The frozen hash functions behind placement. Changing any output here would move every object
//! in every cluster, so each is pinned by known-answer tests.

/// The 64-bit finaliser of MurmurHash3: a bijection with full avalanche.
#[inline(always)]
pub const fn mix64(mut z: u64) -> u64 {
    z ^= z >> 33;
    z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^= z >> 33;
    z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^= z >> 33;
    z
}

/// 64-bit FNV-1a: simple and stable, but weak on its own; finish it with [`mix64`] where the
/// bits must be uniform.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Hash of an object name: FNV-1a over the bytes, then [`mix64`] so that every output bit depends
/// on every input bit. The upper 32 bits are kept.
pub fn object_hash(name: &[u8]) -> u32 {
    (mix64(fnv1a64(name) ^ name.len() as u64) >> 32) as u32
}

/// Maps a hash onto `0..count` so that growing `count` to the next power of two splits each
/// placement group in two instead of reshuffling them all (Ceph's `ceph_stable_mod`).
pub const fn stable_mod(hash: u32, count: u32) -> u32 {
    debug_assert!(count > 0);
    let mask = count.next_power_of_two() - 1;
    if hash & mask < count {
        hash & mask
    } else {
        hash & (mask >> 1)
    }
}

/// The placement input of a placement group: mixes the pool in so that two pools place their
/// groups differently.
#[inline]
pub const fn pg_input(pool: u32, seed: u32) -> u64 {
    mix64(((pool as u64) << 32) | seed as u64)
}

/// The per-draw key for input `x` and attempt `r`; combined with an OSD's salt in [`draw_hash`].
#[inline(always)]
pub const fn draw_key(x: u64, r: u32) -> u64 {
    mix64(x ^ (r as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// A stable per-OSD salt so that draws of different OSDs are independent.
#[inline]
pub const fn osd_salt(osd: u32) -> u64 {
    mix64((osd as u64).wrapping_add(0x6a09_e667_f3bc_c908))
}

/// The 32-bit uniform value an OSD draws for one key.
#[inline(always)]
pub const fn draw_hash(key: u64, salt: u64) -> u32 {
    (mix64(key ^ salt) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: object names hash to these exact values on every machine, forever.
    #[test]
    fn object_hash_known_answers() {
        let cases: &[(&[u8], u32)] = &[
            (b"", 0xefd0_1f60),
            (b"a", 0x25ad_9d1b),
            (b"foo", 0x098c_0d80),
            (b"rbd_data.1234.0000000000000000", 0x8022_c588),
            ("ünïcødé/κλειδί".as_bytes(), 0x47de_06b7),
        ];
        for &(name, expected) in cases {
            assert_eq!(
                object_hash(name),
                expected,
                "object_hash({:?})",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn mixers_known_answers() {
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0xb456_bcfc_34c2_cb2c);
        assert_eq!(pg_input(1, 0), 0xba3a_9e16_0a5f_1419);
        assert_eq!(
            draw_hash(draw_key(pg_input(1, 0), 0), osd_salt(0)),
            0x7c78_5b80
        );
    }

    #[test]
    fn stable_mod_splits() {
        for hash in 0..1024u32 {
            for count in 1..40u32 {
                let pg = stable_mod(hash, count);
                assert!(pg < count);
                // Doubling a power-of-two count splits each group in two.
                if count.is_power_of_two() {
                    assert_eq!(stable_mod(hash, count * 2) % count, pg);
                }
            }
        }
    }
}
