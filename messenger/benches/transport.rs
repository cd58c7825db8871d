//! Transport benchmark: the QUIC messenger beside TLS 1.3 over TCP (tokio-rustls), same
//! certificates, same frame codec, same process, one run. Round trips of small messages, and
//! one-way throughput of 4 MiB messages (each request carries 4 MiB, the reply a few bytes).

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use tidepool_messenger::{ClusterCa, Identity, Messenger, MessengerConfig, Peer, Service};
use tidepool_proto::{
    decode_frame, encode_frame, Frame, FrameHeader, FrameKind, Payload, Reply, FRAME_HEADER_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const LIMIT: u32 = 64 << 20;

#[derive(Serialize, Deserialize)]
struct Put(Payload);

struct Sink;

impl Service for Sink {
    type Request = Put;
    type Response = u64;
    async fn call(&self, _peer: Peer, request: Put) -> Reply<u64> {
        Ok(request.0.len() as u64)
    }
    async fn notify(&self, _peer: Peer, _message: Put) {}
}

fn identities() -> (Identity, Identity) {
    let ca = ClusterCa::generate("bench").expect("CA");
    let make = |entity: &str| {
        let (cert, key) = ca.issue(entity).expect("cert");
        Identity::from_pem("bench", entity, ca.cert_pem(), &cert, &key).expect("identity")
    };
    (make("osd-0"), make("client-admin"))
}

/// Reads one frame and decodes it; `None` when the stream has ended.
async fn read_message<S, T>(stream: &mut S) -> Option<T>
where
    S: AsyncReadExt + Unpin,
    T: serde::de::DeserializeOwned,
{
    let mut header = [0u8; FRAME_HEADER_BYTES];
    stream.read_exact(&mut header).await.ok()?;
    let header = FrameHeader::parse(&header, LIMIT).expect("valid header");
    let mut body = vec![0u8; header.body_bytes as usize];
    stream.read_exact(&mut body).await.expect("body");
    let mut data = vec![0u8; header.data_bytes as usize];
    stream.read_exact(&mut data).await.expect("data");
    Some(decode_frame(&body, vec![data.into()]).expect("message"))
}

async fn write_frame<S: AsyncWriteExt + Unpin>(stream: &mut S, frame: &Frame) {
    for chunk in frame.chunks() {
        stream.write_all(&chunk).await.expect("write");
    }
    stream.flush().await.expect("flush");
}

/// A TLS-over-TCP echo of the same protocol: one request frame in, one reply frame out.
async fn tcp_server(server_tls: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(server_tls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).expect("nodelay");
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.expect("handshake");
                while let Some(Put(bytes)) = read_message(&mut tls).await {
                    let reply: Reply<u64> = Ok(bytes.len() as u64);
                    let frame = encode_frame(FrameKind::Reply, &reply, LIMIT).expect("frame");
                    write_frame(&mut tls, &frame).await;
                }
            });
        }
    });
    addr
}

fn transport(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (server_id, client_id) = identities();
    let (server_tls, _) = server_id.rustls_configs().expect("rustls");
    let (_, client_tls) = client_id.rustls_configs().expect("rustls");

    let (quic, addr, mut tcp) = runtime.block_on(async {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server =
            Messenger::bind(loopback, &server_id, MessengerConfig::default()).expect("bind");
        server.serve(Arc::new(Sink));
        let client =
            Messenger::bind(loopback, &client_id, MessengerConfig::default()).expect("bind");
        let addr = server.local_addr();
        std::mem::forget(server);
        let tcp_addr = tcp_server(server_tls).await;
        let tcp = TcpStream::connect(tcp_addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let name = rustls::pki_types::ServerName::try_from("osd-0.bench.tidepool").expect("name");
        let tls = TlsConnector::from(client_tls)
            .connect(name, tcp)
            .await
            .expect("handshake");
        (client, addr, tls)
    });

    for (label, bytes) in [("small_64B", 64usize), ("4MiB", 4 << 20)] {
        let mut group = c.benchmark_group(format!("round_trip_{label}"));
        group.throughput(Throughput::Bytes(bytes as u64));
        if bytes > 4096 {
            group.sample_size(30);
        }
        let payload = Put(vec![0xa5; bytes].into());
        let frame = encode_frame(FrameKind::Request, &payload, LIMIT).expect("frame");
        group.bench_function("quic_messenger", |b| {
            b.to_async(&runtime).iter(|| async {
                let n: u64 = quic.call(addr, "osd-0", &payload).await.expect("call");
                assert_eq!(n as usize, bytes);
            })
        });
        group.bench_function("tls_over_tcp", |b| {
            b.iter(|| {
                runtime.block_on(async {
                    write_frame(&mut tcp, &frame).await;
                    let reply: Reply<u64> = read_message(&mut tcp).await.expect("reply");
                    assert_eq!(reply.expect("ok") as usize, bytes);
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, transport);
criterion_main!(benches);
