//! Server-side TLS from files that are re-read when they change: the side port's
//! `listen.http_tls` and ext_authz's `listen.authz_tls` (docs/configuration.md, `listen:`).
//!
//! The files are checked every two seconds; a change that does not make a usable
//! certificate, key and CA set is refused and the last good settings keep serving, with the
//! reason shown on `/readyz` as a warning.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::file_stamp::FileStamp;
use crate::hot_reload::{HotReload, LastGood, RefusedChange};
use crate::listen::{AuthzTlsConfig, HttpTlsConfig};

/// How often the files are checked for changes.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientCertificates {
    /// Verified when presented; clients without one are served (the side port: the JWKS and
    /// discovery stay public).
    Optional,
    /// No certificate chaining to the CA, no connection (ext_authz: only the gateway calls it).
    Required,
}

/// Which listener the files are for, and what that listener asks of clients.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    /// The config key, for errors (`listen.http_tls`).
    key: &'static str,
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
    client_certificates: ClientCertificates,
    /// The one application protocol the listener speaks.
    alpn: &'static [u8],
}

impl TlsFiles {
    /// The side port: HTTP/1.1, client certificates optional.
    pub(crate) fn side_port(files: &HttpTlsConfig) -> Self {
        Self {
            key: "listen.http_tls",
            cert_file: files.cert_file.clone(),
            key_file: files.key_file.clone(),
            client_ca_file: files.client_ca_file.clone(),
            client_certificates: ClientCertificates::Optional,
            alpn: b"http/1.1",
        }
    }

    /// ext_authz: gRPC over HTTP/2, a client certificate required.
    pub(crate) fn authz(files: &AuthzTlsConfig) -> Self {
        Self {
            key: "listen.authz_tls",
            cert_file: files.cert_file.clone(),
            key_file: files.key_file.clone(),
            client_ca_file: Some(files.client_ca_file.clone()),
            client_certificates: ClientCertificates::Required,
            alpn: b"h2",
        }
    }

    fn stamps(&self) -> Vec<FileStamp> {
        [
            Some(&self.cert_file),
            Some(&self.key_file),
            self.client_ca_file.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| FileStamp::of(p))
        .collect()
    }

    fn build(&self) -> Result<rustls::ServerConfig, TlsFilesError> {
        let key = self.key;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = certificates(&self.cert_file, format!("{key}.cert_file"))?;
        let private_key =
            PrivateKeyDer::from_pem_file(&self.key_file).map_err(|_| TlsFilesError::NoKey {
                key: format!("{key}.key_file"),
                path: self.key_file.display().to_string(),
            })?;
        let rustls_error = |key: String| move |reason| TlsFilesError::Rustls { key, reason };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error(key.to_owned()))?;
        let builder = match &self.client_ca_file {
            Some(ca_file) => {
                let ca_key = format!("{key}.client_ca_file");
                let mut roots = rustls::RootCertStore::empty();
                for ca in certificates(ca_file, ca_key.clone())? {
                    roots.add(ca).map_err(rustls_error(ca_key.clone()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match self.client_certificates {
                    ClientCertificates::Optional => verifier.allow_unauthenticated(),
                    ClientCertificates::Required => verifier,
                };
                let verifier = verifier.build().map_err(|e| TlsFilesError::ClientCa {
                    key: ca_key,
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, private_key)
            .map_err(|reason| TlsFilesError::NotAPair {
                key: key.to_owned(),
                reason,
            })?;
        config.alpn_protocols = vec![self.alpn.to_vec()];
        Ok(config)
    }
}

/// Why a listener's TLS files are not usable; each names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    /// A certificate file is unreadable or not PEM.
    #[error("{key}: {path} is not a PEM certificate file")]
    NotPem {
        /// `listen.http_tls.cert_file` and the like.
        key: String,
        /// The file.
        path: String,
    },
    /// A certificate file holds no certificate.
    #[error("{key}: {path} holds no certificate")]
    NoCertificate {
        /// The key.
        key: String,
        /// The file.
        path: String,
    },
    /// The key file holds no PEM private key.
    #[error("{key}: {path} holds no PEM private key")]
    NoKey {
        /// The key.
        key: String,
        /// The file.
        path: String,
    },
    /// The CA set cannot verify clients.
    #[error("{key}: {reason}")]
    ClientCa {
        /// The key.
        key: String,
        /// What rustls said.
        reason: String,
    },
    /// rustls refused a setting.
    #[error("{key}: {reason}")]
    Rustls {
        /// The key.
        key: String,
        /// What rustls said.
        reason: rustls::Error,
    },
    /// The certificate does not go with the key.
    #[error("{key}: the certificate and key do not make a usable pair: {reason}")]
    NotAPair {
        /// The key.
        key: String,
        /// What rustls said.
        reason: rustls::Error,
    },
}

fn certificates(path: &Path, key: String) -> Result<Vec<CertificateDer<'static>>, TlsFilesError> {
    let path_shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|_| TlsFilesError::NotPem {
            key: key.clone(),
            path: path_shown.clone(),
        })?;
    if certs.is_empty() {
        return Err(TlsFilesError::NoCertificate {
            key,
            path: path_shown,
        });
    }
    Ok(certs)
}

/// The current TLS settings, rebuilt when a file changes; a bad change keeps the last good.
pub(crate) struct ReloadingTls {
    files: TlsFiles,
    current: LastGood<rustls::ServerConfig>,
}

impl ReloadingTls {
    /// Reads the files; a start-up error names the one that is wrong.
    pub(crate) fn load(files: TlsFiles) -> Result<Self, TlsFilesError> {
        Ok(Self {
            current: LastGood::new(files.build()?),
            files,
        })
    }

    /// An acceptor with the settings as they are now.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Why the last change was refused, while the last good settings serve.
    pub(crate) fn last_error(&self) -> Option<Arc<String>> {
        self.current.refusal()
    }
}

impl HotReload for ReloadingTls {
    type Value = rustls::ServerConfig;
    type Stamp = Vec<FileStamp>;
    type Error = TlsFilesError;

    fn stamp(&self) -> Option<Vec<FileStamp>> {
        Some(self.files.stamps())
    }

    async fn rebuild(&self) -> Result<rustls::ServerConfig, TlsFilesError> {
        self.files.build()
    }

    fn put_in_force(&self, config: rustls::ServerConfig) {
        tracing::info!(files = self.files.key, "TLS files reloaded");
        self.current.store(config);
    }

    fn refused(&self, error: &TlsFilesError) {
        tracing::error!(error = %error, "TLS change refused; serving the last good files");
    }

    fn refusal(&self) -> &RefusedChange {
        self.current.refusal_slot()
    }
}
