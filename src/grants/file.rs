//! Grants from a YAML file (`grants.source: file`), reloaded when the file changes.
//!
//! The file is polled ([`FileStamp`]), which also sees Kubernetes' ConfigMap updates. A broken
//! edit keeps the last good grants.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Deserialize;

use super::{GrantSource, Grants, LookupFuture};
use crate::file_stamp::FileStamp;

/// How often the file's metadata is checked for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Grants read from a file, as a lock-free snapshot.
pub struct FileGrants {
    path: PathBuf,
    snapshot: ArcSwap<HashMap<String, Arc<Grants>>>,
}

/// Why a grants file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GrantsFileError {
    /// The file could not be read.
    #[error("cannot read grants file {path}: {reason}")]
    Read {
        path: String,
        reason: std::io::ErrorKind,
    },
    /// The file is not valid grants YAML.
    #[error("invalid grants file {path}: {reason}")]
    Parse { path: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    #[serde(default)]
    subjects: HashMap<String, Grants>,
}

impl FileGrants {
    /// Reads the file; a start-up error if it is missing or invalid.
    pub fn load(path: &Path) -> Result<Self, GrantsFileError> {
        let grants = read_grants(path)?;
        Ok(Self {
            path: path.to_owned(),
            snapshot: ArcSwap::from_pointee(grants),
        })
    }

    /// Number of subjects currently loaded.
    pub fn len(&self) -> usize {
        self.snapshot.load().len()
    }

    /// Runs forever: reloads the file whenever its modification time or size changes.
    pub async fn reload_forever(self: Arc<Self>, interval: Duration) {
        let mut seen = FileStamp::of(&self.path);
        loop {
            tokio::time::sleep(interval).await;
            let now = FileStamp::of(&self.path);
            if now == seen {
                continue;
            }
            seen = now;
            match read_grants(&self.path) {
                Ok(grants) => {
                    tracing::info!(path = %self.path.display(), subjects = grants.len(), "grants file reloaded");
                    self.snapshot.store(Arc::new(grants));
                }
                Err(e) => {
                    tracing::error!(error = %e, "grants file change rejected; keeping the last good grants");
                }
            }
        }
    }
}

impl GrantSource for FileGrants {
    fn lookup<'a>(&'a self, key: &'a str, _deadline: std::time::Instant) -> LookupFuture<'a> {
        let found = self.snapshot.load().get(key).cloned();
        Box::pin(async move { Ok(found) })
    }
}

fn read_grants(path: &Path) -> Result<HashMap<String, Arc<Grants>>, GrantsFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| GrantsFileError::Read {
        path: shown.clone(),
        reason: e.kind(),
    })?;
    let deserializer = serde_norway::Deserializer::from_str(&text);
    let file: GrantsFile =
        serde_path_to_error::deserialize(deserializer).map_err(|e| GrantsFileError::Parse {
            path: shown,
            reason: format!("{}: {}", e.path(), e.inner()),
        })?;
    Ok(file
        .subjects
        .into_iter()
        .map(|(subject, grants)| (subject, Arc::new(grants)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_key_is_a_parse_error_naming_the_subject() {
        let dir = std::env::temp_dir().join(format!("evs-grants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grants.yaml");
        std::fs::write(&path, "subjects:\n  alice:\n    globl: [x]\n").unwrap();
        let err = FileGrants::load(&path).err().unwrap().to_string();
        assert!(err.contains("subjects.alice"), "{err}");
        assert!(err.contains("globl"), "{err}");
    }
}
