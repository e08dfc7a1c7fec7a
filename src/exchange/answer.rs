//! What `/exchange` answers: the token response (RFC 6749 §5.1, RFC 8693 §2.2.1) and the
//! error response (RFC 6749 §5.2), with the one mapping from stage errors to OAuth errors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::clock::unix_now;
use crate::credential::ExtractError;
use crate::pipeline::{Refusal, SwapError, Swapped};

/// An OAuth error answer (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub(crate) status: u16,
    pub(crate) error: &'static str,
    pub(crate) description: String,
}

impl OAuthError {
    pub(crate) fn invalid_request(description: &str) -> Self {
        Self {
            status: 400,
            error: "invalid_request",
            description: description.to_owned(),
        }
    }

    pub(crate) fn with(status: u16, error: &'static str, description: impl ToString) -> Self {
        Self {
            status,
            error,
            description: description.to_string(),
        }
    }

    /// What the refusal counts as, in the terms a Check's refusal is counted.
    pub(crate) fn outcome(&self) -> crate::telemetry::Outcome {
        use crate::telemetry::Outcome;
        match self.status {
            503 => Outcome::Unavailable,
            403 => Outcome::Forbidden,
            _ => Outcome::Unauthenticated,
        }
    }

    pub(crate) fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = serde_json::json!({"error": self.error, "error_description": self.description});
        let mut response = (status, no_store(), axum::Json(body)).into_response();
        if self.status == 401 {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"exchange\""),
            );
        }
        if matches!(self.status, 408 | 413) {
            // The body was not read to its end: this connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == 503 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The refusals in OAuth's terms (RFC 6749 §5.2): a credential that is missing or unreadable
/// is a bad request, one that is invalid or not served is a bad grant (RFC 6749 has no 403).
fn in_oauth_terms(refusal: Refusal) -> (u16, &'static str) {
    match refusal {
        Refusal::NoCredential | Refusal::Unreadable => (400, "invalid_request"),
        Refusal::Invalid | Refusal::Forbidden => (400, "invalid_grant"),
        Refusal::Unavailable => (503, "temporarily_unavailable"),
    }
}

impl From<SwapError> for OAuthError {
    fn from(error: SwapError) -> Self {
        let (status, code) = in_oauth_terms(error.refusal());
        match error {
            SwapError::Extract(ExtractError::Missing) => {
                Self::with(status, code, "no credential to exchange")
            }
            error => Self::with(status, code, error),
        }
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache`, on every answer (RFC 6749 §5.1).
pub(crate) fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// RFC 6749 §5.1 (and RFC 8693 §2.2.1 with `issued_token_type`).
pub(crate) fn answer(swapped: &Swapped, issued_token_type: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::json!({
        "access_token": &*swapped.minted.token,
        "token_type": "Bearer",
        "expires_in": swapped.minted.expires_at.saturating_sub(unix_now()),
    });
    if let Some(issued) = issued_token_type {
        body["issued_token_type"] = issued.into();
    }
    body
}
