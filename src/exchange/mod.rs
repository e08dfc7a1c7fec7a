//! Front door 5b: `POST /exchange` on the side port — the token swap for callers outside the
//! mesh, as an OAuth token endpoint (RFC 6749 §5 answers).
//!
//! It runs the very same stages as a Check ([`TokenVending`]) and maps their errors once,
//! here, into OAuth errors: 400 `invalid_request` / `invalid_grant` / `unsupported_grant_type`
//! / `invalid_target`, 401 `invalid_client`, 503 `temporarily_unavailable`. Its concurrent work
//! runs on a runtime of its own (one thread) and is bounded in count, so that a flood of
//! exchanges — each an RSA verification and signature — can never occupy the workers that
//! answer Envoy's Checks.

mod answer;
mod replay;
pub(crate) mod request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::Semaphore;

pub(crate) use self::answer::OAuthError;
use self::answer::{answer, no_store};
use self::replay::ReplayError;
pub use self::replay::ReplayStoreConfig;
pub(crate) use self::replay::{ReplayStore, probe as probe_replay_store};
pub(crate) use self::request::{
    AWS_IAM_TOKEN_TYPE, CLIENT_CREDENTIALS, JWT_BEARER, JWT_TOKEN_TYPES, TOKEN_EXCHANGE,
};
use self::request::{Grant, ISSUED_TOKEN_TYPE};
use crate::config_check::ConfigCheck;
use crate::credential::{CertSource, ClientCertificate, Credential, InboundRequest};
use crate::decision::{Allowed, DecisionRecorder, FrontDoor, Refused};
use crate::decision_log::{DecisionLog, request_id, trace_id};
use crate::identity::AuthError;
use crate::pipeline::{SwapError, Swapped, TokenVending, Trail, in_span};
use crate::telemetry::Metrics;
use crate::telemetry::traces::{B3Headers, parent_context};

/// Largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// `exchange:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExchangeConfig {
    /// `POST /exchange` on the side port (default true).
    pub enabled: bool,
    /// Exchanges worked on at once; more are answered 503 at once (default 4 per core).
    pub max_concurrent: usize,
    /// Upper bound of one exchange, every stage included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A request's body must arrive whole within this, or the connection is closed (a slow
    /// or stalled upload holds nothing else: no permit is taken before the body is read).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Where used assertions are remembered: `memory` (one replica) or
    /// `{ dynamodb: { table, region?, endpoint_url? } }` (every replica).
    pub replay_store: ReplayStoreConfig,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrent: 4 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            timeout: Duration::from_secs(2),
            body_timeout: Duration::from_secs(5),
            replay_store: ReplayStoreConfig::Memory,
        }
    }
}

impl ExchangeConfig {
    pub(crate) fn check(&self, path: &str, check: &mut ConfigCheck) {
        if self.max_concurrent == 0 {
            check.problem(format!("{path}.max_concurrent"), "must be at least 1");
        }
        if self.timeout < Duration::from_millis(10) {
            check.problem(format!("{path}.timeout"), "must be at least 10ms");
        }
        if self.body_timeout < Duration::from_millis(10) {
            check.problem(format!("{path}.body_timeout"), "must be at least 10ms");
        }
        self.replay_store
            .check(&format!("{path}.replay_store"), check);
    }
}

/// The client certificate of a TLS connection to the side port, as DER.
#[derive(Debug, Clone)]
pub(crate) struct TlsClientCertificate(pub(crate) Vec<u8>);

/// The one-thread runtime exchanges run on, shut down without blocking when dropped.
struct ExchangeRuntime(Option<tokio::runtime::Runtime>);

impl ExchangeRuntime {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("evs-exchange")
            .enable_all()
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot start the exchange runtime; exchanges share the main one"))
            .ok();
        Self(runtime)
    }
}

impl Drop for ExchangeRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The token endpoint.
pub(crate) struct ExchangeService {
    runtime: ExchangeRuntime,
    vending: Arc<TokenVending>,
    recorder: DecisionRecorder,
    /// What a JWT bearer assertion's `aud` must name: the endpoint URL or our issuer.
    endpoint_audiences: Vec<String>,
    /// What `audience` / `resource` may ask for: the minted `aud` values.
    mintable_audiences: Vec<String>,
    /// Used assertions by (issuer, jti), each until its `exp`.
    replays: ReplayStore,
    permits: Semaphore,
    timeout: Duration,
    body_timeout: Duration,
}

impl ExchangeService {
    /// The endpoint for `issuer` (the minted `iss`) minting for `audiences`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: &ExchangeConfig,
        replays: ReplayStore,
        issuer: &str,
        audiences: &[String],
        vending: Arc<TokenVending>,
        metrics: Arc<Metrics>,
        decisions: Option<Arc<DecisionLog>>,
        trace_subjects: bool,
    ) -> Self {
        Self {
            runtime: ExchangeRuntime::start(),
            vending,
            recorder: DecisionRecorder::new(
                FrontDoor::Exchange,
                metrics,
                decisions,
                trace_subjects,
            ),
            endpoint_audiences: vec![
                issuer.to_owned(),
                format!("{}/exchange", issuer.trim_end_matches('/')),
            ],
            mintable_audiences: audiences.to_vec(),
            replays,
            permits: Semaphore::new(config.max_concurrent),
            timeout: config.timeout,
            body_timeout: config.body_timeout,
        }
    }

    /// Answers one request to `/exchange`, on the exchange runtime.
    pub(crate) async fn answer(
        self: &Arc<Self>,
        method: Method,
        headers: HeaderMap,
        body: Body,
        client_certificate: Option<TlsClientCertificate>,
    ) -> Response {
        let Some(runtime) = &self.runtime.0 else {
            return self
                .answer_here(&method, &headers, body, client_certificate.as_ref())
                .await;
        };
        let service = self.clone();
        let work = runtime.spawn(async move {
            service
                .answer_here(&method, &headers, body, client_certificate.as_ref())
                .await
        });
        work.await.unwrap_or_else(|_| {
            OAuthError::with(
                503,
                "temporarily_unavailable",
                "the exchange was interrupted",
            )
            .into_response()
        })
    }

    async fn answer_here(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: Body,
        client_certificate: Option<&TlsClientCertificate>,
    ) -> Response {
        if method != Method::POST {
            let mut response =
                OAuthError::invalid_request("the token endpoint takes POST").into_response();
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        // The body first, bounded in size and time: a slow upload holds no permit.
        let read = self.read(headers, body).await;
        let Ok(_permit) = self.permits.try_acquire() else {
            self.recorder.metrics().count_exchange("any", "busy");
            return OAuthError::with(503, "temporarily_unavailable", "too many exchanges at once")
                .into_response();
        };
        let header = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
        let request_id = request_id(&header("x-request-id").map_or(vec![], |id| vec![id]));
        let trace_id = trace_id(header("traceparent"), header("x-b3-traceid"));
        let parent = || {
            parent_context(
                None,
                header("traceparent"),
                B3Headers {
                    trace_id: header("x-b3-traceid"),
                    span_id: header("x-b3-spanid"),
                    sampled: header("x-b3-sampled"),
                },
            )
        };
        let deciding = self
            .recorder
            .begin(Instant::now(), request_id, trace_id, parent);
        let swap = async {
            // Made inside the decision's span, so the stages get spans when it is traced.
            let mut trail = Trail::under_current_span();
            let (grant_type, result) = match read {
                Ok(exchange) => {
                    let grant_type = exchange.grant_type();
                    let result = self.run(exchange, client_certificate, &mut trail).await;
                    (grant_type, result)
                }
                Err(error) => ("unparsed", Err(error)),
            };
            (grant_type, result, trail)
        };
        let (grant_type, result, trail) = in_span(deciding.span().clone(), swap).await;
        match result {
            Ok((swapped, issued_token_type)) => {
                let who = Allowed {
                    issuer: Some(&swapped.identity.issuer),
                    subject: &swapped.identity.subject,
                    kid: Some(&swapped.minted.kid),
                    reason: None,
                };
                deciding.allowed(Some(grant_type), &trail, who);
                let answer = answer(&swapped, issued_token_type.as_deref());
                (StatusCode::OK, no_store(), axum::Json(answer)).into_response()
            }
            Err(error) => {
                let refused = Refused {
                    outcome: error.outcome(),
                    label: error.error,
                    status: error.status,
                    description: &error.description,
                };
                deciding.refused(Some(grant_type), &trail, refused);
                error.into_response()
            }
        }
    }

    async fn read(&self, headers: &HeaderMap, body: Body) -> Result<Grant, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let parse = match content_type.as_str() {
            "application/json" => Grant::from_json,
            "application/x-www-form-urlencoded" => Grant::from_form,
            _ => {
                return Err(OAuthError::with(
                    415,
                    "invalid_request",
                    "Content-Type must be application/x-www-form-urlencoded or application/json",
                ));
            }
        };
        let too_large =
            || OAuthError::with(413, "invalid_request", "the body is larger than 64 KiB");
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let bytes = tokio::time::timeout(
            self.body_timeout,
            axum::body::to_bytes(body, MAX_BODY_BYTES),
        )
        .await
        .map_err(|_| {
            OAuthError::with(
                408,
                "invalid_request",
                "the body did not arrive within exchange.body_timeout",
            )
        })?
        .map_err(|_| too_large())?;
        if bytes.is_empty() {
            return Err(OAuthError::invalid_request("the body is empty"));
        }
        parse(&bytes)
    }

    async fn run(
        &self,
        exchange: Grant,
        client_certificate: Option<&TlsClientCertificate>,
        trail: &mut Trail,
    ) -> Result<(Swapped, Option<String>), OAuthError> {
        let deadline = Instant::now() + self.timeout;
        let certificate = || {
            client_certificate
                .map(|cert| {
                    Credential::Certificate(ClientCertificate {
                        source: CertSource::Peer,
                        der: cert.0.clone(),
                        chain: Vec::new(),
                    })
                })
                .ok_or_else(|| {
                    OAuthError::with(
                        401,
                        "invalid_client",
                        "no TLS client certificate was presented",
                    )
                })
        };
        match exchange {
            Grant::Reference { token } => {
                let swapped = self.swap_bearer(&token, deadline, trail).await?;
                Ok((swapped, None))
            }
            Grant::TokenExchange {
                subject_token,
                audiences,
                requested_token_type,
            } => {
                if audiences
                    .iter()
                    .any(|a| !self.mintable_audiences.contains(a))
                {
                    return Err(OAuthError::with(
                        400,
                        "invalid_target",
                        "the requested audience is not one this endpoint mints for",
                    ));
                }
                let swapped = match subject_token {
                    Some(token) => self.swap_bearer(&token, deadline, trail).await?,
                    None => {
                        self.vending
                            .swap_credential(certificate()?, deadline, trail)
                            .await?
                    }
                };
                let issued = requested_token_type.unwrap_or_else(|| ISSUED_TOKEN_TYPE.to_owned());
                Ok((swapped, Some(issued)))
            }
            Grant::JwtBearer { assertion } => {
                let swapped = self.redeem_assertion(&assertion, deadline, trail).await?;
                Ok((swapped, None))
            }
            Grant::ClientCredentials => {
                let swapped = self
                    .vending
                    .swap_credential(certificate()?, deadline, trail)
                    .await?;
                Ok((swapped, None))
            }
        }
    }

    /// Verifies an assertion (RFC 7523: `aud` names this endpoint, `jti` required), records
    /// its `jti` until its `exp`, and swaps it; the second use of one `jti` is refused.
    async fn redeem_assertion(
        &self,
        assertion: &str,
        deadline: Instant,
        trail: &mut Trail,
    ) -> Result<Swapped, OAuthError> {
        // Verifying the assertion and recording its use are this grant's authenticate stage.
        trail.stage_begins();
        let verified = self.verify_first_use(assertion, deadline).await;
        trail.stages.authenticate = Some(trail.stage_ends());
        let verified = verified?;
        Ok(self
            .vending
            .swap_identity(
                Arc::new(verified.identity),
                assertion.as_bytes(),
                deadline,
                trail,
            )
            .await?)
    }

    /// The assertion verified, and its `jti` recorded as used (refused when it was already).
    async fn verify_first_use(
        &self,
        assertion: &str,
        deadline: Instant,
    ) -> Result<crate::identity::oidc::Assertion, OAuthError> {
        let verified = self
            .vending
            .authenticator()
            .oidc()
            .verify_assertion(assertion, &self.endpoint_audiences, deadline)
            .await
            .map_err(SwapError::Auth)?;
        let identity = &verified.identity;
        match self
            .replays
            .first_use(
                &identity.issuer,
                &verified.jti,
                identity.expires_at,
                deadline,
            )
            .await
        {
            Ok(()) => Ok(verified),
            Err(ReplayError::Replayed) => Err(SwapError::Auth(AuthError::Replayed).into()),
            Err(ReplayError::Unavailable) => Err(OAuthError::with(
                503,
                "temporarily_unavailable",
                ReplayError::Unavailable,
            )),
        }
    }

    /// Swaps a bearer token sent in the body. A JWT of an issuer with `assertion: true` is an
    /// assertion however it arrives (token exchange, JSON): the one replay rule applies.
    async fn swap_bearer(
        &self,
        token: &str,
        deadline: Instant,
        trail: &mut Trail,
    ) -> Result<Swapped, OAuthError> {
        if self
            .vending
            .authenticator()
            .oidc()
            .is_from_assertion_issuer(token)
        {
            return self.redeem_assertion(token, deadline, trail).await;
        }
        let authorization = format!("Bearer {token}");
        let request = InboundRequest {
            authorization: vec![authorization.as_bytes()],
            ..Default::default()
        };
        Ok(self
            .vending
            .swap_recorded(&request, deadline, trail)
            .await?)
    }
}
