//! The S3 gateway: S3's wire protocol (SigV4, presigned URLs, `aws-chunked` bodies and
//! checksums, XML, error codes) from the `s3s` crate, served inside axum, over the bucket
//! layer. Stateless: users come from the monitors and everything else from the cluster.
//! See docs/gateway.md.

mod access;
mod authorize;
mod checksum;
mod composite;
mod cors;
mod error;
mod lifecycle;
mod lock;
pub mod metrics;
mod policy;
mod s3;
mod tagging;
mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tidepool_buckets::Buckets;
use tidepool_client::MonClient;

pub use metrics::GatewayMetrics;
pub use s3::Gateway;
pub use users::Users;

/// Where and how a gateway serves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// How often the garbage collector runs.
    pub gc_interval: Duration,
    /// How often lifecycle rules are applied (`None`: never, by this gateway).
    pub lifecycle_interval: Option<Duration>,
    /// Where its metrics are registered (served by the caller, if at all).
    pub metrics: tidepool_metrics::Registry,
}

/// The HTTP application: every request goes to the S3 service.
pub fn app(buckets: Buckets, users: Arc<Users>, metrics: Arc<GatewayMetrics>) -> axum::Router {
    let mut builder =
        s3s::service::S3ServiceBuilder::new(Gateway::new(buckets.clone(), users.clone()));
    builder.set_auth(users::UserKeys(users.clone()));
    builder.set_access(authorize::Access {
        buckets: buckets.clone(),
        users,
    });
    let service = builder.build();
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let service = service.clone();
        let metrics = metrics.clone();
        let buckets = buckets.clone();
        async move {
            let request_id = tidepool_buckets::random_id().to_ascii_uppercase();
            let (mut parts, body) = request.into_parts();
            if let Some(connected) = parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
            {
                let remote = authorize::RemoteAddr(connected.0);
                parts.extensions.insert(remote);
            }
            let in_flight = metrics.begin(&parts);
            let form_post = is_form_post(&parts);
            let response = serve_one(&service, &buckets, parts, body).await;
            let response = finish_answer(response, &request_id, form_post).await;
            in_flight.finish(response.status(), response.headers());
            response
        }
    })
}

/// One request's answer.
async fn serve_one(
    service: &s3s::service::S3Service,
    buckets: &Buckets,
    mut parts: http::request::Parts,
    body: axum::body::Body,
) -> axum::response::Response {
    if parts.method == http::Method::OPTIONS {
        return preflight(buckets, &parts).await;
    }
    if let Some(refused) = refusal(&parts) {
        return refused;
    }
    let body = match length_of_chunked(&mut parts, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let close = empty_body_expecting_continue(&parts.headers);
    let cross_origin = cross_origin_request(&parts);
    let request = http::Request::from_parts(parts, body);
    let mut response = match service.call(request).await {
        Ok(response) => {
            let mut response = response.map(axum::body::Body::new);
            if close {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            response
        }
        Err(error) => {
            tracing::error!(?error, "the S3 service failed");
            let mut response = axum::response::Response::new(axum::body::Body::empty());
            *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    };
    if let Some((bucket, origin, method)) = cross_origin {
        allow_cross_origin(buckets, &bucket, &origin, &method, &mut response).await;
    }
    response
}

/// The largest body sent with `Transfer-Encoding: chunked` and no length that the gateway
/// takes: it holds such a body in memory to learn its length, which S3's checks need.
const CHUNKED_WITHOUT_LENGTH_MAX: usize = 64 << 20;

/// The body of a request, as `s3s` takes it. A body sent with `Transfer-Encoding: chunked`
/// and no `Content-Length` (curl's uploads from a pipe, for example) is read first, up to
/// [`CHUNKED_WITHOUT_LENGTH_MAX`], so that its length is known, as S3 accepts such uploads.
/// (`aws-chunked` bodies declare their length in `x-amz-decoded-content-length`.)
async fn length_of_chunked(
    parts: &mut http::request::Parts,
    body: axum::body::Body,
) -> Result<s3s::Body, axum::response::Response> {
    let chunked = parts
        .headers
        .get(http::header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let without_length = !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        && !parts.headers.contains_key("x-amz-decoded-content-length");
    if !(chunked && without_length) {
        return Ok(s3s::Body::http_body_unsync(body));
    }
    match axum::body::to_bytes(body, CHUNKED_WITHOUT_LENGTH_MAX).await {
        Ok(bytes) => {
            parts.headers.remove(http::header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(http::header::CONTENT_LENGTH, bytes.len().into());
            Ok(s3s::Body::from(bytes))
        }
        Err(_) => Err(error_answer(
            http::StatusCode::LENGTH_REQUIRED,
            "MissingContentLength",
            "A chunked body over 64 MiB needs a Content-Length.",
        )),
    }
}

/// The longest a presigned URL may live, as S3 allows: a week.
const PRESIGNED_SECONDS_MAX: i64 = 604_800;

/// The answer to a request refused before `s3s` reads it, as S3 refuses it:
/// - a presigned URL whose `X-Amz-Expires` is out of S3's range (1 s to a week): 403
///   `AuthorizationQueryParametersError`;
/// - an empty `Content-MD5` (which `s3s` reads as none): 400 `InvalidDigest`.
fn refusal(parts: &http::request::Parts) -> Option<axum::response::Response> {
    let expires = parts.uri.query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name.eq_ignore_ascii_case("X-Amz-Expires"))
            .map(|(_, value)| value.into_owned())
    });
    if let Some(expires) = expires {
        let seconds = expires.parse::<i64>().unwrap_or(0);
        if !(1..=PRESIGNED_SECONDS_MAX).contains(&seconds) {
            return Some(error_answer(
                http::StatusCode::FORBIDDEN,
                "AuthorizationQueryParametersError",
                "X-Amz-Expires must be less than a week (in seconds) that is; 604800 seconds",
            ));
        }
    }
    let empty_md5 = parts
        .headers
        .get("content-md5")
        .is_some_and(|v| v.as_bytes().trim_ascii().is_empty());
    empty_md5.then(|| {
        error_answer(
            http::StatusCode::BAD_REQUEST,
            "InvalidDigest",
            "The Content-MD5 you specified is not valid.",
        )
    })
}

/// The largest error body the gateway rewrites.
const ERROR_BODY_MAX: usize = 64 << 10;

/// Whether a request is a browser's form upload (POST object).
fn is_form_post(parts: &http::request::Parts) -> bool {
    parts.method == http::Method::POST
        && parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"multipart/form-data"))
}

/// `response` with `x-amz-request-id: id`, and, for an S3 error answer, `<RequestId>` in its
/// body: clients and support tickets tie the two together. A form upload whose policy
/// condition failed is 403 `AccessDenied`, as S3 answers it (`s3s` says 400
/// `InvalidPolicyDocument`).
async fn finish_answer(
    response: axum::response::Response,
    id: &str,
    form_post: bool,
) -> axum::response::Response {
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = http::HeaderValue::from_str(id) {
        parts.headers.insert("x-amz-request-id", value);
    }
    let xml = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/xml"));
    if !(parts.status.is_client_error() || parts.status.is_server_error()) || !xml {
        return axum::response::Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, ERROR_BODY_MAX).await else {
        return axum::response::Response::from_parts(parts, axum::body::Body::empty());
    };
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if form_post
        && text.contains("<Code>InvalidPolicyDocument</Code>")
        && text.contains("Policy condition")
    {
        parts.status = http::StatusCode::FORBIDDEN;
        text = text
            .replace(
                "<Code>InvalidPolicyDocument</Code>",
                "<Code>AccessDenied</Code>",
            )
            .replace(
                "<Message>",
                "<Message>Invalid according to Policy: Policy Condition failed: ",
            );
    }
    if let Some(end) = text
        .rfind("</Error>")
        .filter(|_| !text.contains("<RequestId>"))
    {
        text.insert_str(end, &format!("<RequestId>{id}</RequestId>"));
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    axum::response::Response::from_parts(parts, axum::body::Body::from(text))
}

/// The bucket a path-style request names.
fn bucket_of(path: &str) -> Option<String> {
    let name = path.trim_start_matches('/').split('/').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

fn header<'h>(parts: &'h http::request::Parts, name: &str) -> Option<&'h str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A request from a browser page of another origin: its bucket, origin and method.
fn cross_origin_request(parts: &http::request::Parts) -> Option<(String, String, String)> {
    let origin = header(parts, "origin")?;
    Some((
        bucket_of(parts.uri.path())?,
        origin.to_owned(),
        parts.method.as_str().to_owned(),
    ))
}

/// An S3 error answer outside s3s (the preflight's).
fn error_answer(status: http::StatusCode, code: &str, message: &str) -> axum::response::Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    response
}

/// The answer to a browser's preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`): the first of the bucket's CORS rules that allows it, or
/// 403 as S3 answers. Preflights carry no signature: they reveal only the rules' answer.
async fn preflight(buckets: &Buckets, parts: &http::request::Parts) -> axum::response::Response {
    use http::StatusCode;
    let (Some(origin), Some(method)) = (
        header(parts, "origin"),
        header(parts, "access-control-request-method"),
    ) else {
        return error_answer(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
        );
    };
    let Some(bucket) = bucket_of(parts.uri.path()) else {
        return error_answer(StatusCode::BAD_REQUEST, "BadRequest", "No bucket named.");
    };
    let info = match buckets.lookup(&bucket, true).await {
        Ok(info) => info,
        Err(tidepool_buckets::BucketError::NoSuchBucket) => {
            return error_answer(
                StatusCode::NOT_FOUND,
                "NoSuchBucket",
                "The specified bucket does not exist.",
            )
        }
        Err(error) => {
            tracing::warn!(%error, "a preflight's bucket could not be read");
            return error_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The cluster is not answering; try again.",
            );
        }
    };
    if info.cors.is_empty() {
        return error_answer(
            StatusCode::FORBIDDEN,
            "CORSResponse",
            "CORS is not enabled for this bucket.",
        );
    }
    let requested = cors::requested_headers(header(parts, "access-control-request-headers"));
    let Some(rule) = cors::matching(&info.cors, origin, method, &requested) else {
        return error_answer(
            StatusCode::FORBIDDEN,
            "CORSResponse",
            "This CORS request is not allowed. This is usually because the evalution of Origin, \
             request method / Access-Control-Request-Method or Access-Control-Request-Headers \
             are not whitelisted by the resource's CORS spec.",
        );
    };
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    add_headers(
        &mut response,
        cors::answer_headers(rule, origin, Some(&requested)),
    );
    response
}

/// Adds the `Access-Control-*` headers the bucket's CORS rules give a cross-origin request.
async fn allow_cross_origin(
    buckets: &Buckets,
    bucket: &str,
    origin: &str,
    method: &str,
    response: &mut axum::response::Response,
) {
    let Ok(info) = buckets.lookup(bucket, true).await else {
        return;
    };
    if let Some(rule) = cors::matching(&info.cors, origin, method, &[]) {
        add_headers(response, cors::answer_headers(rule, origin, None));
    }
}

fn add_headers(response: &mut axum::response::Response, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// Whether a request says `Expect: 100-continue` over an empty body. HTTP lets the server
/// answer such a request without `100 Continue` (there is no body to ask for), and hyper
/// does; botocore (aws-cli, boto3) then loses its place on the kept-alive connection and the
/// next request on it times out. Closing that one connection after the answer avoids it.
fn empty_body_expecting_continue(headers: &http::HeaderMap) -> bool {
    let expects = headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let empty = headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    expects && empty
}

/// Serves S3 on `config.bind` until `shutdown` completes, and collects garbage meanwhile.
pub async fn serve(
    buckets: Buckets,
    mon: MonClient,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let users = Arc::new(Users::new(mon));
    let metrics = Arc::new(GatewayMetrics::new(&config.metrics).map_err(std::io::Error::other)?);
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving S3");
    let collector = tokio::spawn(collect_garbage(buckets.clone(), config.gc_interval));
    let lifecycle = config
        .lifecycle_interval
        .map(|every| tokio::spawn(apply_lifecycle(buckets.clone(), every)));
    let app = app(buckets, users, metrics).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    collector.abort();
    if let Some(lifecycle) = lifecycle {
        lifecycle.abort();
    }
    served
}

/// Applies the buckets' lifecycle rules every `interval` (each pass's progress is recorded
/// in the cluster; `tidepool lifecycle status` shows it). Several gateways may run passes
/// at once: every removal is guarded on the entry it judged.
async fn apply_lifecycle(buckets: Buckets, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match buckets.run_lifecycle().await {
            Ok(passes) => {
                for (bucket, pass) in passes {
                    if pass.expired
                        + pass.noncurrent_removed
                        + pass.markers_removed
                        + pass.uploads_aborted
                        > 0
                    {
                        tracing::info!(%bucket, expired = pass.expired, noncurrent = pass.noncurrent_removed, markers = pass.markers_removed, uploads = pass.uploads_aborted, "lifecycle applied");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "a lifecycle pass failed"),
        }
    }
}

async fn collect_garbage(buckets: Buckets, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match buckets.collect_garbage().await {
            Ok(pass) if pass.records > 0 => {
                tracing::info!(
                    records = pass.records,
                    stripes = pass.stripes,
                    "garbage collected"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "garbage collection failed"),
        }
    }
}
