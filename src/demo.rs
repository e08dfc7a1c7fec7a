//! `evs-token-vending demo`: the whole swap on one machine with nothing configured.
//!
//! A built-in identity provider ([`DemoIdp`]: an RSA key, OIDC discovery and a JWKS on a
//! loopback port) issues a token; the real sidecar, started with embedded defaults, answers a
//! real ext_authz Check for it over gRPC; the minted token is then verified against the
//! sidecar's own JWKS. The tests reuse [`DemoIdp`] as their identity provider.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context, check_response,
};
use tokio::sync::watch;

use crate::config::Config;
use crate::identity::oidc::unix_now;
use crate::mint::keys::SigningKey;

/// A minimal OpenID provider on a loopback port: discovery, a JWKS, and token signing.
pub struct DemoIdp {
    issuer: String,
    key: SigningKey,
    state: Arc<IdpState>,
    stop: watch::Sender<bool>,
}

struct IdpState {
    issuer: String,
    jwks: ArcSwap<String>,
    up: AtomicBool,
    jwks_fetches: AtomicU64,
}

impl DemoIdp {
    /// Starts the provider on `127.0.0.1` with a fresh RSA-2048 key.
    pub async fn start() -> std::io::Result<Self> {
        let key = SigningKey::generate_rsa(2048).map_err(std::io::Error::other)?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let issuer = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(IdpState {
            issuer: issuer.clone(),
            jwks: ArcSwap::from_pointee(jwks_of(&[&key])),
            up: AtomicBool::new(true),
            jwks_fetches: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(idp_discovery))
            .route("/jwks.json", get(idp_jwks))
            .with_state(state.clone());
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(Self {
            issuer,
            key,
            state,
            stop,
        })
    }

    /// The issuer URL (`http://127.0.0.1:PORT`), also the base of discovery.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The provider's own signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs `claims` with the provider's key.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        sign_with(&self.key, claims)
    }

    /// A token for `subject` valid for `lifetime`, with this provider as `iss`.
    pub fn token_for(&self, subject: &str, email: Option<&str>, lifetime: Duration) -> String {
        let now = unix_now();
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": "demo-client",
            "iat": now,
            "exp": now + lifetime.as_secs(),
            "name": "Demo User",
        });
        if let Some(email) = email {
            claims["email"] = email.into();
        }
        self.sign(&claims)
    }

    /// Replaces the published keys.
    pub fn publish(&self, keys: &[&SigningKey]) {
        self.state.jwks.store(Arc::new(jwks_of(keys)));
    }

    /// While down, every endpoint answers 503.
    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for DemoIdp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Signs arbitrary claims with a key (RS256, `kid` set).
pub fn sign_with(key: &SigningKey, claims: &serde_json::Value) -> String {
    key.sign_jws(claims.to_string().as_bytes())
        .unwrap_or_default()
}

fn jwks_of(keys: &[&SigningKey]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
        .to_string()
}

async fn idp_discovery(State(state): State<Arc<IdpState>>) -> Response {
    if !state.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(serde_json::json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{}/jwks.json", state.issuer),
    }))
    .into_response()
}

async fn idp_jwks(State(state): State<Arc<IdpState>>) -> Response {
    if !state.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.jwks.load().as_ref().clone(),
    )
        .into_response()
}

/// A CheckRequest as Envoy sends it for a request carrying `headers`.
pub fn check_request(headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "POST".into(),
                    path: "/evidentsource.v1.EvidentSource/Query".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The sample grants the demo (and the README walk-through) use.
pub const SAMPLE_GRANTS: &str = "\
subjects:
  user@example.com:
    global: [database_creator]
    databases:
      production: [reader, writer]
      staging: [reader, writer, deployer]
  cert:orders-service:
    databases:
      orders: [reader, writer]
";

/// Runs the demo and prints what happens.
pub async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let idp = DemoIdp::start().await?;
    let dir = std::env::temp_dir().join(format!("evs-token-vending-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("grants.yaml"), SAMPLE_GRANTS)?;
    let config_text = format!(
        "listen: {{ authz: 127.0.0.1:0, http: 127.0.0.1:0 }}
token: {{ issuer: https://token-vending.example.com, audience: [evidentsource], lifetime: 1h }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{}', audiences: [demo-client] }} ]
grants: {{ source: file, file: grants.yaml }}
",
        idp.issuer()
    );
    let config = Config::from_yaml(&config_text, &dir)?;
    let sidecar = crate::server::start(config).await?;
    let result = show_swap(&idp, &sidecar).await;
    sidecar.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn show_swap(
    idp: &DemoIdp,
    sidecar: &crate::RunningSidecar,
) -> Result<(), Box<dyn std::error::Error>> {
    let rule = "─".repeat(72);
    println!("{rule}\nevs-token-vending demo: one real token swap on loopback\n{rule}");
    println!("demo identity provider   {}", idp.issuer());
    println!("ext_authz gRPC           {}", sidecar.authz_addr);
    println!(
        "JWKS                     http://{}/.well-known/jwks.json",
        sidecar.http_addr
    );

    let idp_token = idp.token_for(
        "user@example.com",
        Some("user@example.com"),
        Duration::from_secs(600),
    );
    println!(
        "\n1. The caller arrives with an IdP token (expires in 10 minutes):\n\n   {idp_token}\n"
    );
    print_claims("   IdP token", &idp_token);

    let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.authz_addr)).await?;
    let bearer = format!("Bearer {idp_token}");
    let answer = client
        .check(check_request(&[
            ("authorization", &bearer),
            ("x-request-id", "demo-1"),
        ]))
        .await?
        .into_inner();
    let minted = minted_token(&answer).ok_or("the sidecar did not answer OK")?;
    println!(
        "\n2. Envoy asks the sidecar (ext_authz Check); it answers OK and overwrites\n   `authorization` with a freshly minted token:\n\n   Bearer {minted}\n"
    );
    print_claims("   minted token", &minted);

    let jwks: serde_json::Value = reqwest::get(format!(
        "http://{}/.well-known/jwks.json",
        sidecar.http_addr
    ))
    .await?
    .json()
    .await?;
    let verified = verify_against_jwks(&minted, &jwks);
    println!(
        "\n3. The backend verifies it with the sidecar's JWKS: {}",
        match &verified {
            Ok(()) => "signature OK".to_owned(),
            Err(e) => format!("FAILED ({e})"),
        }
    );

    let forged = {
        let other = SigningKey::generate_rsa(2048)?;
        let now = unix_now();
        sign_with(
            &other,
            &serde_json::json!({"iss": idp.issuer(), "sub": "mallory", "exp": now + 600}),
        )
    };
    let denied = client
        .check(check_request(&[(
            "authorization",
            &format!("Bearer {forged}"),
        )]))
        .await?
        .into_inner();
    println!(
        "\n4. A token signed by a key the IdP never published is refused:\n   {}",
        denial_summary(&denied)
    );
    println!("{rule}");
    verified.map_err(Into::into)
}

/// The minted token of an OK answer.
pub fn minted_token(answer: &CheckResponse) -> Option<String> {
    match answer.http_response.as_ref()? {
        check_response::HttpResponse::OkResponse(ok) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == "authorization")
            .and_then(|h| h.value.strip_prefix("Bearer "))
            .map(str::to_owned),
        _ => None,
    }
}

/// `HTTP 401: {"error":…}` for a denial.
pub fn denial_summary(answer: &CheckResponse) -> String {
    match answer.http_response.as_ref() {
        Some(check_response::HttpResponse::DeniedResponse(denied)) => format!(
            "HTTP {}: {}",
            denied.status.as_ref().map(|s| s.code).unwrap_or(0),
            denied.body
        ),
        _ => "not denied".to_owned(),
    }
}

fn print_claims(label: &str, token: &str) {
    let decode = |segment: Option<&str>| -> String {
        segment
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| "<undecodable>".into())
            .replace('\n', "\n   ")
    };
    let mut parts = token.split('.');
    println!("{label} header:\n   {}", decode(parts.next()));
    println!("{label} claims:\n   {}", decode(parts.next()));
}

/// Verifies an RS256 token against a JWKS document, as a backend would.
pub fn verify_against_jwks(token: &str, jwks: &serde_json::Value) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or("kid not in the JWKS")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    // The published key's own alg decides; a token claiming another alg is refused.
    if jwk.common.key_algorithm != Some(header.alg.into()) {
        return Err("alg differs from the published key's alg".into());
    }
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
