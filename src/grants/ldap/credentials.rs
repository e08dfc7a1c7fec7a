//! What the LDAP client trusts: the CAs of `ca_file` (its bind password is a
//! [`crate::file_stamp::SecretFile`]).

use std::path::Path;
use std::sync::Arc;

/// A TLS client trusting only the CAs in `ca_file`.
pub(super) fn tls_trusting(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let shown = ca_file.display();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("grants.ldap.ca_file {shown}: {e}"))?
    {
        let cert = cert.map_err(|e| format!("grants.ldap.ca_file {shown}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("grants.ldap.ca_file {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("grants.ldap.ca_file {shown}: no certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS to LDAP: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
