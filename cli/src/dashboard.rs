//! `tidepool dashboard`: the cluster in a browser (docs/observability.md). A daemon of its
//! own, as Ceph's manager dashboard: it asks the monitors for a snapshot every second, shows
//! it through `tidepool-state` (so it says what `tidepool status` says), keeps the last few
//! minutes of rates for the charts, and pushes each new state to the browsers over
//! server-sent events. Logging in takes the keys of an admin user; every `/api` route and
//! the stream refuse a request without the session cookie. Operator actions go through the
//! monitors as the CLI's do, after the same dry-run preview.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tidepool_placement::OsdId;
use tidepool_proto::mon::Command;
use tidepool_state::{df, events, status, tree, Snapshot};
use tokio::sync::watch;

use crate::admin::{runtime, ClusterArgs};

/// Flags of `tidepool dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Where to serve the dashboard.
    #[arg(long, default_value = "127.0.0.1:8443")]
    bind: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM); with --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The S3 users whose keys log in (`tidepool up` makes `local`).
    #[arg(long = "admin", default_values_t = ["local".to_owned(), "admin".to_owned()])]
    admins: Vec<String>,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
}

/// How long a session lasts without use.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Seconds of rates kept for the charts.
const HISTORY: usize = 300;
/// Events kept for the page.
const EVENTS: usize = 100;
/// The session cookie's name.
const COOKIE: &str = "tidepool_session";

/// The state pushed to the browsers: what `status` says, the OSD tree and use, the events.
#[derive(Clone, Debug, Default, Serialize)]
struct Shown {
    /// Seconds since the Unix epoch of the snapshot.
    at: u64,
    quorum: bool,
    status: Value,
    tree: Value,
    df: Value,
    /// Newest last: `[time, text]`.
    events: VecDeque<(u64, String)>,
    /// Newest last: `[time, read B/s, write B/s, recovery B/s]`.
    history: VecDeque<(u64, u64, u64, u64)>,
    /// The S3 users: `[name, access key]` (never a secret).
    users: Vec<(String, String)>,
    /// The buckets: `[name, owner, created (ms since the Unix epoch)]`.
    buckets: Vec<(String, String, u64)>,
}

struct Dashboard {
    cluster: ClusterArgs,
    /// Whether it serves HTTPS (the session cookie is then `Secure`).
    tls: bool,
    admins: Vec<String>,
    sessions: Mutex<HashMap<String, Instant>>,
    shown: watch::Receiver<Arc<Shown>>,
}

/// Runs the dashboard until Ctrl-C or SIGTERM.
pub fn dashboard(args: DashboardArgs) -> Result<()> {
    crate::logs::name("dashboard");
    let dir = args.cluster.dir();
    runtime()?.block_on(async {
        let registry = tidepool_metrics::Registry::new();
        args.metrics.serve(&registry, &dir, "dashboard").await?;
        let (publish, shown) = watch::channel(Arc::new(Shown::default()));
        let cluster = args.cluster.clone();
        tokio::spawn(follow(cluster, publish));
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let dashboard = Arc::new(Dashboard {
            tls: tls.is_some(),
            cluster: args.cluster.clone(),
            admins: args.admins.clone(),
            sessions: Mutex::new(HashMap::new()),
            shown,
        });
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("serving the dashboard on {}", args.bind))?;
        let bound = listener.local_addr()?;
        tracing::info!(addr = %bound, "dashboard served");
        let records = dir.join(DASHBOARD_FILE);
        if let Some(parent) = records.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::fs::write(&records, format!("{scheme}://{bound}/"))?;
        let app = app(dashboard);
        let stopped = crate::daemons::daemon_stopped();
        match tls {
            Some(acceptor) => {
                let listener = TlsListener {
                    tcp: listener,
                    acceptor,
                };
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await?
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await?
            }
        }
        Ok(())
    })
}

/// A TLS server configuration from a PEM certificate chain and its PEM private key.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .with_context(|| format!("{}: not a PEM private key", key.display()))?
        .with_context(|| format!("{} holds no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and the key do not make a TLS identity")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Connections accepted over TCP and then TLS; a handshake that fails or takes more than
/// `HANDSHAKE` is dropped without holding up the others for longer.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

const HANDSHAKE: Duration = Duration::from_secs(10);

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match tokio::time::timeout(HANDSHAKE, self.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(error)) => tracing::debug!(%error, %addr, "a TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "a TLS handshake took too long"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Where the dashboard records its address in the cluster folder.
pub const DASHBOARD_FILE: &str = "run/dashboard";

fn app(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { page("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .merge(
            // Everything else under /api needs a session.
            Router::new()
                .route("/api/state", get(state))
                .route("/api/stream", get(stream))
                .route("/api/osd/{id}/{change}/preview", post(preview))
                .route("/api/osd/{id}/{change}", post(apply))
                .route("/api/config", post(set_option))
                .route_layer(axum::middleware::from_fn_with_state(
                    dashboard.clone(),
                    signed_in_only,
                )),
        )
        .with_state(dashboard)
}

/// Refuses a request without a live session.
async fn signed_in_only(
    State(dashboard): State<Arc<Dashboard>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !dashboard.signed_in(request.headers()) {
        return refused(StatusCode::UNAUTHORIZED, "log in first");
    }
    next.run(request).await
}

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

fn page(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn refused(status: StatusCode, why: &str) -> Response {
    (status, Json(json!({ "error": why }))).into_response()
}

impl Dashboard {
    /// Whether the request carries a live session (and keeps it alive).
    fn signed_in(&self, headers: &HeaderMap) -> bool {
        let Some(token) = session_token(headers) else {
            return false;
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, used| now.duration_since(*used) < SESSION_IDLE);
        match sessions.get_mut(&token) {
            Some(used) => {
                *used = now;
                true
            }
            None => false,
        }
    }
}

/// The session token of the request's cookie.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

#[derive(Deserialize)]
struct Credentials {
    access_key: String,
    secret_key: String,
}

/// Equal bytes, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn login(
    State(dashboard): State<Arc<Dashboard>>,
    Json(credentials): Json<Credentials>,
) -> Response {
    let users = match dashboard.cluster.client() {
        Ok(mut client) => client.users().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let admitted = users.iter().any(|user| {
        dashboard.admins.contains(&user.name)
            && same(
                user.access_key.as_bytes(),
                credentials.access_key.as_bytes(),
            )
            && same(
                user.secret_key.as_bytes(),
                credentials.secret_key.as_bytes(),
            )
    });
    if !admitted {
        // A wrong guess costs a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        return refused(StatusCode::UNAUTHORIZED, "wrong access key or secret key");
    }
    let mut bytes = [0u8; 32];
    if getrandom::getrandom(&mut bytes).is_err() {
        return refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for a session",
        );
    }
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    dashboard
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token.clone(), Instant::now());
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!(
                "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{}",
                if dashboard.tls { "; Secure" } else { "" }
            ),
        )],
    )
        .into_response()
}

async fn logout(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers) {
        dashboard
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token);
    }
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
    )
        .into_response()
}

async fn state(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let shown = dashboard.shown.borrow().clone();
    Json(shown.as_ref().clone()).into_response()
}

async fn stream(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let mut shown = dashboard.shown.clone();
    let events = async_stream(move |send| async move {
        loop {
            let current = shown.borrow_and_update().clone();
            let text = serde_json::to_string(current.as_ref()).unwrap_or_default();
            if send
                .send(Event::default().event("state").data(text))
                .await
                .is_err()
            {
                return;
            }
            if shown.changed().await.is_err() {
                return;
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A stream fed by `produce` through a channel.
fn async_stream<F, Fut>(produce: F) -> impl futures_util::Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (send, receive) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(send));
    futures_util::stream::unfold(receive, |mut receive| async move {
        receive.recv().await.map(|event| (Ok(event), receive))
    })
}

/// The command for `change` (`out` or `in`) of OSD `id`.
fn osd_command(id: u32, change: &str) -> Option<Command> {
    let id = OsdId(id);
    match change {
        "out" => Some(Command::OsdOut { id }),
        "in" => Some(Command::OsdIn { id }),
        _ => None,
    }
}

async fn preview(
    State(dashboard): State<Arc<Dashboard>>,
    UrlPath((id, change)): UrlPath<(u32, String)>,
) -> Response {
    let Some(command) = osd_command(id, &change) else {
        return refused(StatusCode::NOT_FOUND, "an OSD is marked out or in");
    };
    let snapshot = match crate::health::fetch(&dashboard.cluster).await {
        Ok(snapshot) => snapshot,
        Err(error) => return refused(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    };
    let Some(map) = snapshot.map.as_ref() else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "the monitors have no quorum",
        );
    };
    match crate::operate::preview(map, std::slice::from_ref(&command)) {
        Ok(after) => {
            let movement = crate::operate::movement(map, &after, &snapshot.report);
            let text = crate::operate::render_movement(&movement);
            Json(json!({ "movement": movement, "text": text })).into_response()
        }
        Err(error) => refused(StatusCode::CONFLICT, &error.to_string()),
    }
}

async fn apply(
    State(dashboard): State<Arc<Dashboard>>,
    UrlPath((id, change)): UrlPath<(u32, String)>,
) -> Response {
    let Some(command) = osd_command(id, &change) else {
        return refused(StatusCode::NOT_FOUND, "an OSD is marked out or in");
    };
    command_response(&dashboard, command).await
}

#[derive(Deserialize)]
struct OptionChange {
    key: String,
    value: String,
}

/// The options the page may set: the recovery and backfill throttles.
const THROTTLES: &[&str] = &[
    "osd_max_backfills",
    "osd_recovery_max_active",
    "osd_recovery_max_bytes_per_sec",
];

async fn set_option(
    State(dashboard): State<Arc<Dashboard>>,
    Json(change): Json<OptionChange>,
) -> Response {
    if !THROTTLES.contains(&change.key.as_str()) {
        return refused(
            StatusCode::BAD_REQUEST,
            &format!("the dashboard sets only {}", THROTTLES.join(", ")),
        );
    }
    if let Err(why) = tidepool_proto::config::check(&change.key, &change.value) {
        return refused(StatusCode::BAD_REQUEST, &why);
    }
    let command = Command::ConfigSet {
        key: change.key,
        value: change.value,
    };
    command_response(&dashboard, command).await
}

/// Sends `command` to the monitors; the epoch it made, or why it was refused.
async fn command_response(dashboard: &Dashboard, command: Command) -> Response {
    let mut client = match dashboard.cluster.client() {
        Ok(client) => client,
        Err(error) => return refused(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    };
    match client.command(command).await {
        Ok(Ok(outcome)) => Json(json!({ "epoch": outcome.epoch.0 })).into_response(),
        Ok(Err(error)) => refused(StatusCode::CONFLICT, &format!("refused: {error}")),
        Err(error) => refused(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    }
}

/// Asks the monitors every second and publishes what the page shows.
async fn follow(cluster: ClusterArgs, publish: watch::Sender<Arc<Shown>>) {
    let mut previous: Option<Snapshot> = None;
    let mut shown = Shown::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buckets = None;
    let mut listed: Option<Instant> = None;
    // One client to the monitors for as long as it runs (it finds the leader again itself).
    let mut client = None;
    let dir = cluster.dir();
    loop {
        tick.tick().await;
        if client.is_none() {
            match cluster.client() {
                Ok(made) => client = Some(made),
                Err(error) => {
                    tracing::warn!(%error, "making a client of the monitors");
                    shown.quorum = false;
                    publish.send_replace(Arc::new(shown.clone()));
                    continue;
                }
            }
        }
        let Some(mon) = client.as_mut() else { continue };
        if listed.is_none_or(|at| at.elapsed() >= LISTING_INTERVAL) {
            listed = Some(Instant::now());
            if buckets.is_none() {
                buckets = bucket_layer(&cluster).await.ok();
            }
            if let Some(layer) = &buckets {
                (shown.users, shown.buckets) = listings(mon, layer).await;
            }
        }
        let snapshot = crate::health::fetch_with(mon, &dir).await;
        shown = next_shown(shown, previous.as_ref(), &snapshot);
        publish.send_replace(Arc::new(shown.clone()));
        if snapshot.map.is_some() {
            previous = Some(snapshot);
        }
    }
}

/// How often users and buckets are listed again.
const LISTING_INTERVAL: Duration = Duration::from_secs(5);

/// The bucket layer, for the list of buckets.
async fn bucket_layer(cluster: &ClusterArgs) -> Result<tidepool_buckets::Buckets> {
    let identity = cluster.identity()?;
    let client = crate::objects::object_client(&cluster.dir(), &identity).await?;
    Ok(tidepool_buckets::Buckets::new(
        Arc::new(client),
        tidepool_buckets::BucketsConfig::default(),
    ))
}

/// The users (`[name, access key]`) and buckets (`[name, owner, created]`), sorted.
async fn listings(
    mon: &mut tidepool_client::MonClient,
    layer: &tidepool_buckets::Buckets,
) -> (Vec<(String, String)>, Vec<(String, String, u64)>) {
    let mut users: Vec<(String, String)> = mon
        .users()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|u| (u.name, u.access_key))
        .collect();
    users.sort();
    let mut buckets: Vec<(String, String, u64)> = layer
        .list_buckets()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|b| (b.name, b.owner, b.created_ms))
        .collect();
    buckets.sort();
    (users, buckets)
}

/// What the page shows after `snapshot`, given what it showed and the snapshot before.
fn next_shown(mut shown: Shown, previous: Option<&Snapshot>, snapshot: &Snapshot) -> Shown {
    shown.at = snapshot.at;
    shown.quorum = snapshot.map.is_some();
    let Some(map) = snapshot.map.as_ref() else {
        // No quorum: the last state stays, marked stale.
        return shown;
    };
    let current = status(snapshot);
    if let Some(before) = previous {
        for event in events(before, snapshot) {
            shown.events.push_back((snapshot.at, event));
        }
    }
    while shown.events.len() > EVENTS {
        shown.events.pop_front();
    }
    shown.history.push_back((
        snapshot.at,
        current.io.read_bytes_per_sec,
        current.io.write_bytes_per_sec,
        current.recovery.bytes_per_sec,
    ));
    while shown.history.len() > HISTORY {
        shown.history.pop_front();
    }
    shown.status = serde_json::to_value(&current).unwrap_or_default();
    shown.tree = serde_json::to_value(tree(map)).unwrap_or_default();
    shown.df = serde_json::to_value(df(snapshot)).unwrap_or_default();
    shown
}

/// The dashboard's address recorded in the cluster folder, when one runs.
pub fn recorded(dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(dir.join(DASHBOARD_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; tidepool_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(session_token(&headers).as_deref(), Some("abc"));
        assert_eq!(session_token(&HeaderMap::new()), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }

    #[test]
    fn the_shown_state_keeps_bounded_history_and_the_last_state_without_quorum() {
        let map = tidepool_state::testing::four_osd_map(8);
        let snapshot = |at| Snapshot {
            map: Some(map.clone()),
            at,
            ..Snapshot::default()
        };
        let mut shown = Shown::default();
        let mut previous: Option<Snapshot> = None;
        for at in 0..(HISTORY as u64 + 10) {
            let now = snapshot(at);
            shown = next_shown(shown, previous.as_ref(), &now);
            previous = Some(now);
        }
        assert_eq!(shown.history.len(), HISTORY);
        assert!(shown.quorum);
        let lost = Snapshot {
            at: 9999,
            ..Snapshot::default()
        };
        let after = next_shown(shown.clone(), previous.as_ref(), &lost);
        assert!(!after.quorum);
        assert_eq!(after.status, shown.status, "the last state stays");
    }
}
