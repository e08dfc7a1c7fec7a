//! Change detection by polling: a file's modification time and size.
//!
//! Both hot-reloaded inputs (the grants file, the signing keys) poll instead of watching.
//! Polling a stat every couple of seconds costs nothing, follows symlinks, and so sees the
//! atomic symlink swap by which Kubernetes updates a mounted ConfigMap or Secret, which an
//! inotify watch on the file itself misses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// What a file looked like; a missing or unreadable file has a stamp of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp(Option<(SystemTime, u64)>);

impl FileStamp {
    /// The current stamp of `path` (symlinks followed).
    pub fn of(path: &Path) -> Self {
        let meta = std::fs::metadata(path).ok();
        Self(meta.and_then(|m| Some((m.modified().ok()?, m.len()))))
    }
}

/// A secret kept in a file (a bind secret, a service-account token), read again only when
/// the file changes: a stat per use, a read per rotation.
pub(crate) struct SecretFile {
    pub(crate) path: PathBuf,
    last: std::sync::Mutex<Option<(FileStamp, Arc<str>)>>,
}

impl SecretFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            last: std::sync::Mutex::new(None),
        }
    }

    /// The secret (without a trailing newline); the file is read only when it changed.
    pub(crate) fn current(&self) -> Result<Arc<str>, std::io::ErrorKind> {
        let stamp = FileStamp::of(&self.path);
        let mut last = self.last.lock().map_err(|_| std::io::ErrorKind::Other)?;
        if let Some((seen, secret)) = last.as_ref()
            && *seen == stamp
        {
            return Ok(secret.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| e.kind())?;
        let secret: Arc<str> = text.trim_end_matches(['\r', '\n']).into();
        *last = Some((stamp, secret.clone()));
        Ok(secret)
    }
}
