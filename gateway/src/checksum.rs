//! Checksums of request bodies: which ones a request asks for (headers, the declared
//! algorithm, or an `aws-chunked` trailer), computed as the bytes pass, and checked against
//! the values sent before anything is linked.

use std::collections::BTreeMap;

use s3s::checksum::ChecksumHasher;
use s3s::dto::{Checksum, ChecksumAlgorithm};
use s3s::{s3_error, S3Result};

/// The algorithms S3 defines, with their header names.
const ALGORITHMS: [(&str, &str); 5] = [
    (ChecksumAlgorithm::CRC32, "x-amz-checksum-crc32"),
    (ChecksumAlgorithm::CRC32C, "x-amz-checksum-crc32c"),
    (ChecksumAlgorithm::SHA1, "x-amz-checksum-sha1"),
    (ChecksumAlgorithm::SHA256, "x-amz-checksum-sha256"),
    (ChecksumAlgorithm::CRC64NVME, "x-amz-checksum-crc64nvme"),
];

/// Checksums sent with a body, by algorithm (`None`: asked for, value to come in a trailer).
#[derive(Debug, Default)]
pub struct Expected(BTreeMap<&'static str, Option<String>>);

impl Expected {
    /// What a request asks for: values in headers (`sent`), the declared algorithm, and the
    /// trailer the `x-amz-trailer` header announces.
    pub fn new(
        sent: &Checksum,
        algorithm: Option<&ChecksumAlgorithm>,
        headers: &http::HeaderMap,
    ) -> S3Result<Expected> {
        let mut expected = Expected::default();
        for (name, value) in [
            (ChecksumAlgorithm::CRC32, &sent.checksum_crc32),
            (ChecksumAlgorithm::CRC32C, &sent.checksum_crc32c),
            (ChecksumAlgorithm::SHA1, &sent.checksum_sha1),
            (ChecksumAlgorithm::SHA256, &sent.checksum_sha256),
            (ChecksumAlgorithm::CRC64NVME, &sent.checksum_crc64nvme),
        ] {
            if let Some(value) = value {
                expected.0.insert(name, Some(value.clone()));
            }
        }
        if let Some(algorithm) = algorithm {
            let name = ALGORITHMS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(algorithm.as_str()))
                .map(|(n, _)| *n)
                .ok_or_else(|| s3_error!(InvalidArgument, "unknown checksum algorithm"))?;
            expected.0.entry(name).or_insert(None);
        }
        if let Some(trailer) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
            for announced in trailer.split(',').map(str::trim) {
                if let Some((name, _)) = ALGORITHMS
                    .iter()
                    .find(|(_, header)| header.eq_ignore_ascii_case(announced))
                {
                    expected.0.entry(name).or_insert(None);
                }
            }
        }
        Ok(expected)
    }

    /// Asks for `algorithm` too (a multipart upload's, for each of its parts).
    pub fn include(&mut self, algorithm: &str) {
        if let Some((name, _)) = ALGORITHMS.iter().find(|(n, _)| *n == algorithm) {
            self.0.entry(name).or_insert(None);
        }
    }

    /// A hasher for every algorithm asked for.
    pub fn hasher(&self) -> ChecksumHasher {
        let mut hasher = ChecksumHasher::default();
        for name in self.0.keys() {
            match *name {
                ChecksumAlgorithm::CRC32 => hasher.crc32 = Some(Default::default()),
                ChecksumAlgorithm::CRC32C => hasher.crc32c = Some(Default::default()),
                ChecksumAlgorithm::SHA1 => hasher.sha1 = Some(Default::default()),
                ChecksumAlgorithm::SHA256 => hasher.sha256 = Some(Default::default()),
                _ => hasher.crc64nvme = Some(Default::default()),
            }
        }
        hasher
    }

    /// Checks the computed checksums against the values sent (in headers or in `trailers`);
    /// returns them by algorithm, to be stored.
    pub fn verify(
        mut self,
        computed: Checksum,
        trailers: Option<http::HeaderMap>,
    ) -> S3Result<BTreeMap<String, String>> {
        if let Some(trailers) = trailers {
            for (name, header) in ALGORITHMS {
                if let Some(value) = trailers.get(header).and_then(|v| v.to_str().ok()) {
                    self.0.insert(name, Some(value.to_owned()));
                }
            }
        }
        let mut out = BTreeMap::new();
        for (name, sent) in self.0 {
            let actual = value_of(&computed, name)
                .ok_or_else(|| s3_error!(InternalError, "checksum {name} was not computed"))?;
            if let Some(sent) = sent {
                if sent != actual {
                    return Err(s3_error!(
                        BadDigest,
                        "The {name} you specified did not match the calculated checksum."
                    ));
                }
            }
            out.insert(name.to_owned(), actual);
        }
        Ok(out)
    }
}

fn value_of(checksum: &Checksum, name: &str) -> Option<String> {
    match name {
        ChecksumAlgorithm::CRC32 => checksum.checksum_crc32.clone(),
        ChecksumAlgorithm::CRC32C => checksum.checksum_crc32c.clone(),
        ChecksumAlgorithm::SHA1 => checksum.checksum_sha1.clone(),
        ChecksumAlgorithm::SHA256 => checksum.checksum_sha256.clone(),
        _ => checksum.checksum_crc64nvme.clone(),
    }
}

/// The checksums S3's `Checksum` fields hold, by algorithm.
pub fn from_dto(sent: &Checksum) -> BTreeMap<String, String> {
    [
        (ChecksumAlgorithm::CRC32, &sent.checksum_crc32),
        (ChecksumAlgorithm::CRC32C, &sent.checksum_crc32c),
        (ChecksumAlgorithm::SHA1, &sent.checksum_sha1),
        (ChecksumAlgorithm::SHA256, &sent.checksum_sha256),
        (ChecksumAlgorithm::CRC64NVME, &sent.checksum_crc64nvme),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name.to_owned(), value.clone()?)))
    .collect()
}

/// Stored checksums in the fields of S3's `Checksum`.
pub fn to_dto(stored: &BTreeMap<String, String>) -> Checksum {
    Checksum {
        checksum_crc32: stored.get(ChecksumAlgorithm::CRC32).cloned(),
        checksum_crc32c: stored.get(ChecksumAlgorithm::CRC32C).cloned(),
        checksum_sha1: stored.get(ChecksumAlgorithm::SHA1).cloned(),
        checksum_sha256: stored.get(ChecksumAlgorithm::SHA256).cloned(),
        checksum_crc64nvme: stored.get(ChecksumAlgorithm::CRC64NVME).cloned(),
        ..Default::default()
    }
}
