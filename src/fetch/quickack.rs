//! The upstream connection's TCP stream, acknowledging what it reads at once.
//!
//! Why: on a kept-alive upstream connection the kernel learns that we answer what we
//! receive (the next request follows each response) and starts delaying its ACKs, by
//! up to 40 ms, to send them with that next request. An origin that needs our ACK
//! before it sends the rest of a response then waits those 40 ms. With nginx serving
//! files (`sendfile`, `tcp_nopush`, Debian's defaults) as the origin on loopback, 0.6%
//! of cold 100 KB fetches did, and the p99 of every cold run was 41 ms against nginx's
//! 5 (README, "Performance"). `TCP_QUICKACK` after each read that returned bytes sends
//! the pending ACK now; the flag is not sticky, which is why it is set per read and
//! not once per connection.
//!
//! Everything else passes through untouched: writes, shutdown, and what the pool
//! learns of the connection (`Connection`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::GuardResolver;

/// A TCP stream that acknowledges each read at once (see the module comment).
#[derive(Debug)]
pub struct QuickAckStream(TcpStream);

impl QuickAckStream {
    pub fn new(stream: TcpStream) -> Self {
        Self(stream)
    }

    /// The pending ACK goes out now. A failure only means the ACK keeps its timer,
    /// as without this type: nothing to report.
    fn ack_now(&self) {
        #[cfg(target_os = "linux")]
        let _ = rustix::net::sockopt::set_tcp_quickack(&self.0, true);
    }
}

impl AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.0).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.ack_now();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connection for QuickAckStream {
    fn connected(&self) -> Connected {
        self.0.connected()
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

    /// Request and response twice over one connection, each request sent right after
    /// the previous response arrived: what teaches the kernel to delay its ACKs.
    /// Returns whether the client side acknowledges at once after its last read.
    async fn after_two_exchanges(wrap: bool) -> bool {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 4];
            for _ in 0..2 {
                s.read_exact(&mut req).await.unwrap();
                s.write_all(&[7u8; 1000]).await.unwrap();
            }
            s
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut resp = vec![0u8; 1000];
        if wrap {
            let mut c = QuickAckStream::new(tcp);
            for _ in 0..2 {
                c.write_all(b"GET ").await.unwrap();
                c.read_exact(&mut resp).await.unwrap();
            }
            let _keep_open = origin.await.unwrap();
            acks_at_once(&c.0)
        } else {
            let mut c = tcp;
            for _ in 0..2 {
                c.write_all(b"GET ").await.unwrap();
                c.read_exact(&mut resp).await.unwrap();
            }
            let _keep_open = origin.await.unwrap();
            acks_at_once(&c)
        }
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
