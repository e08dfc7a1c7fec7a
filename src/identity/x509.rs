//! Client certificates as identities.
//!
//! The certificate is parsed (x509-parser), its validity window checked, and — for
//! certificates that arrived in a header rather than from Envoy's own TLS handshake — its chain
//! verified against `client_certs.ca_file` (rustls-webpki, client-auth usage). The subject is
//! `cert:<CN>` or the SPIFFE URI SAN; CNs and URIs with characters outside a conservative set
//! are refused rather than copied into claims or logs.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{AuthError, CertificateClaims, Identity};
use crate::credential::{CertSource, ClientCertificate};
use crate::credential::{CertSubject, ClientCertsConfig};

/// The `issuer` of certificate identities (they have no token issuer).
pub const CERTIFICATE_ISSUER: &str = "client-certificate";

/// Verifies client certificates as configured.
pub struct X509Verifier {
    anchors: Vec<TrustAnchor<'static>>,
    verify_header_chains: bool,
    subject: CertSubject,
}

/// Why `client_certs.ca_file` could not be used.
#[derive(Debug, thiserror::Error)]
#[error("client_certs.ca_file: {0}")]
pub struct CaError(String);

impl X509Verifier {
    /// Reads `ca_file` (when set) into trust anchors.
    pub fn from_config(config: &ClientCertsConfig) -> Result<Self, CaError> {
        let mut anchors = Vec::new();
        if let Some(path) = &config.ca_file {
            let text = std::fs::read(path).map_err(|e| {
                CaError(format!(
                    "cannot read {}: {}",
                    path.display(),
                    crate::config_check::io_reason(&e)
                ))
            })?;
            let blocks = pem::parse_many(&text)
                .map_err(|_| CaError(format!("{} is not PEM", path.display())))?;
            for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
                let der = CertificateDer::from(block.contents());
                let anchor = webpki::anchor_from_trusted_cert(&der).map_err(|_| {
                    CaError(format!(
                        "{} holds a certificate that is not a usable CA",
                        path.display()
                    ))
                })?;
                anchors.push(anchor.to_owned());
            }
            if anchors.is_empty() {
                return Err(CaError(format!("{} holds no certificate", path.display())));
            }
        }
        Ok(Self {
            anchors,
            verify_header_chains: config.verify_header_chains,
            subject: config.subject,
        })
    }

    /// Verifies a certificate at `now` (Unix seconds) into an identity.
    pub fn verify(&self, certificate: &ClientCertificate, now: u64) -> Result<Identity, AuthError> {
        let (_, cert) = X509Certificate::from_der(&certificate.der)
            .map_err(|_| AuthError::Certificate("not a valid X.509 certificate"))?;
        let validity = cert.validity();
        let not_before = u64::try_from(validity.not_before.timestamp()).unwrap_or(0);
        let not_after = u64::try_from(validity.not_after.timestamp()).unwrap_or(0);
        if now < not_before {
            return Err(AuthError::Certificate("certificate not yet valid"));
        }
        if now >= not_after {
            return Err(AuthError::Certificate("certificate expired"));
        }
        let from_header = certificate.source != CertSource::Peer;
        if from_header && self.verify_header_chains {
            self.verify_chain(certificate, now)?;
        }

        let cn = first_attribute(cert.subject().iter_common_name())?;
        let org = first_attribute(cert.subject().iter_organization())?;
        // An OU is only read by grant rules: one with odd characters is ignored, not refused.
        let ou = first_attribute(cert.subject().iter_organizational_unit()).unwrap_or(None);
        let spiffe = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
                    _ => None,
                })
            });
        let subject = match self.subject {
            CertSubject::Cn => {
                let cn = cn
                    .as_deref()
                    .ok_or(AuthError::Certificate("the certificate has no CN"))?;
                format!("cert:{cn}")
            }
            CertSubject::Spiffe => {
                let uri = spiffe.ok_or(AuthError::Certificate(
                    "the certificate has no SPIFFE URI SAN",
                ))?;
                if !uri.bytes().all(is_safe_name_byte) {
                    return Err(AuthError::Certificate(
                        "the SPIFFE URI has characters that are not allowed",
                    ));
                }
                uri.to_owned()
            }
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &certificate.der);
        Ok(Identity {
            subject,
            issuer: CERTIFICATE_ISSUER.to_owned(),
            email: None,
            name: None,
            expires_at: not_after,
            certificate: Some(Box::new(CertificateClaims {
                cn,
                org,
                ou,
                spiffe_id: spiffe.map(str::to_owned),
                thumbprint_s256: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            })),
            aws: None,
            claims: None,
            kubernetes: None,
        })
    }

    fn verify_chain(&self, certificate: &ClientCertificate, now: u64) -> Result<(), AuthError> {
        let untrusted = || AuthError::Certificate("certificate is not signed by a trusted CA");
        let leaf = CertificateDer::from(certificate.der.as_slice());
        let end_entity = webpki::EndEntityCert::try_from(&leaf).map_err(|_| untrusted())?;
        let intermediates: Vec<CertificateDer<'_>> = certificate
            .chain
            .iter()
            .map(|der| CertificateDer::from(der.as_slice()))
            .collect();
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                &intermediates,
                UnixTime::since_unix_epoch(Duration::from_secs(now)),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map(|_| ())
            .map_err(|_| untrusted())
    }
}

/// The first value of a DN attribute, if any, refused when it is not a safe name.
fn first_attribute<'a>(
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Result<Option<String>, AuthError> {
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let text = value
        .as_str()
        .map_err(|_| AuthError::Certificate("a subject attribute is not a string"))?;
    if text.is_empty() || !text.bytes().all(is_safe_name_byte) {
        return Err(AuthError::Certificate(
            "a subject attribute has characters that are not allowed",
        ));
    }
    Ok(Some(text.to_owned()))
}

/// Letters, digits and `space . _ - : / @ + = ( ) , '` — nothing that could break a log line,
/// a header or a JSON string.
fn is_safe_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b" ._-:/@+=(),'".contains(&b)
}
