//! AWS IAM identities: a presigned `sts:GetCallerIdentity` in `Bearer k8s-aws-v1.…`, the
//! token `aws eks get-token` prints and aws-iam-authenticator verifies.
//!
//! The token is checked locally first ([`presigned`]), then sent to STS once ([`sts`]); STS
//! says who signed it and the ARN is made canonical ([`arn`]). A verified token is remembered
//! (by its SHA-256) until its window ends, and concurrent Checks with one token share one STS
//! call, so a busy caller costs one STS request per token, not per Check.

pub(crate) mod arn;
mod client;
mod config;
pub(crate) mod presigned;
mod sts;

use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub use self::client::iam_token;
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
    metrics: Arc<crate::telemetry::Metrics>,
}

/// Remembered identities are forgotten when their token's window ends.
struct UntilWindowEnds;

impl moka::Expiry<[u8; 32], Arc<Identity>> for UntilWindowEnds {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Identity>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.expires_at.saturating_sub(unix_now()),
        ))
    }
}

impl AwsIamVerifier {
    /// A verifier for the enabled `aws_iam:` section.
    pub(crate) fn new(
        config: &AwsIamConfig,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Result<Self, String> {
        Ok(Self {
            endpoints: StsEndpoints::new(config.sts_endpoint.as_deref()),
            sts: StsCaller::new(config.server_id.clone(), config.sts_timeout)?,
            remembered: moka::future::Cache::builder()
                .max_capacity(REMEMBERED_CAPACITY)
                .expire_after(UntilWindowEnds)
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
                let answered = !matches!(caller, Err(AuthError::StsUnavailable));
                self.metrics.key_fetch("sts", answered, started.elapsed());
                let caller = caller?;
                let principal = arn::canonical(&caller.arn).ok_or_else(|| {
                    tracing::warn!("STS answered with an ARN that is not an IAM principal");
                    AuthError::StsUnavailable
                })?;
                if principal.account != caller.account {
                    tracing::warn!("STS answered with an account that differs from its ARN's");
                    return Err(AuthError::StsUnavailable);
                }
                Ok(Arc::new(Identity {
                    subject: principal.canonical_arn,
                    issuer: IAM_ISSUER.to_owned(),
                    email: None,
                    name: None,
                    expires_at: request.window_end,
                    certificate: None,
                    aws: Some(Box::new(AwsClaims {
                        account: principal.account,
                        user_id: caller.user_id,
                        session: principal.session,
                        role_name: principal.role_name,
                    })),
                    claims: None,
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
}
