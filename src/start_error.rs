//! Why the sidecar did not start, and the one HTTPS client for the trusted issuers (which can
//! be such a reason): below start-up (`server.rs`), binding (`bind.rs`), `explain` and
//! `check-config`, so none of them imports another for these.

use std::time::Duration;

use crate::grants::GrantsStartError;
use crate::identity::oidc::TrustedIssuerConfig;
use crate::identity::x509::CaError;
use crate::mint::keys::KeyError;

/// Timeout of one key fetch from an issuer.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the sidecar did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The signing key(s).
    #[error("signing: {0}")]
    Keys(#[from] KeyError),
    /// A grant source (the error names its key).
    #[error("{0}")]
    Grants(#[from] GrantsStartError),
    /// A listener could not bind.
    #[error("listen.{which}: cannot bind {addr}: {reason}")]
    Bind {
        /// `authz`, `http` or `admin`.
        which: &'static str,
        /// The configured address.
        addr: String,
        /// What the operating system said.
        reason: std::io::Error,
    },
    /// The client certificates' CA bundle.
    #[error(transparent)]
    ClientCa(#[from] CaError),
    /// An issuer's `ca_file` is not a usable CA bundle.
    #[error("trust: trust[{index}].ca_file: {source}")]
    IssuerCa {
        /// The issuer's position in `trust:`.
        index: usize,
        /// What is wrong with the file.
        source: crate::outbound::CaBundleError,
    },
    /// The HTTPS client for the issuers could not be built.
    #[error("trust: cannot build the HTTPS client: {0}")]
    IssuerClient(reqwest::Error),
    /// An issuer's TokenReview cannot be set up (the text names the issuer and the key).
    #[error("{0}")]
    TokenReview(String),
    /// A listener's TLS files (`listen.http_tls`, `listen.authz_tls`) are not usable; the
    /// text names the key and the file.
    #[error("{0}")]
    ServerTls(#[from] crate::server_tls::TlsFilesError),
    /// The decision log's file could not be opened.
    #[error("telemetry.decision_log.path: cannot open {path}: {}", crate::config_check::io_reason(.source))]
    DecisionLog {
        /// The configured path.
        path: String,
        /// Why it could not be opened.
        source: std::io::Error,
    },
    /// IAM callers cannot be verified: the STS client, or the accounts they may come from.
    #[error("{0}")]
    Aws(#[from] crate::identity::aws_iam::AwsSetupError),
}

/// The HTTPS client for issuer keys: platform roots plus each issuer's `ca_file`, no
/// redirects (a JWKS that redirects elsewhere is a misconfiguration, not something to follow).
pub(crate) fn issuer_client(trust: &[TrustedIssuerConfig]) -> Result<reqwest::Client, StartError> {
    let mut builder = crate::outbound::client_builder(FETCH_TIMEOUT).timeout(FETCH_TIMEOUT);
    for (i, issuer) in trust.iter().enumerate() {
        if let Some(ca_file) = &issuer.ca_file {
            builder = crate::outbound::trusting(builder, ca_file)
                .map_err(|source| StartError::IssuerCa { index: i, source })?;
        }
    }
    builder.build().map_err(StartError::IssuerClient)
}
