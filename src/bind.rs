//! Binding the listeners, each failure a start-up error naming its `listen.*` key. ext_authz
//! listens on TCP or on a Unix socket shared with Envoy in the pod (an `emptyDir`), which
//! skips the kernel's TCP path on every Check.
//!
//! A socket file left by a process that died is replaced at start; a file that is not a socket,
//! or a socket another process still serves, is a start-up error, as is a folder the sidecar
//! cannot write. The file gets `listen.authz_socket`'s mode (and group) and is removed when the
//! server ends.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use crate::listen::{AuthzAddress, ListenConfig};
use crate::start_error::StartError;

/// The bound ext_authz listener.
pub(crate) enum BoundAuthz {
    /// On TCP.
    Tcp(TcpListener),
    /// On a Unix socket.
    Unix(BoundSocket),
}

/// A Unix listener and its socket file, removed when this is dropped.
pub(crate) struct BoundSocket {
    pub listener: UnixListener,
    pub file: SocketFile,
}

/// Removes the socket file when dropped.
pub(crate) struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl BoundAuthz {
    /// Where it listens (the bound port for TCP port 0).
    pub fn address(&self) -> Result<AuthzAddress, StartError> {
        match self {
            BoundAuthz::Tcp(listener) => {
                local_addr(listener, "authz", "tcp").map(AuthzAddress::Tcp)
            }
            BoundAuthz::Unix(socket) => Ok(AuthzAddress::Unix(socket.file.0.clone())),
        }
    }
}

fn bind_error(which: &'static str, addr: impl ToString, reason: std::io::Error) -> StartError {
    StartError::Bind {
        which,
        addr: addr.to_string(),
        reason,
    }
}

/// Binds `listen.<which>` on TCP.
pub(crate) async fn bind_tcp(
    which: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|reason| bind_error(which, addr, reason))
}

/// The address a TCP listener got (the port, when `listen.<which>` asked for port 0).
pub(crate) fn local_addr(
    listener: &TcpListener,
    which: &'static str,
    configured: impl ToString,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|reason| bind_error(which, configured, reason))
}

/// Binds `listen.authz`.
pub(crate) async fn bind_authz(listen: &ListenConfig) -> Result<BoundAuthz, StartError> {
    match &listen.authz {
        AuthzAddress::Tcp(addr) => bind_tcp("authz", *addr).await.map(BoundAuthz::Tcp),
        AuthzAddress::Unix(path) => {
            let failed = |reason| bind_error("authz", format!("unix:{}", path.display()), reason);
            remove_stale(path).await.map_err(failed)?;
            let listener = UnixListener::bind(path).map_err(failed)?;
            let file = SocketFile(path.clone());
            std::fs::set_permissions(
                path,
                std::fs::Permissions::from_mode(listen.authz_socket.mode),
            )
            .map_err(failed)?;
            if let Some(group) = listen.authz_socket.group {
                std::os::unix::fs::chown(path, None, Some(group)).map_err(failed)?;
            }
            Ok(BoundAuthz::Unix(BoundSocket { listener, file }))
        }
    }
}

/// Removes a socket file nobody serves; refuses a file that is not a socket or is in use.
async fn remove_stale(path: &Path) -> std::io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another process serves this socket",
        ));
    }
    std::fs::remove_file(path)
}
