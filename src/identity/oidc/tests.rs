//! Edge cases of bearer-token verification, against issuers served on loopback.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use jsonwebtoken::Algorithm;

use super::*;
use crate::demo::DemoIdp;
use crate::mint::SigningKey;

fn trusting(issuer: &str, jwks_uri: Option<String>, algorithms: &[Algorithm]) -> OidcVerifier {
    let config = TrustedIssuerConfig {
        algorithms: algorithms.to_vec(),
        ..TrustedIssuerConfig::with_defaults(issuer, jwks_uri)
    };
    OidcVerifier::new(&[config], reqwest::Client::new(), Default::default())
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

/// A token with any header and claims, signed with garbage: for checks that come first.
fn unsigned(header: serde_json::Value, claims: serde_json::Value) -> String {
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.c2ln", part(header), part(claims))
}

/// Serves `jwks` as an issuer's JWKS on loopback; returns its URL.
async fn serve_jwks(jwks: serde_json::Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_token_of_the_trusted_issuer_verifies_into_its_identity() {
    let idp = DemoIdp::start().await.unwrap();
    let verifier = trusting(idp.issuer(), None, &crate::algorithms::default_inbound());
    let token = idp.token_for("alice", Some("alice@example.com"), Duration::from_secs(60));
    let identity = verifier.verify(&token, deadline()).await.unwrap();
    assert_eq!(identity.subject, "alice");
    assert_eq!(identity.email.as_deref(), Some("alice@example.com"));
    assert!(identity.expires_at > unix_now());
}

#[tokio::test]
async fn header_checks_refuse_before_any_key_is_looked_up() {
    let verifier = trusting(
        "https://idp.test",
        None,
        &crate::algorithms::default_inbound(),
    );
    let claims = json!({"iss": "https://idp.test", "sub": "a", "exp": unix_now() + 60});
    let cases = [
        (
            json!({"alg": "NoNe"}),
            claims.clone(),
            AuthError::AlgorithmNone,
        ),
        (
            json!({"alg": "HS256"}),
            claims.clone(),
            AuthError::AlgorithmNotAllowed("shared-secret (HS*) tokens are never accepted"),
        ),
        (
            json!({"alg": "RS256", "crit": ["b64"]}),
            claims.clone(),
            AuthError::Malformed("critical header extensions are not supported"),
        ),
        (
            json!({"alg": "RS256"}),
            json!({"iss": 7, "sub": "a"}),
            AuthError::InvalidClaim("iss is not a string"),
        ),
        (
            json!({"alg": "RS256"}),
            json!({"iss": "https://other.test", "sub": "a"}),
            AuthError::UnknownIssuer,
        ),
    ];
    for (header, claims, expected) in cases {
        let token = unsigned(header.clone(), claims);
        assert_eq!(
            verifier.verify(&token, deadline()).await,
            Err(expected),
            "{header}"
        );
    }
    assert_eq!(
        verifier.verify("a.b.c.d", deadline()).await,
        Err(AuthError::Malformed("a JWT has exactly three segments"))
    );
}

#[tokio::test]
async fn an_algorithm_outside_the_issuers_allow_list_is_refused() {
    let idp = DemoIdp::start().await.unwrap();
    let verifier = trusting(idp.issuer(), None, &[Algorithm::ES256]);
    let token = idp.token_for("alice", None, Duration::from_secs(60));
    assert!(matches!(
        verifier.verify(&token, deadline()).await,
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}

#[tokio::test]
async fn an_issuer_publishing_only_unusable_keys_gets_401_no_usable_key_not_503() {
    let short_rsa = json!({"kty": "RSA", "kid": "short", "n": URL_SAFE_NO_PAD.encode([0xC5u8; 128]), "e": "AQAB"});
    let key = SigningKey::generate_rsa(2048).unwrap();
    let mut encryption_only = key.public_jwk().clone();
    encryption_only["use"] = json!("enc");
    for jwks in [
        json!({"keys": [short_rsa]}),
        json!({"keys": [encryption_only]}),
    ] {
        let url = serve_jwks(jwks).await;
        let verifier = trusting(
            "https://idp.test",
            Some(url),
            &crate::algorithms::default_inbound(),
        );
        let claims = json!({"iss": "https://idp.test", "sub": "a", "exp": unix_now() + 60});
        let token = key.sign_jws(claims.to_string().as_bytes()).unwrap();
        let answer = verifier.verify(&token, deadline()).await;
        assert_eq!(answer, Err(AuthError::NoUsableKey));
        assert!(
            !answer.unwrap_err().is_unavailable(),
            "answered 401, not 503"
        );
        let status = verifier.status();
        assert!(status[0].keys_loaded && status[0].usable_keys == 0);
    }
}

#[tokio::test]
async fn an_issuer_never_reached_is_unavailable_not_the_callers_fault() {
    let verifier = trusting(
        "https://idp.test",
        Some("http://127.0.0.1:9/jwks.json".into()),
        &crate::algorithms::default_inbound(),
    );
    let key = SigningKey::generate_rsa(2048).unwrap();
    let claims = json!({"iss": "https://idp.test", "sub": "a", "exp": unix_now() + 60});
    let token = key.sign_jws(claims.to_string().as_bytes()).unwrap();
    let answer = verifier.verify(&token, deadline()).await;
    assert_eq!(answer, Err(AuthError::KeysUnavailable));
    assert!(answer.unwrap_err().is_unavailable());
}
