//! An unknown `kid` while the issuer hangs: the sidecar cannot tell whether the key exists,
//! so the Check is a prompt 503 (retryable), not a 401 after the whole deadline — and the
//! next unknown-kid Checks do not each wait on the hanging issuer again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Harness, Options, denied, minted, now};
use evs_token_vending::SigningKey;
use serde_json::json;

/// A JWKS endpoint that serves `key` until told to hang (accept, then never answer).
async fn hanging_jwks(key: &SigningKey) -> (String, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hang = Arc::new(AtomicBool::new(false));
    let jwks = json!({"keys": [key.public_jwk()]});
    let hanging = hang.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (jwks, hanging) = (jwks.clone(), hanging.clone());
            async move {
                if hanging.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                axum::Json(jwks)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, hang)
}

#[tokio::test]
async fn an_unknown_kid_while_the_issuer_hangs_is_a_prompt_503_and_later_ones_do_not_wait() {
    let known = SigningKey::generate_rsa(2048).unwrap();
    let (issuer, hang) = hanging_jwks(&known).await;
    let h = Harness::start_with(Options {
        more_trust: format!("  - {{ issuer: '{issuer}', jwks_uri: '{issuer}/jwks.json' }}"),
        ..Default::default()
    })
    .await;
    let token = |key: &SigningKey, sub: &str| {
        evs_testkit::sign_with(key, &json!({"iss": issuer, "sub": sub, "exp": now() + 600}))
    };
    minted(&h.check_bearer(&token(&known, "a")).await);

    hang.store(true, Ordering::SeqCst);
    let rotated = SigningKey::generate_rsa(2048).unwrap();
    for attempt in 0..3 {
        let started = Instant::now();
        let answer = denied(&h.check_bearer(&token(&rotated, "b")).await);
        let took = started.elapsed();
        assert_eq!(
            answer.http_status,
            503,
            "attempt {attempt}: {}",
            answer.description()
        );
        // The Check's own deadline is 1 s: well inside it means the refetch wait was bounded.
        assert!(
            took < Duration::from_millis(900),
            "attempt {attempt} took {took:?}"
        );
    }
    // Tokens of keys already held keep working while the issuer hangs.
    minted(&h.check_bearer(&token(&known, "c")).await);
}
