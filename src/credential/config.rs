//! `client_certs:` — client certificates as credentials (docs/callers.md): where they may come
//! from, how they are named, and what a request carrying a bearer token as well is.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config_check::ConfigCheck;

/// `client_certs:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientCertsConfig {
    /// Off by default.
    pub enabled: bool,
    /// Where a certificate may come from, in order of preference.
    pub from: Vec<CertSourceKind>,
    /// CA bundle (PEM) that header-sourced certificates must chain to.
    pub ca_file: Option<PathBuf>,
    /// Verify header-sourced (`xfcc`, `alb`) certificates against `ca_file` (default true).
    pub verify_header_chains: bool,
    /// How the subject is named: `cn` → `cert:<CN>`, `spiffe` → the SPIFFE URI SAN.
    pub subject: CertSubject,
    /// Which XFCC element to trust: the one the nearest proxy appended (`last`) or `first`.
    pub xfcc_element: XfccElementChoice,
    /// What a request carrying both a bearer token and a certificate is.
    pub when_both: WhenBoth,
}

impl Default for ClientCertsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            from: vec![CertSourceKind::Peer],
            ca_file: None,
            verify_header_chains: true,
            subject: CertSubject::default(),
            xfcc_element: XfccElementChoice::default(),
            when_both: WhenBoth::default(),
        }
    }
}

impl ClientCertsConfig {
    /// Checks the section and resolves `ca_file` against the config's folder.
    pub(crate) fn check(&mut self, path: &str, check: &mut ConfigCheck) {
        if self.enabled {
            if self.from.is_empty() {
                check.problem(format!("{path}.from"), "name at least one source");
            }
            let from_headers = self
                .from
                .iter()
                .any(|s| matches!(s, CertSourceKind::Xfcc | CertSourceKind::Alb));
            if from_headers && self.verify_header_chains && self.ca_file.is_none() {
                check.problem(
                    format!("{path}.ca_file"),
                    "required to verify certificates from xfcc or alb headers (or set \
                     verify_header_chains: false when the proxy verified them)",
                );
            }
        }
        if let Some(file) = &mut self.ca_file {
            check.readable(format!("{path}.ca_file"), file);
        }
    }
}

/// `client_certs.from` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSourceKind {
    /// Envoy's own TLS peer (`include_peer_certificate`).
    Peer,
    /// The `x-forwarded-client-cert` header.
    Xfcc,
    /// AWS ALB's `x-amzn-mtls-clientcert` header.
    Alb,
}

/// `client_certs.subject`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSubject {
    /// `cert:<CN>`.
    #[default]
    Cn,
    /// The `spiffe://` URI SAN.
    Spiffe,
}

/// `client_certs.xfcc_element`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XfccElementChoice {
    /// The element the nearest proxy appended.
    #[default]
    Last,
    /// The first element.
    First,
}

/// `client_certs.when_both`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenBoth {
    /// The bearer token is the credential.
    #[default]
    Bearer,
    /// The certificate is the credential.
    Certificate,
    /// Both must be present and valid; the identity is the bearer token's, bound to the
    /// certificate.
    RequireBoth,
}
