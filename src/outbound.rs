//! The HTTPS calls this sidecar makes (issuers' keys, STS, TokenReview) share one shape: no
//! redirects followed (a redirect is a misconfiguration, never something to follow), our user
//! agent, extra CA bundles where configured, bodies read up to a cap, and errors in words
//! without the URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A client builder: redirects off, our user agent, `connect_timeout`.
pub(crate) fn client_builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("evs-token-vending/", env!("CARGO_PKG_VERSION")))
}

/// Why a CA bundle could not be added.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    /// The file could not be read.
    #[error("cannot read {}: {}", .path.display(), crate::config_check::kind_reason(*.kind))]
    Unreadable {
        /// The bundle.
        path: PathBuf,
        /// Why.
        kind: std::io::ErrorKind,
    },
    /// The file holds no PEM certificate.
    #[error("{} is not a PEM certificate bundle", .path.display())]
    NotPem {
        /// The bundle.
        path: PathBuf,
    },
}

/// `builder`, also trusting every certificate of the PEM bundle at `ca_file`.
pub(crate) fn trusting(
    mut builder: reqwest::ClientBuilder,
    ca_file: &Path,
) -> Result<reqwest::ClientBuilder, CaBundleError> {
    let pem = std::fs::read(ca_file).map_err(|e| CaBundleError::Unreadable {
        path: ca_file.to_owned(),
        kind: e.kind(),
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| CaBundleError::NotPem {
        path: ca_file.to_owned(),
    })?;
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

/// Why a body was not read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The connection failed while reading.
    Transport(reqwest::Error),
    /// The body is larger than the cap.
    TooLarge,
}

/// The body of `response`, refused once it grows past `max` bytes.
pub(crate) async fn read_capped(
    response: &mut reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error in words: its innermost cause (a TLS or DNS reason, say), without the URL.
pub(crate) fn describe_reqwest_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}
