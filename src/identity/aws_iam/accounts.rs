//! Which AWS accounts' callers this sidecar serves, and whose role tags it may read.
//!
//! A role name means nothing outside its account: any AWS customer can create a role called
//! `orders-service`. So an IAM caller is served only when its partition is in
//! `aws_iam.partitions` and its account is the sidecar's own (the account of the sidecar's
//! own credentials, asked of STS once at start) or one listed in `aws_iam.accounts`. Role
//! tags are read with the sidecar's own credentials in its own account, and in a listed
//! account only through the `tags_role_arn` it names — never by bare name.

use std::time::Duration;

use aws_sdk_sts::error::DisplayErrorContext;

use super::arn::{self, Principal};
use super::config::{AwsIamConfig, ServedAccount};

/// The accounts served, resolved at start.
#[derive(Debug, Clone, Default)]
pub struct ServedAccounts {
    /// `(partition, account)` of the sidecar's own credentials, when STS told us.
    own: Option<(String, String)>,
    listed: Vec<ServedAccount>,
    partitions: Vec<String>,
}

/// How to read a role's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TagsAccess {
    /// With the sidecar's own credentials: the role is in its own account.
    Own,
    /// By assuming this role in the caller's account first.
    AssumeRole(String),
    /// Never: the account is not served, or no role to read its tags with was configured.
    Refused,
}

impl ServedAccounts {
    /// Resolves the sidecar's own account (STS `GetCallerIdentity` with its own credentials,
    /// through the standard chain; `AWS_ENDPOINT_URL_STS` is honoured). When that fails, the
    /// listed accounts alone are served; with none listed, the sidecar cannot start.
    pub async fn resolve(config: &AwsIamConfig) -> Result<Self, AwsSetupError> {
        let own = match own_account(config.sts_timeout).await {
            Ok(own) => {
                tracing::info!(account = %own.1, partition = %own.0, "AWS IAM callers of this sidecar's own account are served");
                Some(own)
            }
            Err(reason) if !config.accounts.is_empty() => {
                tracing::warn!(%reason, "this sidecar's own AWS account is unknown; only aws_iam.accounts are served");
                None
            }
            Err(reason) => return Err(AwsSetupError::OwnAccountUnknown(reason)),
        };
        Ok(Self::with_own(own, config))
    }

    /// The accounts `config` lists, plus `own` (`(partition, account)`).
    pub(crate) fn with_own(own: Option<(String, String)>, config: &AwsIamConfig) -> Self {
        Self {
            own,
            listed: config.accounts.clone(),
            partitions: config.partitions.clone(),
        }
    }

    /// Whether callers of `principal`'s partition and account are served.
    pub(crate) fn serves(&self, principal: &Principal) -> bool {
        self.partitions.contains(&principal.partition)
            && (self.is_own(principal)
                || self.listed.iter().any(|a| a.account == principal.account))
    }

    /// How tags of the role `principal` may be read.
    pub(crate) fn tags_access(&self, principal: &Principal) -> TagsAccess {
        if !self.serves(principal) {
            return TagsAccess::Refused;
        }
        if self.is_own(principal) {
            return TagsAccess::Own;
        }
        self.listed
            .iter()
            .find(|a| a.account == principal.account)
            .and_then(|a| a.tags_role_arn.clone())
            .map_or(TagsAccess::Refused, TagsAccess::AssumeRole)
    }

    /// Every `tags_role_arn` configured.
    pub(crate) fn tags_roles(&self) -> impl Iterator<Item = String> + '_ {
        self.listed.iter().filter_map(|a| a.tags_role_arn.clone())
    }

    fn is_own(&self, principal: &Principal) -> bool {
        self.own.as_ref().is_some_and(|(partition, account)| {
            *partition == principal.partition && *account == principal.account
        })
    }
}

/// Why the IAM caller verifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    /// The HTTPS client for STS could not be built.
    #[error("aws_iam: cannot build the STS client: {0}")]
    StsClient(reqwest::Error),
    /// The own account is unknown and no accounts are listed.
    #[error(
        "aws_iam: cannot tell this sidecar's own AWS account ({0}); give it AWS credentials \
         that may call sts:GetCallerIdentity, or list the accounts to serve in aws_iam.accounts"
    )]
    OwnAccountUnknown(OwnAccountError),
}

/// Why the sidecar's own account could not be told.
#[derive(Debug, thiserror::Error)]
pub enum OwnAccountError {
    /// The call failed (the SDK's whole error chain).
    #[error("STS GetCallerIdentity failed: {0}")]
    Sts(String),
    /// No account in the answer.
    #[error("STS named no 12-digit account for this sidecar's credentials")]
    NoAccount,
    /// No ARN of a known partition in the answer.
    #[error("STS named no ARN of a known partition for this sidecar's credentials")]
    NoPartition,
}

/// `(partition, account)` of the sidecar's own credentials.
async fn own_account(timeout: Duration) -> Result<(String, String), OwnAccountError> {
    let mut sdk = crate::aws::sdk_config(None, None, timeout, 2).await;
    if sdk.region().is_none() {
        sdk = crate::aws::sdk_config(Some("us-east-1"), None, timeout, 2).await;
    }
    let answer = aws_sdk_sts::Client::new(&sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| OwnAccountError::Sts(DisplayErrorContext(&e).to_string()))?;
    // The account, and the partition from the ARN's prefix: the sidecar's own credentials may
    // be of any principal kind (a role session, a user, a test server's default user).
    let account = answer
        .account()
        .filter(|account| arn::is_account_id(account))
        .ok_or(OwnAccountError::NoAccount)?;
    let partition = answer
        .arn()
        .and_then(|arn| arn.strip_prefix("arn:"))
        .and_then(|rest| rest.split(':').next())
        .filter(|partition| arn::KNOWN_PARTITIONS.contains(partition))
        .ok_or(OwnAccountError::NoPartition)?;
    Ok((partition.to_owned(), account.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(yaml: &str) -> ServedAccounts {
        let config: AwsIamConfig = serde_norway::from_str(yaml).unwrap();
        ServedAccounts::with_own(Some(("aws".into(), "123456789012".into())), &config)
    }

    fn role(arn: &str) -> Principal {
        arn::canonical(arn).unwrap()
    }

    #[test]
    fn a_role_of_the_same_name_elsewhere_is_not_ours() {
        let accounts = served("{}");
        let ours = role("arn:aws:iam::123456789012:role/orders-service");
        assert_eq!(accounts.tags_access(&ours), TagsAccess::Own);
        for other in [
            "arn:aws:iam::999999999999:role/orders-service",
            "arn:aws-cn:iam::123456789012:role/orders-service",
        ] {
            assert!(!accounts.serves(&role(other)), "{other}");
            assert_eq!(accounts.tags_access(&role(other)), TagsAccess::Refused);
        }
    }

    #[test]
    fn listed_accounts_are_served_and_read_only_through_their_role() {
        let accounts = served(
            "{ accounts: [ { account: '999999999999', tags_role_arn: 'arn:aws:iam::999999999999:role/evs-tags' }, { account: '555555555555' } ] }",
        );
        let theirs = role("arn:aws:iam::999999999999:role/orders-service");
        assert_eq!(
            accounts.tags_access(&theirs),
            TagsAccess::AssumeRole("arn:aws:iam::999999999999:role/evs-tags".into())
        );
        let untagged = role("arn:aws:iam::555555555555:role/orders-service");
        assert!(accounts.serves(&untagged));
        assert_eq!(accounts.tags_access(&untagged), TagsAccess::Refused);
    }
}
