//! One rule: what it reads, how it is compiled from its spec, and what a match grants.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::pattern::{Captures, NameTemplate, Pattern};
use super::{IdentityAttribute, RuleProblem, RuleSpec};
use crate::grants::Grants;
use crate::identity::Identity;

/// What a rule reads.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) enum Matched {
    Claim(String),
    Attribute(IdentityAttribute),
    /// Values a source passes in ([`super::RuleSet::grants_for_values`]).
    Given,
}

/// A compiled rule.
#[derive(Debug)]
pub(super) struct Rule {
    /// Where it was written (`grants.rules[2]`), for logs and `explain`.
    pub(super) label: String,
    /// Its place in the set (for `explain`'s order).
    pub(super) position: usize,
    pub(super) matched: Matched,
    pub(super) issuer: Option<String>,
    pub(super) pattern: Pattern,
    pub(super) global: Vec<String>,
    pub(super) databases: Vec<(NameTemplate, Vec<String>)>,
    /// Unix second of the last warning about this rule.
    pub(super) last_warned: AtomicU64,
}

pub(super) fn compile_rule(spec: &RuleSpec, label: &str) -> Result<Rule, Vec<RuleProblem>> {
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
        .map_err(|reason| problems.push((format!("{label}.match"), reason.to_string())))
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
pub(super) fn compile_grant(
    grant: &Grants,
    pattern: &Pattern,
    label: &str,
) -> Result<Vec<(NameTemplate, Vec<String>)>, Vec<RuleProblem>> {
    let mut problems = Vec::new();
    let mut databases = Vec::new();
    for (name, roles) in &grant.databases {
        match NameTemplate::parse(name, pattern.stars()) {
            Ok(template) => databases.push((template, roles.clone())),
            Err(reason) => problems.push((
                format!("{label}.grant.databases.{name}"),
                reason.to_string(),
            )),
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
    pub(super) fn given(
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
    pub(super) fn each_value(
        &self,
        identity: &Identity,
        mut visit: impl FnMut(&str),
    ) -> Result<(), UnmatchableClaim> {
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
                    return Err(UnmatchableClaim::MixedArray(name.clone()));
                }
                items.iter().filter_map(|v| v.as_str()).for_each(visit);
            }
            other => {
                return Err(UnmatchableClaim::OtherType {
                    claim: name.clone(),
                    shape: json_type(other),
                });
            }
        }
        Ok(())
    }

    /// Adds this rule's roles for one match; whether it granted anything (a match whose
    /// only database name was refused grants nothing, and does not make the identity known).
    pub(super) fn grant(
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
    pub(super) fn warn(&self, reason: &str) {
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
        IdentityAttribute::K8sNamespace => Some(&identity.kubernetes.as_deref()?.namespace),
        IdentityAttribute::K8sServiceAccount => {
            Some(&identity.kubernetes.as_deref()?.service_account)
        }
        IdentityAttribute::K8sPod => identity.kubernetes.as_deref()?.pod.as_deref(),
    }
}

/// A claim a rule reads whose value no pattern can match; the rule is skipped for the identity.
#[derive(Debug, thiserror::Error)]
pub(super) enum UnmatchableClaim {
    /// An array holding something besides strings.
    #[error("claim {0} is an array with items that are not strings; rule skipped")]
    MixedArray(String),
    /// Neither a string nor an array.
    #[error("claim {claim} is {shape}, not a string or an array of strings; rule skipped")]
    OtherType {
        /// The claim's name.
        claim: String,
        /// Its JSON type, in words.
        shape: &'static str,
    },
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
