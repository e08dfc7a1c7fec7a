//! The side HTTP port as a backend and a kubelet see it.

use crate::support::{Harness, Options, minted, segment};

#[tokio::test]
async fn jwks_publishes_the_signing_key_with_cache_control() {
    let h = Harness::start_with(Options {
        ..Options::default()
    })
    .await;
    let response = reqwest::get(h.http_url("/.well-known/jwks.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    assert_eq!(response.headers()["content-type"], "application/json");
    let jwks: serde_json::Value = response.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "RSA");
    assert!(keys[0].get("d").is_none(), "private exponent published");
    let token = minted(&h.check_bearer(&h.user_token()).await);
    assert_eq!(segment(&token, 0)["kid"], keys[0]["kid"]);
}

#[tokio::test]
async fn discovery_points_at_the_jwks_under_the_minted_issuer() {
    let h = Harness::start().await;
    let doc: serde_json::Value = reqwest::get(h.http_url("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], "https://token-vending.example.com");
    assert_eq!(
        doc["jwks_uri"],
        "https://token-vending.example.com/.well-known/jwks.json"
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let h = Harness::start().await;
    assert_eq!(
        reqwest::get(h.http_url("/healthz")).await.unwrap().status(),
        200
    );
    let ready = reqwest::get(h.http_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["issuers"][0]["keys_loaded"], true);

    minted(&h.check_bearer(&h.user_token()).await);
    crate::support::denied(&h.check_bearer("x.y.z").await);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("evs_tv_checks_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("evs_tv_checks_total{outcome=\"unauthenticated\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_issuer_without_a_usable_key_gets_401_and_a_readiness_warning() {
    let h = Harness::start().await;
    // The IdP is up but now publishes nothing this sidecar can verify with; a token under a
    // new kid makes the sidecar fetch that empty set.
    h.idp.publish(&[]);
    let rotated = evs_token_vending::SigningKey::generate_rsa(2048).unwrap();
    let token = evs_testkit::sign_with(&rotated, &h.claims(serde_json::json!({})));
    let answer = crate::support::denied(&h.check_bearer(&token).await);
    assert_eq!(answer.http_status, 401, "{}", answer.description());
    assert!(
        answer.description().contains("no usable key"),
        "{}",
        answer.description()
    );
    let ready = crate::support::get_json(&h.http_url("/readyz")).await;
    assert_eq!(ready["ready"], true, "an IdP's keys never fail readiness");
    let warnings = ready["warnings"].to_string();
    assert!(
        warnings.contains("publishes no usable signing key"),
        "{ready}"
    );
}

#[tokio::test]
async fn silent_and_half_sent_connections_to_the_side_port_are_closed() {
    use std::io::{Read, Write};
    let h = Harness::start_with(Options {
        listen: "{ authz: 127.0.0.1:0, http: 127.0.0.1:0, header_timeout: 1s }".into(),
        ..Options::default()
    })
    .await;
    let addr = h.sidecar().http_addr;
    let closed_within = |mut stream: std::net::TcpStream| {
        tokio::task::spawn_blocking(move || {
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut buffer = [0u8; 256];
            // Closed by the server: a read returns 0 (or the 408 it sends first, then 0).
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        })
    };
    let silent = std::net::TcpStream::connect(addr).unwrap();
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (silent, half) = (closed_within(silent), closed_within(half));
    assert!(silent.await.unwrap(), "a silent connection is closed");
    assert!(half.await.unwrap(), "a half-sent request is closed");
    // The port still serves.
    assert_eq!(
        reqwest::get(h.http_url("/healthz")).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn a_thousand_idle_connections_on_each_port_are_closed_and_checks_still_pass() {
    use tokio::io::AsyncReadExt;
    let h = Harness::start_with(Options {
        listen:
            "{ authz: 127.0.0.1:0, http: 127.0.0.1:0, header_timeout: 1s, handshake_timeout: 1s }"
                .into(),
        ..Options::default()
    })
    .await;
    let (authz, http) = (h.sidecar().authz_addr.tcp().unwrap(), h.sidecar().http_addr);
    let mut idle = Vec::new();
    for _ in 0..1_000 {
        idle.push(tokio::net::TcpStream::connect(http).await.unwrap());
        idle.push(tokio::net::TcpStream::connect(authz).await.unwrap());
    }
    // Checks keep passing while the idle connections are held.
    let answer = h.check_bearer(&h.user_token()).await;
    assert_eq!(
        answer.status.unwrap().code,
        0,
        "OK while 2,000 sockets idle"
    );

    let closed = futures_util::future::join_all(idle.into_iter().map(|mut socket| async move {
        let mut rest = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            socket.read_to_end(&mut rest),
        )
        .await
        .is_ok()
    }))
    .await;
    let still_open = closed.iter().filter(|closed| !**closed).count();
    assert_eq!(still_open, 0, "idle connections the sidecar never closed");
}

#[tokio::test]
async fn with_an_admin_port_probes_and_metrics_move_off_the_public_side_port() {
    let h = Harness::start_with(Options {
        listen: "{ authz: 127.0.0.1:0, http: 127.0.0.1:0, admin: 127.0.0.1:0 }".into(),
        ..Options::default()
    })
    .await;
    let admin = h.sidecar().admin_addr.expect("admin port bound");
    let status = async |url: String| reqwest::get(url).await.unwrap().status().as_u16();
    for path in ["/metrics", "/readyz", "/healthz"] {
        assert_eq!(status(format!("http://{admin}{path}")).await, 200, "{path}");
        assert_eq!(
            status(h.http_url(path)).await,
            404,
            "{path} on the side port"
        );
    }
    assert_eq!(status(h.http_url("/.well-known/jwks.json")).await, 200);
    assert_eq!(
        status(format!("http://{admin}/.well-known/jwks.json")).await,
        404
    );
}
