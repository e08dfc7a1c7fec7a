//! Stage 3, look up: find the grants of an [`Identity`].
//!
//! A [`GrantSource`] answers for one key (subject, e-mail address …); [`GrantsLookup`] asks the
//! configured sources in order, each with the lookup keys docs/configuration.md names — subject,
//! then e-mail — and applies the `unknown_subject` and `malformed_item` policies.

pub(crate) mod cache;
mod config;
pub(crate) mod dynamodb;
pub(crate) mod file;
pub(crate) mod iam_tags;
pub mod ldap;
pub mod rules;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::background::Background;
use crate::hot_reload::keep_fresh;
use serde::{Deserialize, Serialize};

use self::cache::CachedGrants;
pub(crate) use self::config::GrantsFile;
pub use self::config::{
    DynamoDbConfig, GrantSourceConfig, GrantsCacheConfig, GrantsConfig, IamRoleTagsConfig,
    MalformedItemPolicy, MergePolicy, UnknownSubjectPolicy,
};
use self::dynamodb::DynamoGrants;
use self::file::{FileGrants, GrantsFileError, RELOAD_INTERVAL};
use self::iam_tags::IamRoleTags;
use self::ldap::{LdapError, LdapGrants};
use self::rules::{RuleProblems, RulesGrants};
use crate::identity::Identity;
use crate::identity::aws_iam::ServedAccounts;
use crate::telemetry::Metrics;

/// What a subject may do: `{"global": [...], "databases": {"<db>": [...]}}`.
///
/// Grants are loaded once and shared behind `Arc`, never changed; [`Grants::fingerprint`] is
/// therefore computed once per loaded value, not per Check.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Roles that apply everywhere.
    #[serde(default)]
    pub global: Vec<String>,
    /// Roles per database.
    #[serde(default)]
    pub databases: BTreeMap<String, Vec<String>>,
    #[serde(skip)]
    fingerprint: std::sync::OnceLock<[u8; 32]>,
}

impl PartialEq for Grants {
    fn eq(&self, other: &Self) -> bool {
        self.global == other.global && self.databases == other.databases
    }
}

impl Eq for Grants {}

impl Grants {
    /// Grants from their parts.
    pub fn new(global: Vec<String>, databases: BTreeMap<String, Vec<String>>) -> Self {
        Self {
            global,
            databases,
            fingerprint: Default::default(),
        }
    }

    /// Every role of every one of `all`, de-duplicated and sorted: one canonical form, so
    /// the minted claim and the token cache's key do not depend on the sources' order.
    pub fn union(all: &[Arc<Grants>]) -> Self {
        let global: Vec<String> = all.iter().flat_map(|g| g.global.iter().cloned()).collect();
        let mut databases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for grants in all {
            for (database, roles) in &grants.databases {
                databases
                    .entry(database.clone())
                    .or_default()
                    .extend(roles.iter().cloned());
            }
        }
        Self::canonical(global, databases)
    }

    /// Grants from role lists that may repeat or be out of order, de-duplicated and sorted.
    pub fn canonical(
        mut global: Vec<String>,
        mut databases: BTreeMap<String, Vec<String>>,
    ) -> Self {
        global.sort();
        global.dedup();
        for roles in databases.values_mut() {
            roles.sort();
            roles.dedup();
        }
        Self::new(global, databases)
    }

    /// SHA-256 of the canonical JSON (the token cache's key part), computed on first use.
    pub fn fingerprint(&self) -> &[u8; 32] {
        self.fingerprint.get_or_init(|| {
            let json = serde_json::to_vec(self).unwrap_or_default();
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json);
            let mut fingerprint = [0u8; 32];
            fingerprint.copy_from_slice(digest.as_ref());
            fingerprint
        })
    }
}

/// A boxed future, so sources can be chosen at run time.
pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Arc<Grants>>, GrantsError>> + Send + 'a>>;

/// A boxed future of `explain` lines.
pub type ExplainFuture<'a> = Pin<Box<dyn Future<Output = Vec<String>> + Send + 'a>>;

/// A store of grants keyed by subject.
pub trait GrantSource: Send + Sync {
    /// The grants stored under `key`, or `None` when the store has no entry for it; remote
    /// stores give up at `deadline`.
    fn lookup<'a>(&'a self, key: &'a str, deadline: Instant) -> LookupFuture<'a>;

    /// The grants of `identity`: by default its entry under the first of its keys (subject,
    /// then e-mail) that has one. Sources that read more of the identity (rules, LDAP)
    /// answer here.
    fn lookup_identity<'a>(
        &'a self,
        identity: &'a Identity,
        deadline: Instant,
    ) -> LookupFuture<'a> {
        Box::pin(async move {
            for key in identity.grant_keys() {
                if let Some(grants) = self.lookup(key, deadline).await? {
                    return Ok(Some(grants));
                }
            }
            Ok(None)
        })
    }

    /// The grants of `identity` when this source has them at hand (a file held in memory),
    /// with no future built; `None` sends the caller to [`GrantSource::lookup_identity`].
    /// A Check asks this first: the look-up of a cached Check then allocates nothing.
    fn answer_now(&self, _identity: &Identity) -> Option<Result<Option<Arc<Grants>>, GrantsError>> {
        None
    }

    /// What this source is, for `explain`.
    fn label(&self) -> String;

    /// How this source reached its answer for `identity`, line by line, for `explain`
    /// (the rules or groups that matched; nothing for sources with one entry per key).
    fn explain<'a>(&'a self, _identity: &'a Identity, _deadline: Instant) -> ExplainFuture<'a> {
        Box::pin(async { Vec::new() })
    }

    /// Something an operator should see in `/readyz` (a refused reload), if any.
    fn warning(&self) -> Option<String> {
        None
    }

    /// How many subjects a caching source holds (`None`: it does not cache).
    fn cached_entries(&self) -> Option<u64> {
        None
    }
}

/// Why no grants were produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantsError {
    /// The subject has no grants and `unknown_subject: deny` is set.
    #[error("no grants: the subject is not known")]
    UnknownSubject,
    /// The store could not answer, and nothing cached could serve.
    #[error("grants store unavailable")]
    Unavailable,
    /// The store's entry for the subject is not valid grants (and `malformed_item: unavailable`).
    #[error("grants of this subject are malformed in the store")]
    Malformed,
}

/// Why the grants stage could not be set up; each names the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum GrantsStartError {
    /// `grants.file`.
    #[error("grants.file: {0}")]
    File(#[from] GrantsFileError),
    /// `grants.rules` or `grants.rules_file` (the problems name their keys).
    #[error("invalid grant rules: {0}")]
    Rules(#[from] RuleProblems),
    /// `grants.ldap` (the error names its key).
    #[error("{0}")]
    Ldap(Box<LdapError>),
}

impl From<LdapError> for GrantsStartError {
    fn from(e: LdapError) -> Self {
        Self::Ldap(Box::new(e))
    }
}

/// Grants look-up over the ordered sources, with the fallback order and the policies.
pub struct GrantsLookup {
    sources: Vec<Arc<dyn GrantSource>>,
    merge: MergePolicy,
    unknown_subject: UnknownSubjectPolicy,
    malformed_item: MalformedItemPolicy,
    empty: Arc<Grants>,
}

impl GrantsLookup {
    /// Wraps sources (asked in order) with the policies.
    pub fn new(
        sources: Vec<Arc<dyn GrantSource>>,
        merge: MergePolicy,
        unknown_subject: UnknownSubjectPolicy,
        malformed_item: MalformedItemPolicy,
    ) -> Self {
        Self {
            sources,
            merge,
            unknown_subject,
            malformed_item,
            empty: Arc::new(Grants::default()),
        }
    }

    /// Builds every source `grants:` names: reads files (a start-up error when one is missing
    /// or invalid), connects clients, and starts the file reloaders in `background`.
    /// `accounts` are the AWS accounts served (`None` when IAM callers are off): role tags
    /// are read only for roles in them.
    pub(crate) async fn connect(
        config: &GrantsConfig,
        metrics: &Arc<Metrics>,
        accounts: Option<Arc<ServedAccounts>>,
        background: &Background,
    ) -> Result<Self, GrantsStartError> {
        let mut sources: Vec<Arc<dyn GrantSource>> = Vec::new();
        for source in &config.sources {
            match source {
                GrantSourceConfig::File(path) => {
                    let file =
                        Arc::new(FileGrants::load(path, config.allow_empty, metrics.clone())?);
                    tracing::info!(path = %path.display(), subjects = file.len(), "grants file loaded");
                    background.spawn_until_stopped(keep_fresh(file.clone(), RELOAD_INTERVAL, None));
                    sources.push(file);
                }
                GrantSourceConfig::Dynamodb(table) => {
                    let store = DynamoGrants::connect(table).await;
                    tracing::info!(table = %table.table, "grants from DynamoDB");
                    sources.push(Arc::new(CachedGrants::new(
                        store,
                        &config.cache,
                        metrics.clone(),
                    )));
                }
                GrantSourceConfig::Ldap(ldap) => {
                    let directory =
                        LdapGrants::new(ldap, &config.cache, metrics.clone(), background.clone())?;
                    tracing::info!(url = %ldap.url, tls = ldap.uses_tls(), "grants from LDAP");
                    sources.push(Arc::new(directory));
                }
                GrantSourceConfig::Rules(rules) => {
                    let rules = Arc::new(RulesGrants::load(rules, metrics.clone())?);
                    tracing::info!(rules = rules.rules().len(), "grants from rules");
                    background.spawn_until_stopped(keep_fresh(
                        rules.clone(),
                        RELOAD_INTERVAL,
                        None,
                    ));
                    sources.push(rules);
                }
                GrantSourceConfig::IamRoleTags(iam) => {
                    tracing::info!("grants from IAM role tags");
                    sources.push(Arc::new(CachedGrants::new(
                        IamRoleTags::connect(iam, accounts.clone()).await,
                        &config.cache,
                        metrics.clone(),
                    )));
                }
            }
        }
        Ok(Self::new(
            sources,
            config.merge,
            config.unknown_subject,
            config.malformed_item,
        ))
    }

    /// What the sources want an operator to see (refused reloads), for `/readyz`.
    pub fn warnings(&self) -> Vec<String> {
        self.sources.iter().filter_map(|s| s.warning()).collect()
    }

    /// Subjects held by the caching sources; `None` when no source caches.
    pub fn cached_entries(&self) -> Option<u64> {
        self.sources
            .iter()
            .filter_map(|s| s.cached_entries())
            .reduce(|a, b| a + b)
    }

    /// The grants of `identity`. Within a source the first key (subject, then e-mail) with an
    /// entry answers; across sources, `merge: first` takes the first source that knows the
    /// identity and `merge: union` combines every source that does.
    pub async fn grants_for(
        &self,
        identity: &Identity,
        deadline: Instant,
    ) -> Result<Arc<Grants>, GrantsError> {
        let mut known: Vec<Arc<Grants>> = Vec::new();
        for source in &self.sources {
            if let Some(grants) = self.ask(source.as_ref(), identity, deadline).await? {
                if self.merge == MergePolicy::First {
                    return Ok(grants);
                }
                known.push(grants);
            }
        }
        match known.len() {
            0 => match self.unknown_subject {
                UnknownSubjectPolicy::Empty => Ok(self.empty.clone()),
                UnknownSubjectPolicy::Deny => Err(GrantsError::UnknownSubject),
            },
            1 => Ok(known.swap_remove(0)),
            _ => Ok(Arc::new(Grants::union(&known))),
        }
    }

    /// One source's answer for `identity`, with the `malformed_item` policy applied.
    async fn ask(
        &self,
        source: &dyn GrantSource,
        identity: &Identity,
        deadline: Instant,
    ) -> Result<Option<Arc<Grants>>, GrantsError> {
        let answer = match source.answer_now(identity) {
            Some(answer) => answer,
            None => source.lookup_identity(identity, deadline).await,
        };
        match answer {
            Err(GrantsError::Malformed) if self.malformed_item == MalformedItemPolicy::Empty => {
                Ok(Some(self.empty.clone()))
            }
            answer => answer,
        }
    }

    /// Every source's answer for `identity` and how it came about, then the grants a Check
    /// would get: what `explain` prints.
    pub async fn explain(&self, identity: &Identity, deadline: Instant) -> Explanation {
        let mut sources = Vec::new();
        for source in &self.sources {
            sources.push(SourceAnswer {
                source: source.label(),
                answer: self.ask(source.as_ref(), identity, deadline).await,
                details: source.explain(identity, deadline).await,
            });
        }
        Explanation {
            sources,
            merge: self.merge,
            result: self.grants_for(identity, deadline).await,
        }
    }
}

/// One source's part in an [`Explanation`].
#[derive(Debug)]
pub struct SourceAnswer {
    /// What the source is.
    pub source: String,
    /// Its grants for the identity (`None`: it does not know it).
    pub answer: Result<Option<Arc<Grants>>, GrantsError>,
    /// How it got there (the rules that matched).
    pub details: Vec<String>,
}

/// Why an identity has the grants it has.
#[derive(Debug)]
pub struct Explanation {
    /// Each source, in order.
    pub sources: Vec<SourceAnswer>,
    /// How their answers combine.
    pub merge: MergePolicy,
    /// What a Check would mint with.
    pub result: Result<Arc<Grants>, GrantsError>,
}

#[cfg(test)]
mod tests;
