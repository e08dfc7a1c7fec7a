//! `listen:` — where the servers bind (ext_authz on TCP or a Unix socket), and the side port's
//! optional TLS.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config_check::ConfigCheck;
use crate::credential::ClientCertsConfig;

/// `listen:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// ext_authz gRPC (and grpc.health.v1); loopback by default because only Envoy calls it.
    /// `unix:/path` listens on a Unix socket instead (Envoy's `pipe` address).
    pub authz: AuthzAddress,
    /// mTLS on ext_authz, for a gateway that calls it over the network: a client certificate
    /// chaining to `client_ca_file` is required. Needed on a non-loopback address for
    /// `client_certs.from: [peer]` to be trusted.
    pub authz_tls: Option<AuthzTlsConfig>,
    /// The Unix socket's permissions, when `authz` is one.
    pub authz_socket: SocketFileConfig,
    /// JWKS, discovery, health, metrics and `/exchange`.
    pub http: SocketAddr,
    /// Probes and metrics (`/healthz`, `/readyz`, `/metrics`) on a port of their own, plain
    /// HTTP; the side port then serves only the JWKS, discovery and `/exchange`.
    pub admin: Option<SocketAddr>,
    /// TLS on the side port (plain HTTP without it).
    pub http_tls: Option<HttpTlsConfig>,
    /// A side-port request's headers must arrive within this, or the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: std::time::Duration,
    /// An ext_authz connection must send the HTTP/2 preface within this, or it is closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: std::time::Duration,
    /// HTTP/2 PING keep-alive on ext_authz connections: a ping after this long without a
    /// frame, the connection closed when none comes back within 10 s. Off unless set: the
    /// kernel's TCP keep-alive (probes after 30 s idle, every 10 s, 3 of them) already finds
    /// vanished peers at no cost per Check; pings also find a peer whose process hangs while
    /// its kernel still answers, for a lock and a clock read on every frame received
    /// (docs/benchmarks.md, "What each feature costs").
    #[serde(with = "humantime_serde::option")]
    pub authz_http2_keepalive: Option<std::time::Duration>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            authz: AuthzAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], 9001))),
            authz_tls: None,
            authz_socket: SocketFileConfig::default(),
            http: SocketAddr::from(([0, 0, 0, 0], 9002)),
            admin: None,
            http_tls: None,
            header_timeout: std::time::Duration::from_secs(10),
            handshake_timeout: std::time::Duration::from_secs(5),
            authz_http2_keepalive: None,
        }
    }
}

/// Where ext_authz listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthzAddress {
    /// `host:port`.
    Tcp(SocketAddr),
    /// `unix:/path/to/socket`.
    Unix(PathBuf),
}

impl AuthzAddress {
    /// The TCP address, when it is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            AuthzAddress::Tcp(addr) => Some(*addr),
            AuthzAddress::Unix(_) => None,
        }
    }
}

impl std::fmt::Display for AuthzAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthzAddress::Tcp(addr) => write!(f, "{addr}"),
            AuthzAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for AuthzAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Ok(AuthzAddress::Unix(PathBuf::from(path))),
            Some(_) => Err(serde::de::Error::custom(
                "a Unix socket needs an absolute path: unix:/var/run/evs/authz.sock",
            )),
            None => text.parse().map(AuthzAddress::Tcp).map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{text}` is neither host:port (127.0.0.1:9001) nor unix:/path"
                ))
            }),
        }
    }
}

/// `listen.authz_socket` — the Unix socket file's permissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketFileConfig {
    /// Permission bits, written in octal as a string (`"0660"`: the sidecar and its group,
    /// i.e. Envoy when the pod's `fsGroup` is shared).
    #[serde(deserialize_with = "octal_mode")]
    pub mode: u32,
    /// Group id to give the socket file (default: the process's own group).
    pub group: Option<u32>,
}

impl Default for SocketFileConfig {
    fn default() -> Self {
        Self {
            mode: 0o660,
            group: None,
        }
    }
}

/// `"0660"` (or `"0o660"`) as permission bits.
fn octal_mode<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let text = String::deserialize(deserializer)?;
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|bits| *bits <= 0o777)
        .ok_or_else(|| serde::de::Error::custom("octal permission bits, e.g. \"0660\""))
}

/// `shutdown:` — how SIGTERM ends the process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, `/readyz` answers 503 at once while both listeners keep serving for this
    /// long, so Envoy, the kubelet and load balancers stop sending before anything closes.
    #[serde(with = "humantime_serde")]
    pub drain: std::time::Duration,
    /// After the drain, in-flight work may take this long; then every connection left (an idle
    /// client, a half-sent request) is closed and the process exits.
    #[serde(with = "humantime_serde")]
    pub grace: std::time::Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain: std::time::Duration::from_secs(5),
            grace: std::time::Duration::from_secs(10),
        }
    }
}

/// `listen.http_tls` — files re-read when they change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// The server's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// CAs that client certificates must chain to (PEM); with it, a client may present a
    /// certificate and exchange it for a token. Clients without one are still served.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// `listen.authz_tls` — files re-read when they change. Unlike the side port, a client
/// certificate is required: only the gateway that owns ext_authz may call it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzTlsConfig {
    /// The server's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// CAs the caller's (the gateway's) client certificate must chain to (PEM).
    pub client_ca_file: PathBuf,
}

impl ListenConfig {
    pub(crate) fn check(
        &mut self,
        path: &str,
        client_certs: &ClientCertsConfig,
        check: &mut ConfigCheck,
    ) {
        // `source.certificate` in a CheckRequest is whatever the caller of ext_authz wrote.
        // On loopback or a Unix socket that caller is the pod's own Envoy; on a network address
        // it could be anyone, who would be minted a token for any certificate they name —
        // unless mTLS (`authz_tls`) proves the caller is the gateway.
        if client_certs.enabled
            && self.authz_tls.is_none()
            && client_certs
                .from
                .contains(&crate::credential::CertSourceKind::Peer)
            && let AuthzAddress::Tcp(addr) = &self.authz
            && !addr.ip().is_loopback()
        {
            check.problem(
                format!("{path}.authz"),
                "client_certs.from names peer, but ext_authz listens beyond loopback: any \
                 caller that reaches it could present any certificate as source.certificate; \
                 listen on 127.0.0.1 or a unix: socket shared with Envoy, or require the \
                 gateway's client certificate with listen.authz_tls",
            );
        }
        if let Some(tls) = &mut self.authz_tls {
            if let AuthzAddress::Unix(_) = self.authz {
                check.problem(
                    format!("{path}.authz_tls"),
                    "TLS is for ext_authz on a network address; a unix: socket is already \
                     reachable only by the pod's own processes",
                );
            }
            check.readable(format!("{path}.authz_tls.cert_file"), &mut tls.cert_file);
            check.readable(format!("{path}.authz_tls.key_file"), &mut tls.key_file);
            check.readable(
                format!("{path}.authz_tls.client_ca_file"),
                &mut tls.client_ca_file,
            );
        }
        let Some(tls) = &mut self.http_tls else {
            return;
        };
        check.readable(format!("{path}.http_tls.cert_file"), &mut tls.cert_file);
        check.readable(format!("{path}.http_tls.key_file"), &mut tls.key_file);
        if let Some(ca) = &mut tls.client_ca_file {
            check.readable(format!("{path}.http_tls.client_ca_file"), ca);
            if !client_certs.enabled {
                check.problem(
                    format!("{path}.http_tls.client_ca_file"),
                    "client certificates are exchanged only with client_certs.enabled: true",
                );
            }
        }
    }
}
