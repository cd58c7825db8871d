//! The S3 gateway: S3's wire protocol (SigV4, presigned URLs, `aws-chunked` bodies and
//! checksums, XML, error codes) from the `s3s` crate, served inside axum, over the bucket
//! layer. Stateless: users come from the monitors and everything else from the cluster.
//! See docs/gateway.md.

mod checksum;
mod error;
pub mod metrics;
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
    /// Where its metrics are registered (served by the caller, if at all).
    pub metrics: tidepool_metrics::Registry,
}

/// The HTTP application: every request goes to the S3 service.
pub fn app(buckets: Buckets, users: Arc<Users>, metrics: Arc<GatewayMetrics>) -> axum::Router {
    let mut builder = s3s::service::S3ServiceBuilder::new(Gateway::new(buckets, users.clone()));
    builder.set_auth(users::UserKeys(users));
    let service = builder.build();
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let service = service.clone();
        let metrics = metrics.clone();
        async move {
            let close = empty_body_expecting_continue(request.headers());
            let (parts, body) = request.into_parts();
            let in_flight = metrics.begin(&parts);
            let request = http::Request::from_parts(parts, s3s::Body::http_body_unsync(body));
            let response = match service.call(request).await {
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
            in_flight.finish(response.status(), response.headers());
            response
        }
    })
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
    let served = axum::serve(listener, app(buckets, users, metrics))
        .with_graceful_shutdown(shutdown)
        .await;
    collector.abort();
    served
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
