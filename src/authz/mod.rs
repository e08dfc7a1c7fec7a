//! Stage 5, answer: Envoy's `envoy.service.auth.v3.Authorization/Check`.
//!
//! Reads the credential out of the CheckRequest, runs the swap within the call's `grpc-timeout`,
//! and turns the outcome into the CheckResponse docs/callers.md ("What callers see") describes.
//! This is the one place where stage errors become 401 / 403 / 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, OkHttpResponse, check_response,
};
use envoy_types::pb::google::protobuf::Struct;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::{Request, Response, Status};

use serde::Deserialize;

mod denial;
mod headers;

use self::denial::Denial;
use self::headers::{ReadHeaders, overwrite_header, string_value};
use crate::config_check::ConfigCheck;
use crate::credential::InboundRequest;
use crate::decision::{Allowed, DecisionRecorder, FrontDoor, Refused};
use crate::decision_log::DecisionLog;
use crate::pipeline::{Passage, Swapped, TokenVending, Trail, in_span};
use crate::telemetry::Metrics;
use crate::telemetry::traces::B3Headers;

/// Used when a Check carries no `grpc-timeout` (Envoy always sends one).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);
/// Kept back from the caller's deadline so our answer (a 503 when a dependency hangs) arrives
/// before Envoy gives up: a fifth of the budget, from 20 ms to 250 ms. The time between the
/// caller's clock starting and this handler running, and the answer's way back, are spent
/// out of it; on a busy 2-core machine 10 ms was sometimes not enough.
fn deadline_margin(budget: Duration) -> Duration {
    (budget / 5).clamp(Duration::from_millis(20), Duration::from_millis(250))
}

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
    recorder: DecisionRecorder,
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
            recorder: DecisionRecorder::new(
                FrontDoor::ExtAuthz,
                metrics,
                decisions,
                trace_subjects,
            ),
        }
    }

    /// Runs the swap for one CheckRequest that arrived at `arrived` and builds the answer; its
    /// span is a child of `call_traceparent` (the trace context of the ext_authz call itself)
    /// when that is set.
    async fn answer(
        &self,
        check: &CheckRequest,
        arrived: Instant,
        deadline: Instant,
        call_traceparent: Option<&[u8]>,
    ) -> CheckResponse {
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
        // The trace context is built only when a span might be made of it.
        let parent = || {
            crate::telemetry::traces::parent_context(
                call_traceparent,
                headers.traceparent.first().copied(),
                B3Headers {
                    trace_id: headers.b3_trace_id.first().copied(),
                    span_id: headers.b3_span_id.first().copied(),
                    sampled: headers.b3_sampled.first().copied(),
                },
            )
        };
        let deciding = self.recorder.begin(arrived, request_id, trace_id, parent);
        // The first stage is timed from the Check's arrival: one clock read per boundary.
        let mut trail = Trail {
            traced: deciding.is_traced(),
            clock: Some(arrived),
            ..Trail::default()
        };
        let outcome = in_span(
            deciding.span().clone(),
            self.vending.check(&inbound, deadline, &mut trail),
        )
        .await;
        match outcome {
            Ok(Passage::Swapped(swapped)) => {
                let who = Allowed {
                    issuer: Some(&swapped.identity.issuer),
                    subject: &swapped.identity.subject,
                    kid: Some(&swapped.minted.kid),
                    reason: None,
                };
                deciding.allowed(trail.credential, &trail, who);
                self.ok_response(&swapped)
            }
            Ok(Passage::OwnToken(own)) => {
                let who = Allowed {
                    issuer: None,
                    subject: &own.subject,
                    kid: None,
                    reason: Some("our own token passes unchanged"),
                };
                deciding.allowed(trail.credential, &trail, who);
                self.pass_response(&own.subject)
            }
            Err(error) => {
                let denial = Denial::from(&error);
                let refused = Refused {
                    outcome: denial.outcome,
                    label: denial.outcome.label(),
                    status: denial.http_status as u16,
                    description: &denial.description,
                };
                deciding.refused(trail.credential, &trail, refused);
                denial.into_response()
            }
        }
    }

    /// OK without touching `authorization`: the request carries a valid token of ours.
    fn pass_response(&self, subject: &str) -> CheckResponse {
        self.ok(Vec::new(), &[("subject", subject)])
    }

    fn ok_response(&self, swapped: &Swapped) -> CheckResponse {
        let authorization =
            overwrite_header("authorization", ["Bearer ", &swapped.minted.token].concat());
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
        let arrived = Instant::now();
        let deadline = arrived + budget.saturating_sub(deadline_margin(budget));
        let call_traceparent = request
            .metadata()
            .get("traceparent")
            .map(|value| value.as_bytes());
        Ok(Response::new(
            self.answer(request.get_ref(), arrived, deadline, call_traceparent)
                .await,
        ))
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

    #[test]
    fn the_margin_leaves_room_for_a_503_before_the_callers_deadline() {
        assert_eq!(
            deadline_margin(Duration::from_secs(1)),
            Duration::from_millis(200)
        );
        assert_eq!(
            deadline_margin(Duration::from_millis(50)),
            Duration::from_millis(20)
        );
        assert_eq!(
            deadline_margin(Duration::from_secs(30)),
            Duration::from_millis(250)
        );
    }
}
