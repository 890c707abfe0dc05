//! The upstream connection's TCP stream, acknowledging what it reads without delay.
//!
//! Why: on a kept-alive upstream connection the kernel learns that we answer what we
//! receive (the next request follows each response) and starts delaying its ACKs, by
//! up to 40 ms, to send them with that next request. An origin that needs our ACK
//! before it sends the rest of a response then waits those 40 ms. With nginx serving
//! files (`sendfile`, `tcp_nopush`, Debian's defaults) as the origin on loopback, 0.6%
//! of cold 100 KB fetches did, and the p99 of every cold run was 41 ms against nginx's
//! 5 (README, "Performance"). `TCP_QUICKACK` sends the pending ACK now; the flag is
//! not sticky, so it is set again whenever a read has drained the socket, which is
//! when the origin may be waiting on us (see `poll_read` for when exactly).
//!
//! Writes, shutdown and what the pool learns of the connection (`Connection`) pass
//! through; a write only notes that it carried the ACK.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::GuardResolver;

/// A TCP stream that acknowledges what it read once it has drained the socket (see the
/// module comment).
#[derive(Debug)]
pub struct QuickAckStream {
    tcp: TcpStream,
    /// Bytes were read, by reads that filled their buffer, since the last ACK asked
    /// for or sent with our own data.
    unacked: bool,
}

impl QuickAckStream {
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            unacked: false,
        }
    }

    /// What we send carries the ACK of everything received so far.
    fn sent(&mut self, written: io::Result<usize>) -> io::Result<usize> {
        if written.as_ref().is_ok_and(|&n| n > 0) {
            self.unacked = false;
        }
        written
    }

    /// The pending ACK goes out now. A failure only means the ACK keeps its timer,
    /// as without this type: nothing to report.
    fn ack_now(&mut self) {
        self.unacked = false;
        #[cfg(target_os = "linux")]
        let _ = rustix::net::sockopt::set_tcp_quickack(&self.tcp, true);
    }
}

impl AsyncRead for QuickAckStream {
    /// Asks for the ACK only when the next read would wait: after a read shorter than
    /// the room it had (the socket is drained), or when a read finds nothing after
    /// reads that filled their buffer. A read that fills its buffer most likely left
    /// more queued, and the caller reads again at once: rustls reads 4 KB at a time,
    /// so acknowledging every read would cost an https body one system call per 4 KB.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (before, room) = (buf.filled().len(), buf.remaining());
        let this = &mut *self;
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read == room {
                    this.unacked = true;
                } else if read > 0 {
                    this.ack_now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.unacked {
                    this.ack_now();
                }
                Poll::Pending
            }
            err => err,
        }
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.tcp).poll_write(cx, buf));
        Poll::Ready(self.sent(written))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs));
        Poll::Ready(self.sent(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl Connection for QuickAckStream {
    fn connected(&self) -> Connected {
        self.tcp.connected()
    }
}

/// The guarded `HttpConnector`, handing out [`QuickAckStream`]s. TLS, when the URL
/// asks for it, is layered on top by hyper-rustls, so https upstreams get it too.
#[derive(Debug, Clone)]
pub struct QuickAckConnector(pub HttpConnector<GuardResolver>);

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<QuickAckStream>, ConnectError>> + Send + 'static>>;
type ConnectError = <HttpConnector<GuardResolver> as tower::Service<Uri>>::Error;

impl tower::Service<Uri> for QuickAckConnector {
    type Response = TokioIo<QuickAckStream>;
    type Error = ConnectError;
    // Boxed: one allocation per new connection, not per request.
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.0.call(dst);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(TokioIo::new(QuickAckStream::new(io.into_inner())))
        })
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Whether the kernel would acknowledge at once (`TCP_QUICKACK` reads back 1 when
    /// the socket is not in its delayed-ACK "ping-pong" mode).
    fn acks_at_once(s: &TcpStream) -> bool {
        rustix::net::sockopt::tcp_quickack(s).unwrap()
    }

    /// A connection to an origin that answers each 4-byte request with 1,000 bytes,
    /// and keeps it open until the client is done.
    async fn origin() -> (TcpStream, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 4];
            while s.read_exact(&mut req).await.is_ok() {
                s.write_all(&[7u8; 1000]).await.unwrap();
            }
        });
        (TcpStream::connect(addr).await.unwrap(), origin)
    }

    /// Request and response twice, each request sent right after the previous
    /// response arrived: what teaches the kernel to delay its ACKs. Each response is
    /// read into `room` bytes of buffer at a time, until its 1,000 bytes are in (the
    /// origin sends nothing more before the next request, so no read takes more).
    async fn exchange_twice(c: &mut (impl AsyncRead + AsyncWrite + Unpin), room: usize) {
        let mut buf = vec![0u8; room];
        for _ in 0..2 {
            c.write_all(b"GET ").await.unwrap();
            let mut got = 0;
            while got < 1000 {
                got += c.read(&mut buf).await.unwrap();
            }
        }
    }

    /// Whether the client side acknowledges at once after two exchanges read as
    /// hyper reads, into a buffer larger than the answer.
    async fn after_two_exchanges(wrap: bool) -> bool {
        let (tcp, origin) = origin().await;
        let at_once = if wrap {
            let mut c = QuickAckStream::new(tcp);
            exchange_twice(&mut c, 4096).await;
            acks_at_once(&c.tcp)
        } else {
            let mut c = tcp;
            exchange_twice(&mut c, 4096).await;
            acks_at_once(&c)
        };
        origin.abort();
        at_once
    }

    #[tokio::test]
    async fn reads_leave_the_socket_acknowledging_at_once() {
        // The control: a plain stream is in delayed-ACK mode after the same exchanges,
        // so the assertion below is about this type, not about the kernel's default.
        assert!(
            !after_two_exchanges(false).await,
            "a plain stream should have entered delayed-ACK mode"
        );
        assert!(after_two_exchanges(true).await);
    }

    #[tokio::test]
    async fn a_read_that_fills_its_buffer_acknowledges_when_the_next_one_waits() {
        let (tcp, origin) = origin().await;
        let mut c = QuickAckStream::new(tcp);
        // Buffers exactly the size of each answer: every read fills its buffer.
        exchange_twice(&mut c, 1000).await;
        assert!(
            !acks_at_once(&c.tcp),
            "no ACK asked for while more may be queued"
        );
        // Nothing more comes: the next read waits, and asks for the ACK first. Polled
        // once, not waited on: after 40 ms the kernel's own timer would send the ACK
        // and leave delayed-ACK mode, and this test would pass without us.
        let mut buf = [0u8; 16];
        let mut buf = ReadBuf::new(&mut buf);
        let waits = std::future::poll_fn(|cx| {
            Poll::Ready(Pin::new(&mut c).poll_read(cx, &mut buf).is_pending())
        })
        .await;
        assert!(waits, "the origin sent nothing more");
        assert!(acks_at_once(&c.tcp));
        origin.abort();
    }

    #[tokio::test]
    async fn bytes_pass_through_both_ways() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = body.clone();
        let origin = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 5];
            s.read_exact(&mut req).await.unwrap();
            assert_eq!(&req, b"hello");
            s.write_all(&sent).await.unwrap();
        });
        let mut c = QuickAckStream::new(TcpStream::connect(addr).await.unwrap());
        c.write_all(b"hello").await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        origin.await.unwrap();
        assert_eq!(got, body);
    }
}
