//! The gateway's Prometheus metrics (`tidepool_s3_…`): requests by S3 operation and status
//! class, their latency to the response's head, bytes in and out as the requests and
//! responses declare them, and requests in flight. The operation is read from the method,
//! the path and the query, as S3 defines them, into a fixed set of names.

use std::time::Instant;

use tidepool_metrics::{
    self as metrics, HistogramVec, IntCounter, IntCounterVec, IntGauge, MetricsError, Registry,
};

#[derive(Debug)]
pub struct GatewayMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    in_flight: IntGauge,
}

/// A request being served: counted in flight until it is finished (or dropped).
#[derive(Debug)]
pub struct InFlight<'a> {
    metrics: &'a GatewayMetrics,
    op: &'static str,
    start: Instant,
    done: bool,
}

impl GatewayMetrics {
    pub fn new(registry: &Registry) -> Result<GatewayMetrics, MetricsError> {
        let bytes = metrics::counters(
            registry,
            "tidepool_s3_bytes_total",
            "Body bytes received (in) and sent (out), as Content-Length declares them",
            &["direction"],
        )?;
        Ok(GatewayMetrics {
            requests: metrics::counters(
                registry,
                "tidepool_s3_requests_total",
                "S3 requests answered, by operation and status class",
                &["op", "status"],
            )?,
            seconds: metrics::latencies(
                registry,
                "tidepool_s3_request_seconds",
                "Time from a request to its response's head, by operation",
                &["op"],
            )?,
            bytes_in: bytes.with_label_values(&["in"]),
            bytes_out: bytes.with_label_values(&["out"]),
            in_flight: metrics::gauge(
                registry,
                "tidepool_s3_requests_in_flight",
                "S3 requests received and not yet answered",
            )?,
        })
    }

    /// A request begins.
    pub fn begin(&self, request: &http::request::Parts) -> InFlight<'_> {
        self.in_flight.inc();
        self.bytes_in.inc_by(content_length(&request.headers));
        InFlight {
            metrics: self,
            op: operation(request),
            start: Instant::now(),
            done: false,
        }
    }
}

impl InFlight<'_> {
    /// Its response's head is ready.
    pub fn finish(mut self, status: http::StatusCode, headers: &http::HeaderMap) {
        self.done = true;
        let m = self.metrics;
        m.in_flight.dec();
        m.bytes_out.inc_by(content_length(headers));
        m.requests
            .with_label_values(&[self.op, status_class(status)])
            .inc();
        m.seconds
            .with_label_values(&[self.op])
            .observe(metrics::seconds_since(self.start));
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // The client went away before an answer: no longer in flight, not counted as answered.
        if !self.done {
            self.metrics.in_flight.dec();
        }
    }
}

fn content_length(headers: &http::HeaderMap) -> u64 {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The S3 operation a request asks for (path-style addressing), `Other` when unknown.
pub fn operation(request: &http::request::Parts) -> &'static str {
    let path = request.uri.path().trim_start_matches('/');
    let query = request.uri.query().unwrap_or("");
    let has = |name: &str| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(name))
    };
    let copy = request.headers.contains_key("x-amz-copy-source");
    let method = &request.method;
    let has_key = path.split_once('/').is_some_and(|(_, key)| !key.is_empty());
    use http::Method;
    if *method == Method::OPTIONS {
        return "Preflight";
    }
    if path.is_empty() {
        return if *method == Method::GET {
            "ListBuckets"
        } else {
            "Other"
        };
    }
    // Subresources of buckets and objects, in the order S3 reads them.
    const SUB: [(&str, &str, &str, &str); 9] = [
        ("acl", "GetAcl", "PutAcl", "Other"),
        ("tagging", "GetTagging", "PutTagging", "DeleteTagging"),
        (
            "versioning",
            "GetBucketVersioning",
            "PutBucketVersioning",
            "Other",
        ),
        (
            "policy",
            "GetBucketPolicy",
            "PutBucketPolicy",
            "DeleteBucketPolicy",
        ),
        ("cors", "GetBucketCors", "PutBucketCors", "DeleteBucketCors"),
        (
            "lifecycle",
            "GetBucketLifecycle",
            "PutBucketLifecycle",
            "DeleteBucketLifecycle",
        ),
        ("location", "GetBucketLocation", "Other", "Other"),
        (
            "retention",
            "GetObjectRetention",
            "PutObjectRetention",
            "Other",
        ),
        (
            "legal-hold",
            "GetObjectLegalHold",
            "PutObjectLegalHold",
            "Other",
        ),
    ];
    for (name, get, put, delete) in SUB {
        if has(name) {
            return match *method {
                Method::GET => get,
                Method::PUT => put,
                Method::DELETE => delete,
                _ => "Other",
            };
        }
    }
    match (method.clone(), has_key) {
        (Method::GET, false) if has("uploads") => "ListMultipartUploads",
        (Method::GET, false) if has("versions") => "ListObjectVersions",
        (Method::GET, false) if has("list-type") => "ListObjectsV2",
        (Method::GET, false) => "ListObjects",
        (Method::HEAD, false) => "HeadBucket",
        (Method::PUT, false) => "CreateBucket",
        (Method::DELETE, false) => "DeleteBucket",
        (Method::POST, false) if has("delete") => "DeleteObjects",
        (Method::POST, false) => "PostObject",
        (Method::GET, true) if has("uploadId") => "ListParts",
        (Method::GET, true) if has("attributes") => "GetObjectAttributes",
        (Method::GET, true) => "GetObject",
        (Method::HEAD, true) => "HeadObject",
        (Method::PUT, true) if has("uploadId") && copy => "UploadPartCopy",
        (Method::PUT, true) if has("uploadId") => "UploadPart",
        (Method::PUT, true) if copy => "CopyObject",
        (Method::PUT, true) => "PutObject",
        (Method::POST, true) if has("uploads") => "CreateMultipartUpload",
        (Method::POST, true) if has("uploadId") => "CompleteMultipartUpload",
        (Method::DELETE, true) if has("uploadId") => "AbortMultipartUpload",
        (Method::DELETE, true) => "DeleteObject",
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: &str, uri: &str, copy: bool) -> &'static str {
        let mut request = http::Request::builder().method(method).uri(uri);
        if copy {
            request = request.header("x-amz-copy-source", "/b/k");
        }
        let (parts, ()) = request.body(()).unwrap().into_parts();
        operation(&parts)
    }

    #[test]
    fn operations_are_named_as_s3_names_them() {
        for (method, uri, copy, want) in [
            ("GET", "/", false, "ListBuckets"),
            ("PUT", "/b", false, "CreateBucket"),
            ("HEAD", "/b", false, "HeadBucket"),
            ("GET", "/b?list-type=2&prefix=a", false, "ListObjectsV2"),
            ("GET", "/b/", false, "ListObjects"),
            ("GET", "/b?uploads", false, "ListMultipartUploads"),
            ("GET", "/b?versions", false, "ListObjectVersions"),
            ("POST", "/b?delete", false, "DeleteObjects"),
            ("DELETE", "/b", false, "DeleteBucket"),
            ("PUT", "/b/k", false, "PutObject"),
            ("PUT", "/b/dir/k", true, "CopyObject"),
            ("GET", "/b/k", false, "GetObject"),
            ("HEAD", "/b/k", false, "HeadObject"),
            ("DELETE", "/b/k", false, "DeleteObject"),
            ("POST", "/b/k?uploads", false, "CreateMultipartUpload"),
            ("PUT", "/b/k?partNumber=1&uploadId=x", false, "UploadPart"),
            (
                "PUT",
                "/b/k?partNumber=1&uploadId=x",
                true,
                "UploadPartCopy",
            ),
            ("GET", "/b/k?uploadId=x", false, "ListParts"),
            ("POST", "/b/k?uploadId=x", false, "CompleteMultipartUpload"),
            ("DELETE", "/b/k?uploadId=x", false, "AbortMultipartUpload"),
            ("GET", "/b/k?tagging", false, "GetTagging"),
            ("PUT", "/b?versioning", false, "PutBucketVersioning"),
            ("OPTIONS", "/b/k", false, "Preflight"),
            ("PATCH", "/b/k", false, "Other"),
        ] {
            assert_eq!(op(method, uri, copy), want, "{method} {uri}");
        }
    }

    #[test]
    fn a_request_dropped_unanswered_leaves_the_in_flight_count() {
        let registry = Registry::new();
        let metrics = GatewayMetrics::new(&registry).unwrap();
        let (parts, ()) = http::Request::builder()
            .method("PUT")
            .uri("/b/k")
            .header("content-length", "42")
            .body(())
            .unwrap()
            .into_parts();
        let answered = metrics.begin(&parts);
        let dropped = metrics.begin(&parts);
        assert_eq!(metrics.in_flight.get(), 2);
        answered.finish(http::StatusCode::OK, &http::HeaderMap::new());
        drop(dropped);
        assert_eq!(metrics.in_flight.get(), 0);
        assert_eq!(metrics.bytes_in.get(), 84);
        let text = tidepool_metrics::render(&registry);
        assert!(
            text.contains("tidepool_s3_requests_total{op=\"PutObject\",status=\"2xx\"} 1"),
            "{text}"
        );
    }
}
