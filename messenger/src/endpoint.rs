//! The messenger: one QUIC endpoint per process that both serves and sends.
//!
//! Each request travels on a fresh bidirectional stream (one request frame, one reply frame),
//! so requests never wait behind each other; one-way messages use a unidirectional stream.
//! Connections are cached per peer and replaced when they die (a restarted peer answers the old
//! connection with a stateless reset).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tidepool_proto::{
    decode_frame, encode_frame, Frame, FrameError, FrameHeader, FrameKind, RemoteError,
    RemoteErrorCode, Reply, FRAME_HEADER_BYTES,
};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::socket;
use crate::tls::{server_name, Identity, TlsError};

/// Limits and timeouts of a messenger.
#[derive(Clone, Debug)]
pub struct MessengerConfig {
    /// Largest message body accepted or sent.
    pub body_bytes_max: u32,
    /// Requests this messenger may have outstanding at once, over all peers.
    pub requests_in_flight_max: usize,
    /// Incoming requests handled at once; more wait for a slot.
    pub handlers_max: usize,
    /// How long a request may take, connection included.
    pub request_timeout: Duration,
}

impl Default for MessengerConfig {
    fn default() -> MessengerConfig {
        MessengerConfig {
            body_bytes_max: 64 << 20,
            requests_in_flight_max: 1024,
            handlers_max: 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a message could not be delivered or answered.
#[derive(Debug, thiserror::Error)]
pub enum MessengerError {
    /// The TLS identity could not be turned into a configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// A connection could not be started (bad address or name).
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// What failed.
        source: quinn::ConnectError,
    },
    /// The connection failed or was refused (including a failed TLS handshake).
    #[error("connection to {addr}: {source}")]
    Connection {
        /// The peer.
        addr: SocketAddr,
        /// What failed.
        source: quinn::ConnectionError,
    },
    /// The stream broke while writing.
    #[error("sending: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream broke while reading.
    #[error("receiving: {0}")]
    Read(#[from] quinn::ReadError),
    /// A frame was malformed, truncated or too large.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer answered with an error.
    #[error("peer refused the request: {0}")]
    Remote(#[from] RemoteError),
    /// No answer within the request timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The messenger is shutting down.
    #[error("the messenger is shut down")]
    Closed,
}

/// The sender of an incoming message, authenticated by its certificate.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its certificate (already verified against the cluster CA during the handshake).
    certificate: Option<CertificateDer<'static>>,
    cluster_id: Arc<str>,
}

impl Peer {
    /// Whether the peer's certificate names `entity` (`mon-0`, `client-admin`) of this cluster.
    /// Services authorise by this, never by what a message claims.
    pub fn is_entity(&self, entity: &str) -> bool {
        let Some(certificate) = &self.certificate else {
            return false;
        };
        let Ok(name) = ServerName::try_from(server_name(entity, &self.cluster_id)) else {
            return false;
        };
        webpki::EndEntityCert::try_from(certificate)
            .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
    }

    /// The entity its certificate names (`osd-3`, `gateway`), if it names one of this
    /// cluster. The certificate was checked against the cluster's CA in the handshake.
    pub fn entity(&self) -> Option<String> {
        use x509_parser::extensions::GeneralName;
        let (_, certificate) =
            x509_parser::parse_x509_certificate(self.certificate.as_ref()?).ok()?;
        let suffix = format!(".{}.tidepool", self.cluster_id);
        let names = certificate.subject_alternative_name().ok()??;
        names
            .value
            .general_names
            .iter()
            .find_map(|name| match name {
                GeneralName::DNSName(dns) => dns.strip_suffix(suffix.as_str()).map(str::to_owned),
                _ => None,
            })
    }
}

/// What a messenger serves: one request type, answered by one reply type.
pub trait Service: Send + Sync + 'static {
    /// Incoming requests and one-way messages.
    type Request: DeserializeOwned + Send;
    /// Replies.
    type Response: Serialize + Send;

    /// Answers a request.
    fn call(
        &self,
        peer: Peer,
        request: Self::Request,
    ) -> impl Future<Output = Reply<Self::Response>> + Send;

    /// Takes a one-way message.
    fn notify(&self, peer: Peer, message: Self::Request) -> impl Future<Output = ()> + Send;
}

/// One QUIC endpoint that serves a [`Service`] and sends requests to peers.
#[derive(Clone, Debug)]
pub struct Messenger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: quinn::Endpoint,
    cluster_id: String,
    config: MessengerConfig,
    connections: Mutex<HashMap<(SocketAddr, String), quinn::Connection>>,
    in_flight: Semaphore,
    /// The accept loop, joined on shutdown.
    serving: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Messenger {
    /// Binds a UDP socket on `addr` (port 0 picks a free one) with `identity`'s certificate.
    /// Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        config: MessengerConfig,
    ) -> Result<Messenger, MessengerError> {
        let bind_error = |source| MessengerError::Bind { addr, source };
        let runtime = Arc::new(quinn::TokioRuntime);
        let socket =
            quinn::Runtime::wrap_udp_socket(&*runtime, socket::bind(addr).map_err(bind_error)?)
                .map_err(bind_error)?;
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(identity.reset_key()));
        endpoint_config
            .max_udp_payload_size(socket::UDP_PAYLOAD_BYTES_MAX)
            .map_err(|_| bind_error(std::io::Error::other("invalid UDP payload limit")))?;
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(identity.server_config()?),
            Arc::new(socket::LargeDatagramSocket::new(socket)),
            runtime,
        )
        .map_err(bind_error)?;
        endpoint.set_default_client_config(identity.client_config()?);
        Ok(Messenger {
            inner: Arc::new(Inner {
                endpoint,
                cluster_id: identity.cluster_id.clone(),
                in_flight: Semaphore::new(config.requests_in_flight_max),
                config,
                connections: Mutex::new(HashMap::new()),
                serving: Mutex::new(None),
            }),
        })
    }

    /// The address this messenger listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves `service` until [`Messenger::shutdown`], which joins every task this starts.
    pub fn serve<S: Service>(&self, service: Arc<S>) {
        let endpoint = self.inner.endpoint.clone();
        let handlers = Arc::new(Semaphore::new(self.inner.config.handlers_max));
        let body_bytes_max = self.inner.config.body_bytes_max;
        let cluster_id: Arc<str> = self.inner.cluster_id.as_str().into();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Some(incoming) = endpoint.accept().await {
                let service = service.clone();
                let handlers = handlers.clone();
                let cluster_id = cluster_id.clone();
                connections.spawn(async move {
                    match incoming.await {
                        Ok(connection) => {
                            let peer = peer_of(&connection, cluster_id);
                            serve_connection(connection, peer, service, handlers, body_bytes_max)
                                .await
                        }
                        Err(error) => debug!(%error, "handshake failed"),
                    }
                });
                // Reap finished connections so the set stays as small as the live ones.
                while connections.try_join_next().is_some() {}
            }
            while connections.join_next().await.is_some() {}
        });
        let previous = self
            .inner
            .serving
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .replace(task);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// Sends `request` to `entity` at `addr` and waits for its reply, up to the configured
    /// request timeout.
    pub async fn call<Req, Resp>(
        &self,
        addr: SocketAddr,
        entity: &str,
        request: &Req,
    ) -> Result<Resp, MessengerError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.call_within(addr, entity, request, self.inner.config.request_timeout)
            .await
    }

    /// [`Messenger::call`] with its own timeout, for requests a peer may hold (subscriptions).
    pub async fn call_within<Req, Resp>(
        &self,
        addr: SocketAddr,
        entity: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, MessengerError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let frame = encode_frame(
            FrameKind::Request,
            request,
            self.inner.config.body_bytes_max,
        )?;
        let _permit = self
            .inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| MessengerError::Closed)?;
        let exchange = async {
            let (mut send, mut recv) = self.open(addr, entity, |c| Box::pin(c.open_bi())).await?;
            write_frame(&mut send, &frame).await?;
            // The peer may already have answered and closed; the reply below tells.
            let _ = send.finish();
            let reply: Reply<Resp> = read_message(
                &mut recv,
                FrameKind::Reply,
                self.inner.config.body_bytes_max,
            )
            .await?;
            Ok(reply?)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| MessengerError::Timeout(timeout))?
    }

    /// Sends a one-way `message` to `entity` at `addr`; returns once it is handed to QUIC.
    pub async fn send<M>(
        &self,
        addr: SocketAddr,
        entity: &str,
        message: &M,
    ) -> Result<(), MessengerError>
    where
        M: Serialize + ?Sized,
    {
        let frame = encode_frame(FrameKind::OneWay, message, self.inner.config.body_bytes_max)?;
        let timeout = self.inner.config.request_timeout;
        let exchange = async {
            let mut send = self.open(addr, entity, |c| Box::pin(c.open_uni())).await?;
            write_frame(&mut send, &frame).await?;
            let _ = send.finish();
            Ok(())
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| MessengerError::Timeout(timeout))?
    }

    /// Opens a stream to the peer on the cached connection, or on a new one when there is none
    /// or the cached one turns out to be dead (the peer restarted).
    async fn open<T, F>(&self, addr: SocketAddr, entity: &str, open: F) -> Result<T, MessengerError>
    where
        F: Fn(
            &quinn::Connection,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<T, quinn::ConnectionError>> + Send + '_>,
        >,
    {
        let key = (addr, entity.to_owned());
        let cached = self.lock_connections().get(&key).cloned();
        if let Some(connection) = cached {
            match open(&connection).await {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    debug!(%addr, %error, "cached connection is dead; reconnecting");
                    self.lock_connections().remove(&key);
                }
            }
        }
        let connection = self.connect(addr, entity).await?;
        self.lock_connections().insert(key, connection.clone());
        open(&connection)
            .await
            .map_err(|source| MessengerError::Connection { addr, source })
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        entity: &str,
    ) -> Result<quinn::Connection, MessengerError> {
        let name = server_name(entity, &self.inner.cluster_id);
        self.inner
            .endpoint
            .connect(addr, &name)
            .map_err(|source| MessengerError::Connect { addr, source })?
            .await
            .map_err(|source| MessengerError::Connection { addr, source })
    }

    fn lock_connections(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(SocketAddr, String), quinn::Connection>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes every connection and the socket, and waits until peers have been told.
    pub async fn shutdown(&self) {
        self.inner.in_flight.close();
        self.inner
            .endpoint
            .close(quinn::VarInt::from_u32(0), b"shutdown");
        self.lock_connections().clear();
        let serving = self
            .inner
            .serving
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = serving {
            let _ = task.await;
        }
        self.inner.endpoint.wait_idle().await;
    }
}

/// Hands the frame's pieces to QUIC as they are (the payloads' own buffers, no copy).
async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), MessengerError> {
    send.write_all_chunks(&mut frame.chunks()).await?;
    Ok(())
}

/// Reads one whole frame of `expected` kind and decodes its message; the header is checked
/// before anything else is read.
async fn read_message<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    expected: FrameKind,
    body_bytes_max: u32,
) -> Result<T, MessengerError> {
    let mut header = Vec::with_capacity(FRAME_HEADER_BYTES);
    read_into(recv, &mut header, FRAME_HEADER_BYTES).await?;
    let header: &[u8; FRAME_HEADER_BYTES] =
        header[..].try_into().map_err(|_| FrameError::Truncated)?;
    let header = FrameHeader::parse(header, body_bytes_max)?.expect(expected)?;
    // The header passed the size check, so these allocations are bounded.
    let mut body = Vec::with_capacity(header.body_bytes as usize);
    read_into(recv, &mut body, header.body_bytes as usize).await?;
    let data = read_data(recv, header.data_bytes as usize).await?;
    // The sender finishes the stream with the frame, so its end is already here. Reading it
    // also spares the sender a STOP_SENDING: a stream dropped before its end sends one, an
    // extra datagram per exchange.
    if recv.read_chunk(1, true).await?.is_some() {
        return Err(FrameError::Trailing.into());
    }
    Ok(decode_frame(&body, data)?)
}

/// Reads a frame's data section as the chunks QUIC received it in (no copy): a payload within
/// one chunk is a slice of it, and one spanning several keeps them as its pieces.
async fn read_data(recv: &mut quinn::RecvStream, len: usize) -> Result<Vec<Bytes>, MessengerError> {
    let mut chunks = Vec::new();
    let mut left = len;
    while left > 0 {
        match recv.read_chunk(left, true).await? {
            Some(chunk) => {
                left -= chunk.bytes.len();
                chunks.push(chunk.bytes);
            }
            None => return Err(FrameError::Truncated.into()),
        }
    }
    Ok(chunks)
}

/// Appends exactly `len` bytes from the stream to `buffer` (one copy of QUIC's chunks).
async fn read_into(
    recv: &mut quinn::RecvStream,
    buffer: &mut Vec<u8>,
    len: usize,
) -> Result<(), MessengerError> {
    for chunk in read_data(recv, len).await? {
        buffer.extend_from_slice(&chunk);
    }
    Ok(())
}

/// Who is at the other end of an accepted connection.
fn peer_of(connection: &quinn::Connection, cluster_id: Arc<str>) -> Peer {
    let certificate = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().cloned());
    Peer {
        addr: connection.remote_address(),
        certificate,
        cluster_id,
    }
}

async fn serve_connection<S: Service>(
    connection: quinn::Connection,
    peer: Peer,
    service: Arc<S>,
    handlers: Arc<Semaphore>,
    body_bytes_max: u32,
) {
    loop {
        tokio::select! {
            stream = connection.accept_bi() => {
                let Ok((send, recv)) = stream else { break };
                let Ok(permit) = handlers.clone().acquire_owned().await else { break };
                let (service, peer) = (service.clone(), peer.clone());
                tokio::spawn(async move {
                    handle_request(service, peer, send, recv, body_bytes_max).await;
                    drop(permit);
                });
            }
            stream = connection.accept_uni() => {
                let Ok(recv) = stream else { break };
                let Ok(permit) = handlers.clone().acquire_owned().await else { break };
                let (service, peer) = (service.clone(), peer.clone());
                tokio::spawn(async move {
                    handle_one_way(service, peer, recv, body_bytes_max).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn handle_request<S: Service>(
    service: Arc<S>,
    peer: Peer,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    body_bytes_max: u32,
) {
    let request = read_message::<S::Request>(&mut recv, FrameKind::Request, body_bytes_max).await;
    let reply: Reply<S::Response> = match request {
        Ok(request) => service.call(peer.clone(), request).await,
        Err(error) => {
            warn!(peer = %peer.addr, %error, "refusing a malformed request");
            // Stop reading whatever else the peer sends on this stream.
            let _ = recv.stop(quinn::VarInt::from_u32(1));
            Err(RemoteError {
                code: RemoteErrorCode::BadRequest,
                message: error.to_string(),
            })
        }
    };
    let frame = match encode_frame(FrameKind::Reply, &reply, body_bytes_max) {
        Ok(frame) => frame,
        Err(error) => {
            warn!(peer = %peer.addr, %error, "reply cannot be encoded");
            let failure: Reply<S::Response> = Err(RemoteError {
                code: RemoteErrorCode::Failed,
                message: format!("reply cannot be sent: {error}"),
            });
            match encode_frame(FrameKind::Reply, &failure, body_bytes_max) {
                Ok(frame) => frame,
                Err(_) => return,
            }
        }
    };
    if write_frame(&mut send, &frame).await.is_ok() {
        let _ = send.finish();
    }
}

async fn handle_one_way<S: Service>(
    service: Arc<S>,
    peer: Peer,
    mut recv: quinn::RecvStream,
    body_bytes_max: u32,
) {
    match read_message::<S::Request>(&mut recv, FrameKind::OneWay, body_bytes_max).await {
        Ok(message) => service.notify(peer, message).await,
        Err(error) => {
            warn!(peer = %peer.addr, %error, "dropping a malformed message");
            let _ = recv.stop(quinn::VarInt::from_u32(1));
        }
    }
}
