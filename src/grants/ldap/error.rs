//! Why the LDAP source could not be set up, or could not answer one look-up.

use std::io::ErrorKind;

use crate::config_check::kind_reason;

/// An LDAP failure; each names the `grants.ldap` key or the step it is about.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// `ca_file` is unreadable or holds no usable certificate.
    #[error("grants.ldap.ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The bind password file could not be read.
    #[error("grants.ldap.bind_password_file {path}: {}", kind_reason(*.kind))]
    PasswordFile {
        /// The file.
        path: String,
        /// Why it could not be read.
        kind: ErrorKind,
    },
    /// The bind password file is empty.
    #[error("grants.ldap.bind_password_file {path}: empty")]
    EmptyPassword {
        /// The file.
        path: String,
    },
    /// No TLS client could be built.
    #[error("TLS to LDAP: {0}")]
    Tls(#[from] rustls::Error),
    /// `groups` / `group_patterns` do not compile.
    #[error("{0}")]
    Mappings(String),
    /// The look-up's deadline passed before this step.
    #[error("out of time")]
    OutOfTime,
    /// The directory could not be reached.
    #[error("connect to {url}: {source}")]
    Connect {
        /// `grants.ldap.url`.
        url: String,
        /// What the client said.
        source: Box<ldap3::LdapError>,
    },
    /// The bind was refused.
    #[error("bind as {dn}: {source}")]
    Bind {
        /// `grants.ldap.bind_dn`.
        dn: String,
        /// What the directory said.
        source: Box<ldap3::LdapError>,
    },
    /// `base_dn` could not be read (`check-config --probe`).
    #[error("base_dn {dn}: {source}")]
    BaseDn {
        /// `grants.ldap.base_dn`.
        dn: String,
        /// What the directory said.
        source: Box<ldap3::LdapError>,
    },
}
