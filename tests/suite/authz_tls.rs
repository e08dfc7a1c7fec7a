//! ext_authz over mutual TLS (`listen.authz_tls`), for a gateway that calls the sidecar over the
//! network: the shipped shared-Envoy recipe (`deploy/kubernetes/gateways/shared-envoy/envoy.yaml`)
//! run by a real Envoy against a sidecar that requires its client certificate, and the callers
//! the sidecar must turn away.

use std::net::SocketAddr;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use evs_testkit::EchoBackend;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::support::certs::TestCa;
use crate::support::envoy::{Envoy, Stack, TlsFiles};
use crate::support::{Harness, Options, TempDir, minted, segment};

/// The name the recipe's Envoy expects on the sidecar's certificate.
const SIDECAR_NAME: &str = "evs-token-vending.evidentsource.svc";

/// A sidecar with `authz_tls`: its server certificate from `server_ca`, callers' certificates
/// checked against `client_ca`.
async fn sidecar_requiring_client_certificates(
    server_ca: &TestCa,
    client_ca: &TestCa,
    extra_config: &str,
) -> (Harness, TempDir) {
    let dir = TempDir::new("authz-tls");
    let (cert, key) = server_ca.issue_with_key("evs-token-vending", &[SIDECAR_NAME]);
    let cert_file = dir.write("server.pem", &cert);
    let key_file = dir.write("server-key.pem", &key);
    let ca_file = dir.write("client-ca.pem", &client_ca.pem);
    let harness = Harness::start_with(Options {
        listen: format!(
            "{{ authz: 127.0.0.1:0, http: 127.0.0.1:0, authz_tls: {{ cert_file: '{}', \
             key_file: '{}', client_ca_file: '{}' }} }}",
            cert_file.display(),
            key_file.display(),
            ca_file.display()
        ),
        extra_config: extra_config.to_owned(),
        ..Options::default()
    })
    .await;
    (harness, dir)
}

fn authz_port(harness: &Harness) -> u16 {
    harness
        .sidecar()
        .authz_addr
        .to_string()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// An ext_authz client over TLS trusting `server_ca`, presenting `identity` if any.
async fn tls_client(
    harness: &Harness,
    server_ca: &TestCa,
    identity: Option<(String, String)>,
) -> Result<AuthorizationClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&server_ca.pem))
        .domain_name(SIDECAR_NAME);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", authz_port(harness)))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(AuthorizationClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_envoy_recipe_reaches_the_sidecar_over_mutual_tls() {
    let server_ca = TestCa::new("sidecar server CA");
    let gateway_ca = TestCa::new("gateway client CA");
    let (harness, _dir) = sidecar_requiring_client_certificates(&server_ca, &gateway_ca, "").await;
    let backend = EchoBackend::new(harness.http_url("/.well-known/jwks.json"))
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start backend");
    // The recipe as shipped, its names pointed at loopback and its files at the test's own.
    let (gateway_cert, gateway_key) = gateway_ca.issue_with_key("shared-envoy", &[]);
    let files = TlsFiles {
        server_pem: gateway_cert,
        server_key: gateway_key,
        client_ca: server_ca.pem.clone(),
    };
    let port = authz_port(&harness);
    let envoy = tokio::task::spawn_blocking(move || {
        Envoy::start_template(
            "deploy/kubernetes/gateways/shared-envoy/envoy.yaml",
            &[
                ("type: STRICT_DNS", "type: STATIC"),
                (
                    "address: evs-token-vending.evidentsource.svc.cluster.local",
                    "address: 127.0.0.1",
                ),
                (
                    "address: evidentsource.evidentsource.svc.cluster.local",
                    "address: 127.0.0.1",
                ),
                ("/etc/envoy/authz-tls/tls.crt", "tls/server.pem"),
                ("/etc/envoy/authz-tls/tls.key", "tls/server-key.pem"),
                ("/etc/envoy/authz-tls/ca.crt", "tls/client-ca.pem"),
            ],
            port,
            backend.port(),
            &files,
        )
    })
    .await
    .unwrap();
    let stack = Stack { harness, envoy };
    let idp_token = stack.harness.user_token();
    let reply = stack
        .call(&[&format!("Bearer {idp_token}")])
        .await
        .expect("the call reaches the backend through the gateway");
    assert!(reply.verified, "backend could not verify: {}", reply.error);
    assert!(!reply.authorization[0].contains(&idp_token));
    let status = stack
        .call(&["Bearer not.a.jwt"])
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn ext_authz_with_authz_tls_serves_only_the_gateways_certificate() {
    let server_ca = TestCa::new("sidecar server CA");
    let gateway_ca = TestCa::new("gateway client CA");
    let stranger_ca = TestCa::new("someone else's CA");
    let (harness, _dir) = sidecar_requiring_client_certificates(&server_ca, &gateway_ca, "").await;
    let token = harness.user_token();
    let check = |client: Option<AuthorizationClient<Channel>>| {
        let request = evs_testkit::check_request(&[("authorization", &format!("Bearer {token}"))]);
        async move {
            match client {
                Some(mut client) => client.check(request).await.map(|r| r.into_inner()),
                None => Err(tonic::Status::unavailable("could not connect")),
            }
        }
    };
    // The gateway's certificate: served.
    let gateway = tls_client(
        &harness,
        &server_ca,
        Some(gateway_ca.issue_with_key("gateway", &[])),
    )
    .await
    .expect("the gateway connects");
    let answer = check(Some(gateway)).await.expect("answered");
    minted(&answer);
    // No certificate, another CA's certificate, or no TLS at all: no answer.
    for (who, identity) in [
        ("no certificate", None),
        (
            "another CA's certificate",
            Some(stranger_ca.issue_with_key("gateway", &[])),
        ),
    ] {
        let client = tls_client(&harness, &server_ca, identity).await.ok();
        let result = check(client).await;
        assert!(result.is_err(), "{who}: answered {result:?}");
    }
    let plaintext = check(Some(harness.client.clone())).await;
    assert!(plaintext.is_err(), "plaintext h2c answered: {plaintext:?}");
}

#[tokio::test]
async fn through_authz_tls_the_gateways_source_certificate_gets_a_token() {
    // The certificates a gateway reports in source.certificate are trusted only because mTLS
    // proves the caller is the gateway: the start-up rule's one exception.
    let server_ca = TestCa::new("sidecar server CA");
    let gateway_ca = TestCa::new("gateway client CA");
    let callers_ca = TestCa::new("callers' CA");
    let dir = TempDir::new("authz-tls-peer");
    let callers_ca_file = dir.write("callers-ca.pem", &callers_ca.pem);
    let (harness, _tls_dir) = sidecar_requiring_client_certificates(
        &server_ca,
        &gateway_ca,
        &format!(
            "client_certs: {{ enabled: true, from: [peer], ca_file: '{}' }}",
            callers_ca_file.display()
        ),
    )
    .await;
    let mut gateway = tls_client(
        &harness,
        &server_ca,
        Some(gateway_ca.issue_with_key("gateway", &[])),
    )
    .await
    .expect("the gateway connects");
    let caller = callers_ca.issue(Default::default());
    let mut request = evs_testkit::check_request(&[]);
    request.attributes.as_mut().unwrap().source = Some(
        envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer {
            certificate: crate::support::certs::url_encode(&caller.pem),
            ..Default::default()
        },
    );
    let answer = gateway.check(request).await.expect("answered").into_inner();
    let token = minted(&answer);
    assert_eq!(segment(&token, 1)["sub"], "cert:orders-service");
}
