//! `aws_iam:` — presigned `sts:GetCallerIdentity` tokens (the EKS scheme) as credentials.

use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigCheck;
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
    /// Upper bound of one STS call (the Check's deadline bounds it too).
    #[serde(with = "humantime_serde")]
    pub sts_timeout: Duration,
}

impl Default for AwsIamConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            server_id: String::new(),
            sts_endpoint: None,
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
        if self.sts_timeout < Duration::from_millis(10) {
            check.problem(format!("{path}.sts_timeout"), "must be at least 10ms");
        }
    }
}

/// `https://host[:port]`, or `http://` to a loopback host; nothing after the authority.
fn check_endpoint(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    let host = url.host_str().unwrap_or("");
    if host.is_empty() || !url.username().is_empty() || url.password().is_some() {
        return Err("must be scheme://host[:port] without credentials".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("must be scheme://host[:port] with nothing after it".into());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        _ => Err("must use https:// (plain http:// only for loopback hosts)".into()),
    }
}
