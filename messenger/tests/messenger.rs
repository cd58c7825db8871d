//! The messenger over real QUIC on loopback: mutual TLS, framing, garbage, reconnection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidepool_messenger::{
    ClusterCa, Identity, Messenger, MessengerConfig, MessengerError, Peer, Service,
};
use tidepool_proto::{Payload, RemoteErrorCode, Reply};
use tokio::sync::mpsc;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Request {
    Echo(Payload),
    Note(String),
    IsEntity(String),
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Response {
    Echoed(Payload),
    Noted,
    Is(bool),
}

/// Echoes requests and forwards one-way notes to a channel.
struct EchoService {
    notes: mpsc::UnboundedSender<String>,
}

impl Service for EchoService {
    type Request = Request;
    type Response = Response;

    async fn call(&self, peer: Peer, request: Request) -> Reply<Response> {
        Ok(match request {
            Request::Echo(bytes) => Response::Echoed(bytes),
            Request::Note(_) => Response::Noted,
            Request::IsEntity(entity) => Response::Is(peer.is_entity(&entity)),
        })
    }

    async fn notify(&self, _peer: Peer, message: Request) {
        if let Request::Note(note) = message {
            let _ = self.notes.send(note);
        }
    }
}

struct Cluster {
    ca: ClusterCa,
}

impl Cluster {
    fn new(id: &str) -> Cluster {
        Cluster {
            ca: ClusterCa::generate(id).expect("CA"),
        }
    }

    fn identity(&self, entity: &str) -> Identity {
        let (cert, key) = self.ca.issue(entity).expect("certificate");
        Identity::from_pem(
            self.ca.cluster_id(),
            entity,
            self.ca.cert_pem(),
            &cert,
            &key,
        )
        .expect("identity")
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn quick() -> MessengerConfig {
    MessengerConfig {
        request_timeout: Duration::from_secs(5),
        ..MessengerConfig::default()
    }
}

async fn start_server(
    cluster: &Cluster,
    addr: SocketAddr,
) -> (Messenger, mpsc::UnboundedReceiver<String>) {
    let identity = cluster.identity("osd-0");
    // A restarted server may find its port still held for a moment by the old socket's last
    // task; retry like a restarting daemon, within a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let server = loop {
        match Messenger::bind(addr, &identity, quick()) {
            Ok(server) => break server,
            Err(error) if std::time::Instant::now() > deadline => panic!("bind: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (notes, received) = mpsc::unbounded_channel();
    server.serve(Arc::new(EchoService { notes }));
    (server, received)
}

/// Rule: members of one cluster exchange requests, replies and one-way messages.
#[tokio::test]
async fn request_reply_and_one_way() {
    let cluster = Cluster::new("c0ffee");
    let (server, mut notes) = start_server(&cluster, loopback()).await;
    let client =
        Messenger::bind(loopback(), &cluster.identity("client-admin"), quick()).expect("bind");
    let addr = server.local_addr();

    let big = vec![7u8; 4 << 20];
    let reply: Response = client
        .call(addr, "osd-0", &Request::Echo(big.clone().into()))
        .await
        .expect("call");
    assert_eq!(reply, Response::Echoed(big.into()));

    client
        .send(addr, "osd-0", &Request::Note("hello".into()))
        .await
        .expect("send");
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("in time");
    assert_eq!(note.as_deref(), Some("hello"));

    client.shutdown().await;
    server.shutdown().await;
}

/// Rule: a peer whose certificate is not signed by the cluster CA is refused, in both
/// directions, and so is a server presenting another entity's name.
#[tokio::test]
async fn foreign_certificates_are_refused() {
    let cluster = Cluster::new("c0ffee");
    let stranger = Cluster::new("c0ffee");
    let (server, _notes) = start_server(&cluster, loopback()).await;
    let addr = server.local_addr();

    // A client with a certificate from another CA (same cluster id, even).
    let intruder =
        Messenger::bind(loopback(), &stranger.identity("client-admin"), quick()).expect("bind");
    let result: Result<Response, _> = intruder
        .call(addr, "osd-0", &Request::Echo(vec![1].into()))
        .await;
    assert!(result.is_err(), "a foreign client must be refused");

    // A genuine client talking to an impostor server.
    let (impostor, _) = start_server(&stranger, loopback()).await;
    let client =
        Messenger::bind(loopback(), &cluster.identity("client-admin"), quick()).expect("bind");
    let result: Result<Response, _> = client
        .call(
            impostor.local_addr(),
            "osd-0",
            &Request::Echo(vec![1].into()),
        )
        .await;
    assert!(
        matches!(result, Err(MessengerError::Connection { .. })),
        "{result:?}"
    );

    // The right server, asked for under another entity's name.
    let result: Result<Response, _> = client
        .call(addr, "osd-1", &Request::Echo(vec![1].into()))
        .await;
    assert!(
        matches!(result, Err(MessengerError::Connection { .. })),
        "{result:?}"
    );

    // And the right server under its own name works.
    let ok: Response = client
        .call(addr, "osd-0", &Request::Echo(vec![1].into()))
        .await
        .expect("call");
    assert_eq!(ok, Response::Echoed(vec![1].into()));
}

/// Rule: garbage, truncated and oversized frames, and a frame followed by more bytes, get an
/// error on that stream; the server keeps serving.
#[tokio::test]
async fn garbage_gets_an_error_not_a_crash() {
    let cluster = Cluster::new("c0ffee");
    let (server, _notes) = start_server(&cluster, loopback()).await;
    let addr = server.local_addr();
    let identity = cluster.identity("client-admin");

    let mut endpoint = quinn::Endpoint::client(loopback()).expect("endpoint");
    endpoint.set_default_client_config(identity.client_config().expect("config"));
    let connection = endpoint
        .connect(
            addr,
            &tidepool_messenger::tls::server_name("osd-0", "c0ffee"),
        )
        .expect("connect")
        .await
        .expect("handshake");

    let valid = tidepool_proto::encode_frame(
        tidepool_proto::FrameKind::Request,
        &Request::Echo(vec![1, 2, 3].into()),
        1 << 20,
    )
    .expect("frame")
    .to_vec();
    let header = tidepool_proto::FRAME_HEADER_BYTES;
    let mut oversized = valid.clone();
    oversized[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_body = valid[..header].to_vec();
    bad_body.extend(std::iter::repeat_n(0xc1u8, valid.len() - header)); // 0xc1 is never valid msgpack
                                                                        // A payload said to lie beyond the frame's (empty) data section.
    #[derive(Serialize)]
    enum Forged {
        Echo((u64, u64)),
    }
    let bad_payload = tidepool_proto::encode_frame(
        tidepool_proto::FrameKind::Request,
        &Forged::Echo((1 << 40, 4)),
        1 << 20,
    )
    .expect("frame")
    .to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes",
            b"GET / HTTP/1.1\r\n\r\nxxxxxxxxxxxxxxxxxxxxx".to_vec(),
        ),
        ("truncated header", valid[..5].to_vec()),
        ("truncated body", valid[..valid.len() - 1].to_vec()),
        ("bytes after the frame", [&valid[..], b"x"].concat()),
        ("oversized", oversized),
        ("malformed body", bad_body),
        ("payload outside the data section", bad_payload),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in cases {
        let (mut send, mut recv) = connection.open_bi().await.expect("stream");
        send.write_all(&bytes).await.expect("write");
        send.finish().expect("finish");
        let answer = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20))
            .await
            .unwrap_or_else(|_| panic!("{name}: the server must answer, not hang"));
        let answer = answer.unwrap_or_else(|e| panic!("{name}: {e}"));
        let reply: Reply<Response> =
            tidepool_proto::decode_body(&answer[header..]).expect("a reply frame");
        let error = reply.expect_err(name);
        assert_eq!(error.code, RemoteErrorCode::BadRequest, "{name}");
    }
    // One-way garbage is dropped quietly.
    let mut send = connection.open_uni().await.expect("stream");
    send.write_all(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
        .await
        .expect("write");
    send.finish().expect("finish");

    let client = Messenger::bind(loopback(), &identity, quick()).expect("bind");
    let ok: Response = client
        .call(addr, "osd-0", &Request::Echo(vec![9].into()))
        .await
        .expect("still serving");
    assert_eq!(ok, Response::Echoed(vec![9].into()));
}

/// Rule: after a peer restarts on the same address, the next request reconnects by itself.
#[tokio::test]
async fn reconnects_after_the_peer_restarts() {
    let cluster = Cluster::new("c0ffee");
    let (server, _notes) = start_server(&cluster, loopback()).await;
    let addr = server.local_addr();
    let client =
        Messenger::bind(loopback(), &cluster.identity("client-admin"), quick()).expect("bind");
    let first: Response = client
        .call(addr, "osd-0", &Request::Echo(vec![1].into()))
        .await
        .expect("call");
    assert_eq!(first, Response::Echoed(vec![1].into()));

    server.shutdown().await;
    drop(server);
    let (restarted, _notes) = start_server(&cluster, addr).await;
    let again: Response = client
        .call(addr, "osd-0", &Request::Echo(vec![2].into()))
        .await
        .expect("reconnects");
    assert_eq!(again, Response::Echoed(vec![2].into()));
    restarted.shutdown().await;
}

/// Rule: a request to a peer that is not there fails within the timeout instead of hanging.
#[tokio::test]
async fn silent_peer_times_out() {
    let cluster = Cluster::new("c0ffee");
    let silent = std::net::UdpSocket::bind(loopback()).expect("udp");
    let config = MessengerConfig {
        request_timeout: Duration::from_millis(500),
        ..MessengerConfig::default()
    };
    let client =
        Messenger::bind(loopback(), &cluster.identity("client-admin"), config).expect("bind");
    let result: Result<Response, _> = client
        .call(
            silent.local_addr().expect("addr"),
            "osd-0",
            &Request::Echo(vec![1].into()),
        )
        .await;
    assert!(
        matches!(result, Err(MessengerError::Timeout(_))),
        "{result:?}"
    );
}
