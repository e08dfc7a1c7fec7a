//! The one call that proves an AWS IAM identity: the caller's presigned GetCallerIdentity,
//! sent to STS as signed, with `x-k8s-aws-id` set to our server id. STS checks the signature
//! against the caller's secret (which we never see) and answers who signed it.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::presigned::PresignedRequest;
use crate::identity::AuthError;
use crate::identity::oidc::jwks::describe_reqwest_error;

/// Largest STS answer read; a real one is under 1 KiB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What STS says about the signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// Sends presigned requests to STS.
pub(crate) struct StsCaller {
    client: reqwest::Client,
    server_id: String,
    timeout: Duration,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    get_caller_identity_response: Response,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Response {
    get_caller_identity_result: Result,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Result {
    account: String,
    arn: String,
    user_id: String,
}

impl StsCaller {
    /// A caller that never follows redirects and gives up after `timeout`.
    pub(crate) fn new(server_id: String, timeout: Duration) -> std::result::Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .user_agent(concat!("evs-token-vending/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the STS client: {e}"))?;
        Ok(Self {
            client,
            server_id,
            timeout,
        })
    }

    /// Sends `request` and reads the answer; gives up at `deadline` or after the timeout.
    pub(crate) async fn caller_identity(
        &self,
        request: &PresignedRequest,
        deadline: Instant,
    ) -> std::result::Result<CallerIdentity, AuthError> {
        let budget = self
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let call = async {
            let mut answer = self
                .client
                .get(&request.url)
                .header("x-k8s-aws-id", &self.server_id)
                .header("accept", "application/json")
                .send()
                .await
                .map_err(|e| {
                    tracing::warn!(error = %describe_reqwest_error(&e), "STS could not be reached");
                    AuthError::StsUnavailable
                })?;
            let status = answer.status();
            if status.is_redirection() {
                tracing::warn!(%status, "STS answered with a redirect; not followed");
                return Err(AuthError::StsUnavailable);
            }
            if matches!(status.as_u16(), 400 | 401 | 403) {
                return Err(AuthError::StsRefused);
            }
            if !status.is_success() {
                tracing::warn!(%status, "STS answered with an error");
                return Err(AuthError::StsUnavailable);
            }
            let mut body = Vec::new();
            while let Some(chunk) = answer
                .chunk()
                .await
                .map_err(|_| AuthError::StsUnavailable)?
            {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    tracing::warn!("STS answer larger than 64 KiB; refused");
                    return Err(AuthError::StsUnavailable);
                }
                body.extend_from_slice(&chunk);
            }
            let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
                tracing::warn!("STS answer is not a GetCallerIdentity JSON document");
                AuthError::StsUnavailable
            })?;
            let result = answer
                .get_caller_identity_response
                .get_caller_identity_result;
            Ok(CallerIdentity {
                account: result.account,
                arn: result.arn,
                user_id: result.user_id,
            })
        };
        tokio::time::timeout(budget, call)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!("STS did not answer in time");
                Err(AuthError::StsUnavailable)
            })
    }
}
