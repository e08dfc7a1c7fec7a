//! What the LDAP client presents and trusts: the bind password, read again when its file
//! changes, and the CAs of `ca_file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::file_stamp::FileStamp;

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

/// The bind password, read again when its file changes.
pub(super) struct BindPassword {
    pub(super) path: PathBuf,
    last: std::sync::Mutex<Option<(FileStamp, Arc<str>)>>,
}

impl BindPassword {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            last: std::sync::Mutex::new(None),
        }
    }

    /// The password (without a trailing newline); the file is read only when it changed.
    pub(super) fn current(&self) -> Result<Arc<str>, std::io::ErrorKind> {
        let stamp = FileStamp::of(&self.path);
        let mut last = self.last.lock().map_err(|_| std::io::ErrorKind::Other)?;
        if let Some((seen, password)) = last.as_ref()
            && *seen == stamp
        {
            return Ok(password.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| e.kind())?;
        let password: Arc<str> = text.trim_end_matches(['\r', '\n']).into();
        *last = Some((stamp, password.clone()));
        Ok(password)
    }
}
