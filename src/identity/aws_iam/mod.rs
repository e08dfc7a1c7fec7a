//! AWS IAM identities: a presigned `sts:GetCallerIdentity` in `Bearer k8s-aws-v1.…`, the
//! token `aws eks get-token` prints and aws-iam-authenticator verifies.
//!
//! The token is checked locally first ([`presigned`]), then sent to STS once ([`sts`]); STS
//! says who signed it and the ARN is made canonical ([`arn`]). A verified token is remembered
//! (by its SHA-256) until its window ends, and concurrent Checks with one token share one STS
//! call, so a busy caller costs one STS request per token, not per Check.
//!
//! Only callers of the served partitions and accounts pass ([`accounts`]); a genuine caller
//! of any other account, the account root and federated users are refused with 403.

mod accounts;
pub(crate) mod arn;
mod client;
mod config;
pub(crate) mod presigned;
pub(crate) mod sts;

use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub(crate) use self::accounts::TagsAccess;
pub use self::accounts::{AwsSetupError, ServedAccounts};
pub use self::client::{IamTokenError, iam_token};
pub use self::config::AwsIamConfig;
use self::presigned::StsEndpoints;
use self::sts::StsCaller;
use super::{AuthError, AwsClaims, Identity};
use crate::clock::unix_now;

/// The `issuer` of IAM identities (never minted; it keys caches and logs).
pub(crate) const IAM_ISSUER: &str = "aws:iam";
/// Upper bound of remembered tokens.
const REMEMBERED_CAPACITY: u64 = 100_000;

/// Verifies `k8s-aws-v1.` tokens.
pub struct AwsIamVerifier {
    endpoints: StsEndpoints,
    sts: StsCaller,
    remembered: moka::future::Cache<[u8; 32], Arc<Identity>>,
    accounts: Arc<ServedAccounts>,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl AwsIamVerifier {
    /// A verifier for the enabled `aws_iam:` section, serving `accounts`.
    pub(crate) fn new(
        config: &AwsIamConfig,
        accounts: Arc<ServedAccounts>,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Result<Self, AwsSetupError> {
        Ok(Self {
            endpoints: StsEndpoints::new(config),
            accounts,
            sts: StsCaller::new(config.server_id.clone(), config.sts_timeout)
                .map_err(AwsSetupError::StsClient)?,
            remembered: moka::future::Cache::builder()
                .max_capacity(REMEMBERED_CAPACITY)
                .expire_after(crate::clock::UntilItExpires)
                .build(),
            metrics,
        })
    }

    /// Verifies a `k8s-aws-v1.` token; the STS call gives up at `deadline`.
    /// `fingerprint` is the token's SHA-256 ([`crate::credential::fingerprint_of`]).
    pub async fn verify(
        &self,
        token: &str,
        fingerprint: &crate::credential::Fingerprint,
        deadline: Instant,
    ) -> Result<Arc<Identity>, AuthError> {
        let request = presigned::parse(token, &self.endpoints, unix_now())?;
        let identity = self
            .remembered
            .try_get_with(*fingerprint, async {
                let started = Instant::now();
                let caller = self
                    .sts
                    .caller_identity(&request, deadline)
                    .instrument(tracing::info_span!("sts.get_caller_identity"))
                    .await;
                let result = match &caller {
                    Err(AuthError::StsUnavailable) => "error",
                    Err(AuthError::StsThrottled) => "throttled",
                    _ => "ok",
                };
                self.metrics.key_fetch("sts", result, started.elapsed());
                let caller = caller?;
                let principal = self.principal_of(&request, &caller)?;
                Ok(Arc::new(Identity {
                    subject: principal.canonical_arn,
                    issuer: IAM_ISSUER.to_owned(),
                    email: None,
                    name: None,
                    expires_at: request.window_end,
                    certificate: None,
                    aws: Some(Box::new(AwsClaims {
                        partition: principal.partition,
                        account: principal.account,
                        user_id: caller.user_id,
                        session: principal.session,
                        role_name: principal.role_name,
                    })),
                    claims: None,
                    kubernetes: None,
                }))
            })
            .await
            .map_err(|shared: Arc<AuthError>| shared.as_ref().clone())?;
        if identity.expires_at <= unix_now() {
            return Err(AuthError::AwsToken(
                "expired: signed more than 15 minutes ago",
            ));
        }
        Ok(identity)
    }

    /// The principal STS named, when its answer is well-formed and names a caller served
    /// here: 503 for an answer that is not one STS gives, 403 for a genuine caller of an
    /// account, partition or kind this sidecar does not serve.
    fn principal_of(
        &self,
        request: &presigned::PresignedRequest,
        caller: &sts::CallerIdentity,
    ) -> Result<arn::Principal, AuthError> {
        let malformed = |what: &'static str| {
            tracing::warn!(what, "STS answered with something STS does not answer");
            AuthError::StsUnavailable
        };
        let principal = match arn::canonical(&caller.arn) {
            Ok(principal) => principal,
            Err(arn::NotAPrincipal::NotServed(reason)) => {
                return Err(AuthError::NotServed(reason));
            }
            Err(arn::NotAPrincipal::Malformed) => {
                return Err(malformed("an ARN that is not an IAM principal"));
            }
        };
        if principal.account != caller.account {
            return Err(malformed("an account that differs from its ARN's"));
        }
        if request
            .partition
            .is_some_and(|host_partition| host_partition != principal.partition)
        {
            return Err(malformed("a partition other than its host's"));
        }
        if !arn::user_id_fits(&caller.user_id, &principal) {
            return Err(malformed("a UserId that does not fit the ARN"));
        }
        if !self.accounts.serves(&principal) {
            return Err(AuthError::NotServed(
                "the caller's AWS account or partition is not one this sidecar serves (aws_iam.accounts, aws_iam.partitions)",
            ));
        }
        Ok(principal)
    }
}
