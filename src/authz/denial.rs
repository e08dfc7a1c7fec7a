//! A refusal, as Envoy and the caller see it: the HTTP status, the gRPC code, the RFC 6750
//! error and the `WWW-Authenticate` challenge.

use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, check_response,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode as HttpStatusCode};
use envoy_types::pb::google::rpc::Status as RpcStatus;

use super::headers::add_header;
use crate::pipeline::{Refusal, SwapError};
use crate::telemetry::Outcome;

/// A refusal, in the terms both Envoy and the caller see.
pub(super) struct Denial {
    pub(super) http_status: HttpStatusCode,
    pub(super) grpc_code: tonic::Code,
    pub(super) outcome: Outcome,
    /// RFC 6750 error code, or `None` when no credential was presented at all.
    pub(super) error: Option<&'static str>,
    pub(super) description: String,
}

/// The refusals in ext_authz's terms: HTTP status, gRPC code, RFC 6750 error (none when no
/// credential was presented: a bare `Bearer` challenge).
fn in_ext_authz_terms(refusal: Refusal) -> (HttpStatusCode, tonic::Code, Option<&'static str>) {
    use tonic::Code;
    match refusal {
        Refusal::NoCredential => (HttpStatusCode::Unauthorized, Code::Unauthenticated, None),
        Refusal::Unreadable => (
            HttpStatusCode::Unauthorized,
            Code::Unauthenticated,
            Some("invalid_request"),
        ),
        Refusal::Invalid => (
            HttpStatusCode::Unauthorized,
            Code::Unauthenticated,
            Some("invalid_token"),
        ),
        Refusal::Forbidden => (
            HttpStatusCode::Forbidden,
            Code::PermissionDenied,
            Some("access_denied"),
        ),
        Refusal::Unavailable => (
            HttpStatusCode::ServiceUnavailable,
            Code::Unavailable,
            Some("temporarily_unavailable"),
        ),
    }
}

impl From<&SwapError> for Denial {
    fn from(error: &SwapError) -> Self {
        let refusal = error.refusal();
        let (http_status, grpc_code, code) = in_ext_authz_terms(refusal);
        Denial {
            http_status,
            grpc_code,
            outcome: refusal.outcome(),
            error: code,
            description: error.to_string(),
        }
    }
}

impl Denial {
    pub(super) fn into_response(self) -> CheckResponse {
        let error = self.error.unwrap_or("invalid_request");
        let body = serde_json::json!({
            "error": error,
            "error_description": self.description,
        })
        .to_string();
        let mut headers = vec![add_header("content-type", "application/json".into())];
        if self.http_status == HttpStatusCode::Unauthorized {
            // Descriptions are fixed texts of ours: no quotes, CR or LF can reach the header.
            let challenge = match self.error {
                Some(code) => format!(
                    r#"Bearer error="{code}", error_description="{}""#,
                    self.description.replace('"', "'")
                ),
                None => "Bearer".to_owned(),
            };
            headers.push(add_header("www-authenticate", challenge));
        }
        CheckResponse {
            status: Some(RpcStatus {
                code: self.grpc_code as i32,
                message: self.description,
                ..Default::default()
            }),
            http_response: Some(check_response::HttpResponse::DeniedResponse(
                DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: self.http_status as i32,
                    }),
                    headers,
                    body,
                },
            )),
            dynamic_metadata: None,
        }
    }
}
