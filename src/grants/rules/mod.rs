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
mod rule;
mod source;

use std::collections::BTreeMap;

use serde::Deserialize;

use self::index::RuleIndex;
use self::pattern::Pattern;
use self::rule::{Matched, Rule, compile_grant, compile_rule};
pub use self::source::{ConfigRereader, RuleProblems, RulesConfig, RulesGrants, describe};
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
    /// A Kubernetes service account's namespace.
    K8sNamespace,
    /// A Kubernetes service account's name.
    K8sServiceAccount,
    /// The pod a Kubernetes service-account token is bound to.
    K8sPod,
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
            Self::K8sNamespace => "k8s_namespace",
            Self::K8sServiceAccount => "k8s_service_account",
            Self::K8sPod => "k8s_pod",
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
                    problems.push((format!("{label}.match"), reason.to_string()));
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

#[cfg(test)]
mod tests;
