//! The S3 operations, each a translation between s3s's types and the bucket layer. Requests
//! arrive parsed and authenticated; every handler checks that the caller owns the bucket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use tidepool_buckets::{
    BucketError, Buckets, CompletedPart as BucketPart, ContentHeaders, Deleted, Entry, ListQuery,
    ObjectMeta, Permission, PutCondition, Upload, VersionQuery, Versioning, WriteOptions, Written,
};

use crate::authorize;
use crate::checksum::{self, Expected};
use crate::composite;
use crate::error::s3;
use crate::users::Users;
use crate::{lock, tagging};

/// The S3 service over the bucket layer.
#[derive(Debug, Clone)]
pub struct Gateway {
    buckets: Buckets,
    users: Arc<Users>,
}

impl Gateway {
    /// A gateway over `buckets`, whose callers are `users`.
    pub fn new(buckets: Buckets, users: Arc<Users>) -> Gateway {
        Gateway { buckets, users }
    }

    /// The version id S3 shows for `entry`: its own, or `null` once the bucket has had
    /// versioning (none before).
    async fn version_shown(&self, bucket: &str, entry: &Entry) -> Option<String> {
        self.shown_id(bucket, entry.version_id.clone()).await
    }

    /// The version id S3 shows for a version of `bucket` whose id is `id`.
    async fn shown_id(&self, bucket: &str, id: Option<String>) -> Option<String> {
        if id.is_some() {
            return id;
        }
        let info = self.buckets.lookup(bucket, false).await.ok()?;
        (info.versioning != Versioning::Off).then(|| tidepool_buckets::NULL_VERSION.to_owned())
    }

    /// The object `key` of `bucket`, or its version `version`, with its inline data.
    async fn read_version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> S3Result<(Entry, Option<Bytes>)> {
        match version {
            Some(version) => self.buckets.get_version(bucket, key, version).await,
            None => self.buckets.get(bucket, key).await,
        }
        .map_err(s3)
    }

    /// Deletes `key` of `bucket`, or its version `version` for good (`bypass`: through a
    /// governance-mode retention).
    async fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        bypass: bool,
    ) -> Result<Deleted, BucketError> {
        let mut deleted = match version {
            Some(version) => {
                self.buckets
                    .delete_version(bucket, key, version, bypass)
                    .await?
            }
            None => self.buckets.delete(bucket, key).await?,
        };
        if deleted.delete_marker || version.is_some() {
            deleted.version_id = deleted
                .version_id
                .or_else(|| Some(tidepool_buckets::NULL_VERSION.into()));
        }
        Ok(deleted)
    }

    /// The name of the user who signed `req`.
    fn caller<T>(&self, req: &S3Request<T>) -> S3Result<String> {
        self.principal(req)
            .ok_or_else(|| s3_error!(AccessDenied, "Signature is required"))
    }

    /// The ACL a write of a new object asks for (`x-amz-acl` or `x-amz-grant-*`), as the
    /// object gets it (see [`authorize::object_acl_for`]).
    async fn write_acl<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        canned: Option<&str>,
        grants: [(Option<&str>, Permission); 5],
    ) -> S3Result<Option<tidepool_buckets::Acl>> {
        let info = self.buckets.lookup(bucket, false).await.map_err(s3)?;
        // What anonymous writers write (where a grant lets them) belongs to the bucket owner.
        let writer = self.principal(req).unwrap_or_else(|| info.owner.clone());
        let grants = authorize::header_grants(&self.users, grants).await?;
        let requested =
            authorize::requested_acl(&self.users, &info, &writer, canned, grants, None).await?;
        Ok(authorize::object_acl_for(&info, &writer, requested, canned))
    }

    /// Checks that the caller of `req` may read `key` of `bucket` (or its version) as a
    /// copy's source, as the access check decides on a GET of it.
    async fn may_read_source<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> S3Result<()> {
        let principal = self.principal(req);
        authorize::decide(
            &self.buckets,
            authorize::Ask {
                principal: principal.as_deref(),
                op: "GetObject",
                bucket,
                key: Some(key),
                version,
                context: self.context(req),
            },
        )
        .await
    }

    /// Who signed `req` (`None`: anonymous), as the access check found.
    fn principal<T>(&self, req: &S3Request<T>) -> Option<String> {
        req.extensions
            .get::<authorize::Caller>()
            .and_then(|c| c.0.clone())
    }

    /// The condition keys of `req`.
    fn context<T>(&self, req: &S3Request<T>) -> BTreeMap<String, String> {
        let remote = req.extensions.get::<authorize::RemoteAddr>().map(|r| r.0);
        authorize::context_of(
            &req.headers,
            req.uri.query(),
            remote,
            self.principal(req).as_deref(),
        )
    }

    /// The class a write names (`None`: STANDARD) as it is recorded, and its data pool.
    async fn class_pool(
        &self,
        class: Option<&StorageClass>,
    ) -> S3Result<(Option<String>, Option<String>)> {
        self.buckets
            .storage_class_pool(class.map(|c| c.as_str()))
            .await
            .map_err(s3)
    }

    /// Sets the retention and legal hold a write to `bucket` asks for (or the bucket's
    /// default retention) on `meta`.
    async fn lock_headers(
        &self,
        bucket: &str,
        meta: &mut ObjectMeta,
        mode: Option<&ObjectLockMode>,
        until: Option<&Timestamp>,
        hold: Option<&ObjectLockLegalHoldStatus>,
    ) -> S3Result<()> {
        let info = self.buckets.lookup(bucket, false).await.map_err(s3)?;
        lock::apply_headers(&info, meta, mode, until, hold, tidepool_buckets::now_ms())
    }

    /// Bucket `bucket` when it has object lock (`InvalidRequest` otherwise).
    async fn locked_bucket(&self, bucket: &str) -> S3Result<tidepool_buckets::BucketInfo> {
        let info = self.buckets.lookup(bucket, false).await.map_err(s3)?;
        if info.object_lock.is_none() {
            return Err(lock::not_enabled());
        }
        Ok(info)
    }

    /// The owner of `bucket`'s objects, as listings show it: the bucket's owner.
    async fn bucket_owner(&self, bucket: &str) -> S3Result<Owner> {
        let owner = self.buckets.lookup(bucket, false).await.map_err(s3)?.owner;
        Ok(Owner {
            display_name: Some(owner.clone()),
            id: Some(owner),
        })
    }

    /// A page of `bucket`'s objects (none when `query.limit` is 0: S3's empty, untruncated
    /// page).
    async fn list_page(
        &self,
        bucket: &str,
        query: &ListQuery,
    ) -> S3Result<tidepool_buckets::ListPage> {
        if query.limit == 0 {
            return Ok(Default::default());
        }
        self.buckets.list(bucket, query).await.map_err(s3)
    }

    /// Upload `id`, and the data pool of its parts: that of its storage class.
    async fn open_upload(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> S3Result<(Upload, Option<String>)> {
        let (upload, _) = self.buckets.upload(bucket, key, id).await.map_err(s3)?;
        let (_, pool) = self
            .buckets
            .storage_class_pool(upload.meta.storage_class.as_deref())
            .await
            .map_err(s3)?;
        Ok((upload, pool))
    }

    /// Writes `body` as data of `bucket`, checking its length and checksums; nothing is
    /// linked.
    async fn receive(
        &self,
        bucket: &str,
        body: Option<StreamingBlob>,
        options: WriteOptions,
        check: BodyCheck<'_>,
    ) -> S3Result<(Written, BTreeMap<String, String>)> {
        let sent_md5 = check.content_md5.map(content_md5).transpose()?;
        let info = self.buckets.lookup(bucket, false).await.map_err(s3)?;
        let mut hasher = check.expected.hasher();
        let body = body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>())
        });
        let stream = body.inspect_ok(|chunk| hasher.update(chunk));
        let written = self
            .buckets
            .write_data(
                &info,
                stream,
                WriteOptions {
                    size_hint: check.content_length.and_then(|n| u64::try_from(n).ok()),
                    ..options
                },
            )
            .await
            .map_err(|error| match error {
                // s3s reports a bad chunk signature as an error of the body stream.
                BucketError::Body(reason) if reason.contains("SignatureMismatch") => s3_error!(
                    SignatureDoesNotMatch,
                    "The request signature we calculated does not match the signature you provided."
                ),
                other => s3(other),
            })?;
        let verdict = (|| {
            if let Some(length) = check.content_length {
                if u64::try_from(length).ok() != Some(written.size) {
                    return Err(s3_error!(
                        IncompleteBody,
                        "The body is {} bytes, not the {length} declared.",
                        written.size
                    ));
                }
            }
            if sent_md5.is_some_and(|sent| sent != written.md5) {
                return Err(s3_error!(
                    BadDigest,
                    "The Content-MD5 you specified did not match what we received."
                ));
            }
            let trailers = check.trailers.and_then(|t| t.take());
            check.expected.verify(hasher.finalize(), trailers)
        })();
        match verdict {
            Ok(sums) => Ok((written, sums)),
            Err(error) => {
                self.buckets.discard(written).await;
                Err(error)
            }
        }
    }
}

/// What a received body is checked against.
struct BodyCheck<'a> {
    expected: Expected,
    content_length: Option<i64>,
    content_md5: Option<&'a str>,
    trailers: Option<s3s::TrailingHeaders>,
}

pub(crate) fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

pub(crate) fn millis(ts: &Timestamp) -> u64 {
    SystemTime::from(time::OffsetDateTime::from(ts.clone()))
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn seconds(ts: &Timestamp) -> u64 {
    millis(ts) / 1000
}

/// The checksums of a completed upload's object, from `parts` (in order): each part's
/// checksum the request names must be the one it arrived with (`InvalidPart`), and a
/// whole-object checksum it names must be the one made (`BadDigest`).
fn object_checksums(
    upload: &Upload,
    parts: &[&tidepool_buckets::Part],
    sent_parts: &BTreeMap<i32, BTreeMap<String, String>>,
    sent_whole: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, BucketError> {
    for part in parts {
        let sent = i32::try_from(part.number)
            .ok()
            .and_then(|n| sent_parts.get(&n));
        for (algorithm, value) in sent.into_iter().flatten() {
            if part.checksums.get(algorithm) != Some(value) {
                return Err(BucketError::InvalidPart(format!(
                    "part {}'s {algorithm} checksum is not {value}",
                    part.number
                )));
            }
        }
    }
    let kind = upload
        .meta
        .checksum_type
        .as_deref()
        .and_then(composite::Kind::parse)
        .unwrap_or(composite::Kind::Composite);
    let list: Vec<_> = parts
        .iter()
        .map(|p| (p.number, &p.checksums, p.size))
        .collect();
    let made = composite::object_checksums(upload.meta.checksums.keys().cloned(), kind, &list)
        .map_err(BucketError::InvalidPart)?;
    for (algorithm, value) in sent_whole {
        if made.get(algorithm).is_some_and(|m| m != value) {
            return Err(BucketError::BadDigest(format!(
                "The {algorithm} you specified did not match the calculated checksum."
            )));
        }
    }
    Ok(made)
}

/// The `x-amz-grant-*` headers of a request input, with the permission each grants (objects
/// have no `WRITE` grant).
macro_rules! grant_headers {
    ($input:expr) => {
        grant_headers!(@ $input, $input.grant_write.as_deref())
    };
    ($input:expr, no write) => {
        grant_headers!(@ $input, None)
    };
    (@ $input:expr, $write:expr) => {
        [
            ($input.grant_read.as_deref(), Permission::Read),
            ($write, Permission::Write),
            ($input.grant_read_acp.as_deref(), Permission::ReadAcp),
            ($input.grant_write_acp.as_deref(), Permission::WriteAcp),
            ($input.grant_full_control.as_deref(), Permission::FullControl),
        ]
    };
}

/// The MD5 a `Content-MD5` header names: base64 of 16 bytes, else `InvalidDigest`.
fn content_md5(text: &str) -> S3Result<Vec<u8>> {
    base64_decode(text)
        .filter(|digest| digest.len() == 16)
        .ok_or_else(|| s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid."))
}

/// A `Content-Encoding` as stored: without `aws-chunked`, which names only how the request
/// body was framed (none when nothing else is left).
fn stored_encoding(encoding: Option<String>) -> Option<String> {
    let encoding = encoding?;
    let kept: Vec<&str> = encoding
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

fn etag(value: &str) -> ETag {
    ETag::Strong(value.to_owned())
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let table = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= table(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

/// Percent-encodes a key for `encoding-type=url` listings.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn encoder(encoding: Option<&EncodingType>) -> fn(&str) -> String {
    if encoding.is_some_and(|e| e.as_str() == EncodingType::URL) {
        url_encode
    } else {
        str::to_owned
    }
}

fn hex_encode(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> S3Result<String> {
    let bad = || s3_error!(InvalidArgument, "The continuation token is not valid.");
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    // By bytes, not by string slices: a client's token may hold any UTF-8, and a slice
    // through the middle of a character panics.
    let digit = |b: u8| char::from(b).to_digit(16).ok_or_else(bad);
    let bytes = text
        .as_bytes()
        .chunks(2)
        .map(|pair| Ok(((digit(pair[0])? << 4) | digit(pair[1])?) as u8))
        .collect::<S3Result<Vec<u8>>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

fn object_of(key: String, entry: &Entry, encode: fn(&str) -> String) -> Object {
    Object {
        key: Some(encode(&key)),
        size: Some(entry.size as i64),
        e_tag: Some(etag(&entry.etag)),
        last_modified: Some(timestamp(entry.modified_ms)),
        storage_class: Some(ObjectStorageClass::from(
            entry
                .meta
                .storage_class
                .clone()
                .unwrap_or_else(|| ObjectStorageClass::STANDARD.to_owned()),
        )),
        ..Default::default()
    }
}

fn max_keys(value: Option<i32>) -> S3Result<usize> {
    match value {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

fn meta_of(headers: ContentHeaders, metadata: Option<Metadata>) -> ObjectMeta {
    ObjectMeta {
        headers,
        metadata: metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        ..Default::default()
    }
}

fn expires_text(expires: Option<Timestamp>) -> Option<String> {
    let expires = expires?;
    let mut out = Vec::new();
    expires.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

fn expires_of(text: &Option<String>) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, text.as_deref()?).ok()
}

fn put_condition(
    if_match: Option<ETagCondition>,
    if_none_match: Option<ETagCondition>,
) -> S3Result<PutCondition> {
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(s3_error!(
            NotImplemented,
            "If-Match and If-None-Match together are not supported."
        )),
        (Some(condition), None) => Ok(PutCondition::Matches(match condition.into_etag() {
            Some(tag) => tag.into_value(),
            None => "*".into(),
        })),
        (None, Some(condition)) if condition.is_any() => Ok(PutCondition::Absent),
        (None, Some(_)) => Err(s3_error!(
            NotImplemented,
            "If-None-Match on writes accepts only *."
        )),
        (None, None) => Ok(PutCondition::Always),
    }
}

/// The bytes a GET or HEAD asks for: all, a `Range`, or part `partNumber` (of a multipart
/// object; part 1 is all of any other). Returns them, the `Content-Range` to answer, and the
/// part count S3 reports with `partNumber`.
fn selection(
    entry: &Entry,
    range: Option<&Range>,
    part_number: Option<i32>,
) -> S3Result<(std::ops::Range<u64>, Option<String>, Option<i32>)> {
    let content_range =
        |r: &std::ops::Range<u64>| format!("bytes {}-{}/{}", r.start, r.end.max(1) - 1, entry.size);
    match (range, part_number) {
        (Some(_), Some(_)) => Err(s3_error!(
            InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter"
        )),
        (Some(range), None) => {
            let r = range
                .check(entry.size)
                .map_err(|_| crate::error::invalid_range())?;
            let text = content_range(&r);
            Ok((r, Some(text), None))
        }
        (None, None) => Ok((0..entry.size, None, None)),
        (None, Some(number)) => {
            let sizes: &[u64] = if entry.part_sizes.is_empty() {
                std::slice::from_ref(&entry.size)
            } else {
                &entry.part_sizes
            };
            let index = usize::try_from(number)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .filter(|&i| i < sizes.len())
                .ok_or_else(|| {
                    let mut error = s3s::S3Error::with_message(
                        s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
                        "The requested partnumber is not satisfiable",
                    );
                    error.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
                    error
                })?;
            let start: u64 = sizes[..index].iter().sum();
            let r = start..start + sizes[index];
            let text = content_range(&r);
            let count = (!entry.part_sizes.is_empty()).then_some(sizes.len() as i32);
            Ok((r, Some(text), count))
        }
    }
}

fn etag_matches(condition: &ETagCondition, value: &str) -> bool {
    match condition.as_etag() {
        None => true,
        Some(tag) => tag.value() == value,
    }
}

/// The GET conditions of RFC 9110 in S3's order: a failed `If-Match` or
/// `If-Unmodified-Since` (when there is no `If-Match`) is 412; a matched `If-None-Match`, or
/// `If-Modified-Since` not passed (when there is no `If-None-Match`), is 304.
fn check_read_conditions(
    entry: &Entry,
    if_match: Option<&ETagCondition>,
    if_unmodified_since: Option<&Timestamp>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified = entry.modified_ms / 1000;
    match (if_match, if_unmodified_since) {
        (Some(condition), _) if !etag_matches(condition, &entry.etag) => {
            return Err(crate::error::precondition_failed());
        }
        (None, Some(since)) if modified > seconds(since) => {
            return Err(crate::error::precondition_failed());
        }
        _ => {}
    }
    let unchanged = match (if_none_match, if_modified_since) {
        (Some(condition), _) => etag_matches(condition, &entry.etag),
        (None, Some(since)) => modified <= seconds(since),
        (None, None) => false,
    };
    if unchanged {
        // As S3 answers: 304 with the object's ETag and time, so caches can revalidate.
        let mut error = s3_error!(NotModified);
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_str(&format!("\"{}\"", entry.etag)) {
            headers.insert(http::header::ETAG, value);
        }
        let modified =
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(entry.modified_ms));
        if let Ok(value) = http::HeaderValue::from_str(&modified) {
            headers.insert(http::header::LAST_MODIFIED, value);
        }
        error.set_headers(headers);
        return Err(error);
    }
    Ok(())
}

/// Parses `bytes=first-last` of `x-amz-copy-source-range` against an object of `size` bytes.
fn copy_range(text: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let bad = || {
        s3_error!(InvalidArgument, "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy")
    };
    let spec = text.strip_prefix("bytes=").ok_or_else(bad)?;
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let first: u64 = first.parse().map_err(|_| bad())?;
    let last: u64 = last.parse().map_err(|_| bad())?;
    if first > last || last >= size {
        return Err(crate::error::invalid_range());
    }
    Ok(first..last + 1)
}

/// The tags of an `x-amz-tagging` header (none without one).
fn header_tags(header: Option<&str>) -> S3Result<BTreeMap<String, String>> {
    header.map_or(Ok(BTreeMap::new()), tagging::from_header)
}

fn copy_source(source: &CopySource) -> S3Result<(String, String, Option<String>)> {
    match source {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok((
            bucket.to_string(),
            key.to_string(),
            version_id.as_deref().map(str::to_owned),
        )),
        _ => Err(s3_error!(
            NotImplemented,
            "Access points are not supported."
        )),
    }
}

/// GetObject and HeadObject answer alike, and their inputs and outputs share field names, so
/// one macro serves both: it checks the read conditions, picks the bytes (all, a range or a
/// part) and fills the output's headers; checksums go only with the whole object. Yields the
/// byte range and the output.
macro_rules! read_answer {
    ($output:ident, $input:expr, $entry:expr) => {{
        let input = $input;
        let entry: &Entry = &$entry;
        check_read_conditions(
            entry,
            input.if_match.as_ref(),
            input.if_unmodified_since.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
        )?;
        let (range, content_range, parts_count) =
            selection(entry, input.range.as_ref(), input.part_number)?;
        let checksums_asked = input
            .checksum_mode
            .as_ref()
            .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let whole_sums = checksums_asked && content_range.is_none();
        let sums = if whole_sums {
            checksum::to_dto(&entry.meta.checksums)
        } else {
            Checksum::default()
        };
        let headers = entry.meta.headers.clone();
        let output = $output {
            content_length: Some((range.end - range.start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&entry.etag)),
            last_modified: Some(timestamp(entry.modified_ms)),
            metadata: Some(entry.meta.metadata.clone().into_iter().collect()),
            content_type: input.response_content_type.or(headers.content_type),
            content_encoding: input.response_content_encoding.or(headers.content_encoding),
            content_disposition: input
                .response_content_disposition
                .or(headers.content_disposition),
            content_language: input.response_content_language.or(headers.content_language),
            cache_control: input.response_cache_control.or(headers.cache_control),
            expires: input
                .response_expires
                .or_else(|| expires_of(&headers.expires)),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            checksum_type: whole_sums
                .then(|| entry.meta.checksum_type.clone().map(ChecksumType::from))
                .flatten(),
            parts_count,
            // Shown unless STANDARD, as S3 does.
            storage_class: entry.meta.storage_class.clone().map(StorageClass::from),
            object_lock_mode: entry
                .meta
                .retention
                .map(|r| ObjectLockMode::from(r.mode.as_str().to_owned())),
            object_lock_retain_until_date: entry.meta.retention.map(|r| timestamp(r.until_ms)),
            object_lock_legal_hold_status: entry
                .meta
                .legal_hold
                .then(|| ObjectLockLegalHoldStatus::from(ObjectLockLegalHoldStatus::ON.to_owned())),
            ..Default::default()
        };
        (range, output)
    }};
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let caller = self.caller(&req)?;
        let buckets = self.buckets.list_buckets().await.map_err(s3)?;
        let buckets = buckets
            .into_iter()
            .filter(|b| b.owner == caller)
            .filter(|b| {
                req.input
                    .prefix
                    .as_deref()
                    .is_none_or(|p| b.name.starts_with(p))
            })
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some(caller.clone()),
                id: Some(caller),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let caller = self.caller(&req)?;
        let name = &req.input.bucket;
        let input = &req.input;
        let ownership = input
            .object_ownership
            .as_ref()
            .map(|o| {
                tidepool_buckets::Ownership::parse(o.as_str())
                    .ok_or_else(|| s3_error!(InvalidArgument, "Invalid x-amz-object-ownership"))
            })
            .transpose()?;
        let grants = authorize::header_grants(&self.users, grant_headers!(input)).await?;
        let mut new = tidepool_buckets::BucketInfo::new(name, &caller, 1);
        new.ownership = ownership;
        let acl = authorize::requested_acl(
            &self.users,
            &new,
            &caller,
            input.acl.as_ref().map(|a| a.as_str()),
            grants,
            None,
        )
        .await?;
        let options = tidepool_buckets::CreateBucket {
            acl,
            ownership,
            object_lock: req.input.object_lock_enabled_for_bucket.unwrap_or(false),
            location: req
                .input
                .create_bucket_configuration
                .as_ref()
                .and_then(|c| c.location_constraint.as_ref())
                .map(|l| l.as_str().to_owned())
                .filter(|l| !l.is_empty()),
        };
        match self.buckets.create_bucket(name, &caller, &options).await {
            Ok(_) => Ok(S3Response::new(CreateBucketOutput {
                location: Some(format!("/{name}")),
            })),
            Err(BucketError::Invalid(_)) => Err(s3_error!(InvalidBucketName)),
            Err(other) => Err(s3(other)),
        }
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        // Asked to tell whether the bucket exists now: no cached answer.
        self.buckets
            .lookup(&req.input.bucket, true)
            .await
            .map_err(s3)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.buckets
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(s3)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let info = self
            .buckets
            .lookup(&req.input.bucket, false)
            .await
            .map_err(s3)?;
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: info.location.map(BucketLocationConstraint::from),
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        // A browser's form upload (POST object) arrives here too.
        let form = req.method == http::Method::POST;
        let acl = self
            .write_acl(
                &req,
                &req.input.bucket,
                req.input.acl.as_ref().map(|a| a.as_str()),
                grant_headers!(req.input, no write),
            )
            .await?;
        let input = req.input;
        tidepool_buckets::check_key(&input.key).map_err(s3)?;
        let condition = put_condition(input.if_match, input.if_none_match)?;
        let sent = Checksum {
            checksum_crc32: input.checksum_crc32,
            checksum_crc32c: input.checksum_crc32c,
            checksum_sha1: input.checksum_sha1,
            checksum_sha256: input.checksum_sha256,
            checksum_crc64nvme: input.checksum_crc64nvme,
            ..Default::default()
        };
        let check = BodyCheck {
            expected: Expected::new(&sent, input.checksum_algorithm.as_ref(), &req.headers)?,
            content_length: input.content_length,
            content_md5: input.content_md5.as_deref(),
            trailers: req.trailing_headers,
        };
        let (class, pool) = self.class_pool(input.storage_class.as_ref()).await?;
        let options = WriteOptions {
            inline_allowed: true,
            pool,
            ..Default::default()
        };
        let (written, sums) = self
            .receive(&input.bucket, input.body, options, check)
            .await?;
        let mut meta = meta_of(
            ContentHeaders {
                content_type: input.content_type,
                content_encoding: stored_encoding(input.content_encoding),
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                cache_control: input.cache_control,
                expires: expires_text(input.expires),
            },
            input.metadata,
        );
        meta.checksums = sums;
        meta.storage_class = class;
        meta.tags = header_tags(input.tagging.as_deref())?;
        meta.acl = acl;
        self.lock_headers(
            &input.bucket,
            &mut meta,
            input.object_lock_mode.as_ref(),
            input.object_lock_retain_until_date.as_ref(),
            input.object_lock_legal_hold_status.as_ref(),
        )
        .await?;
        let entry = self
            .buckets
            .put(&input.bucket, &input.key, written, meta, &condition)
            .await
            .map_err(s3)?;
        let sums = checksum::to_dto(&entry.meta.checksums);
        let mut response = S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&entry.etag)),
            version_id: entry.version_id.clone(),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            ..Default::default()
        });
        if form {
            // S3 answers a form upload with the object's ETag and location as headers.
            let location = format!("/{}/{}", input.bucket, url_encode(&input.key));
            for (name, value) in [
                ("etag", format!("\"{}\"", entry.etag)),
                ("location", location),
            ] {
                if let Ok(value) = http::HeaderValue::from_str(&value) {
                    response.headers.insert(name, value);
                }
            }
        }
        Ok(response)
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let (entry, inline) = self
            .read_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let version_id = self.version_shown(&input.bucket, &entry).await;
        let (range, output) = read_answer!(GetObjectOutput, input, entry);
        let mut stream = self.buckets.read_data(&entry, inline, range);
        // The first stripe is read before the answer: an object with no good copy of it gets
        // an S3 error, not `200 OK`. A later stripe that cannot be read ends the connection
        // before the body is whole, so the client never takes a short body for the object.
        let first = match stream.next().await {
            Some(Err(error)) => return Err(s3(error)),
            first => first,
        };
        let stream = futures::stream::iter(first)
            .chain(stream)
            .map_err(|e| std::io::Error::other(e.to_string()));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(sync_wrapper::SyncStream::new(stream))),
            version_id,
            tag_count: (!entry.meta.tags.is_empty()).then_some(entry.meta.tags.len() as i32),
            ..output
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let entry = match input.version_id.as_deref() {
            Some(version) => {
                self.read_version(&input.bucket, &input.key, Some(version))
                    .await?
                    .0
            }
            None => self
                .buckets
                .head(&input.bucket, &input.key)
                .await
                .map_err(s3)?,
        };
        let version_id = self.version_shown(&input.bucket, &entry).await;
        let (_, output) = read_answer!(HeadObjectOutput, input, entry);
        Ok(S3Response::new(HeadObjectOutput {
            version_id,
            ..output
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = &req.input;
        let deleted = self
            .delete_version(
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                input.bypass_governance_retention.unwrap_or(false),
            )
            .await
            .map_err(s3)?;
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: deleted.delete_marker.then_some(true),
            version_id: deleted.version_id,
            ..Default::default()
        }))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let principal = self.principal(&req);
        let context = self.context(&req);
        let input = req.input;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "At most 1,000 keys per request."));
        }
        self.buckets
            .lookup(&input.bucket, false)
            .await
            .map_err(s3)?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let bypass = input.bypass_governance_retention.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        let results = futures::stream::iter(input.delete.objects)
            .map(|object| {
                let bucket = input.bucket.clone();
                let (principal, context) = (principal.clone(), context.clone());
                async move {
                    // Each key is decided on as a DELETE of it.
                    let ask = authorize::Ask {
                        principal: principal.as_deref(),
                        op: "DeleteObject",
                        bucket: &bucket,
                        key: Some(&object.key),
                        version: object.version_id.as_deref(),
                        context,
                    };
                    let result = match authorize::decide(&self.buckets, ask).await {
                        Ok(()) => self
                            .delete_version(
                                &bucket,
                                &object.key,
                                object.version_id.as_deref(),
                                bypass,
                            )
                            .await
                            .map_err(s3),
                        Err(refused) => Err(refused),
                    };
                    (object.key, object.version_id, result)
                }
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await;
        for (key, version, result) in results {
            match result {
                Ok(done) => {
                    if !quiet {
                        let marker = done.delete_marker.then_some(true);
                        deleted.push(DeletedObject {
                            key: Some(key),
                            delete_marker: marker,
                            delete_marker_version_id: marker.and(done.version_id.clone()),
                            version_id: version.is_some().then_some(done.version_id).flatten(),
                        });
                    }
                }
                Err(error) => {
                    errors.push(Error {
                        key: Some(key),
                        version_id: version,
                        code: Some(error.code().as_str().to_owned()),
                        message: error.message().map(str::to_owned),
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (source_bucket, source_key, source_version) = copy_source(&req.input.copy_source)?;
        self.may_read_source(&req, &source_bucket, &source_key, source_version.as_deref())
            .await?;
        let acl = self
            .write_acl(
                &req,
                &req.input.bucket,
                req.input.acl.as_ref().map(|a| a.as_str()),
                grant_headers!(req.input, no write),
            )
            .await?;
        let input = req.input;
        tidepool_buckets::check_key(&input.key).map_err(s3)?;
        let (source, inline) = self
            .read_version(&source_bucket, &source_key, source_version.as_deref())
            .await?;
        let copy_source_version_id = self.version_shown(&source_bucket, &source).await;
        check_read_conditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
        )
        .map_err(|_| crate::error::precondition_failed())?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace
            && input.storage_class.is_none()
            && source_bucket == input.bucket
            && source_key == input.key
            && source_version.is_none()
        {
            return Err(s3_error!(InvalidRequest, "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."));
        }
        let mut meta = if replace {
            meta_of(
                ContentHeaders {
                    content_type: input.content_type,
                    content_encoding: stored_encoding(input.content_encoding),
                    content_disposition: input.content_disposition,
                    content_language: input.content_language,
                    cache_control: input.cache_control,
                    expires: expires_text(input.expires),
                },
                input.metadata,
            )
        } else {
            ObjectMeta {
                checksums: BTreeMap::new(),
                ..source.meta.clone()
            }
        };
        meta.checksums = source.meta.checksums.clone();
        meta.tags = match &input.tagging_directive {
            Some(d) if d.as_str() == TaggingDirective::REPLACE => {
                header_tags(input.tagging.as_deref())?
            }
            _ => source.meta.tags.clone(),
        };
        // As in S3, the copy is of the class the request names, else STANDARD.
        let (class, pool) = self.class_pool(input.storage_class.as_ref()).await?;
        meta.storage_class = class;
        meta.acl = acl;
        // The copy's lock is the request's (or the bucket's default), never the source's.
        self.lock_headers(
            &input.bucket,
            &mut meta,
            input.object_lock_mode.as_ref(),
            input.object_lock_retain_until_date.as_ref(),
            input.object_lock_legal_hold_status.as_ref(),
        )
        .await?;
        let data = self.buckets.read_data(&source, inline, 0..source.size);
        let info = self
            .buckets
            .lookup(&input.bucket, false)
            .await
            .map_err(s3)?;
        let written = self
            .buckets
            .write_data(
                &info,
                data,
                WriteOptions {
                    inline_allowed: true,
                    size_hint: Some(source.size),
                    pool,
                },
            )
            .await
            .map_err(s3)?;
        let entry = self
            .buckets
            .put(
                &input.bucket,
                &input.key,
                written,
                meta,
                &PutCondition::Always,
            )
            .await
            .map_err(s3)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&entry.etag)),
                last_modified: Some(timestamp(entry.modified_ms)),
                ..Default::default()
            }),
            copy_source_version_id,
            version_id: entry.version_id,
            ..Default::default()
        }))
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let input = req.input;
        let (entry, _) = self
            .read_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        // One header may name several, comma-separated (as aws-cli sends them).
        let asked = |name: &str| {
            input
                .object_attributes
                .iter()
                .flat_map(|a| a.as_str().split(','))
                .any(|a| a.trim() == name)
        };
        let sums = checksum::to_dto(&entry.meta.checksums);
        let parts =
            (asked(ObjectAttributes::OBJECT_PARTS) && !entry.part_sizes.is_empty()).then(|| {
                let after = input.part_number_marker.unwrap_or(0).max(0) as usize;
                let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
                let listed: Vec<ObjectPart> = entry
                    .part_sizes
                    .iter()
                    .enumerate()
                    .skip(after)
                    .take(max)
                    .map(|(i, size)| ObjectPart {
                        part_number: Some(i as i32 + 1),
                        size: Some(*size as i64),
                        ..Default::default()
                    })
                    .collect();
                let last = after + listed.len();
                GetObjectAttributesParts {
                    is_truncated: Some(last < entry.part_sizes.len()),
                    max_parts: Some(max as i32),
                    next_part_number_marker: Some(last as i32),
                    part_number_marker: Some(after as i32),
                    parts: Some(listed),
                    total_parts_count: Some(entry.part_sizes.len() as i32),
                }
            });
        let version_id = self.version_shown(&input.bucket, &entry).await;
        Ok(S3Response::new(GetObjectAttributesOutput {
            e_tag: asked(ObjectAttributes::ETAG).then(|| ETag::Strong(entry.etag.clone())),
            object_size: asked(ObjectAttributes::OBJECT_SIZE).then_some(entry.size as i64),
            storage_class: asked(ObjectAttributes::STORAGE_CLASS).then(|| {
                StorageClass::from(
                    entry
                        .meta
                        .storage_class
                        .clone()
                        .unwrap_or_else(|| StorageClass::STANDARD.to_owned()),
                )
            }),
            checksum: (asked(ObjectAttributes::CHECKSUM) && sums != Checksum::default()).then(
                || Checksum {
                    checksum_type: entry.meta.checksum_type.clone().map(ChecksumType::from),
                    ..sums
                },
            ),
            object_parts: parts,
            last_modified: Some(timestamp(entry.modified_ms)),
            version_id,
            ..Default::default()
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let input = req.input;
        let tags = tagging::from_dto(input.tagging, tagging::OBJECT_TAGS_MAX)?;
        let version_id = self
            .buckets
            .change_meta(
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                |meta| {
                    meta.tags.clone_from(&tags);
                    Ok(())
                },
            )
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutObjectTaggingOutput {
            version_id: self.shown_id(&input.bucket, version_id).await,
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let input = req.input;
        let (entry, _) = self
            .read_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tagging::to_dto(&entry.meta.tags),
            version_id: self.version_shown(&input.bucket, &entry).await,
        }))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let input = req.input;
        let version_id = self
            .buckets
            .change_meta(
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                |meta| {
                    meta.tags.clear();
                    Ok(())
                },
            )
            .await
            .map_err(s3)?;
        Ok(S3Response::new(DeleteObjectTaggingOutput {
            version_id: self.shown_id(&input.bucket, version_id).await,
        }))
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let input = req.input;
        let tags = tagging::from_dto(input.tagging, tagging::BUCKET_TAGS_MAX)?;
        self.buckets
            .set_bucket_tags(&input.bucket, tags)
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutBucketTaggingOutput::default()))
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let info = self
            .buckets
            .lookup(&req.input.bucket, true)
            .await
            .map_err(s3)?;
        if info.tags.is_empty() {
            return Err(s3_error!(NoSuchTagSet, "The TagSet does not exist"));
        }
        Ok(S3Response::new(GetBucketTaggingOutput {
            tag_set: tagging::to_dto(&info.tags),
        }))
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.buckets
            .set_bucket_tags(&req.input.bucket, BTreeMap::new())
            .await
            .map_err(s3)?;
        Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let input = req.input;
        let rules = input.cors_configuration.cors_rules;
        if rules.is_empty() || rules.len() > 100 {
            return Err(s3_error!(
                MalformedXML,
                "A CORS configuration holds 1 to 100 rules."
            ));
        }
        let mut kept = Vec::new();
        for rule in rules {
            for method in &rule.allowed_methods {
                if !["GET", "PUT", "POST", "DELETE", "HEAD"].contains(&method.as_str()) {
                    return Err(s3_error!(
                        InvalidRequest,
                        "Found unsupported HTTP method in CORS config. Unsupported method is {method}"
                    ));
                }
            }
            let wildcards = |values: &[String]| values.iter().any(|v| v.matches('*').count() > 1);
            let headers = rule.allowed_headers.unwrap_or_default();
            if wildcards(&rule.allowed_origins) || wildcards(&headers) {
                return Err(s3_error!(
                    InvalidRequest,
                    "An origin or header may hold at most one wildcard."
                ));
            }
            kept.push(tidepool_buckets::CorsRule {
                id: rule.id,
                allowed_origins: rule.allowed_origins,
                allowed_methods: rule.allowed_methods,
                allowed_headers: headers,
                expose_headers: rule.expose_headers.unwrap_or_default(),
                max_age_seconds: rule.max_age_seconds,
            });
        }
        self.buckets
            .set_bucket_cors(&input.bucket, kept)
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutBucketCorsOutput::default()))
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let info = self
            .buckets
            .lookup(&req.input.bucket, true)
            .await
            .map_err(s3)?;
        if info.cors.is_empty() {
            return Err(s3_error!(
                NoSuchCORSConfiguration,
                "The CORS configuration does not exist"
            ));
        }
        let rules = info
            .cors
            .into_iter()
            .map(|rule| CORSRule {
                id: rule.id,
                allowed_origins: rule.allowed_origins,
                allowed_methods: rule.allowed_methods,
                allowed_headers: (!rule.allowed_headers.is_empty()).then_some(rule.allowed_headers),
                expose_headers: (!rule.expose_headers.is_empty()).then_some(rule.expose_headers),
                max_age_seconds: rule.max_age_seconds,
            })
            .collect();
        Ok(S3Response::new(GetBucketCorsOutput {
            cors_rules: Some(rules),
        }))
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        self.buckets
            .set_bucket_cors(&req.input.bucket, Vec::new())
            .await
            .map_err(s3)?;
        Ok(S3Response::new(DeleteBucketCorsOutput::default()))
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let input = &req.input;
        let info = self.buckets.lookup(&input.bucket, true).await.map_err(s3)?;
        let grants = authorize::header_grants(&self.users, grant_headers!(input)).await?;
        let acl = authorize::requested_acl(
            &self.users,
            &info,
            &info.owner,
            input.acl.as_ref().map(|a| a.as_str()),
            grants,
            input.access_control_policy.as_ref(),
        )
        .await?
        .ok_or_else(|| s3_error!(MalformedACLError, "The request names no ACL."))?;
        self.buckets
            .change_bucket(&input.bucket, |i| {
                i.acl = Some(acl.clone());
                Ok(())
            })
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutBucketAclOutput::default()))
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let info = self
            .buckets
            .lookup(&req.input.bucket, false)
            .await
            .map_err(s3)?;
        let acl = match info.ownership {
            Some(tidepool_buckets::Ownership::BucketOwnerEnforced) => None,
            _ => info.acl,
        }
        .unwrap_or_else(|| tidepool_buckets::Acl::private(&info.owner));
        let (owner, grants) = authorize::acl_dto(&acl);
        Ok(S3Response::new(GetBucketAclOutput {
            owner: Some(owner),
            grants: Some(grants),
        }))
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let input = &req.input;
        let info = self
            .buckets
            .lookup(&input.bucket, false)
            .await
            .map_err(s3)?;
        let (entry, _) = self
            .read_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let owner = entry
            .meta
            .acl
            .as_ref()
            .map_or(info.owner.clone(), |a| a.owner.clone());
        let grants = authorize::header_grants(&self.users, grant_headers!(input)).await?;
        let acl = authorize::requested_acl(
            &self.users,
            &info,
            &owner,
            input.acl.as_ref().map(|a| a.as_str()),
            grants,
            input.access_control_policy.as_ref(),
        )
        .await?
        .ok_or_else(|| s3_error!(MalformedACLError, "The request names no ACL."))?;
        let version = entry
            .version_id
            .clone()
            .or_else(|| input.version_id.clone());
        self.buckets
            .change_meta(&input.bucket, &input.key, version.as_deref(), |meta| {
                meta.acl = Some(acl.clone());
                Ok(())
            })
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let input = &req.input;
        let info = self
            .buckets
            .lookup(&input.bucket, false)
            .await
            .map_err(s3)?;
        let (entry, _) = self
            .read_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let acl = entry
            .meta
            .acl
            .unwrap_or_else(|| tidepool_buckets::Acl::private(&info.owner));
        let (owner, grants) = authorize::acl_dto(&acl);
        Ok(S3Response::new(GetObjectAclOutput {
            owner: Some(owner),
            grants: Some(grants),
            ..Default::default()
        }))
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let input = &req.input;
        let policy = crate::policy::Policy::parse(&input.policy, &input.bucket)
            .map_err(|m| s3_error!(MalformedPolicy, "{}", m.0))?;
        let public = policy.is_public();
        self.buckets
            .change_bucket(&input.bucket, |i| {
                if public && i.public_access_block.is_some_and(|b| b.block_public_policy) {
                    return Err(BucketError::Locked(
                        "the public access block refuses public policies".into(),
                    ));
                }
                i.policy = Some(input.policy.clone());
                Ok(())
            })
            .await
            .map_err(|e| match e {
                BucketError::Locked(_) => crate::error::access_denied(),
                other => s3(other),
            })?;
        Ok(S3Response::with_status(
            PutBucketPolicyOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let info = self
            .buckets
            .lookup(&req.input.bucket, false)
            .await
            .map_err(s3)?;
        let policy = info
            .policy
            .ok_or_else(|| s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist"))?;
        Ok(S3Response::new(GetBucketPolicyOutput {
            policy: Some(policy),
        }))
    }

    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        let info = self
            .buckets
            .lookup(&req.input.bucket, false)
            .await
            .map_err(s3)?;
        let text = info
            .policy
            .ok_or_else(|| s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist"))?;
        let public =
            crate::policy::Policy::parse(&text, &req.input.bucket).is_ok_and(|p| p.is_public());
        Ok(S3Response::new(GetBucketPolicyStatusOutput {
            policy_status: Some(PolicyStatus {
                is_public: Some(public),
            }),
        }))
    }

    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        self.buckets
            .change_bucket(&req.input.bucket, |i| {
                i.policy = None;
                Ok(())
            })
            .await
            .map_err(s3)?;
        Ok(S3Response::with_status(
            DeleteBucketPolicyOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        let c = &req.input.public_access_block_configuration;
        let block = tidepool_buckets::PublicAccessBlock {
            block_public_acls: c.block_public_acls.unwrap_or(false),
            ignore_public_acls: c.ignore_public_acls.unwrap_or(false),
            block_public_policy: c.block_public_policy.unwrap_or(false),
            restrict_public_buckets: c.restrict_public_buckets.unwrap_or(false),
        };
        self.buckets
            .change_bucket(&req.input.bucket, |i| {
                i.public_access_block = Some(block);
                Ok(())
            })
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutPublicAccessBlockOutput::default()))
    }

    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        let info = self
            .buckets
            .lookup(&req.input.bucket, false)
            .await
            .map_err(s3)?;
        let Some(block) = info.public_access_block else {
            let mut error = S3Error::with_message(
                S3ErrorCode::Custom("NoSuchPublicAccessBlockConfiguration".into()),
                "The public access block configuration was not found",
            );
            error.set_status_code(http::StatusCode::NOT_FOUND);
            return Err(error);
        };
        Ok(S3Response::new(GetPublicAccessBlockOutput {
            public_access_block_configuration: Some(PublicAccessBlockConfiguration {
                block_public_acls: Some(block.block_public_acls),
                ignore_public_acls: Some(block.ignore_public_acls),
                block_public_policy: Some(block.block_public_policy),
                restrict_public_buckets: Some(block.restrict_public_buckets),
            }),
        }))
    }

    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        self.buckets
            .change_bucket(&req.input.bucket, |i| {
                i.public_access_block = None;
                Ok(())
            })
            .await
            .map_err(s3)?;
        Ok(S3Response::with_status(
            DeletePublicAccessBlockOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn put_bucket_ownership_controls(
        &self,
        req: S3Request<PutBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<PutBucketOwnershipControlsOutput>> {
        let rules = &req.input.ownership_controls.rules;
        let [rule] = rules.as_slice() else {
            return Err(s3_error!(MalformedXML, "Ownership controls name one rule."));
        };
        let ownership = tidepool_buckets::Ownership::parse(rule.object_ownership.as_str())
            .ok_or_else(|| s3_error!(MalformedXML, "Unknown object ownership."))?;
        self.buckets
            .change_bucket(&req.input.bucket, |i| {
                i.ownership = Some(ownership);
                Ok(())
            })
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutBucketOwnershipControlsOutput::default()))
    }

    async fn get_bucket_ownership_controls(
        &self,
        req: S3Request<GetBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<GetBucketOwnershipControlsOutput>> {
        let info = self
            .buckets
            .lookup(&req.input.bucket, false)
            .await
            .map_err(s3)?;
        let ownership = info.ownership.ok_or_else(|| {
            s3_error!(
                OwnershipControlsNotFoundError,
                "The bucket ownership controls were not found"
            )
        })?;
        Ok(S3Response::new(GetBucketOwnershipControlsOutput {
            ownership_controls: Some(OwnershipControls {
                rules: vec![OwnershipControlsRule {
                    object_ownership: ObjectOwnership::from(ownership.as_str().to_owned()),
                }],
            }),
        }))
    }

    async fn delete_bucket_ownership_controls(
        &self,
        req: S3Request<DeleteBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<DeleteBucketOwnershipControlsOutput>> {
        self.buckets
            .change_bucket(&req.input.bucket, |i| {
                i.ownership = None;
                Ok(())
            })
            .await
            .map_err(s3)?;
        Ok(S3Response::with_status(
            DeleteBucketOwnershipControlsOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let input = req.input;
        let rules = crate::lifecycle::rules_of(input.lifecycle_configuration)?;
        self.buckets
            .change_bucket(&input.bucket, |i| {
                i.lifecycle.clone_from(&rules);
                Ok(())
            })
            .await
            .map_err(s3)?;
        Ok(S3Response::new(
            PutBucketLifecycleConfigurationOutput::default(),
        ))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let info = self
            .buckets
            .lookup(&req.input.bucket, false)
            .await
            .map_err(s3)?;
        if info.lifecycle.is_empty() {
            return Err(s3_error!(
                NoSuchLifecycleConfiguration,
                "The lifecycle configuration does not exist"
            ));
        }
        Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
            rules: Some(
                info.lifecycle
                    .iter()
                    .map(crate::lifecycle::rule_dto)
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.buckets
            .change_bucket(&req.input.bucket, |i| {
                i.lifecycle.clear();
                Ok(())
            })
            .await
            .map_err(s3)?;
        Ok(S3Response::with_status(
            DeleteBucketLifecycleOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        let input = req.input;
        let config = lock::configuration_of(input.object_lock_configuration)?;
        self.buckets
            .set_object_lock(&input.bucket, config)
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
    }

    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        self.buckets
            .lookup(&req.input.bucket, true)
            .await
            .map_err(s3)?;
        let info = self
            .buckets
            .lookup(&req.input.bucket, false)
            .await
            .map_err(s3)?;
        let Some(config) = &info.object_lock else {
            return Err(s3_error!(
                ObjectLockConfigurationNotFoundError,
                "Object Lock configuration does not exist for this bucket"
            ));
        };
        Ok(S3Response::new(GetObjectLockConfigurationOutput {
            object_lock_configuration: Some(lock::configuration_dto(config)),
        }))
    }

    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        let input = req.input;
        self.locked_bucket(&input.bucket).await?;
        let retention = lock::retention_of(input.retention)?;
        let bypass = input.bypass_governance_retention.unwrap_or(false);
        self.buckets
            .change_meta(
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                |meta| {
                    tidepool_buckets::lock::check_retention_change(
                        meta.retention,
                        retention,
                        tidepool_buckets::now_ms(),
                        bypass,
                    )?;
                    meta.retention = retention;
                    Ok(())
                },
            )
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutObjectRetentionOutput::default()))
    }

    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        let input = req.input;
        self.locked_bucket(&input.bucket).await?;
        let (entry, _) = self
            .read_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let Some(retention) = &entry.meta.retention else {
            return Err(s3_error!(
                NoSuchObjectLockConfiguration,
                "The specified object does not have a ObjectLock configuration"
            ));
        };
        Ok(S3Response::new(GetObjectRetentionOutput {
            retention: Some(lock::retention_dto(retention)),
        }))
    }

    async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        let input = req.input;
        self.locked_bucket(&input.bucket).await?;
        let on = lock::legal_hold_of(input.legal_hold)?;
        self.buckets
            .change_meta(
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                |meta| {
                    meta.legal_hold = on;
                    Ok(())
                },
            )
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
    }

    async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        let input = req.input;
        self.locked_bucket(&input.bucket).await?;
        let (entry, _) = self
            .read_version(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        Ok(S3Response::new(GetObjectLegalHoldOutput {
            legal_hold: Some(lock::legal_hold_dto(entry.meta.legal_hold)),
        }))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let input = req.input;
        let mode = match input
            .versioning_configuration
            .status
            .as_ref()
            .map(|s| s.as_str())
        {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            _ => {
                return Err(s3_error!(
                    MalformedXML,
                    "The versioning status must be Enabled or Suspended."
                ))
            }
        };
        if input
            .versioning_configuration
            .mfa_delete
            .as_ref()
            .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
        {
            return Err(s3_error!(NotImplemented, "MFA delete is not supported."));
        }
        self.buckets
            .set_versioning(&input.bucket, mode)
            .await
            .map_err(s3)?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let info = self
            .buckets
            .lookup(&req.input.bucket, true)
            .await
            .map_err(s3)?;
        let status = match info.versioning {
            Versioning::Off => None,
            Versioning::Enabled => Some(BucketVersioningStatus::ENABLED),
            Versioning::Suspended => Some(BucketVersioningStatus::SUSPENDED),
        };
        Ok(S3Response::new(GetBucketVersioningOutput {
            status: status.map(BucketVersioningStatus::from_static),
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        let limit = max_keys(input.max_keys)?;
        let key_marker = input.key_marker.clone().filter(|m| !m.is_empty());
        let query = VersionQuery {
            list: ListQuery {
                prefix: input.prefix.clone().unwrap_or_default(),
                delimiter: input.delimiter.clone(),
                after: key_marker.clone(),
                limit,
            },
            version_after: input
                .version_id_marker
                .clone()
                .filter(|m| !m.is_empty() && key_marker.is_some()),
        };
        let page = self
            .buckets
            .list_versions(&input.bucket, &query)
            .await
            .map_err(s3)?;
        let owner = self.bucket_owner(&input.bucket).await?;
        let encode = encoder(input.encoding_type.as_ref());
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        for version in page.versions {
            let version_id = Some(tidepool_buckets::shown(&version.version_id).to_owned());
            match version.entry {
                Some(entry) => {
                    let object = object_of(version.key, &entry, encode);
                    versions.push(ObjectVersion {
                        key: object.key,
                        size: object.size,
                        e_tag: object.e_tag,
                        last_modified: object.last_modified,
                        storage_class: object
                            .storage_class
                            .map(|c| ObjectVersionStorageClass::from(c.as_str().to_owned())),
                        is_latest: Some(version.is_latest),
                        version_id,
                        owner: Some(owner.clone()),
                        ..Default::default()
                    });
                }
                None => markers.push(DeleteMarkerEntry {
                    key: Some(encode(&version.key)),
                    is_latest: Some(version.is_latest),
                    last_modified: Some(timestamp(version.modified_ms)),
                    owner: Some(owner.clone()),
                    version_id,
                }),
            }
        }
        let (next_key, next_version) = match page.next.filter(|_| page.truncated) {
            Some((key, version)) => (Some(encode(&key)), version),
            None => (None, None),
        };
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(encode(&query.list.prefix)),
            key_marker: Some(key_marker.as_deref().map(encode).unwrap_or_default()),
            version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
            max_keys: Some(limit as i32),
            is_truncated: Some(page.truncated),
            next_key_marker: next_key,
            next_version_id_marker: next_version,
            delimiter: input.delimiter.as_deref().map(encode),
            encoding_type: input.encoding_type,
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(
                page.prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(encode(&p)),
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let limit = max_keys(input.max_keys)?;
        let query = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after: input.marker.clone().filter(|m| !m.is_empty()),
            limit,
        };
        let page = self.list_page(&input.bucket, &query).await?;
        let owner = self.bucket_owner(&input.bucket).await?;
        let encode = encoder(input.encoding_type.as_ref());
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode(&query.prefix)),
            marker: Some(input.marker.as_deref().map(encode).unwrap_or_default()),
            max_keys: Some(limit as i32),
            is_truncated: Some(page.truncated),
            next_marker: page
                .truncated
                .then(|| page.last.as_deref().map(encode))
                .flatten(),
            delimiter: input.delimiter.as_deref().map(encode),
            encoding_type: input.encoding_type,
            contents: Some(
                page.entries
                    .into_iter()
                    .map(|(k, e)| Object {
                        owner: Some(owner.clone()),
                        ..object_of(k, &e, encode)
                    })
                    .collect(),
            ),
            common_prefixes: Some(
                page.prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(encode(&p)),
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let limit = max_keys(input.max_keys)?;
        let after = match &input.continuation_token {
            Some(token) => Some(hex_decode(token)?),
            None => input.start_after.clone().filter(|s| !s.is_empty()),
        };
        let query = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after,
            limit,
        };
        let page = self.list_page(&input.bucket, &query).await?;
        let owner = match input.fetch_owner {
            Some(true) => Some(self.bucket_owner(&input.bucket).await?),
            _ => None,
        };
        let encode = encoder(input.encoding_type.as_ref());
        let count = page.entries.len() + page.prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode(&query.prefix)),
            max_keys: Some(limit as i32),
            key_count: Some(count as i32),
            continuation_token: input.continuation_token,
            next_continuation_token: page
                .truncated
                .then(|| page.last.as_deref().map(hex_encode))
                .flatten(),
            is_truncated: Some(page.truncated),
            start_after: input.start_after.as_deref().map(encode),
            delimiter: input.delimiter.as_deref().map(encode),
            encoding_type: input.encoding_type,
            contents: Some(
                page.entries
                    .into_iter()
                    .map(|(k, e)| Object {
                        owner: owner.clone(),
                        ..object_of(k, &e, encode)
                    })
                    .collect(),
            ),
            common_prefixes: Some(
                page.prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(encode(&p)),
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let acl = self
            .write_acl(
                &req,
                &req.input.bucket,
                req.input.acl.as_ref().map(|a| a.as_str()),
                grant_headers!(req.input, no write),
            )
            .await?;
        let input = req.input;
        let mut meta = meta_of(
            ContentHeaders {
                content_type: input.content_type,
                content_encoding: stored_encoding(input.content_encoding),
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                cache_control: input.cache_control,
                expires: expires_text(input.expires),
            },
            input.metadata,
        );
        let kind = input
            .checksum_type
            .as_ref()
            .map(|t| {
                composite::Kind::parse(t.as_str())
                    .ok_or_else(|| s3_error!(InvalidRequest, "Unknown checksum type."))
            })
            .transpose()?;
        match (&input.checksum_algorithm, kind) {
            (Some(algorithm), kind) => {
                let algorithm = algorithm.as_str().to_ascii_uppercase();
                let kind = kind.unwrap_or_else(|| composite::Kind::default_for(&algorithm));
                if !kind.allowed_with(&algorithm) {
                    return Err(s3_error!(
                        InvalidRequest,
                        "The {} checksum type cannot be used with the {algorithm} checksum algorithm.",
                        kind.as_str()
                    ));
                }
                meta.checksums.insert(algorithm, String::new());
                meta.checksum_type = Some(kind.as_str().to_owned());
            }
            (None, Some(_)) => {
                return Err(s3_error!(
                    InvalidRequest,
                    "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header."
                ))
            }
            (None, None) => {}
        }
        let (class, _) = self.class_pool(input.storage_class.as_ref()).await?;
        meta.storage_class = class;
        meta.tags = header_tags(input.tagging.as_deref())?;
        meta.acl = acl;
        self.lock_headers(
            &input.bucket,
            &mut meta,
            input.object_lock_mode.as_ref(),
            input.object_lock_retain_until_date.as_ref(),
            input.object_lock_legal_hold_status.as_ref(),
        )
        .await?;
        let upload = self
            .buckets
            .create_upload(&input.bucket, &input.key, meta)
            .await
            .map_err(s3)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.id),
            checksum_algorithm: input.checksum_algorithm,
            checksum_type: upload.meta.checksum_type.clone().map(ChecksumType::from),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let number = u32::try_from(input.part_number)
            .map_err(|_| s3_error!(InvalidArgument, "Part numbers are 1 to 10,000."))?;
        let sent = Checksum {
            checksum_crc32: input.checksum_crc32,
            checksum_crc32c: input.checksum_crc32c,
            checksum_sha1: input.checksum_sha1,
            checksum_sha256: input.checksum_sha256,
            checksum_crc64nvme: input.checksum_crc64nvme,
            ..Default::default()
        };
        let (upload, pool) = self
            .open_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let mut expected = Expected::new(&sent, input.checksum_algorithm.as_ref(), &req.headers)?;
        // Every part gets the upload's checksums: the object's are made of them.
        for algorithm in upload.meta.checksums.keys() {
            expected.include(algorithm);
        }
        let check = BodyCheck {
            expected,
            content_length: input.content_length,
            content_md5: input.content_md5.as_deref(),
            trailers: req.trailing_headers,
        };
        let options = WriteOptions {
            pool,
            ..Default::default()
        };
        let (written, sums) = self
            .receive(&input.bucket, input.body, options, check)
            .await?;
        let part = self
            .buckets
            .put_part(&upload, number, written, sums)
            .await
            .map_err(s3)?;
        let sums = checksum::to_dto(&part.checksums);
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&part.etag)),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let (source_bucket, source_key, source_version) = copy_source(&req.input.copy_source)?;
        self.may_read_source(&req, &source_bucket, &source_key, source_version.as_deref())
            .await?;
        let input = req.input;
        let number = u32::try_from(input.part_number)
            .map_err(|_| s3_error!(InvalidArgument, "Part numbers are 1 to 10,000."))?;
        let (source, inline) = self
            .read_version(&source_bucket, &source_key, source_version.as_deref())
            .await?;
        check_read_conditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
        )
        .map_err(|_| crate::error::precondition_failed())?;
        let range = match &input.copy_source_range {
            Some(text) => copy_range(text, source.size)?,
            None => 0..source.size,
        };
        let range_len = range.end - range.start;
        let (upload, pool) = self
            .open_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let data = self.buckets.read_data(&source, inline, range);
        let info = self
            .buckets
            .lookup(&input.bucket, false)
            .await
            .map_err(s3)?;
        let written = self
            .buckets
            .write_data(
                &info,
                data,
                WriteOptions {
                    inline_allowed: false,
                    size_hint: Some(range_len),
                    pool,
                },
            )
            .await
            .map_err(s3)?;
        let part = self
            .buckets
            .put_part(&upload, number, written, BTreeMap::new())
            .await
            .map_err(s3)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&part.etag)),
                last_modified: Some(timestamp(part.modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let condition = put_condition(input.if_match, input.if_none_match)?;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        // The checksums the request names: each part's, and the whole object's.
        let sent_parts: BTreeMap<i32, BTreeMap<String, String>> = listed
            .iter()
            .filter_map(|p| {
                let sums = checksum::from_dto(&Checksum {
                    checksum_crc32: p.checksum_crc32.clone(),
                    checksum_crc32c: p.checksum_crc32c.clone(),
                    checksum_sha1: p.checksum_sha1.clone(),
                    checksum_sha256: p.checksum_sha256.clone(),
                    checksum_crc64nvme: p.checksum_crc64nvme.clone(),
                    ..Default::default()
                });
                Some((p.part_number?, sums))
            })
            .collect();
        let sent_whole = checksum::from_dto(&Checksum {
            checksum_crc32: input.checksum_crc32.clone(),
            checksum_crc32c: input.checksum_crc32c.clone(),
            checksum_sha1: input.checksum_sha1.clone(),
            checksum_sha256: input.checksum_sha256.clone(),
            checksum_crc64nvme: input.checksum_crc64nvme.clone(),
            ..Default::default()
        });
        let compose = |upload: &Upload, parts: &[&tidepool_buckets::Part]| {
            object_checksums(upload, parts, &sent_parts, &sent_whole)
        };
        let chosen = listed
            .into_iter()
            .map(|p| {
                Ok(BucketPart {
                    number: p
                        .part_number
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| s3_error!(InvalidPart, "A part has no number."))?,
                    etag: p
                        .e_tag
                        .map(|t| t.into_value())
                        .ok_or_else(|| s3_error!(InvalidPart, "A part has no ETag."))?,
                })
            })
            .collect::<S3Result<Vec<_>>>()?;
        if chosen.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema."
            ));
        }
        let entry = self
            .buckets
            .complete_upload(
                &input.bucket,
                &input.key,
                &input.upload_id,
                &chosen,
                &condition,
                &compose,
            )
            .await
            .map_err(s3)?;
        let sums = checksum::to_dto(&entry.meta.checksums);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(etag(&entry.etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            version_id: entry.version_id.clone(),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            checksum_type: entry.meta.checksum_type.clone().map(ChecksumType::from),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.buckets
            .abort_upload(&input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(s3)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let (upload, _) = self
            .buckets
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(s3)?;
        let marker = input
            .part_number_marker
            .map_or(0, |m| u32::try_from(m).unwrap_or(0));
        let limit = max_keys(input.max_parts)?;
        let parts = self.buckets.parts(&input.upload_id).await.map_err(s3)?;
        let after: Vec<_> = parts.into_iter().filter(|p| p.number > marker).collect();
        let truncated = after.len() > limit;
        let page: Vec<_> = after.into_iter().take(limit).collect();
        let next = page.last().map(|p| p.number as i32);
        Ok(S3Response::new(ListPartsOutput {
            checksum_algorithm: upload
                .meta
                .checksums
                .keys()
                .next()
                .map(|a| ChecksumAlgorithm::from(a.clone())),
            checksum_type: upload.meta.checksum_type.clone().map(ChecksumType::from),
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(limit as i32),
            is_truncated: Some(truncated),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            parts: Some(
                page.into_iter()
                    .map(|p| {
                        let sums = checksum::to_dto(&p.checksums);
                        Part {
                            part_number: Some(p.number as i32),
                            e_tag: Some(etag(&p.etag)),
                            size: Some(p.size as i64),
                            last_modified: Some(timestamp(p.modified_ms)),
                            checksum_crc32: sums.checksum_crc32,
                            checksum_crc32c: sums.checksum_crc32c,
                            checksum_sha1: sums.checksum_sha1,
                            checksum_sha256: sums.checksum_sha256,
                            checksum_crc64nvme: sums.checksum_crc64nvme,
                        }
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let limit = max_keys(input.max_uploads)?;
        let uploads = self
            .buckets
            .uploads(&input.bucket, &prefix)
            .await
            .map_err(s3)?;
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let id_marker = input.upload_id_marker.clone();
        let after: Vec<_> = uploads
            .into_iter()
            .filter(|u| match &id_marker {
                Some(id) if !key_marker.is_empty() => {
                    u.key > key_marker || (u.key == key_marker && u.id.as_str() > id.as_str())
                }
                _ => u.key > key_marker || key_marker.is_empty(),
            })
            .collect();
        // Keys with the delimiter after the prefix group into common prefixes, each counted
        // once toward the limit, as in object listings.
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let mut page = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        let mut next: Option<(String, Option<String>)> = None;
        for upload in after {
            let common = delimiter.as_deref().and_then(|d| {
                upload.key[prefix.len()..]
                    .find(d)
                    .map(|at| upload.key[..prefix.len() + at + d.len()].to_owned())
            });
            if common.is_some() && common.as_ref() == prefixes.last() {
                continue;
            }
            if page.len() + prefixes.len() >= limit {
                truncated = true;
                break;
            }
            match common {
                Some(common) => {
                    next = Some((common.clone(), None));
                    prefixes.push(common);
                }
                None => {
                    next = Some((upload.key.clone(), Some(upload.id.clone())));
                    page.push(upload);
                }
            }
        }
        let encode = encoder(input.encoding_type.as_ref());
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(encode(&prefix)),
            delimiter: input.delimiter.as_deref().map(encode),
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            next_key_marker: next.as_ref().map(|(key, _)| encode(key)),
            next_upload_id_marker: next.and_then(|(_, id)| id),
            max_uploads: Some(limit as i32),
            is_truncated: Some(truncated),
            encoding_type: input.encoding_type,
            common_prefixes: Some(
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(encode(&p)),
                    })
                    .collect(),
            ),
            uploads: Some(
                page.into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(encode(&u.key)),
                        upload_id: Some(u.id),
                        initiated: Some(timestamp(u.initiated_ms)),
                        storage_class: Some(StorageClass::from(
                            u.meta
                                .storage_class
                                .clone()
                                .unwrap_or_else(|| StorageClass::STANDARD.to_owned()),
                        )),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_what_s3_sends() {
        assert_eq!(base64_decode("AAAAAA==").unwrap(), vec![0, 0, 0, 0]);
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("1B2M2Y8AsgTpgAmY7PhCfg==").unwrap().len(), 16);
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a$b=").is_none());
    }

    #[test]
    fn listing_keys_are_percent_encoded() {
        assert_eq!(url_encode("a b+c/d%é"), "a%20b%2Bc/d%25%C3%A9");
        assert_eq!(hex_decode(&hex_encode("x/y z")).unwrap(), "x/y z");
        assert!(hex_decode("zz").is_err());
    }

    /// Regression: a continuation token with a multi-byte character at an odd offset made
    /// `hex_decode` slice through the character and panic (found by `parsers_never_panic`).
    #[test]
    fn a_token_with_a_wide_character_is_refused() {
        assert!(hex_decode("aéb").is_err());
        assert!(hex_decode("éé").is_err());
    }

    proptest::proptest! {
        /// Fuzz target: what the gateway parses itself from a request (continuation tokens,
        /// base64 checksums, copy ranges) answers with a value or an error for any text.
        #[test]
        fn parsers_never_panic(text in ".{0,40}", hexish in "[0-9a-fA-Fé]{0,12}", size in proptest::prelude::any::<u64>()) {
            let _ = hex_decode(&text);
            let _ = hex_decode(&hexish);
            let _ = base64_decode(&text);
            let _ = url_encode(&text);
            if let Ok(range) = copy_range(&text, size) {
                proptest::prop_assert!(range.start < range.end && range.end <= size);
            }
            let spec = format!("bytes={text}");
            if let Ok(range) = copy_range(&spec, size) {
                proptest::prop_assert!(range.start < range.end && range.end <= size);
            }
            proptest::prop_assert_eq!(hex_decode(&hex_encode(&text)).ok(), Some(text.clone()));
        }
    }

    #[test]
    fn copy_ranges() {
        assert_eq!(copy_range("bytes=0-9", 10).unwrap(), 0..10);
        assert!(copy_range("bytes=5-10", 10).is_err());
        assert!(copy_range("0-9", 10).is_err());
        assert!(copy_range("bytes=9-5", 10).is_err());
    }
}
