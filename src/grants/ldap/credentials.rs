//! What the LDAP client trusts: the CAs of `ca_file` (its bind password is a
//! [`crate::file_stamp::SecretFile`]).

use std::path::Path;
use std::sync::Arc;

use super::LdapError;

/// A TLS client trusting only the CAs in `ca_file`.
pub(super) fn tls_trusting(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, LdapError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let unusable = |reason: String| LdapError::CaFile {
        path: ca_file.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| unusable(e.to_string()))? {
        let cert = cert.map_err(|e| unusable(e.to_string()))?;
        roots.add(cert).map_err(|e| unusable(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(unusable("no certificate in it".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
