//! `grants.rules`: grants that follow from who the caller is, not from a list of subjects.
//!
//! A rule matches one attribute of the [`Identity`] — an IdP claim such as `groups`, or the
//! issuer, subject, e-mail, certificate CN/O/OU, SPIFFE ID, AWS account or role name — against
//! an anchored glob ([`pattern`]), optionally only for one issuer, and grants roles; a `*`'s
//! text can name the database (`{1}`). Every rule that matches contributes; the result is
//! de-duplicated and sorted. No rule matching means the source does not know the identity.
//!
//! Rules are compiled once (start-up, and each reload of their file or of the config file's
//! `grants.rules`); a refused reload keeps the last good rules and shows in `/readyz`.
//! A claim of the wrong type, or a capture that would make an impossible database name, skips
//! that rule (or that database) for the Check, with a warning at most once a minute per rule.

mod index;
pub(crate) mod pattern;
mod source;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use self::index::RuleIndex;
use self::pattern::{Captures, NameTemplate, Pattern};
pub use self::source::{RulesConfig, RulesGrants, describe};
use super::Grants;
use crate::identity::Identity;

/// An identity attribute a rule can match (`attribute:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityAttribute {
    /// The token's `iss` (`x509` / `aws_iam` names for certificates and IAM callers).
    Issuer,
    /// The subject.
    Subject,
    /// The `email` claim.
    Email,
    /// The client certificate's subject CN.
    CertCn,
    /// The client certificate's subject O.
    CertOrg,
    /// The client certificate's subject OU.
    CertOu,
    /// The client certificate's SPIFFE ID (URI SAN).
    SpiffeId,
    /// An IAM caller's 12-digit account.
    AwsAccount,
    /// An IAM caller's role name.
    AwsRole,
}

impl IdentityAttribute {
    /// The name as written in a rule.
    pub fn name(self) -> &'static str {
        match self {
            Self::Issuer => "issuer",
            Self::Subject => "subject",
            Self::Email => "email",
            Self::CertCn => "cert_cn",
            Self::CertOrg => "cert_org",
            Self::CertOu => "cert_ou",
            Self::SpiffeId => "spiffe_id",
            Self::AwsAccount => "aws_account",
            Self::AwsRole => "aws_role",
        }
    }
}

/// One rule as written in `grants.rules` or a rules file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The IdP claim to match (a string or an array of strings).
    #[serde(default)]
    pub claim: Option<String>,
    /// The identity attribute to match (instead of `claim`).
    #[serde(default)]
    pub attribute: Option<IdentityAttribute>,
    /// Only identities of this issuer (exact).
    #[serde(default)]
    pub issuer: Option<String>,
    /// An anchored glob: `*` any text (a capture), `\*` a literal star.
    #[serde(rename = "match")]
    pub pattern: String,
    /// The roles granted on a match; database names may use `{N}`, the N-th `*`'s text.
    pub grant: Grants,
}

/// A value mapping (`grants.ldap.group_patterns`): a pattern over values a source found
/// (LDAP group DNs), and the roles a match grants.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValuePattern {
    /// An anchored glob, as in a rule.
    #[serde(rename = "match")]
    pub pattern: String,
    /// The roles granted on a match; database names may use `{N}`.
    pub grant: Grants,
}

/// What a rule reads.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Matched {
    Claim(String),
    Attribute(IdentityAttribute),
    /// Values a source passes in ([`RuleSet::grants_for_values`]).
    Given,
}

/// A compiled rule.
#[derive(Debug)]
struct Rule {
    /// Where it was written (`grants.rules[2]`), for logs and `explain`.
    label: String,
    /// Its place in the set (for `explain`'s order).
    position: usize,
    matched: Matched,
    issuer: Option<String>,
    pattern: Pattern,
    global: Vec<String>,
    databases: Vec<(NameTemplate, Vec<String>)>,
    /// Unix second of the last warning about this rule.
    last_warned: AtomicU64,
}

/// One rule that matched, for `explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMatch {
    /// Where the rule was written.
    pub rule: String,
    /// What it matched on, and the value (`claim groups = "evs-db-orders-writer"`).
    pub matched: String,
    /// What it granted for this value.
    pub grants: Grants,
}

/// Compiled rules, indexed by what they read and the text their patterns start with.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    index: RuleIndex,
}

/// A problem in a rule: its key path and the reason.
pub type RuleProblem = (String, String);

impl RuleSet {
    fn new(mut rules: Vec<Rule>) -> Self {
        for (position, rule) in rules.iter_mut().enumerate() {
            rule.position = position;
        }
        let index = RuleIndex::build(&rules);
        Self { rules, index }
    }

    /// These rules followed by `more`'s.
    fn followed_by(self, more: Self) -> Self {
        Self::new(self.rules.into_iter().chain(more.rules).collect())
    }

    /// Compiles `specs`; `path` prefixes each problem's key path (`grants.rules`).
    pub fn compile(specs: &[RuleSpec], path: &str) -> Result<Self, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let label = format!("{path}[{i}]");
            match compile_rule(spec, &label) {
                Ok(rule) => rules.push(rule),
                Err(mut found) => problems.append(&mut found),
            }
        }
        if problems.is_empty() {
            Ok(Self::new(rules))
        } else {
            Err(problems)
        }
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Mappings over values a source finds (LDAP groups): `exact` values and `patterns`,
    /// both compared in ASCII lower case; `path` prefixes each problem's key path.
    pub fn for_values(
        exact: &BTreeMap<String, Grants>,
        patterns: &[ValuePattern],
        path: &str,
    ) -> Result<Self, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for (value, grant) in exact {
            let label = format!("{path}.groups.{value}");
            let pattern = Pattern::exact(&value.to_ascii_lowercase());
            match compile_grant(grant, &pattern, &label) {
                Ok(databases) => rules.push(Rule::given(label, pattern, grant, databases)),
                Err(mut found) => problems.append(&mut found),
            }
        }
        for (i, spec) in patterns.iter().enumerate() {
            let label = format!("{path}.group_patterns[{i}]");
            let pattern = match Pattern::parse(&spec.pattern.to_ascii_lowercase()) {
                Ok(pattern) => pattern,
                Err(reason) => {
                    problems.push((format!("{label}.match"), reason));
                    continue;
                }
            };
            match compile_grant(&spec.grant, &pattern, &label) {
                Ok(databases) => rules.push(Rule::given(label, pattern, &spec.grant, databases)),
                Err(mut found) => problems.append(&mut found),
            }
        }
        if problems.is_empty() {
            Ok(Self::new(rules))
        } else {
            Err(problems)
        }
    }

    /// The grants the mappings give `values` (already in lower case), combined; `None` when
    /// none matched.
    pub fn grants_for_values(&self, values: &[String]) -> Option<Grants> {
        let mut global = Vec::new();
        let mut databases = BTreeMap::new();
        let mut matched = false;
        self.index
            .each_match(&self.rules, Read::Given(values), |rule, _, captures| {
                matched |= rule.grant(captures, &mut global, &mut databases);
            });
        matched.then(|| Grants::canonical(global, databases))
    }

    /// The grants every matching rule gives `identity`, combined; `None` when none matched.
    pub fn grants_for(&self, identity: &Identity) -> Option<Grants> {
        let mut global = Vec::new();
        let mut databases = BTreeMap::new();
        let mut matched = false;
        self.index.each_match(
            &self.rules,
            Read::Identity(identity),
            |rule, _, captures| {
                matched |= rule.grant(captures, &mut global, &mut databases);
            },
        );
        matched.then(|| Grants::canonical(global, databases))
    }

    /// Each rule that matches `identity`, with the value and what it granted.
    pub fn explain(&self, identity: &Identity) -> Vec<RuleMatch> {
        self.explain_read(Read::Identity(identity))
    }

    /// Each mapping that matches one of `values` (in lower case), with what it granted.
    pub fn explain_values(&self, values: &[String]) -> Vec<RuleMatch> {
        self.explain_read(Read::Given(values))
    }

    fn explain_read(&self, read: Read<'_>) -> Vec<RuleMatch> {
        let mut found = Vec::new();
        self.index
            .each_match(&self.rules, read, |rule, value, captures| {
                let (mut global, mut databases) = (Vec::new(), BTreeMap::new());
                let _granted = rule.grant(captures, &mut global, &mut databases);
                let on = match &rule.matched {
                    Matched::Claim(name) => format!("claim {name}"),
                    Matched::Attribute(attribute) => format!("attribute {}", attribute.name()),
                    Matched::Given => "group".to_owned(),
                };
                found.push((
                    rule.position,
                    RuleMatch {
                        rule: rule.label.clone(),
                        matched: format!("{on} = {value:?}"),
                        grants: Grants::canonical(global, databases),
                    },
                ));
            });
        // In the order the rules are written (the index visits them by what they read).
        found.sort_by_key(|(position, _)| *position);
        found.into_iter().map(|(_, found)| found).collect()
    }
}

/// Where the values rules match come from.
#[derive(Clone, Copy)]
enum Read<'a> {
    /// The identity's attributes and claims.
    Identity(&'a Identity),
    /// Values a source found (LDAP group DNs, in lower case).
    Given(&'a [String]),
}

fn compile_rule(spec: &RuleSpec, label: &str) -> Result<Rule, Vec<RuleProblem>> {
    let mut problems = Vec::new();
    let matched = match (&spec.claim, spec.attribute) {
        (Some(claim), None) if !claim.is_empty() => Some(Matched::Claim(claim.clone())),
        (None, Some(attribute)) => Some(Matched::Attribute(attribute)),
        (Some(_), Some(_)) => {
            problems.push((
                label.to_owned(),
                "set `claim` or `attribute`, not both".into(),
            ));
            None
        }
        _ => {
            problems.push((
                label.to_owned(),
                "set `claim` (an IdP claim such as groups) or `attribute`".into(),
            ));
            None
        }
    };
    let pattern = Pattern::parse(&spec.pattern)
        .map_err(|reason| problems.push((format!("{label}.match"), reason)))
        .ok();
    let databases = match &pattern {
        Some(pattern) => compile_grant(&spec.grant, pattern, label)
            .map_err(|mut found| problems.append(&mut found))
            .ok(),
        None => None,
    };
    match (matched, pattern, databases) {
        (Some(matched), Some(pattern), Some(databases)) if problems.is_empty() => Ok(Rule {
            label: label.to_owned(),
            position: 0,
            matched,
            issuer: spec.issuer.clone(),
            pattern,
            global: spec.grant.global.clone(),
            databases,
            last_warned: AtomicU64::new(0),
        }),
        _ => Err(problems),
    }
}

/// A grant's database names as templates over `pattern`'s captures.
fn compile_grant(
    grant: &Grants,
    pattern: &Pattern,
    label: &str,
) -> Result<Vec<(NameTemplate, Vec<String>)>, Vec<RuleProblem>> {
    let mut problems = Vec::new();
    let mut databases = Vec::new();
    for (name, roles) in &grant.databases {
        match NameTemplate::parse(name, pattern.stars()) {
            Ok(template) => databases.push((template, roles.clone())),
            Err(reason) => problems.push((format!("{label}.grant.databases.{name}"), reason)),
        }
    }
    if problems.is_empty() {
        Ok(databases)
    } else {
        Err(problems)
    }
}

impl Rule {
    /// A mapping over given values.
    fn given(
        label: String,
        pattern: Pattern,
        grant: &Grants,
        databases: Vec<(NameTemplate, Vec<String>)>,
    ) -> Self {
        Self {
            label,
            position: 0,
            matched: Matched::Given,
            issuer: None,
            pattern,
            global: grant.global.clone(),
            databases,
            last_warned: AtomicU64::new(0),
        }
    }

    /// Calls `visit` with each value of the matched attribute; an error when the claim has
    /// a type no rule can match.
    fn each_value(&self, identity: &Identity, mut visit: impl FnMut(&str)) -> Result<(), String> {
        let name = match &self.matched {
            Matched::Claim(name) => name,
            Matched::Attribute(attribute) => {
                if let Some(value) = attribute_value(identity, *attribute) {
                    visit(value);
                }
                return Ok(());
            }
            Matched::Given => return Ok(()),
        };
        let Some(value) = identity.claims.as_ref().and_then(|c| c.get(name)) else {
            return Ok(());
        };
        match value {
            serde_json::Value::String(one) => visit(one),
            serde_json::Value::Array(items) => {
                if !items.iter().all(serde_json::Value::is_string) {
                    return Err(format!(
                        "claim {name} is an array with items that are not strings; rule skipped"
                    ));
                }
                items.iter().filter_map(|v| v.as_str()).for_each(visit);
            }
            other => {
                return Err(format!(
                    "claim {name} is {}, not a string or an array of strings; rule skipped",
                    json_type(other)
                ));
            }
        }
        Ok(())
    }

    /// Adds this rule's roles for one match; whether it granted anything (a match whose
    /// only database name was refused grants nothing, and does not make the identity known).
    fn grant(
        &self,
        captures: &Captures<'_>,
        global: &mut Vec<String>,
        databases: &mut BTreeMap<String, Vec<String>>,
    ) -> bool {
        let mut granted = !self.global.is_empty();
        global.extend(self.global.iter().cloned());
        for (template, roles) in &self.databases {
            match template.render(captures) {
                Ok(name) => {
                    granted = true;
                    databases
                        .entry(name)
                        .or_default()
                        .extend(roles.iter().cloned());
                }
                Err(reason) => self.warn(&format!("{reason}; that database is not granted")),
            }
        }
        granted
    }

    /// A warning about this rule, at most once a minute.
    fn warn(&self, reason: &str) {
        let now = crate::clock::unix_now();
        let last = self.last_warned.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .last_warned
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(rule = %self.label, "{reason}");
        }
    }
}

fn attribute_value(identity: &Identity, attribute: IdentityAttribute) -> Option<&str> {
    let certificate = identity.certificate.as_deref();
    let aws = identity.aws.as_deref();
    match attribute {
        IdentityAttribute::Issuer => Some(&identity.issuer),
        IdentityAttribute::Subject => Some(&identity.subject),
        IdentityAttribute::Email => identity.email.as_deref(),
        IdentityAttribute::CertCn => certificate?.cn.as_deref(),
        IdentityAttribute::CertOrg => certificate?.org.as_deref(),
        IdentityAttribute::CertOu => certificate?.ou.as_deref(),
        IdentityAttribute::SpiffeId => certificate?.spiffe_id.as_deref(),
        IdentityAttribute::AwsAccount => aws.map(|aws| aws.account.as_str()),
        IdentityAttribute::AwsRole => aws?.role_name.as_deref(),
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
