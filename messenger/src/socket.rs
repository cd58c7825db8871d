//! The UDP socket under the QUIC endpoint: large kernel buffers, and datagrams as large as the
//! path allows, up to the 64 KiB an IP packet can hold.
//!
//! Most of QUIC's cost is per packet (header protection, an AEAD seal or open, packet-number
//! and acknowledgement bookkeeping), so bulk transfers cost less CPU the larger the datagrams.
//! Path MTU discovery climbs to [`UDP_PAYLOAD_BYTES_MAX`]: on loopback it gets there, on a
//! jumbo-frame LAN it settles near 8,972 bytes and on an ordinary LAN near 1,472.
//!
//! quinn hands the socket up to 10 datagrams at once for segmentation offload, and the kernel
//! refuses any one send above 64 KiB. [`LargeDatagramSocket`] therefore splits a batch into
//! sends of at most [`UDP_PAYLOAD_BYTES_MAX`] bytes: ten 1,472-byte datagrams still go in one
//! system call, ten 65,000-byte ones in ten.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tracing::warn;

/// The largest UDP payload one send may carry, as one datagram or as a segmentation batch:
/// an IPv4 packet's 65,535 bytes less the IP and UDP headers.
pub const UDP_PAYLOAD_BYTES_MAX: u16 = 65_535 - 20 - 8;

/// Socket buffers asked of the kernel. The default (about 200 KiB) overflows under bulk QUIC
/// traffic even on loopback, and every dropped datagram costs a retransmission and stalls path
/// MTU discovery. The kernel caps the request at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// A UDP socket bound to `addr` with enlarged buffers.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(error) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        warn!(%error, "cannot enlarge the UDP receive buffer");
    }
    if let Err(error) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        warn!(%error, "cannot enlarge the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// quinn's socket, with every batch sent in pieces the kernel accepts.
#[derive(Debug)]
pub struct LargeDatagramSocket(Arc<dyn AsyncUdpSocket>);

impl LargeDatagramSocket {
    /// Wraps the socket quinn's runtime made.
    pub fn new(socket: Arc<dyn AsyncUdpSocket>) -> LargeDatagramSocket {
        LargeDatagramSocket(socket)
    }
}

impl AsyncUdpSocket for LargeDatagramSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    /// Sends the batch in pieces. A piece after the first that would block is dropped with the
    /// rest, as a full socket buffer drops datagrams: QUIC's loss recovery resends them.
    /// Reporting it as blocked instead would make quinn resend the pieces already sent.
    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(segment) = transmit.segment_size else {
            return self.0.try_send(transmit);
        };
        for (index, piece) in send_pieces(transmit.contents.len(), segment).enumerate() {
            let contents = &transmit.contents[piece];
            let piece = Transmit {
                contents,
                segment_size: (contents.len() > segment).then_some(segment),
                ..transmit.clone()
            };
            match self.0.try_send(&piece) {
                Ok(()) => {}
                Err(error) if index > 0 && error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.0.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.0.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}

/// The byte ranges a batch of `len` bytes in `segment`-byte datagrams is sent in: as many
/// whole datagrams per send as fit in [`UDP_PAYLOAD_BYTES_MAX`], at least one.
fn send_pieces(len: usize, segment: usize) -> impl Iterator<Item = Range<usize>> {
    let segment = segment.max(1);
    let step = (usize::from(UDP_PAYLOAD_BYTES_MAX) / segment).max(1) * segment;
    (0..len)
        .step_by(step)
        .map(move |start| start..len.min(start + step))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(len: usize, segment: usize) -> Vec<Range<usize>> {
        send_pieces(len, segment).collect()
    }

    #[test]
    fn small_datagrams_go_in_one_send() {
        assert_eq!(pieces(14_720, 1_472), vec![0..14_720]);
        assert_eq!(pieces(14_000, 1_472), vec![0..14_000]);
    }

    #[test]
    fn batches_over_64_kib_are_split_at_datagram_boundaries() {
        assert_eq!(pieces(65_000, 6_500), vec![0..65_000]);
        assert_eq!(pieces(90_000, 9_000), vec![0..63_000, 63_000..90_000]);
        assert_eq!(
            pieces(3 * 65_000 - 10, 65_000),
            vec![0..65_000, 65_000..130_000, 130_000..194_990]
        );
        for (len, segment) in [(650_000, 65_000), (89_000, 9_000), (100, 1)] {
            let all = pieces(len, segment);
            assert_eq!(all.first().map(|r| r.start), Some(0));
            assert_eq!(all.last().map(|r| r.end), Some(len));
            for piece in &all {
                assert!(piece.len() <= usize::from(UDP_PAYLOAD_BYTES_MAX));
                assert!(piece.start % segment == 0);
            }
        }
    }

    #[test]
    fn empty_batch_sends_nothing() {
        assert!(pieces(0, 1_472).is_empty());
    }
}
