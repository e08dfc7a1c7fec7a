//! `aws_iam:` — presigned `sts:GetCallerIdentity` tokens (the EKS scheme) as credentials.

use std::time::Duration;

use serde::Deserialize;

use super::arn::{KNOWN_PARTITIONS, is_account_id};
use crate::config_check::ConfigCheck;
use crate::urls::is_loopback_host;

/// `aws_iam:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsIamConfig {
    /// Off by default.
    pub enabled: bool,
    /// The value callers sign as `x-k8s-aws-id` (`aws eks get-token --cluster-name <server_id>`);
    /// the sidecar sends it to STS, so a token made for another service does not verify here.
    pub server_id: String,
    /// One more STS endpoint to accept besides AWS's own (a VPC endpoint; `http://` only on
    /// loopback, for tests), as `scheme://host[:port]`.
    pub sts_endpoint: Option<String>,
    /// When set, the only STS endpoints ever called (AWS's own regional hosts are then not
    /// accepted unless listed); a token naming any other host is refused before any call.
    pub sts_endpoints: Option<Vec<String>>,
    /// The AWS partitions whose callers are served (default `[aws]`): `aws`, `aws-cn`,
    /// `aws-us-gov`. STS hosts of other partitions are never called.
    pub partitions: Vec<String>,
    /// Accounts served besides the sidecar's own (the account of its own AWS credentials,
    /// resolved once at start). Callers from any other account are refused with 403.
    pub accounts: Vec<ServedAccount>,
    /// Upper bound of one STS call (the Check's deadline bounds it too).
    #[serde(with = "humantime_serde")]
    pub sts_timeout: Duration,
}

/// One entry of `aws_iam.accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServedAccount {
    /// The 12-digit account id.
    pub account: String,
    /// A role in that account the sidecar assumes to read its roles' tags
    /// (`grants.sources: [iam_role_tags]`). Without it, role tags are never read for this
    /// account: its callers get grants only from sources that name their whole ARN.
    #[serde(default)]
    pub tags_role_arn: Option<String>,
}

impl Default for AwsIamConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            server_id: String::new(),
            sts_endpoint: None,
            sts_endpoints: None,
            partitions: vec!["aws".to_owned()],
            accounts: Vec::new(),
            sts_timeout: Duration::from_secs(2),
        }
    }
}

impl AwsIamConfig {
    pub(crate) fn check(&self, path: &str, check: &mut ConfigCheck) {
        if !self.enabled {
            return;
        }
        if self.server_id.is_empty() {
            check.problem(
                format!("{path}.server_id"),
                "required when aws_iam is enabled: the x-k8s-aws-id value callers sign",
            );
        } else if !self
            .server_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            check.problem(
                format!("{path}.server_id"),
                "letters, digits and - _ . : only (it is sent as a header value)",
            );
        }
        if let Some(endpoint) = &self.sts_endpoint {
            check.check(format!("{path}.sts_endpoint"), check_endpoint(endpoint));
        }
        match &self.sts_endpoints {
            Some(_) if self.sts_endpoint.is_some() => check.problem(
                format!("{path}.sts_endpoints"),
                "set either sts_endpoint (one extra endpoint) or sts_endpoints (the only ones), not both",
            ),
            Some(list) if list.is_empty() => check.problem(
                format!("{path}.sts_endpoints"),
                "an empty list would refuse every token; leave it unset for AWS's own endpoints",
            ),
            Some(list) => {
                for (i, endpoint) in list.iter().enumerate() {
                    check.check(format!("{path}.sts_endpoints[{i}]"), check_endpoint(endpoint));
                }
            }
            None => {}
        }
        if self.partitions.is_empty() {
            check.problem(
                format!("{path}.partitions"),
                "must name at least one partition",
            );
        }
        for (i, partition) in self.partitions.iter().enumerate() {
            if !KNOWN_PARTITIONS.contains(&partition.as_str()) {
                check.problem(
                    format!("{path}.partitions[{i}]"),
                    format!("unknown partition; one of {}", KNOWN_PARTITIONS.join(", ")),
                );
            }
        }
        for (i, served) in self.accounts.iter().enumerate() {
            if !is_account_id(&served.account) {
                check.problem(
                    format!("{path}.accounts[{i}].account"),
                    "must be a 12-digit AWS account id (quoted, so YAML keeps leading zeros)",
                );
            }
            if let Some(role) = &served.tags_role_arn {
                check.check(
                    format!("{path}.accounts[{i}].tags_role_arn"),
                    self.check_tags_role(role, &served.account),
                );
            }
        }
        if self.sts_timeout < Duration::from_millis(10) {
            check.problem(format!("{path}.sts_timeout"), "must be at least 10ms");
        }
    }

    /// A role ARN in `account`, of a served partition.
    fn check_tags_role(&self, role: &str, account: &str) -> Result<(), TagsRoleError> {
        let principal = super::arn::canonical(role)
            .ok()
            .filter(|p| p.role_name.is_some() && p.session.is_none())
            .ok_or(TagsRoleError::NotARole)?;
        if principal.account != account {
            return Err(TagsRoleError::OtherAccount);
        }
        if !self.partitions.contains(&principal.partition) {
            return Err(TagsRoleError::OtherPartition);
        }
        Ok(())
    }
}

/// Why an account's `tags_role_arn` is refused.
#[derive(Debug, thiserror::Error)]
enum TagsRoleError {
    #[error("must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)")]
    NotARole,
    #[error("must be a role in the account it reads tags for")]
    OtherAccount,
    #[error("its partition is not among aws_iam.partitions")]
    OtherPartition,
}

/// Why an STS endpoint is refused.
#[derive(Debug, thiserror::Error)]
enum EndpointError {
    #[error("not a URL: {0}")]
    NotAUrl(#[from] url::ParseError),
    #[error("must be scheme://host[:port] without credentials")]
    Credentials,
    #[error("must be scheme://host[:port] with nothing after it")]
    MoreThanAHost,
    #[error("must use https:// (plain http:// only for loopback hosts)")]
    PlainHttp,
}

/// `https://host[:port]`, or `http://` to a loopback host; nothing after the authority.
fn check_endpoint(text: &str) -> Result<(), EndpointError> {
    let url = url::Url::parse(text)?;
    let host = url.host_str().unwrap_or("");
    if host.is_empty() || !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::Credentials);
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(EndpointError::MoreThanAHost);
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        _ => Err(EndpointError::PlainHttp),
    }
}
