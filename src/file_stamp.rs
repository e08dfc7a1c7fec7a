//! Change detection by polling: a file's modification time and size.
//!
//! Both hot-reloaded inputs (the grants file, the signing keys) poll instead of watching.
//! Polling a stat every couple of seconds costs nothing, follows symlinks, and so sees the
//! atomic symlink swap by which Kubernetes updates a mounted ConfigMap or Secret, which an
//! inotify watch on the file itself misses.

use std::path::Path;
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
