//! Grants from a YAML file (`grants.source: file`), reloaded when the file changes.
//!
//! The file is polled ([`FileStamp`]), which also sees Kubernetes' ConfigMap updates. A broken
//! edit keeps the last good grants, and so does an edit that would empty them — an empty or
//! `null` file, or one with no subjects where the last had some — unless
//! `grants.allow_empty: true`; a file that vanishes keeps them too. Every refused reload is
//! kept as a warning for `/readyz` and counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{GrantSource, Grants, LookupFuture};
use crate::file_stamp::FileStamp;
use crate::hot_reload::{HotReload, LastGood, RefusedChange};
use crate::telemetry::Metrics;

/// How often the file's metadata is checked for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Grants read from a file, as a lock-free snapshot.
pub struct FileGrants {
    path: PathBuf,
    snapshot: LastGood<HashMap<String, Arc<Grants>>>,
    allow_empty: bool,
    metrics: Arc<Metrics>,
}

/// Why a grants file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GrantsFileError {
    /// The file could not be read.
    #[error("cannot read grants file {path}: {}", crate::config_check::kind_reason(*.reason))]
    Read {
        path: String,
        reason: std::io::ErrorKind,
    },
    /// The file is not valid grants YAML.
    #[error("invalid grants file {path}: {reason}")]
    Parse { path: String, reason: String },
    /// The file holds no grants at all (and `grants.allow_empty` is off).
    #[error(
        "grants file {path} holds no subjects ({reason}); set grants.allow_empty: true if that is meant"
    )]
    Empty { path: String, reason: &'static str },
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    #[serde(default)]
    subjects: HashMap<String, Grants>,
}

impl FileGrants {
    /// Reads the file; a start-up error if it is missing, invalid, or (unless `allow_empty`)
    /// empty.
    pub fn load(
        path: &Path,
        allow_empty: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Self, GrantsFileError> {
        let grants = read_grants(path, allow_empty)?;
        Ok(Self {
            path: path.to_owned(),
            snapshot: LastGood::new(grants),
            allow_empty,
            metrics,
        })
    }

    /// Why the last change of the file was refused, while the last good grants serve.
    pub fn last_refusal(&self) -> Option<Arc<String>> {
        self.snapshot.refusal()
    }

    /// Number of subjects currently loaded.
    pub fn len(&self) -> usize {
        self.snapshot.load().len()
    }
}

/// Reloaded whenever the file's modification time or size changes (a vanished file too: its
/// rebuild is refused and the last good grants stay).
impl HotReload for FileGrants {
    type Value = HashMap<String, Arc<Grants>>;
    type Stamp = FileStamp;
    type Error = GrantsFileError;

    fn stamp(&self) -> Option<FileStamp> {
        Some(FileStamp::of(&self.path))
    }

    async fn rebuild(&self) -> Result<Self::Value, GrantsFileError> {
        read_grants(&self.path, self.allow_empty)
    }

    fn put_in_force(&self, grants: Self::Value) {
        tracing::info!(path = %self.path.display(), subjects = grants.len(), "grants file reloaded");
        self.snapshot.store(grants);
    }

    fn refused(&self, error: &GrantsFileError) {
        tracing::error!(error = %error, subjects = self.len(), "grants file change refused; keeping the last good grants");
        self.metrics.grants_file_reload_refused();
    }

    fn refusal(&self) -> &RefusedChange {
        self.snapshot.refusal_slot()
    }
}

impl GrantSource for FileGrants {
    fn lookup<'a>(&'a self, key: &'a str, _deadline: std::time::Instant) -> LookupFuture<'a> {
        let found = self.snapshot.load().get(key).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn answer_now(
        &self,
        identity: &crate::identity::Identity,
    ) -> Option<Result<Option<Arc<Grants>>, super::GrantsError>> {
        let snapshot = self.snapshot.load();
        Some(Ok(identity
            .grant_keys()
            .find_map(|key| snapshot.get(key).cloned())))
    }

    fn label(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn warning(&self) -> Option<String> {
        self.last_refusal()
            .map(|reason| format!("grants file change refused: {reason}"))
    }
}

fn read_grants(
    path: &Path,
    allow_empty: bool,
) -> Result<HashMap<String, Arc<Grants>>, GrantsFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| GrantsFileError::Read {
        path: shown.clone(),
        reason: e.kind(),
    })?;
    parse_grants(&text, allow_empty, shown)
}

/// The grants a file's text holds; `shown` names the file in errors.
pub(crate) fn parse_grants(
    text: &str,
    allow_empty: bool,
    shown: String,
) -> Result<HashMap<String, Arc<Grants>>, GrantsFileError> {
    let empty = |reason| GrantsFileError::Empty {
        path: shown.clone(),
        reason,
    };
    let meaningful = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty() && *line != "---")
        .collect::<Vec<_>>();
    if meaningful.is_empty() && !allow_empty {
        return Err(empty("the file is empty"));
    }
    if matches!(meaningful.as_slice(), ["null" | "~"]) && !allow_empty {
        return Err(empty("the file is null"));
    }
    let deserializer = serde_norway::Deserializer::from_str(text);
    let file: Option<GrantsFile> =
        serde_path_to_error::deserialize(deserializer).map_err(|e| GrantsFileError::Parse {
            path: shown.clone(),
            reason: format!("{}: {}", e.path(), e.inner()),
        })?;
    let file = file.unwrap_or_default();
    if file.subjects.is_empty() && !allow_empty {
        return Err(empty("no subjects"));
    }
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
        let err = FileGrants::load(&path, false, Arc::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("subjects.alice"), "{err}");
        assert!(err.contains("globl"), "{err}");
    }

    #[test]
    fn empty_null_and_subjectless_files_are_refused_unless_allowed() {
        let dir = std::env::temp_dir().join(format!("evs-grants-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grants.yaml");
        for (text, reason) in [
            ("", "empty"),
            ("# nothing\n---\n", "empty"),
            ("null\n", "null"),
            ("subjects: {}\n", "no subjects"),
        ] {
            std::fs::write(&path, text).unwrap();
            let refused = read_grants(&path, false).unwrap_err().to_string();
            assert!(refused.contains(reason), "{text:?}: {refused}");
            assert!(
                read_grants(&path, true).unwrap().is_empty(),
                "{text:?} allowed"
            );
        }
    }
}
