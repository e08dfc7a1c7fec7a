//! The one call that proves an AWS IAM identity: the caller's presigned GetCallerIdentity,
//! sent to STS as signed, with `x-k8s-aws-id` set to our server id. STS checks the signature
//! against the caller's secret (which we never see) and answers who signed it.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::presigned::PresignedRequest;
use crate::identity::AuthError;
use crate::outbound::{describe_reqwest_error, read_capped};

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

/// The answer's body, at most [`MAX_ANSWER_BYTES`].
async fn read_bounded(answer: &mut reqwest::Response) -> std::result::Result<Vec<u8>, AuthError> {
    read_capped(answer, MAX_ANSWER_BYTES).await.map_err(|e| {
        if matches!(e, crate::outbound::BodyError::TooLarge) {
            tracing::warn!("STS answer larger than 64 KiB; refused");
        }
        AuthError::StsUnavailable
    })
}

/// The error codes AWS throttles with (query APIs answer `Throttling`).
const THROTTLING_CODES: &[&str] = &["Throttling", "ThrottlingException", "RequestLimitExceeded"];

/// Whether an STS error document (JSON for `Accept: application/json`, else XML) says
/// the call was throttled.
pub(crate) fn is_throttling(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct ErrorDocument {
        #[serde(rename = "Error")]
        error: ErrorCode,
    }
    #[derive(Deserialize)]
    struct ErrorCode {
        #[serde(rename = "Code")]
        code: String,
    }
    if let Ok(document) = serde_json::from_slice::<ErrorDocument>(body) {
        return THROTTLING_CODES.contains(&document.error.code.as_str());
    }
    let text = String::from_utf8_lossy(body);
    THROTTLING_CODES
        .iter()
        .any(|code| text.contains(&format!("<Code>{code}</Code>")))
}

/// A successful GetCallerIdentity answer (JSON, as `Accept: application/json` asks for).
pub(crate) fn read_answer(body: &[u8]) -> std::result::Result<CallerIdentity, AuthError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|_| {
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
}

impl StsCaller {
    /// A caller that never follows redirects and gives up after `timeout`.
    pub(crate) fn new(server_id: String, timeout: Duration) -> reqwest::Result<Self> {
        let client = crate::outbound::client_builder(timeout).build()?;
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
            if status.as_u16() == 429 {
                tracing::warn!("STS is throttling GetCallerIdentity");
                return Err(AuthError::StsThrottled);
            }
            if matches!(status.as_u16(), 400 | 401 | 403) {
                // STS throttles with 400 `Throttling`: not the caller's fault, retry later.
                let body = read_bounded(&mut answer).await.unwrap_or_default();
                if is_throttling(&body) {
                    tracing::warn!("STS is throttling GetCallerIdentity");
                    return Err(AuthError::StsThrottled);
                }
                return Err(AuthError::StsRefused);
            }
            if !status.is_success() {
                tracing::warn!(%status, "STS answered with an error");
                return Err(AuthError::StsUnavailable);
            }
            let body = read_bounded(&mut answer).await?;
            read_answer(&body)
        };
        tokio::time::timeout(budget, call)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!("STS did not answer in time");
                Err(AuthError::StsUnavailable)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::is_throttling;

    #[test]
    fn throttling_is_read_from_json_and_xml_error_documents() {
        assert!(is_throttling(
            br#"{"Error":{"Code":"Throttling","Message":"Rate exceeded","Type":"Sender"}}"#
        ));
        assert!(is_throttling(
            b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code></Error></ErrorResponse>"
        ));
        assert!(!is_throttling(
            br#"{"Error":{"Code":"SignatureDoesNotMatch","Message":"Throttling"}}"#
        ));
        assert!(!is_throttling(b""));
    }
}
