//! The ext_authz listener's first-bytes timeout (TCP, TCP with mTLS, or a Unix socket): a
//! connection must finish its TLS handshake (with `listen.authz_tls`) and send the HTTP/2 client
//! preface within `listen.handshake_timeout`, or it is closed.
//!
//! tonic has no such timeout, so a client that connects and sends nothing (or half a
//! preface) would hold a connection — and, on SIGTERM, the process — for as long as it likes.
//! Each accepted socket reads its 24-byte preface in its own task; only sockets that
//! delivered it reach the gRPC server, which is handed the preface back first. Once the
//! preface is in, the kernel's TCP keep-alive looks after idle TCP connections (Envoy keeps
//! its connections open between Checks, which is what we want); HTTP/2 pings only when
//! `listen.authz_http2_keepalive` asks for them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo, UdsConnectInfo};

use crate::server_tls::ReloadingTls;

/// Probes after 30 s without traffic, every 10 s, 3 unanswered close the connection: a peer
/// that vanished (its host gone, a network cut) is noticed within a minute, by the kernel.
const TCP_KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(30))
    .with_interval(Duration::from_secs(10))
    .with_retries(3);

/// A listener ext_authz can serve on: TCP, TCP with mTLS, or a Unix socket.
pub(crate) trait AuthzListener: Send + 'static {
    /// The accepted connection, before any handshake.
    type Socket: Send + 'static;
    /// The connection the gRPC server reads (after TLS, when there is TLS).
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Accepts one connection.
    fn accept_socket(&self) -> impl Future<Output = io::Result<Self::Socket>> + Send;
    /// Its handshake, run in the connection's own task within the timeout.
    fn open(
        &self,
        socket: Self::Socket,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static;
}

impl AuthzListener for TcpListener {
    type Socket = TcpStream;
    type Stream = TcpStream;
    async fn accept_socket(&self) -> io::Result<TcpStream> {
        let (socket, _) = self.accept().await?;
        let _ = socket.set_nodelay(true);
        let _ = socket2::SockRef::from(&socket).set_tcp_keepalive(&TCP_KEEPALIVE);
        Ok(socket)
    }
    fn open(
        &self,
        socket: TcpStream,
    ) -> impl Future<Output = io::Result<TcpStream>> + Send + 'static {
        std::future::ready(Ok(socket))
    }
}

impl AuthzListener for UnixListener {
    type Socket = UnixStream;
    type Stream = UnixStream;
    async fn accept_socket(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(socket, _)| socket)
    }
    fn open(
        &self,
        socket: UnixStream,
    ) -> impl Future<Output = io::Result<UnixStream>> + Send + 'static {
        std::future::ready(Ok(socket))
    }
}

/// TCP with `listen.authz_tls`: the caller must present a certificate chaining to its CA.
pub(crate) struct MutualTlsListener {
    pub(crate) tcp: TcpListener,
    pub(crate) tls: Arc<ReloadingTls>,
}

impl AuthzListener for MutualTlsListener {
    type Socket = TcpStream;
    type Stream = TlsStream<TcpStream>;
    fn accept_socket(&self) -> impl Future<Output = io::Result<TcpStream>> + Send {
        self.tcp.accept_socket()
    }
    fn open(
        &self,
        socket: TcpStream,
    ) -> impl Future<Output = io::Result<TlsStream<TcpStream>>> + Send + 'static {
        self.tls.acceptor().accept(socket)
    }
}

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Accepted connections that finished their handshake and opened with the HTTP/2 preface
/// within `timeout`, ready for `serve_with_incoming`. Accepting stops when the returned stream
/// is dropped.
pub(crate) fn prefaced<L: AuthzListener>(
    listener: L,
    timeout: Duration,
) -> impl futures_util::Stream<Item = io::Result<Prefaced<L::Stream>>> {
    let (ready, mut incoming) = mpsc::channel::<Prefaced<L::Stream>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept_socket() => accepted,
                () = ready.closed() => return,
            };
            let socket = match accepted {
                Ok(socket) => socket,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "ext_authz: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ready = ready.clone();
            let opened = listener.open(socket);
            tokio::spawn(async move {
                let handshake_then_preface = async move {
                    let stream = opened.await.map_err(|e| {
                        tracing::debug!(error = %e, "ext_authz: TLS handshake failed");
                        "the TLS handshake failed (no client certificate, or one the CA did not sign?)"
                    })?;
                    read_preface(stream).await
                };
                match tokio::time::timeout(timeout, handshake_then_preface).await {
                    Ok(Ok(prefaced)) => {
                        let _ = ready.send(prefaced).await;
                    }
                    Ok(Err(reason)) => {
                        tracing::debug!(%reason, "ext_authz: connection closed before serving")
                    }
                    Err(_) => tracing::debug!(
                        ?timeout,
                        "ext_authz: no HTTP/2 preface within listen.handshake_timeout; closed"
                    ),
                }
            });
        }
    });
    futures_util::stream::poll_fn(move |cx| incoming.poll_recv(cx).map(|next| next.map(Ok)))
}

/// The TCP listener's gate on its own: what `serve` puts in front of ext_authz, for the load
/// benchmark's row that prices it on the no-op server (docs/benchmarks.md).
#[doc(hidden)]
pub fn prefaced_tcp(
    listener: TcpListener,
    timeout: Duration,
) -> impl futures_util::Stream<
    Item = io::Result<
        impl AsyncRead + AsyncWrite + Connected<ConnectInfo = TcpConnectInfo> + Unpin + Send + 'static,
    >,
> {
    prefaced(listener, timeout)
}

async fn read_preface<S: AsyncRead + Unpin>(mut socket: S) -> Result<Prefaced<S>, &'static str> {
    let mut preface = [0u8; 24];
    socket
        .read_exact(&mut preface)
        .await
        .map_err(|_| "the peer closed before the HTTP/2 preface")?;
    if &preface != PREFACE {
        return Err("not an HTTP/2 preface (is the cluster configured for HTTP/2?)");
    }
    Ok(Prefaced {
        socket,
        replayed: 0,
    })
}

/// A socket whose preface was read off; it is handed back before the rest of the stream.
pub(crate) struct Prefaced<S> {
    socket: S,
    /// How much of the preface the server has read back.
    replayed: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefaced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.replayed < PREFACE.len() {
            let rest = &PREFACE[self.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefaced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

impl Connected for Prefaced<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.socket.connect_info()
    }
}

impl Connected for Prefaced<TlsStream<TcpStream>> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.socket.get_ref().0.connect_info()
    }
}

impl Connected for Prefaced<UnixStream> {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.socket.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    async fn listening() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn silent_and_half_preface_connections_are_closed_after_the_timeout() {
        let (listener, addr) = listening().await;
        let incoming = prefaced(listener, Duration::from_millis(200));
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(&PREFACE[..10]).await.unwrap();
        for socket in [&mut silent, &mut half] {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut byte))
                .await
                .expect("the sidecar closes the connection");
            assert!(matches!(read, Ok(0) | Err(_)), "closed, not answered");
        }
        drop(incoming);
    }

    #[tokio::test]
    async fn a_prefaced_connection_is_served_with_its_preface_replayed() {
        let (listener, addr) = listening().await;
        let mut incoming = Box::pin(prefaced(listener, Duration::from_millis(200)));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"frames").await.unwrap();
        let mut served = incoming.next().await.unwrap().unwrap();
        let mut seen = [0u8; 30];
        served.read_exact(&mut seen).await.unwrap();
        assert_eq!(&seen[..24], PREFACE);
        assert_eq!(&seen[24..], b"frames");
    }
}
