//! The demo's identity provider: OIDC discovery and a JWKS on a loopback port, and tokens
//! signed with its own RSA key. `demo` runs it; the tests drive it (with the `test-util`
//! feature's hooks to rotate its keys, take it down, and count fetches).

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
use tokio::sync::watch;

use crate::clock::unix_now;
use crate::mint::SigningKey;

/// A minimal OpenID provider on a loopback port: discovery, a JWKS, and token signing.
pub struct DemoIdp {
    issuer: String,
    key: SigningKey,
    // Read only by the test hooks; the demo never changes a running provider.
    #[cfg_attr(not(any(test, feature = "test-util")), allow(dead_code))]
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
    /// Starts the provider on a free `127.0.0.1` port with a fresh RSA-2048 key.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(0).await
    }

    /// The same on `127.0.0.1:port` (`dev-idp`, whose issuer a config names).
    pub async fn start_on(port: u16) -> std::io::Result<Self> {
        let key = SigningKey::generate_rsa(2048).map_err(std::io::Error::other)?;
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
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
        self.key
            .sign_jws(claims.to_string().as_bytes())
            .unwrap_or_default()
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
    #[cfg(any(test, feature = "test-util"))]
    pub fn publish(&self, keys: &[&SigningKey]) {
        self.state.jwks.store(Arc::new(jwks_of(keys)));
    }

    /// While down, every endpoint answers 503.
    #[cfg(any(test, feature = "test-util"))]
    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    /// How many times the JWKS was fetched.
    #[cfg(any(test, feature = "test-util"))]
    pub fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for DemoIdp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
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
