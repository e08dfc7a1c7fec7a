//! The side port's connections: plain HTTP/1.1 with a header timeout, or — with
//! `listen.http_tls` — TLS ([`ReloadingTls`]: files re-read when they change), and — with
//! `client_ca_file` — client
//! certificates verified against it and handed to `/exchange`. Clients without a certificate
//! are still served: the JWKS and discovery stay public.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::exchange::TlsClientCertificate;
use crate::server_tls::ReloadingTls;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` until `stopped`, over TLS when `tls` is set; each connection's verified
/// client certificate (if any) reaches the handlers as a request extension. A request's
/// headers must arrive within `header_timeout`, or the connection is closed.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ReloadingTls>>,
    header_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = stopped.changed() => match changed {
                Ok(()) if !*stopped.borrow() => continue,
                _ => return,
            }
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        let router = router.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                return serve_connection(tcp, router, header_timeout, stopped).await;
            };
            let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| TlsClientCertificate(leaf.to_vec()));
            let router = match peer {
                Some(peer) => router.layer(axum::Extension(peer)),
                None => router,
            };
            serve_connection(stream, router, header_timeout, stopped).await;
        });
    }
}

/// One HTTP/1.1 connection, closed when its headers are late or when the server stops.
async fn serve_connection<S>(
    stream: S,
    router: Router,
    header_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(connection);
    let stop_requested = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stop_requested => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
