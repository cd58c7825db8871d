//! S3 tags: the `x-amz-tagging` header's query-string form and the XML tag sets, checked as
//! S3 checks them (at most 10 per object and 50 per bucket, unique keys of 1 to 128
//! characters, values of at most 256).

use std::collections::BTreeMap;

use s3s::dto::{Tag, TagSet, Tagging};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};

/// Tags an object may carry.
pub const OBJECT_TAGS_MAX: usize = 10;
/// Tags a bucket may carry.
pub const BUCKET_TAGS_MAX: usize = 50;

/// The tags of an `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded).
pub fn from_header(header: &str) -> S3Result<BTreeMap<String, String>> {
    let pairs = form_urlencoded::parse(header.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    checked(pairs, OBJECT_TAGS_MAX)
}

/// The tags of a tag set, for an object or a bucket (at most `max`).
pub fn from_dto(tagging: Tagging, max: usize) -> S3Result<BTreeMap<String, String>> {
    let pairs = tagging
        .tag_set
        .into_iter()
        .map(|tag| {
            Ok((
                tag.key
                    .ok_or_else(|| s3_error!(InvalidTag, "A tag has no key."))?,
                tag.value.unwrap_or_default(),
            ))
        })
        .collect::<S3Result<Vec<_>>>()?;
    checked(pairs, max)
}

/// The tag set of `tags`, in key order.
pub fn to_dto(tags: &BTreeMap<String, String>) -> TagSet {
    tags.iter()
        .map(|(key, value)| Tag {
            key: Some(key.clone()),
            value: Some(value.clone()),
        })
        .collect()
}

fn checked(pairs: Vec<(String, String)>, max: usize) -> S3Result<BTreeMap<String, String>> {
    if pairs.len() > max {
        // S3's code and words for it.
        let mut error = S3Error::with_message(
            S3ErrorCode::Custom("BadRequest".into()),
            format!("Object tags cannot be greater than {max}"),
        );
        error.set_status_code(http::StatusCode::BAD_REQUEST);
        return Err(error);
    }
    let mut tags = BTreeMap::new();
    for (key, value) in pairs {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > 128 {
            return Err(s3_error!(
                InvalidTag,
                "The TagKey you have provided is invalid"
            ));
        }
        if value.chars().count() > 256 {
            return Err(s3_error!(
                InvalidTag,
                "The TagValue you have provided is invalid"
            ));
        }
        if tags.insert(key, value).is_some() {
            return Err(s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key"
            ));
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_decode_and_bad_tags_are_refused() {
        let tags = from_header("a=1&b%20c=x%2Fy&empty=").expect("valid");
        assert_eq!(tags["a"], "1");
        assert_eq!(tags["b c"], "x/y");
        assert_eq!(tags["empty"], "");
        assert!(from_header("").expect("none").is_empty());
        assert!(from_header("a=1&a=2").is_err());
        assert!(from_header(&format!("{}=v", "k".repeat(129))).is_err());
        assert!(from_header(&format!("k={}", "v".repeat(257))).is_err());
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert!(from_header(&eleven.join("&")).is_err());
        let ten: Vec<String> = (0..10).map(|i| format!("k{i}=v")).collect();
        assert_eq!(from_header(&ten.join("&")).expect("ten").len(), 10);
    }

    #[test]
    fn tag_sets_round_trip() {
        let tags = BTreeMap::from([("x".to_owned(), "1".to_owned()), ("y".into(), "".into())]);
        let back = from_dto(
            Tagging {
                tag_set: to_dto(&tags),
            },
            BUCKET_TAGS_MAX,
        )
        .expect("valid");
        assert_eq!(back, tags);
    }
}
