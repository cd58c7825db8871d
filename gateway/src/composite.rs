//! The checksum of a multipart object from its parts' checksums, as S3 computes it: either
//! `COMPOSITE` (the checksum of the parts' checksums, shown with `-N`) or `FULL_OBJECT` (the
//! CRC of the whole object, combined from the parts' CRCs and lengths without reading the
//! data). Pure.

use std::collections::BTreeMap;

use base64::Engine;
use s3s::checksum::ChecksumHasher;
use s3s::dto::ChecksumAlgorithm;

/// How a multipart object's checksum is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The checksum of the parts' checksums, with `-N`.
    Composite,
    /// The CRC of the whole object.
    FullObject,
}

impl Kind {
    /// The kind S3 names `name`.
    pub fn parse(name: &str) -> Option<Kind> {
        match name {
            "COMPOSITE" => Some(Kind::Composite),
            "FULL_OBJECT" => Some(Kind::FullObject),
            _ => None,
        }
    }

    /// Its S3 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Composite => "COMPOSITE",
            Kind::FullObject => "FULL_OBJECT",
        }
    }

    /// The kind an upload with `algorithm` gets when it names none, and whether `self` is
    /// allowed with it (S3: SHA digests only composite, CRC64NVME only full-object).
    pub fn default_for(algorithm: &str) -> Kind {
        if algorithm == ChecksumAlgorithm::CRC64NVME {
            Kind::FullObject
        } else {
            Kind::Composite
        }
    }

    /// Whether S3 allows this kind with `algorithm`.
    pub fn allowed_with(self, algorithm: &str) -> bool {
        match self {
            Kind::Composite => algorithm != ChecksumAlgorithm::CRC64NVME,
            Kind::FullObject => matches!(
                algorithm,
                ChecksumAlgorithm::CRC32 | ChecksumAlgorithm::CRC32C | ChecksumAlgorithm::CRC64NVME
            ),
        }
    }
}

/// The reflected polynomial and width of a CRC algorithm.
fn crc_of(algorithm: &str) -> Option<(u64, u32)> {
    match algorithm {
        ChecksumAlgorithm::CRC32 => Some((0xEDB8_8320, 32)),
        ChecksumAlgorithm::CRC32C => Some((0x82F6_3B78, 32)),
        ChecksumAlgorithm::CRC64NVME => Some((0x9A6C_9329_AC4B_C9B5, 64)),
        _ => None,
    }
}

/// `a * b mod p` for reflected polynomials of `width` bits.
fn mult_mod(a: u64, mut b: u64, poly: u64, width: u32) -> u64 {
    let mut m = 1u64 << (width - 1);
    let mut p = 0u64;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                break;
            }
        }
        m >>= 1;
        if m == 0 {
            break;
        }
        b = if b & 1 != 0 { (b >> 1) ^ poly } else { b >> 1 };
    }
    p
}

/// `x^(8 * bytes) mod p`.
fn x_to_bytes(bytes: u64, poly: u64, width: u32) -> u64 {
    let mut result = 1u64 << (width - 1); // x^0
    let mut power = 1u64 << (width - 2); // x^1
    let mut n = bytes.saturating_mul(8);
    while n > 0 {
        if n & 1 != 0 {
            result = mult_mod(power, result, poly, width);
        }
        power = mult_mod(power, power, poly, width);
        n >>= 1;
    }
    result
}

/// The CRC of `a` followed by `b` from their CRCs and `b`'s length (for CRCs that start
/// from and end with all ones, as these three do).
pub fn crc_combine(algorithm: &str, crc_a: u64, crc_b: u64, len_b: u64) -> Option<u64> {
    let (poly, width) = crc_of(algorithm)?;
    Some(mult_mod(x_to_bytes(len_b, poly, width), crc_a, poly, width) ^ crc_b)
}

fn decode(value: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(value).ok()
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn digest(algorithm: &str, data: &[u8]) -> Option<String> {
    let mut hasher = ChecksumHasher::default();
    match algorithm {
        ChecksumAlgorithm::CRC32 => hasher.crc32 = Some(Default::default()),
        ChecksumAlgorithm::CRC32C => hasher.crc32c = Some(Default::default()),
        ChecksumAlgorithm::SHA1 => hasher.sha1 = Some(Default::default()),
        ChecksumAlgorithm::SHA256 => hasher.sha256 = Some(Default::default()),
        ChecksumAlgorithm::CRC64NVME => hasher.crc64nvme = Some(Default::default()),
        _ => return None,
    }
    hasher.update(data);
    let sums = hasher.finalize();
    [
        sums.checksum_crc32,
        sums.checksum_crc32c,
        sums.checksum_sha1,
        sums.checksum_sha256,
        sums.checksum_crc64nvme,
    ]
    .into_iter()
    .flatten()
    .next()
}

/// The object's checksum by `algorithm` of `kind` from its parts' (checksum in base64, size),
/// in order; `None` when a part's checksum is missing or malformed.
pub fn object_checksum(algorithm: &str, kind: Kind, parts: &[(&str, u64)]) -> Option<String> {
    match kind {
        Kind::Composite => {
            let mut joined = Vec::new();
            for (value, _) in parts {
                joined.extend(decode(value)?);
            }
            Some(format!("{}-{}", digest(algorithm, &joined)?, parts.len()))
        }
        Kind::FullObject => {
            let (_, width) = crc_of(algorithm)?;
            let bytes = (width / 8) as usize;
            let mut crc: Option<u64> = None;
            for (value, size) in parts {
                let raw = decode(value)?;
                if raw.len() != bytes {
                    return None;
                }
                let part = raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                crc = Some(match crc {
                    None => part,
                    Some(before) => crc_combine(algorithm, before, part, *size)?,
                });
            }
            let crc = crc?;
            Some(encode(&crc.to_be_bytes()[8 - bytes..]))
        }
    }
}

/// The checksums (by algorithm, S3's text) a completed upload's object gets, from the
/// upload's algorithms and each part's checksums and size; `Err` names a part without one.
pub fn object_checksums(
    algorithms: impl Iterator<Item = String>,
    kind: Kind,
    parts: &[(u32, &BTreeMap<String, String>, u64)],
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for algorithm in algorithms {
        let mut values = Vec::new();
        for (number, sums, size) in parts {
            let value = sums
                .get(&algorithm)
                .ok_or_else(|| format!("part {number} has no {algorithm} checksum"))?;
            values.push((value.as_str(), *size));
        }
        let value = object_checksum(&algorithm, kind, &values)
            .ok_or_else(|| format!("the parts' {algorithm} checksums are not valid"))?;
        out.insert(algorithm, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn combined_crcs_are_the_whole_objects(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
        ) {
            let whole: Vec<u8> = parts.concat();
            for algorithm in [ChecksumAlgorithm::CRC32, ChecksumAlgorithm::CRC32C, ChecksumAlgorithm::CRC64NVME] {
                let values: Vec<(String, u64)> = parts
                    .iter()
                    .map(|p| (digest(algorithm, p).unwrap(), p.len() as u64))
                    .collect();
                let refs: Vec<(&str, u64)> = values.iter().map(|(v, n)| (v.as_str(), *n)).collect();
                prop_assert_eq!(
                    object_checksum(algorithm, Kind::FullObject, &refs),
                    digest(algorithm, &whole),
                    "{}", algorithm
                );
            }
        }
    }

    #[test]
    fn composite_checksums_are_of_the_parts_checksums() {
        let parts = [b"hello ".to_vec(), b"world".to_vec()];
        for algorithm in [ChecksumAlgorithm::CRC32, ChecksumAlgorithm::SHA256] {
            let values: Vec<String> = parts
                .iter()
                .map(|p| digest(algorithm, p).unwrap())
                .collect();
            let mut joined = Vec::new();
            for v in &values {
                joined.extend(decode(v).unwrap());
            }
            let refs: Vec<(&str, u64)> = values.iter().map(|v| (v.as_str(), 0)).collect();
            assert_eq!(
                object_checksum(algorithm, Kind::Composite, &refs).unwrap(),
                format!("{}-2", digest(algorithm, &joined).unwrap())
            );
        }
        assert!(
            object_checksum(ChecksumAlgorithm::SHA256, Kind::FullObject, &[("AAAA", 1)]).is_none()
        );
        assert!(object_checksum(
            ChecksumAlgorithm::CRC32,
            Kind::Composite,
            &[("not base64!", 1)]
        )
        .is_none());
        assert!(Kind::FullObject.allowed_with(ChecksumAlgorithm::CRC32C));
        assert!(!Kind::FullObject.allowed_with(ChecksumAlgorithm::SHA1));
        assert!(!Kind::Composite.allowed_with(ChecksumAlgorithm::CRC64NVME));
    }
}
