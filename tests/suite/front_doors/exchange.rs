//! `/exchange` as an attacker tries it: one assertion replayed through every grant type,
//! assertions that do not name this endpoint, and uploads that never finish or claim to be
//! huge.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Harness, Options, now};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// This token endpoint, as an assertion's `aud` names it.
const ENDPOINT: &str = "https://token-vending.example.com/exchange";

/// A sidecar whose IdP may sign RFC 7523 assertions, with `exchange_extra` keys.
async fn sidecar(exchange_extra: &str) -> Harness {
    Harness::start_with(Options {
        trust_extra: "assertion: true".into(),
        extra_config: format!("exchange: {{ enabled: true {exchange_extra} }}"),
        ..Default::default()
    })
    .await
}

/// An assertion of the harness's IdP: `aud`, a fresh `jti`, five minutes; `changes` set or
/// (with null) remove claims.
fn assertion(h: &Harness, aud: &str, changes: Value) -> String {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut claims = json!({
        "iss": h.idp.issuer(), "sub": "user@example.com", "aud": aud,
        "exp": now() + 300, "iat": now(), "jti": format!("front-door-{}-{serial}", now()),
    });
    for (name, value) in changes.as_object().unwrap() {
        match value {
            Value::Null => drop(claims.as_object_mut().unwrap().remove(name)),
            _ => claims[name] = value.clone(),
        }
    }
    h.idp.sign(&claims)
}

/// The three ways a JWT reaches `/exchange`.
#[derive(Debug, Clone, Copy)]
enum Path {
    JwtBearer,
    TokenExchange,
    Json,
}

/// Sends `jwt` by `path`; the status and the OAuth answer.
async fn exchange(h: &Harness, path: Path, jwt: &str) -> (u16, Value) {
    let url = h.http_url("/exchange");
    let client = reqwest::Client::new();
    let form = |pairs: &[(&str, &str)]| {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let request = match path {
        Path::JwtBearer => form(&[("grant_type", JWT_BEARER), ("assertion", jwt)]),
        Path::TokenExchange => form(&[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", jwt),
            ("subject_token_type", JWT_TYPE),
        ]),
        Path::Json => client.post(&url).json(&json!({ "token": jwt })),
    };
    let response = request.send().await.expect("POST /exchange");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// fosite's RFC 7523 handler refuses a reused `jti`; here the reuse may also come through the
/// other grant types, and each order of first use is tried.
#[tokio::test]
async fn an_assertion_is_accepted_once_whichever_grant_type_carries_it() {
    let h = sidecar("").await;
    let paths = [Path::JwtBearer, Path::TokenExchange, Path::Json];
    for first in paths {
        let jwt = assertion(&h, ENDPOINT, json!({}));
        let (status, body) = exchange(&h, first, &jwt).await;
        assert_eq!(status, 200, "{first:?} first: {body}");
        for again in paths {
            let (status, body) = exchange(&h, again, &jwt).await;
            assert_eq!(status, 400, "{first:?} then {again:?}: {body}");
            assert_eq!(body["error"], "invalid_grant");
            assert!(
                body["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("already used"),
                "{first:?} then {again:?}: {body}"
            );
        }
    }
}

/// Twenty uses of one assertion at once, spread over the three grant types: one token.
#[tokio::test]
async fn concurrent_uses_of_one_assertion_yield_one_token() {
    let h = std::sync::Arc::new(sidecar(", max_concurrent: 32").await);
    let jwt = assertion(&h, ENDPOINT, json!({}));
    let mut uses = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (h, jwt) = (h.clone(), jwt.clone());
        let path = [Path::JwtBearer, Path::TokenExchange, Path::Json][i % 3];
        uses.spawn(async move { exchange(&h, path, &jwt).await.0 });
    }
    let mut tokens = 0;
    while let Some(status) = uses.join_next().await {
        match status.unwrap() {
            200 => tokens += 1,
            400 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(tokens, 1);
}

/// fosite's audience, expiry and `jti` cases, asked on every path: an assertion issuer's JWT
/// is held to RFC 7523 however it arrives.
#[tokio::test]
async fn an_assertion_issuers_jwt_must_be_a_valid_assertion_on_every_path() {
    let h = sidecar("").await;
    let cases = [
        ("evidentsource", json!({}), "audience"),
        (
            "https://elsewhere.example.com/exchange",
            json!({}),
            "audience",
        ),
        (ENDPOINT, json!({"aud": null}), "aud"),
        (ENDPOINT, json!({"jti": null}), "jti"),
        (ENDPOINT, json!({"jti": ""}), "jti"),
        (ENDPOINT, json!({"exp": null}), "exp"),
        (ENDPOINT, json!({"exp": now() - 120}), "expired"),
        (ENDPOINT, json!({"nbf": now() + 3600}), "nbf"),
        (ENDPOINT, json!({"sub": null}), "sub"),
    ];
    // fosite's forged-signature case: one assertion's claims under another's signature.
    let (a, b) = (
        assertion(&h, ENDPOINT, json!({})),
        assertion(&h, ENDPOINT, json!({"sub": "admin@example.com"})),
    );
    let spliced = format!(
        "{}.{}",
        b.rsplit_once('.').unwrap().0,
        a.rsplit_once('.').unwrap().1
    );
    for path in [Path::JwtBearer, Path::TokenExchange, Path::Json] {
        let (status, body) = exchange(&h, path, &spliced).await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("invalid_grant")),
            "{path:?}: {body}"
        );
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("signature")
        );
    }
    for (aud, changes, words) in cases {
        for path in [Path::JwtBearer, Path::TokenExchange, Path::Json] {
            let jwt = assertion(&h, aud, changes.clone());
            let (status, body) = exchange(&h, path, &jwt).await;
            assert_eq!(status, 400, "{path:?} {changes} {aud}: {body}");
            assert_eq!(body["error"], "invalid_grant", "{path:?}: {body}");
            let description = body["error_description"].as_str().unwrap();
            assert!(
                description.contains(words),
                "{path:?} {changes}: {description}"
            );
            assert!(!description.contains(&jwt));
        }
    }
}

/// Writes a request's head (and `body`), then keeps the connection open, silent.
async fn stalled_upload(h: &Harness, content_length: u64, body: &[u8]) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(h.sidecar().http_addr)
        .await
        .expect("connect to the side port");
    let head = format!(
        "POST /exchange HTTP/1.1\r\nhost: evs\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {content_length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

/// What the side port wrote before closing the connection (bounded by a generous wait: a
/// hang here is the defect).
async fn read_until_closed(mut stream: tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the side port closes a stalled upload")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Istio's STS server tests and our own: more stalled uploads than permits must not turn a
/// real exchange away, and each stalled one is answered and closed after `body_timeout`.
#[tokio::test]
async fn stalled_uploads_hold_no_permit_and_are_closed_after_the_body_timeout() {
    let h = sidecar(", max_concurrent: 2, body_timeout: 1s").await;
    let mut stalled = Vec::new();
    for _ in 0..6 {
        stalled.push(stalled_upload(&h, 669, b"grant_type").await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let jwt = assertion(&h, ENDPOINT, json!({}));
    let (status, body) = exchange(&h, Path::JwtBearer, &jwt).await;
    assert_eq!(status, 200, "a real exchange while 6 uploads stall: {body}");
    for stream in stalled {
        let answer = read_until_closed(stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout"), "{answer}");
    }
}

/// A declared length over the limit is refused before a byte of the body is read.
#[tokio::test]
async fn a_declared_ten_gib_body_is_413_at_once() {
    let h = sidecar("").await;
    let stream = stalled_upload(&h, 10 << 30, b"").await;
    let answer = read_until_closed(stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}
