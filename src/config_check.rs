//! The problem list every config section writes into, and the error that carries it: a leaf
//! that the sections and the loader (`config.rs`) both import, so neither imports the other
//! for it.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a config, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `trust[0].jwks_uri`; empty for the file as a whole.
    pub path: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Why a config could not be used: every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The problems, in file order as far as possible.
    pub problems: Vec<ConfigProblem>,
}

/// What each section's `check` writes into: the problems found so far, and the folder that
/// relative paths are relative to.
pub(crate) struct ConfigCheck {
    base_dir: PathBuf,
    pub(crate) problems: Vec<ConfigProblem>,
    pub(crate) warnings: Vec<ConfigProblem>,
}

impl ConfigCheck {
    pub(crate) fn new(base_dir: &Path) -> Self {
        Self {
            base_dir: base_dir.to_owned(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records a warning at `path`: allowed, but probably not what was meant.
    pub(crate) fn warning(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.warnings.push(ConfigProblem {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// Records a problem at `path`.
    pub(crate) fn problem(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(ConfigProblem {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// Makes a relative path relative to the config file's folder.
    pub(crate) fn resolve(&self, path: &mut PathBuf) {
        if path.is_relative() {
            *path = self.base_dir.join(&*path);
        }
    }

    /// Resolves `path` and records a problem at `key` when the file cannot be read.
    pub(crate) fn readable(&mut self, key: impl Into<String>, path: &mut PathBuf) {
        self.resolve(path);
        if let Err(e) = std::fs::metadata(&*path) {
            self.problem(
                key,
                format!("cannot read {}: {}", path.display(), io_reason(&e)),
            );
        }
    }

    /// Records `result`'s error, if any, at `key`.
    pub(crate) fn check<E: std::fmt::Display>(
        &mut self,
        key: impl Into<String>,
        result: Result<(), E>,
    ) {
        if let Err(reason) = result {
            self.problem(key, reason.to_string());
        }
    }
}

/// What an I/O error means for a file a config names, in words an operator recognises
/// ("no such file" rather than Rust's "entity not found").
pub(crate) fn io_reason(error: &std::io::Error) -> String {
    kind_reason(error.kind())
}

/// [`io_reason`] of an error's kind.
pub(crate) fn kind_reason(kind: std::io::ErrorKind) -> String {
    match kind {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        kind => kind.to_string(),
    }
}
