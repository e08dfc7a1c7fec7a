//! The side HTTP port (docs/configuration.md, "Side port"): the JWKS backends verify minted tokens
//! with, discovery, liveness, readiness and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::exchange::{
    AWS_IAM_TOKEN_TYPE, CLIENT_CREDENTIALS, ExchangeService, JWT_BEARER, JWT_TOKEN_TYPES,
    TOKEN_EXCHANGE, TlsClientCertificate,
};
use crate::mint::keyring::KeyRingReloader;
use crate::mint::{Minter, WRITTEN_CLAIMS};
use crate::pipeline::TokenVending;
use crate::server_tls::ReloadingTls;
use crate::telemetry::{Live, Metrics};

/// What the side port reads.
pub struct SidePortState {
    /// The minter, whose key ring is published.
    pub minter: Arc<Minter>,
    /// The pipeline, for the issuers' key status.
    pub vending: Arc<TokenVending>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The signing keys' reloader (for refused changes in `/readyz`).
    pub keys: Arc<KeyRingReloader>,
    /// `Cache-Control: max-age` of the JWKS.
    pub jwks_max_age: Duration,
    /// Set once the ext_authz listener is serving.
    pub authz_serving: AtomicBool,
    /// Set on SIGTERM: readiness fails while the listeners still serve.
    pub draining: Arc<AtomicBool>,
    /// `/exchange`, unless `exchange.enabled: false`.
    pub(crate) exchange: Option<Arc<ExchangeService>>,
    /// The side port's TLS, when configured (for refused reloads in `/readyz`).
    pub(crate) tls: Option<Arc<ReloadingTls>>,
    /// ext_authz's TLS settings (`listen.authz_tls`), for `/readyz`'s warnings.
    pub(crate) authz_tls: Option<Arc<ReloadingTls>>,
}

/// The side port's routes.
pub fn router(state: Arc<SidePortState>, with_admin: bool) -> Router {
    let router = match state.exchange {
        Some(_) => Router::new().route("/exchange", any(exchange)),
        None => Router::new(),
    };
    let router = router
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery));
    if with_admin {
        router.merge(admin_routes()).with_state(state)
    } else {
        router.with_state(state)
    }
}

/// `listen.admin`'s routes (on the side port too when there is no admin port): probes and
/// metrics, which a NetworkPolicy can then open to the kubelet and Prometheus only.
pub fn admin_router(state: Arc<SidePortState>) -> Router {
    admin_routes().with_state(state)
}

fn admin_routes() -> Router<Arc<SidePortState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn jwks(State(state): State<Arc<SidePortState>>, request_headers: HeaderMap) -> Response {
    let ring = state.minter.ring();
    let cache_control = format!("public, max-age={}", state.jwks_max_age.as_secs());
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_str(&cache_control).unwrap_or(HeaderValue::from_static("no-cache")),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(ring.etag()).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
    ];
    let unchanged = request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == ring.etag() || tag == "*");
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, ring.jwks_json().to_owned()).into_response()
}

async fn exchange(
    State(state): State<Arc<SidePortState>>,
    client_certificate: Option<axum::Extension<TlsClientCertificate>>,
    request: axum::extract::Request,
) -> Response {
    let Some(exchange) = &state.exchange else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (parts, body) = request.into_parts();
    exchange
        .answer(
            parts.method,
            parts.headers,
            body,
            client_certificate.map(|c| c.0),
        )
        .await
}

async fn discovery(State(state): State<Arc<SidePortState>>) -> Response {
    let issuer = state.minter.issuer().trim_end_matches('/');
    let mut body = serde_json::json!({
        "issuer": state.minter.issuer(),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": state.minter.ring().algorithms(),
        "subject_types_supported": ["public"],
        "response_types_supported": ["id_token"],
        "claims_supported": WRITTEN_CLAIMS,
    });
    if state.exchange.is_some() {
        body["token_endpoint"] = format!("{issuer}/exchange").into();
        body["grant_types_supported"] =
            serde_json::json!([TOKEN_EXCHANGE, JWT_BEARER, CLIENT_CREDENTIALS]);
        let mut token_types = JWT_TOKEN_TYPES.to_vec();
        token_types.push(AWS_IAM_TOKEN_TYPE);
        body["subject_token_types_supported"] = serde_json::json!(token_types);
        body["token_endpoint_auth_methods_supported"] =
            serde_json::json!(["none", "tls_client_auth"]);
    }
    axum::Json(body).into_response()
}

async fn readyz(State(state): State<Arc<SidePortState>>) -> Response {
    let mut reasons = Vec::new();
    if !state.authz_serving.load(Ordering::Acquire) {
        reasons.push("the ext_authz listener is not serving yet".to_owned());
    }
    if state.draining.load(Ordering::Acquire) {
        reasons.push("draining: the sidecar is shutting down".to_owned());
    }
    // Issuers that are down are reported but do not fail readiness: taking every replica out
    // of service because one IdP is unreachable would turn its outage into ours.
    let issuers = state.vending.authenticator().oidc().status();
    // A refused key change is a warning, not unreadiness: the last good keys still sign, and
    // failing every replica's probe over a bad Secret edit would cause the outage it warns of.
    let mut warnings: Vec<String> = state
        .keys
        .last_error()
        .map(|e| format!("signing key change refused: {e}"))
        .into_iter()
        .collect();
    warnings.extend(state.vending.grants().warnings());
    if let Some(e) = state.tls.as_ref().and_then(|tls| tls.last_error()) {
        warnings.push(format!("side-port TLS change refused: {e}"));
    }
    if let Some(e) = state.authz_tls.as_ref().and_then(|tls| tls.last_error()) {
        warnings.push(format!("ext_authz TLS change refused: {e}"));
    }
    warnings.extend(
        issuers
            .iter()
            .filter(|issuer| issuer.keys_loaded && issuer.usable_keys == 0)
            .map(|issuer| {
                format!(
                    "issuer {} publishes no usable signing key: its tokens are refused",
                    issuer.issuer
                )
            }),
    );
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "warnings": warnings,
        "signing_kid": state.minter.ring().active().kid(),
        "published_kids": state.minter.ring().kids(),
        "issuers": issuers,
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<SidePortState>>) -> Response {
    let ring = state.minter.ring();
    let live = Live {
        published_keys: ring.kids().len(),
        active_key_age_seconds: state.minter.active_key_age(),
        key_ring_reload_failing: state.keys.last_error().is_some(),
        issuer_keys_age_seconds: (state.vending.authenticator().oidc().keys_ages())
            .into_iter()
            .map(|(issuer, age)| (issuer, age.map(|age| age.as_secs_f64())))
            .collect(),
        token_cache: state.minter.cache_size(),
        grants_cache_entries: state.vending.grants().cached_entries(),
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.render(&live),
    )
        .into_response()
}
