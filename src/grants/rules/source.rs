//! The rules as a grant source: where they are written (`grants.rules` in the config file,
//! `grants.rules_file`), and their reload when either changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use super::{RuleProblem, RuleSet, RuleSpec};
use crate::file_stamp::FileStamp;
use crate::grants::{ExplainFuture, GrantSource, LookupFuture};
use crate::hot_reload::{HotReload, LastGood, RefusedChange};
use crate::identity::Identity;
use crate::telemetry::Metrics;

/// A rules file: `rules: [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

/// Where the rules come from: `grants.rules` in the config file, and `grants.rules_file`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulesConfig {
    /// `grants.rules`, as read at start-up.
    pub inline: Vec<RuleSpec>,
    /// `grants.rules_file`.
    pub file: Option<PathBuf>,
    /// The config file, watched for changes of `grants.rules` (set by `Config::load`).
    pub config_file: Option<PathBuf>,
    /// How `grants.rules` is read again when the config file changes (set with it).
    pub reread_config: Option<ConfigRereader>,
}

/// Reads `grants.rules` again through the config loader, with every check it makes at
/// start-up; the loader sits above this stage, so it hands this in (`Config::load`).
#[derive(Clone)]
pub struct ConfigRereader(Arc<ReadRules>);

/// What a [`ConfigRereader`] calls.
type ReadRules = dyn Fn() -> Result<Vec<RuleSpec>, Vec<RuleProblem>> + Send + Sync;

impl ConfigRereader {
    /// A rereader calling `read`.
    pub fn new(
        read: impl Fn() -> Result<Vec<RuleSpec>, Vec<RuleProblem>> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(read))
    }
}

impl std::fmt::Debug for ConfigRereader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigRereader")
    }
}

impl PartialEq for ConfigRereader {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl RulesConfig {
    /// Every rule compiled: `grants.rules`, then the rules file's.
    pub fn compile(&self) -> Result<RuleSet, Vec<RuleProblem>> {
        let mut set = RuleSet::compile(&self.inline, "grants.rules")?;
        if let Some(file) = &self.file {
            let from_file = read_rules_file(file)?;
            let label = format!("{}: rules", file.display());
            set = set.followed_by(RuleSet::compile(&from_file, &label)?);
        }
        Ok(set)
    }

    /// The same rules read again: `grants.rules` from the config file, and the rules file.
    fn reread(&self) -> Result<RuleSet, Vec<RuleProblem>> {
        let mut fresh = self.clone();
        if let Some(reread) = &self.reread_config {
            fresh.inline = (reread.0)()?;
        }
        fresh.compile()
    }

    fn stamps(&self) -> [Option<FileStamp>; 2] {
        [
            self.config_file.as_deref().map(FileStamp::of),
            self.file.as_deref().map(FileStamp::of),
        ]
    }
}

fn read_rules_file(path: &std::path::Path) -> Result<Vec<RuleSpec>, Vec<RuleProblem>> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![(
            shown.clone(),
            format!("cannot read: {}", crate::config_check::io_reason(&e)),
        )]
    })?;
    let deserializer = serde_norway::Deserializer::from_str(&text);
    let file: RulesFile = serde_path_to_error::deserialize(deserializer)
        .map_err(|e| vec![(format!("{shown}: {}", e.path()), e.inner().to_string())])?;
    Ok(file.rules)
}

/// Describes problems as one line.
pub fn describe(problems: &[RuleProblem]) -> String {
    problems
        .iter()
        .map(|(path, reason)| format!("{path}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Rules that do not compile: every problem, each at its key path (or file).
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct RuleProblems(pub Vec<RuleProblem>);

/// The rules as a grant source, reloaded when their files change.
pub struct RulesGrants {
    config: RulesConfig,
    current: LastGood<RuleSet>,
    metrics: Arc<Metrics>,
}

impl RulesGrants {
    /// Compiles the rules; a start-up error names every problem.
    pub fn load(config: &RulesConfig, metrics: Arc<Metrics>) -> Result<Self, RuleProblems> {
        let set = config.compile().map_err(RuleProblems)?;
        Ok(Self {
            config: config.clone(),
            current: LastGood::new(set),
            metrics,
        })
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }
}

/// Compiled again whenever one of the rules' files changes; a change that does not compile is
/// refused and the last good rules keep serving.
impl HotReload for RulesGrants {
    type Value = RuleSet;
    type Stamp = [Option<FileStamp>; 2];
    type Error = RuleProblems;

    fn stamp(&self) -> Option<Self::Stamp> {
        Some(self.config.stamps())
    }

    async fn rebuild(&self) -> Result<RuleSet, RuleProblems> {
        self.config.reread().map_err(RuleProblems)
    }

    fn put_in_force(&self, set: RuleSet) {
        tracing::info!(rules = set.len(), "grant rules reloaded");
        self.current.store(set);
    }

    fn refused(&self, reason: &RuleProblems) {
        tracing::error!(%reason, "grant rules change refused; keeping the last good rules");
        self.metrics.grants_file_reload_refused();
    }

    fn refusal(&self) -> &RefusedChange {
        self.current.refusal_slot()
    }
}

impl GrantSource for RulesGrants {
    fn lookup<'a>(&'a self, _key: &'a str, _deadline: Instant) -> LookupFuture<'a> {
        Box::pin(async { Ok(None) })
    }

    fn lookup_identity<'a>(
        &'a self,
        identity: &'a Identity,
        _deadline: Instant,
    ) -> LookupFuture<'a> {
        let found = self.current.load().grants_for(identity).map(Arc::new);
        Box::pin(async move { Ok(found) })
    }

    fn label(&self) -> String {
        format!("rules ({} in force)", self.current.load().len())
    }

    fn explain<'a>(&'a self, identity: &'a Identity, _deadline: Instant) -> ExplainFuture<'a> {
        let lines = self
            .current
            .load()
            .explain(identity)
            .into_iter()
            .map(|m| {
                let grants = serde_json::to_string(&m.grants).unwrap_or_default();
                format!("{}: {} grants {grants}", m.rule, m.matched)
            })
            .collect();
        Box::pin(async move { lines })
    }

    fn warning(&self) -> Option<String> {
        self.current
            .refusal()
            .map(|reason| format!("grant rules change refused: {reason}"))
    }
}
