//! Stage 5, answer: Envoy's `envoy.service.auth.v3.Authorization/Check`.
//!
//! Reads the credential out of the CheckRequest, runs the swap within the call's
//! `grpc-timeout`, and turns the outcome into the CheckResponse of SPEC §8. This is the one
//! place where stage errors become 401 / 403 / 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode as HttpStatusCode};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use serde::Deserialize;

use crate::config::ConfigCheck;
use crate::credential::{ExtractError, InboundRequest};
use crate::decision_log::{Decision, DecisionLog};
use crate::pipeline::{Passage, SwapError, Swapped, TokenVending, Trail};
use crate::telemetry::traces::{B3Headers, DecisionSpan};
use crate::telemetry::{Metrics, Outcome};

/// Used when a Check carries no `grpc-timeout` (Envoy always sends one).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);
/// Kept back from the caller's deadline so our answer arrives before Envoy gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(10);

/// `response:` — header edits on the way to the backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseConfig {
    /// Headers Envoy removes before the request goes on.
    pub remove_headers: Vec<String>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        Self {
            remove_headers: vec!["x-forwarded-client-cert".to_owned()],
        }
    }
}

impl ResponseConfig {
    pub(crate) fn check(&self, path: &str, check: &mut ConfigCheck) {
        for (i, header) in self.remove_headers.iter().enumerate() {
            let lower = header.to_ascii_lowercase();
            if lower == "authorization" {
                check.problem(
                    format!("{path}.remove_headers[{i}]"),
                    "removing `authorization` would strip the minted token",
                );
            } else if lower.is_empty()
                || lower.starts_with(':')
                || !lower.bytes().all(is_token_char)
            {
                check.problem(
                    format!("{path}.remove_headers[{i}]"),
                    "not a removable header name",
                );
            }
        }
    }
}

/// The characters allowed in an HTTP field name (RFC 9110 `tchar`).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The ext_authz gRPC service.
pub struct AuthzService {
    vending: Arc<TokenVending>,
    remove_headers: Vec<String>,
    metrics: Arc<Metrics>,
    decisions: Option<Arc<DecisionLog>>,
    /// `telemetry.trace_subjects`.
    trace_subjects: bool,
}

impl AuthzService {
    /// A service answering with `vending`, removing `remove_headers` on success.
    pub fn new(
        vending: Arc<TokenVending>,
        remove_headers: Vec<String>,
        metrics: Arc<Metrics>,
        decisions: Option<Arc<DecisionLog>>,
        trace_subjects: bool,
    ) -> Self {
        Self {
            vending,
            remove_headers,
            metrics,
            decisions,
            trace_subjects,
        }
    }

    /// Runs the swap for one CheckRequest and builds the answer; its span is a child of
    /// `call_traceparent` (the trace context of the ext_authz call itself) when that is set.
    async fn answer(
        &self,
        check: &CheckRequest,
        deadline: Instant,
        call_traceparent: Option<&[u8]>,
    ) -> CheckResponse {
        let started = Instant::now();
        let headers = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map(ReadHeaders::of)
            .unwrap_or_default();
        let request_id = crate::decision_log::request_id(&headers.request_id);
        // The request's trace, or the ext_authz call's (the same trace when Envoy traces).
        let trace_id = crate::decision_log::trace_id(
            headers.traceparent.first().copied().or(call_traceparent),
            headers.b3_trace_id.first().copied(),
        );
        let inbound = InboundRequest {
            authorization: headers.authorization,
            peer_certificate: check
                .attributes
                .as_ref()
                .and_then(|a| a.source.as_ref())
                .map(|peer| peer.certificate.as_str()),
            xfcc: headers.xfcc,
            alb_certificate: headers.alb_certificate,
        };
        // Every line logged during the Check (a JWKS refetch, a store warning) carries the ids,
        // and with traces on, the span is the Check's in the caller's trace.
        let parent = crate::telemetry::traces::parent_context(
            call_traceparent,
            headers.traceparent.first().copied(),
            B3Headers {
                trace_id: headers.b3_trace_id.first().copied(),
                span_id: headers.b3_span_id.first().copied(),
                sampled: headers.b3_sampled.first().copied(),
            },
        );
        let span = DecisionSpan::start(
            "ext_authz.Check",
            request_id,
            trace_id,
            parent,
            self.trace_subjects,
        );
        let mut trail = Trail::default();
        let outcome = self
            .vending
            .check(&inbound, deadline, &mut trail)
            .instrument(span.span().clone())
            .await;
        span.credential(trail.credential);
        let decision = |outcome: Outcome, status: u16| Decision {
            request_id,
            trace_id,
            front_door: "ext_authz",
            credential: trail.credential,
            issuer: None,
            subject: None,
            outcome: outcome.label(),
            status,
            reason: None,
            kid: None,
            cache_hit: trail.cache_hit,
            stages: trail.stages,
        };
        match outcome {
            Ok(Passage::Swapped(swapped)) => {
                self.metrics
                    .checked(Outcome::Ok, started.elapsed(), &trail.stages);
                span.allowed(
                    Some(&swapped.identity.issuer),
                    &swapped.identity.subject,
                    Some(&swapped.minted.kid),
                    trail.cache_hit,
                );
                tracing::debug!(request_id = %request_id, subject = %swapped.identity.subject, kid = %swapped.minted.kid, "credential swapped");
                self.record(Decision {
                    issuer: Some(&swapped.identity.issuer),
                    subject: Some(&swapped.identity.subject),
                    kid: Some(&swapped.minted.kid),
                    ..decision(Outcome::Ok, 200)
                });
                self.ok_response(&swapped)
            }
            Ok(Passage::OwnToken(own)) => {
                self.metrics
                    .checked(Outcome::Ok, started.elapsed(), &trail.stages);
                span.allowed(None, &own.subject, None, None);
                tracing::debug!(request_id = %request_id, subject = %own.subject, "our own token passes unchanged");
                self.record(Decision {
                    subject: Some(&own.subject),
                    reason: Some("our own token passes unchanged"),
                    ..decision(Outcome::Ok, 200)
                });
                self.pass_response(&own.subject)
            }
            Err(error) => {
                let denial = Denial::from(&error);
                self.metrics
                    .checked(denial.outcome, started.elapsed(), &trail.stages);
                span.refused(
                    denial.outcome.label(),
                    denial.http_status as u16,
                    &denial.description,
                );
                tracing::info!(request_id = %request_id, status = denial.http_status as i32, reason = %error, "request denied");
                self.record(Decision {
                    reason: Some(&denial.description),
                    ..decision(denial.outcome, denial.http_status as u16)
                });
                denial.into_response()
            }
        }
    }

    /// Writes `decision` to the decision log, when there is one.
    fn record(&self, decision: Decision<'_>) {
        if let Some(log) = &self.decisions {
            log.record(&decision);
        }
    }

    /// OK without touching `authorization`: the request carries a valid token of ours.
    fn pass_response(&self, subject: &str) -> CheckResponse {
        self.ok(Vec::new(), &[("subject", subject)])
    }

    fn ok_response(&self, swapped: &Swapped) -> CheckResponse {
        let authorization =
            overwrite_header("authorization", format!("Bearer {}", swapped.minted.token));
        self.ok(
            vec![authorization],
            &[
                ("subject", &swapped.identity.subject),
                ("issuer", &swapped.identity.issuer),
                ("kid", &swapped.minted.kid),
            ],
        )
    }

    /// An OK answer setting `headers`, removing the configured ones, with `metadata`.
    fn ok(&self, headers: Vec<HeaderValueOption>, metadata: &[(&str, &str)]) -> CheckResponse {
        CheckResponse {
            status: Some(RpcStatus {
                code: tonic::Code::Ok as i32,
                ..Default::default()
            }),
            http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                headers,
                headers_to_remove: self.remove_headers.clone(),
                ..Default::default()
            })),
            dynamic_metadata: Some(Struct {
                fields: metadata
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), string_value(v)))
                    .collect(),
            }),
        }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let budget = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or(DEFAULT_DEADLINE);
        let deadline = Instant::now() + budget.saturating_sub(DEADLINE_MARGIN);
        let call_traceparent = request
            .metadata()
            .get("traceparent")
            .map(|value| value.as_bytes());
        Ok(Response::new(
            self.answer(request.get_ref(), deadline, call_traceparent)
                .await,
        ))
    }
}

/// Every value of each header this service reads, borrowed from the CheckRequest. With
/// `encode_raw_headers` Envoy sends `header_map` (raw bytes, one entry per header line), read in
/// one pass; otherwise the `headers` map. An absent header costs no allocation.
#[derive(Default)]
struct ReadHeaders<'a> {
    authorization: Vec<&'a [u8]>,
    xfcc: Vec<&'a [u8]>,
    alb_certificate: Vec<&'a [u8]>,
    request_id: Vec<&'a [u8]>,
    traceparent: Vec<&'a [u8]>,
    b3_trace_id: Vec<&'a [u8]>,
    b3_span_id: Vec<&'a [u8]>,
    b3_sampled: Vec<&'a [u8]>,
}

impl<'a> ReadHeaders<'a> {
    fn of(
        http: &'a envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
    ) -> Self {
        let mut read = Self::default();
        if let Some(map) = http.header_map.as_ref().filter(|m| !m.headers.is_empty()) {
            for header in &map.headers {
                if let Some(values) = read.values_of(&header.key) {
                    values.push(if header.raw_value.is_empty() {
                        header.value.as_bytes()
                    } else {
                        header.raw_value.as_slice()
                    });
                }
            }
        } else {
            for (name, value) in &http.headers {
                if let Some(values) = read.values_of(name) {
                    values.push(value.as_bytes());
                }
            }
        }
        read
    }

    /// Where values of the header `name` go; `None` for a header this service ignores.
    fn values_of(&mut self, name: &str) -> Option<&mut Vec<&'a [u8]>> {
        // `eq_ignore_ascii_case` compares lengths first, so most headers cost a few length tests.
        let is = |wanted: &str| name.eq_ignore_ascii_case(wanted);
        if is("authorization") {
            Some(&mut self.authorization)
        } else if is("x-forwarded-client-cert") {
            Some(&mut self.xfcc)
        } else if is("x-amzn-mtls-clientcert") {
            Some(&mut self.alb_certificate)
        } else if is("x-request-id") {
            Some(&mut self.request_id)
        } else if is("traceparent") {
            Some(&mut self.traceparent)
        } else if is("x-b3-traceid") {
            Some(&mut self.b3_trace_id)
        } else if is("x-b3-spanid") {
            Some(&mut self.b3_span_id)
        } else if is("x-b3-sampled") {
            Some(&mut self.b3_sampled)
        } else {
            None
        }
    }
}

/// A header that replaces every existing value. Envoy 1.40 reads only the deprecated
/// `append` flag; newer Envoy reads `append_action` when `append` is unset. Both are set so
/// every version overwrites (see ENVOY_NOTES).
#[allow(deprecated)]
fn overwrite_header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        append: Some(BoolValue { value: false }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn add_header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn string_value(text: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(text.to_owned())),
    }
}

/// A refusal, in the terms both Envoy and the caller see.
struct Denial {
    http_status: HttpStatusCode,
    grpc_code: tonic::Code,
    outcome: Outcome,
    /// RFC 6750 error code, or `None` when no credential was presented at all.
    error: Option<&'static str>,
    description: String,
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
            SwapError::Auth(_) => unauthenticated(Some("invalid_token")),
            SwapError::Grants(crate::grants::GrantsError::UnknownSubject) => Denial {
                http_status: HttpStatusCode::Forbidden,
                grpc_code: tonic::Code::PermissionDenied,
                outcome: Outcome::Forbidden,
                error: Some("access_denied"),
                description,
            },
            SwapError::Mint(crate::mint::MintError::CredentialExpired) => {
                unauthenticated(Some("invalid_token"))
            }
            SwapError::Grants(_) | SwapError::Mint(_) | SwapError::DeadlineExceeded => unavailable,
        }
    }
}

impl Denial {
    fn into_response(self) -> CheckResponse {
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

/// Parses a gRPC `grpc-timeout` value: up to 8 digits and a unit (H M S m u n).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
    }
}
