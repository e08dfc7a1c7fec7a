//! The side port's connections: plain HTTP/1.1 with a header timeout, or — with
//! `listen.http_tls` — TLS: rustls with the certificate and key re-read when
//! their files change (as signing keys are), and — with `client_ca_file` — client
//! certificates verified against it and handed to `/exchange`. Clients without a certificate
//! are still served: the JWKS and discovery stay public.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::exchange::TlsClientCertificate;
use crate::file_stamp::FileStamp;
use crate::listen::HttpTlsConfig;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the files are checked for changes.
const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The current TLS settings, rebuilt when a file changes; a bad change keeps the last good.
pub(crate) struct SideTls {
    files: HttpTlsConfig,
    current: ArcSwap<rustls::ServerConfig>,
    last_error: ArcSwapOption<String>,
}

impl SideTls {
    /// Reads the files; a start-up error names the one that is wrong.
    pub(crate) fn load(files: &HttpTlsConfig) -> Result<Self, String> {
        Ok(Self {
            files: files.clone(),
            current: ArcSwap::from_pointee(build(files)?),
            last_error: ArcSwapOption::empty(),
        })
    }

    /// Why the last change was refused, while the last good settings serve.
    pub(crate) fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    /// Runs forever: rebuilds the settings when a file's size or time changes.
    pub(crate) async fn reload_forever(self: Arc<Self>) {
        let stamps = |f: &HttpTlsConfig| {
            [
                Some(&f.cert_file),
                Some(&f.key_file),
                f.client_ca_file.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(|p| FileStamp::of(p))
            .collect::<Vec<_>>()
        };
        let mut seen = stamps(&self.files);
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let now = stamps(&self.files);
            if now == seen {
                continue;
            }
            seen = now;
            match build(&self.files) {
                Ok(config) => {
                    tracing::info!("side-port TLS files reloaded");
                    self.current.store(Arc::new(config));
                    self.last_error.store(None);
                }
                Err(e) => {
                    tracing::error!(error = %e, "side-port TLS change refused; serving the last good files");
                    self.last_error.store(Some(Arc::new(e)));
                }
            }
        }
    }
}

fn build(files: &HttpTlsConfig) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certificates(&files.cert_file, "listen.http_tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|_| {
        format!(
            "listen.http_tls.key_file: {} holds no PEM private key",
            files.key_file.display()
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("listen.http_tls: {e}"))?;
    let builder = match &files.client_ca_file {
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(ca_file, "listen.http_tls.client_ca_file")? {
                roots.add(ca).map_err(|e| {
                    format!("listen.http_tls.client_ca_file: {}: {e}", ca_file.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("listen.http_tls.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!("listen.http_tls: the certificate and key do not make a usable pair: {e}")
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|_| format!("{key}: {} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key}: {} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Serves `router` until `stopped`, over TLS when `tls` is set; each connection's verified
/// client certificate (if any) reaches the handlers as a request extension. A request's
/// headers must arrive within `header_timeout`, or the connection is closed.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<SideTls>>,
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
        let acceptor = tls
            .as_ref()
            .map(|tls| tokio_rustls::TlsAcceptor::from(tls.current.load_full()));
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
