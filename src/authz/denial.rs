//! A refusal, as Envoy and the caller see it: the HTTP status, the gRPC code, the RFC 6750
//! error and the `WWW-Authenticate` challenge.

use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, check_response,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode as HttpStatusCode};
use envoy_types::pb::google::rpc::Status as RpcStatus;

use super::headers::add_header;
use crate::credential::ExtractError;
use crate::pipeline::SwapError;
use crate::telemetry::Outcome;

/// 403: the caller is known, and refused.
fn forbidden(description: String) -> Denial {
    Denial {
        http_status: HttpStatusCode::Forbidden,
        grpc_code: tonic::Code::PermissionDenied,
        outcome: Outcome::Forbidden,
        error: Some("access_denied"),
        description,
    }
}

/// A refusal, in the terms both Envoy and the caller see.
pub(super) struct Denial {
    pub(super) http_status: HttpStatusCode,
    pub(super) grpc_code: tonic::Code,
    pub(super) outcome: Outcome,
    /// RFC 6750 error code, or `None` when no credential was presented at all.
    pub(super) error: Option<&'static str>,
    pub(super) description: String,
}

impl From<&SwapError> for Denial {
    fn from(error: &SwapError) -> Self {
        let description = error.to_string();
        let unauthenticated = |code| Denial {
            http_status: HttpStatusCode::Unauthorized,
            grpc_code: tonic::Code::Unauthenticated,
            outcome: Outcome::Unauthenticated,
            error: code,
            description: description.clone(),
        };
        let unavailable = Denial {
            http_status: HttpStatusCode::ServiceUnavailable,
            grpc_code: tonic::Code::Unavailable,
            outcome: Outcome::Unavailable,
            error: Some("temporarily_unavailable"),
            description: description.clone(),
        };
        match error {
            SwapError::Extract(ExtractError::Missing) => unauthenticated(None),
            SwapError::Extract(_) => unauthenticated(Some("invalid_request")),
            SwapError::Auth(e) if e.is_unavailable() => unavailable,
            SwapError::Auth(e) if e.is_forbidden() => forbidden(description),
            SwapError::Auth(_) => unauthenticated(Some("invalid_token")),
            SwapError::Grants(crate::grants::GrantsError::UnknownSubject) => forbidden(description),
            SwapError::Mint(crate::mint::MintError::CredentialExpired) => {
                unauthenticated(Some("invalid_token"))
            }
            SwapError::Grants(_) | SwapError::Mint(_) | SwapError::DeadlineExceeded => unavailable,
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
