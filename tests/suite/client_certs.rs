//! Client certificates as credentials through the real Check: Envoy's peer certificate, the
//! XFCC header and AWS ALB's header, with certificates made by the test.

use crate::support::certs::{LeafSpec, TestCa, url_encode};
use crate::support::{Harness, Options, denied, minted, now, segment};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use evs_testkit::check_request;
use serde_json::json;

/// A harness trusting `ca` for every certificate source, plus `extra` keys of `client_certs`.
async fn harness(ca: &TestCa, extra: &str) -> Harness {
    let dir = crate::support::TempDir::new("certs-ca");
    let ca_file = dir.write("ca.pem", &ca.pem);
    let h = Harness::start_with(Options {
        extra_config: format!(
            "client_certs:\n  enabled: true\n  from: [peer, xfcc, alb]\n  ca_file: '{}'\n  {extra}",
            ca_file.display()
        ),
        ..Options::default()
    })
    .await;
    drop(dir);
    h
}

fn with_peer_certificate(mut request: CheckRequest, encoded_pem: &str) -> CheckRequest {
    let attributes = request.attributes.as_mut().unwrap();
    attributes.source = Some(Peer {
        certificate: encoded_pem.to_owned(),
        ..Default::default()
    });
    request
}

#[tokio::test]
async fn a_peer_certificate_gets_a_token_with_its_subject_claims_binding_and_grants() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.issue(LeafSpec::default());
    let h = harness(&ca, "").await;
    let answer = h
        .check_request(with_peer_certificate(
            check_request(&[]),
            &url_encode(&leaf.pem),
        ))
        .await;
    let claims = segment(&minted(&answer), 1);
    assert_eq!(claims["sub"], "cert:orders-service");
    assert_eq!(claims["cert:cn"], "orders-service");
    assert_eq!(claims["cert:org"], "Example Org");
    let thumbprint = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &leaf.der,
    ));
    assert_eq!(claims["cnf"], json!({"x5t#S256": thumbprint}));
    assert_eq!(
        claims["evs:grants"],
        json!({"global": [], "databases": {"orders": ["reader", "writer"]}})
    );
}

#[tokio::test]
async fn the_minted_exp_never_passes_the_certificates_not_after() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.issue(LeafSpec {
        not_after: 600,
        ..LeafSpec::default()
    });
    let h = harness(&ca, "").await;
    let claims = segment(
        &minted(
            &h.check_request(with_peer_certificate(
                check_request(&[]),
                &url_encode(&leaf.pem),
            ))
            .await,
        ),
        1,
    );
    let exp = claims["exp"].as_u64().unwrap();
    assert!(
        exp <= now() + 600 && exp + 5 >= now() + 600,
        "exp {exp} does not follow notAfter"
    );
}

#[tokio::test]
async fn xfcc_and_alb_headers_carry_certificates_when_enabled() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.issue(LeafSpec::default());
    let h = harness(&ca, "").await;
    // Two hops: the element the nearest proxy appended (the last) is the one trusted.
    let xfcc = format!(
        r#"By=spiffe://mesh/edge;Hash=00;Subject="CN=someone,O=Else";Cert=garbage,By=spiffe://mesh/gw;Hash=ab;Cert="{}";Subject="CN=orders-service,O=Example Org";URI="#,
        url_encode(&leaf.pem)
    );
    let claims = segment(
        &minted(&h.check(&[("x-forwarded-client-cert", &xfcc)]).await),
        1,
    );
    assert_eq!(claims["sub"], "cert:orders-service");

    let alb = url_encode(&leaf.pem);
    let claims = segment(
        &minted(&h.check(&[("x-amzn-mtls-clientcert", &alb)]).await),
        1,
    );
    assert_eq!(claims["cert:org"], "Example Org");
}

#[tokio::test]
async fn a_spiffe_subject_comes_from_the_uri_san() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.issue(LeafSpec {
        cn: None,
        uri: Some("spiffe://example.org/ns/orders/sa/api"),
        ..LeafSpec::default()
    });
    let h = harness(&ca, "subject: spiffe").await;
    let claims = segment(
        &minted(
            &h.check(&[("x-amzn-mtls-clientcert", &url_encode(&leaf.pem))])
                .await,
        ),
        1,
    );
    assert_eq!(claims["sub"], "spiffe://example.org/ns/orders/sa/api");
    assert!(claims.get("cert:cn").is_none());
}

#[tokio::test]
async fn bad_certificates_and_headers_get_401_saying_which() {
    let ca = TestCa::new("Test CA");
    let stranger_ca = TestCa::new("Someone Else's CA");
    let h = harness(&ca, "").await;
    let good = ca.issue(LeafSpec::default());
    let pem_of = |spec| url_encode(&ca.issue(spec).pem);
    let two = url_encode(&format!("{}{}", good.pem, good.pem));
    let der_not_pem = URL_SAFE_NO_PAD.encode(&good.der);
    let hundred = vec!["Hash=ab"; 100].join(",");
    let huge = format!("Hash=ab;Cert={}", "A".repeat(64 * 1024));
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "garbage PEM",
            "x-amzn-mtls-clientcert",
            url_encode("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"),
            "malformed client certificate",
        ),
        (
            "DER where PEM was expected",
            "x-amzn-mtls-clientcert",
            der_not_pem,
            "malformed client certificate",
        ),
        (
            "two certificates",
            "x-amzn-mtls-clientcert",
            two,
            "exactly one certificate",
        ),
        (
            "unbalanced quotes",
            "x-forwarded-client-cert",
            r#"Hash=ab;Cert="abc"#.into(),
            "unbalanced quote",
        ),
        (
            "empty Cert",
            "x-forwarded-client-cert",
            "Hash=ab;Cert=".into(),
            "Cert is empty",
        ),
        (
            "100 elements",
            "x-forwarded-client-cert",
            hundred,
            "more than 16 elements",
        ),
        (
            "64 KiB value",
            "x-forwarded-client-cert",
            huge,
            "larger than 32 KiB",
        ),
        (
            "no CN",
            "x-amzn-mtls-clientcert",
            pem_of(LeafSpec {
                cn: None,
                ..LeafSpec::default()
            }),
            "has no CN",
        ),
        (
            "expired",
            "x-amzn-mtls-clientcert",
            pem_of(LeafSpec {
                not_before: -7200,
                not_after: -60,
                ..LeafSpec::default()
            }),
            "certificate expired",
        ),
        (
            "not yet valid",
            "x-amzn-mtls-clientcert",
            pem_of(LeafSpec {
                not_before: 3600,
                ..LeafSpec::default()
            }),
            "not yet valid",
        ),
        (
            "untrusted CA",
            "x-amzn-mtls-clientcert",
            url_encode(&stranger_ca.issue(LeafSpec::default()).pem),
            "not signed by a trusted CA",
        ),
        (
            "CN with a quote",
            "x-amzn-mtls-clientcert",
            pem_of(LeafSpec {
                cn: Some("evil\"name"),
                ..LeafSpec::default()
            }),
            "not allowed",
        ),
        (
            "CN with a control character",
            "x-amzn-mtls-clientcert",
            pem_of(LeafSpec {
                cn: Some("evil\u{7}name"),
                ..LeafSpec::default()
            }),
            "not allowed",
        ),
    ];
    for (case, header, value, reason) in cases {
        let denial = denied(&h.check(&[(header, &value)]).await);
        assert_eq!(denial.http_status, 401, "{case}");
        assert!(
            denial.description().contains(reason),
            "{case}: {}",
            denial.description()
        );
        denial.assert_does_not_echo("evil");
        if value.len() > 40 {
            denial.assert_does_not_echo(&value[10..40]);
        }
    }
}

#[tokio::test]
async fn header_sources_are_ignored_unless_enabled() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.issue(LeafSpec::default());
    let h = Harness::start_with(Options {
        extra_config: "client_certs: { enabled: true, from: [peer] }".into(),
        ..Options::default()
    })
    .await;
    let denial = denied(
        &h.check(&[(
            "x-forwarded-client-cert",
            &format!("Hash=ab;Cert=\"{}\"", url_encode(&leaf.pem)),
        )])
        .await,
    );
    assert!(
        denial.description().contains("no credential"),
        "{}",
        denial.description()
    );
}

#[tokio::test]
async fn with_a_token_and_a_certificate_the_token_wins_or_both_are_required() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.issue(LeafSpec::default());
    let cert = url_encode(&leaf.pem);

    let h = harness(&ca, "").await;
    let bearer = format!("Bearer {}", h.user_token());
    let claims = segment(
        &minted(
            &h.check(&[
                ("authorization", &bearer),
                ("x-amzn-mtls-clientcert", &cert),
            ])
            .await,
        ),
        1,
    );
    assert_eq!(claims["sub"], "user@example.com");
    assert!(claims.get("cnf").is_none());

    let strict = harness(&ca, "when_both: require_both").await;
    let bearer = format!("Bearer {}", strict.user_token());
    let claims = segment(
        &minted(
            &strict
                .check(&[
                    ("authorization", &bearer),
                    ("x-amzn-mtls-clientcert", &cert),
                ])
                .await,
        ),
        1,
    );
    assert_eq!(claims["sub"], "user@example.com");
    assert!(
        claims["cnf"]["x5t#S256"].is_string(),
        "token not bound to the certificate"
    );
    let denial = denied(&strict.check(&[("authorization", &bearer)]).await);
    assert!(
        denial.description().contains("both"),
        "{}",
        denial.description()
    );
}

#[tokio::test]
async fn header_sources_without_a_ca_are_a_start_up_error() {
    let dir = crate::support::TempDir::new("certs");
    dir.write("grants.yaml", "subjects:\n  someone@example.com: {}\n");
    let yaml = "token: { issuer: https://tv.example.com }
signing: { dev_generate: true }
trust: [ { issuer: https://idp.example.com } ]
grants: { file: grants.yaml }
client_certs: { enabled: true, from: [xfcc] }
";
    let error = evs_token_vending::Config::from_yaml(yaml, dir.path())
        .unwrap_err()
        .to_string();
    assert!(error.contains("client_certs.ca_file"), "{error}");
}

#[tokio::test]
async fn one_token_with_two_certificates_gets_two_tokens_each_bound_to_its_certificate() {
    let ca = TestCa::new("Test CA");
    let first = ca.issue(LeafSpec::default());
    let second = ca.issue(LeafSpec::default());
    let h = harness(&ca, "when_both: require_both").await;
    let bearer = format!("Bearer {}", h.user_token());
    let binding = async |leaf: &crate::support::certs::Leaf| {
        let answer = h
            .check(&[
                ("authorization", &bearer),
                ("x-amzn-mtls-clientcert", &url_encode(&leaf.pem)),
            ])
            .await;
        segment(&minted(&answer), 1)["cnf"]["x5t#S256"].clone()
    };
    let thumbprint = |leaf: &crate::support::certs::Leaf| {
        URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &leaf.der,
        ))
    };
    assert_eq!(binding(&first).await, thumbprint(&first));
    assert_eq!(
        binding(&second).await,
        thumbprint(&second),
        "a token bound to another certificate was served"
    );
}

#[tokio::test]
async fn a_certificate_only_deployment_needs_no_idp_and_no_credential_source_is_an_error() {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    let ca = TestCa::new("Test CA");
    let leaf = ca.issue(LeafSpec::default());
    let dir = crate::support::TempDir::new("certs-only");
    dir.write("ca.pem", &ca.pem);
    dir.write(
        "grants.yaml",
        "subjects:\n  cert:orders-service: { global: [reader] }\n",
    );
    let base = "listen: { authz: 127.0.0.1:0, http: 127.0.0.1:0 }
token: { issuer: https://tv.example.com }
signing: { dev_generate: true }
trust: []
grants: { file: grants.yaml }
";
    let config = evs_token_vending::Config::from_yaml(
        &format!("{base}client_certs: {{ enabled: true, from: [peer], ca_file: ca.pem }}\n"),
        dir.path(),
    )
    .expect("a certificate-only config");
    let sidecar = evs_token_vending::start(config).await.expect("start");
    let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.authz_addr))
        .await
        .unwrap();
    let answer = client
        .check(with_peer_certificate(
            check_request(&[]),
            &url_encode(&leaf.pem),
        ))
        .await
        .unwrap()
        .into_inner();
    let claims = segment(&minted(&answer), 1);
    assert_eq!(claims["sub"], "cert:orders-service");
    assert_eq!(claims["evs:grants"]["global"], json!(["reader"]));
    // A bearer token meets no trusted issuer: 401, not a crash.
    let bearer = client
        .check(check_request(&[("authorization", "Bearer a.b.c")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied(&bearer).http_status, 401);
    sidecar.shutdown().await;

    let error = evs_token_vending::Config::from_yaml(base, dir.path())
        .unwrap_err()
        .to_string();
    assert!(error.contains("trust: no trusted issuer"), "{error}");
}
