//! `grants:` — the ordered grant sources, their cache, and the policies for unknown subjects
//! and malformed entries.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ldap::LdapConfig;
use super::rules::{RuleSpec, RulesConfig};
use crate::config_check::ConfigCheck;

/// `grants:`, typed.
#[derive(Debug, Clone)]
pub struct GrantsConfig {
    /// The sources, in the order they are asked.
    pub sources: Vec<GrantSourceConfig>,
    /// How the sources' answers combine.
    pub merge: MergePolicy,
    /// Cache settings (used by remote stores).
    pub cache: GrantsCacheConfig,
    /// What a subject without an entry gets.
    pub unknown_subject: UnknownSubjectPolicy,
    /// What a subject whose store entry is not valid grants gets.
    pub malformed_item: MalformedItemPolicy,
    /// Accept a grants file with no subjects (refused by default, like a broken edit).
    pub allow_empty: bool,
}

/// One grant source with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantSourceConfig {
    /// A YAML file, hot-reloaded.
    File(PathBuf),
    /// A DynamoDB table keyed by `subject`.
    Dynamodb(DynamoDbConfig),
    /// The tags of an IAM caller's role.
    IamRoleTags(IamRoleTagsConfig),
    /// Rules over identity attributes and IdP claims.
    Rules(RulesConfig),
    /// An LDAP directory's groups.
    Ldap(Box<LdapConfig>),
}

impl GrantSourceConfig {
    /// Whether this source can hold grants for AWS IAM identities (keyed by role ARN).
    pub(crate) fn answers_for_iam(&self) -> bool {
        matches!(
            self,
            Self::Dynamodb(_) | Self::IamRoleTags(_) | Self::Rules(_)
        )
    }
}

/// The names `grants.source` / `grants.sources` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GrantSourceKind {
    File,
    Dynamodb,
    IamRoleTags,
    Rules,
    Ldap,
}

/// `grants:` as written: the source names, and each source's settings beside them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantsFile {
    #[serde(default)]
    source: Option<GrantSourceKind>,
    #[serde(default)]
    sources: Option<Vec<GrantSourceKind>>,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    dynamodb: Option<DynamoDbConfig>,
    #[serde(default)]
    iam_role_tags: IamRoleTagsConfig,
    #[serde(default)]
    ldap: Option<LdapConfig>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    rules_file: Option<PathBuf>,
    #[serde(default)]
    cache: GrantsCacheConfig,
    #[serde(default)]
    merge: MergePolicy,
    #[serde(default)]
    unknown_subject: UnknownSubjectPolicy,
    #[serde(default)]
    malformed_item: MalformedItemPolicy,
    #[serde(default)]
    allow_empty: bool,
}

impl GrantsConfig {
    /// Types `grants:`; `None` when a named source lacks its settings (recorded in `check`).
    pub(crate) fn from_file(file: GrantsFile, path: &str, check: &mut ConfigCheck) -> Option<Self> {
        let kinds = match (file.source, file.sources) {
            (Some(_), Some(_)) => {
                check.problem(
                    format!("{path}.sources"),
                    "`source` and `sources` are two spellings of one setting: use one",
                );
                return None;
            }
            (Some(one), None) => vec![one],
            (None, Some(list)) if list.is_empty() => {
                check.problem(format!("{path}.sources"), "name at least one source");
                return None;
            }
            (None, Some(list)) => list,
            (None, None) => vec![GrantSourceKind::File],
        };
        if !kinds.contains(&GrantSourceKind::Rules)
            && (!file.rules.is_empty() || file.rules_file.is_some())
        {
            check.problem(
                format!("{path}.rules"),
                "rules are set, but grants.sources does not name rules: they would grant nothing",
            );
        }
        let mut sources = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            if kinds[..i].contains(kind) {
                check.problem(format!("{path}.sources[{i}]"), "listed twice");
                continue;
            }
            match kind {
                GrantSourceKind::File => match &file.file {
                    Some(grants_file) => {
                        let mut grants_file = grants_file.clone();
                        check.resolve(&mut grants_file);
                        sources.push(GrantSourceConfig::File(grants_file));
                    }
                    None => check.problem(
                        format!("{path}.file"),
                        "required when grants.source is file",
                    ),
                },
                GrantSourceKind::Dynamodb => match &file.dynamodb {
                    Some(table) => {
                        table.check(&format!("{path}.dynamodb"), check);
                        sources.push(GrantSourceConfig::Dynamodb(table.clone()));
                    }
                    None => check.problem(
                        format!("{path}.dynamodb"),
                        "required when grants.source is dynamodb",
                    ),
                },
                GrantSourceKind::Ldap => match &file.ldap {
                    Some(ldap) => {
                        let mut ldap = ldap.clone();
                        ldap.check(&format!("{path}.ldap"), check);
                        sources.push(GrantSourceConfig::Ldap(Box::new(ldap)));
                    }
                    None => check.problem(
                        format!("{path}.ldap"),
                        "required when grants.sources names ldap",
                    ),
                },
                GrantSourceKind::Rules => {
                    let mut rules = RulesConfig {
                        inline: file.rules.clone(),
                        file: file.rules_file.clone(),
                        config_file: None,
                        reread_config: None,
                    };
                    if let Some(rules_file) = &mut rules.file {
                        check.resolve(rules_file);
                    }
                    if rules.inline.is_empty() && rules.file.is_none() {
                        check.problem(
                            format!("{path}.rules"),
                            "required when grants.sources names rules (or set grants.rules_file)",
                        );
                        continue;
                    }
                    match rules.compile() {
                        Ok(_) => sources.push(GrantSourceConfig::Rules(rules)),
                        Err(problems) => {
                            for (key, reason) in problems {
                                check.problem(key, reason);
                            }
                        }
                    }
                }
                GrantSourceKind::IamRoleTags => {
                    file.iam_role_tags
                        .check(&format!("{path}.iam_role_tags"), check);
                    sources.push(GrantSourceConfig::IamRoleTags(file.iam_role_tags.clone()));
                }
            }
        }
        (sources.len() == kinds.len()).then_some(Self {
            sources,
            merge: file.merge,
            cache: file.cache,
            unknown_subject: file.unknown_subject,
            malformed_item: file.malformed_item,
            allow_empty: file.allow_empty,
        })
    }
}

impl GrantsConfig {
    /// Whether a source reads IdP claims beyond the registered ones (rules do).
    pub fn reads_idp_claims(&self) -> bool {
        self.sources
            .iter()
            .any(|source| matches!(source, GrantSourceConfig::Rules(_)))
    }

    /// `grants.rules` as written in the config file (empty without a rules source).
    pub(crate) fn rules_inline(&self) -> Vec<crate::grants::rules::RuleSpec> {
        self.sources
            .iter()
            .find_map(|source| match source {
                GrantSourceConfig::Rules(rules) => Some(rules.inline.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Notes the file the config was read from, so that `grants.rules` written in it is
    /// reloaded when it changes.
    pub(crate) fn watch_config_file(
        &mut self,
        config_file: &std::path::Path,
        reread: crate::grants::rules::ConfigRereader,
    ) {
        for source in &mut self.sources {
            if let GrantSourceConfig::Rules(rules) = source
                && !rules.inline.is_empty()
            {
                rules.config_file = Some(config_file.to_owned());
                rules.reread_config = Some(reread.clone());
            }
        }
    }
}

/// `grants.dynamodb`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbConfig {
    /// The table, keyed by the string attribute `subject`.
    pub table: String,
    /// AWS region; default from the standard chain.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override; `AWS_ENDPOINT_URL_DYNAMODB` works as well.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Upper bound of one GetItem, retries included (the Check's deadline bounds it too).
    #[serde(default = "DynamoDbConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per GetItem, the first included.
    #[serde(default = "DynamoDbConfig::default_max_attempts")]
    pub max_attempts: u32,
}

impl DynamoDbConfig {
    fn default_timeout() -> Duration {
        Duration::from_millis(250)
    }

    fn default_max_attempts() -> u32 {
        2
    }

    fn check(&self, path: &str, check: &mut ConfigCheck) {
        if self.table.is_empty() {
            check.problem(format!("{path}.table"), "must not be empty");
        }
        if self.max_attempts == 0 || self.max_attempts > 5 {
            check.problem(format!("{path}.max_attempts"), "must be 1 to 5");
        }
    }
}

/// `grants.iam_role_tags` — IAM, asked for a role's tags.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IamRoleTagsConfig {
    /// Signing region of IAM calls (IAM is global; default `us-east-1`).
    pub region: Option<String>,
    /// Endpoint override; `AWS_ENDPOINT_URL_IAM` works as well.
    pub endpoint_url: Option<String>,
    /// Upper bound of one ListRoleTags, retries included (the Check's deadline bounds it too).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
}

impl Default for IamRoleTagsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            timeout: Duration::from_millis(500),
            max_attempts: 2,
        }
    }
}

impl IamRoleTagsConfig {
    fn check(&self, path: &str, check: &mut ConfigCheck) {
        if self.max_attempts == 0 || self.max_attempts > 5 {
            check.problem(format!("{path}.max_attempts"), "must be 1 to 5");
        }
    }
}

/// `grants.cache`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrantsCacheConfig {
    /// How long found grants are reused.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long "no such subject" is reused.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Upper bound of cached subjects.
    pub max_entries: u64,
    /// How long past its freshness a cached answer keeps serving while the store fails.
    #[serde(with = "humantime_serde")]
    pub stale_for: Duration,
}

impl Default for GrantsCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            max_entries: 100_000,
            stale_for: Duration::from_secs(300),
        }
    }
}

/// `grants.merge`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergePolicy {
    /// The first source that knows the identity answers alone.
    #[default]
    First,
    /// Every source is asked; the roles of all that know the identity are combined,
    /// de-duplicated and sorted. A source that cannot answer fails the look-up (503): never a
    /// silently smaller grant.
    Union,
}

impl MergePolicy {
    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Union => "union",
        }
    }
}

/// `grants.unknown_subject`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSubjectPolicy {
    /// Mint with empty grants (the reference behaviour).
    #[default]
    Empty,
    /// Refuse with 403.
    Deny,
}

/// `grants.malformed_item`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedItemPolicy {
    /// 503, logged with the subject: the operator must fix the item (default).
    #[default]
    Unavailable,
    /// Mint with empty grants, logged with the subject.
    Empty,
}
