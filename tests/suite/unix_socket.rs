//! ext_authz on a Unix socket, as Envoy's `pipe` address reaches it in a pod: the swap through
//! a real Envoy, grpc.health.v1, the socket file's mode, a stale file replaced, the file removed
//! at shutdown, and the start-up errors.

use std::os::unix::fs::PermissionsExt;

use crate::support::envoy::Stack;
use crate::support::{Harness, Options, TempDir, minted, segment};
use evs_token_vending::AuthzAddress;

fn socket_options(socket: &std::path::Path, extra: &str) -> Options {
    Options {
        listen: format!(
            "{{ authz: 'unix:{}', http: 127.0.0.1:0 {extra} }}",
            socket.display()
        ),
        ..Options::default()
    }
}

#[tokio::test]
async fn through_envoy_over_the_socket_the_backend_receives_the_minted_token() {
    let dir = TempDir::new("uds-envoy");
    let socket = dir.path().join("authz.sock");
    let stack = Stack::start_with(socket_options(&socket, "")).await;
    assert_eq!(
        stack.harness.sidecar().authz_addr,
        AuthzAddress::Unix(socket.clone())
    );
    let token = stack.harness.user_token();
    let reply = stack
        .call(&[&format!("Bearer {token}")])
        .await
        .expect("a call through Envoy");
    assert!(reply.verified, "{}", reply.error);
    assert_ne!(reply.authorization, vec![format!("Bearer {token}")]);
    let claims: serde_json::Value = serde_json::from_str(&reply.claims_json).unwrap();
    assert_eq!(claims["sub"], "user@example.com");
}

#[tokio::test]
async fn the_socket_has_its_mode_serves_health_and_is_removed_at_shutdown() {
    let dir = TempDir::new("uds");
    let socket = dir.path().join("authz.sock");
    let h = Harness::start_with(socket_options(&socket, ", authz_socket: { mode: '0600' }")).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let minted_token = minted(&h.check_bearer(&h.user_token()).await);
    assert_eq!(segment(&minted_token, 1)["sub"], "user@example.com");

    let channel = evs_testkit::authz_channel(&h.sidecar().authz_addr)
        .await
        .expect("connect to the socket");
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .expect("grpc.health.v1 on the socket")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    let mut h = h;
    h.stop().await;
    assert!(!socket.exists(), "the socket file outlived the sidecar");
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_and_bad_paths_are_start_up_errors() {
    let dir = TempDir::new("uds-stale");
    let socket = dir.path().join("authz.sock");
    // A socket file nobody serves, as a killed sidecar leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let h = Harness::start_with(socket_options(&socket, "")).await;
    minted(&h.check_bearer(&h.user_token()).await);

    // While it serves, a second sidecar on the same path is refused, not allowed to steal it.
    let refused = start_error(&format!("unix:{}", socket.display()), &dir).await;
    assert!(
        refused.contains("listen.authz") && refused.contains("another process serves"),
        "{refused}"
    );
    // A file that is not a socket, and a folder that cannot hold one.
    let regular = dir.write("not-a-socket", "data");
    let refused = start_error(&format!("unix:{}", regular.display()), &dir).await;
    assert!(
        refused.contains("listen.authz") && refused.contains("not a socket"),
        "{refused}"
    );
    let refused = start_error("unix:/proc/evs-tv-authz.sock", &dir).await;
    assert!(
        refused.starts_with("listen.authz: cannot bind unix:/proc/evs-tv-authz.sock"),
        "{refused}"
    );
    let refused =
        evs_token_vending::Config::from_yaml(&config_yaml("unix:relative.sock"), dir.path())
            .unwrap_err()
            .to_string();
    assert!(refused.contains("absolute path"), "{refused}");
}

fn config_yaml(authz: &str) -> String {
    format!(
        "listen: {{ authz: '{authz}', http: 127.0.0.1:0 }}
token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: https://idp.example.com, jwks_uri: 'http://127.0.0.1:9/jwks' }} ]
grants: {{ file: grants.yaml }}
"
    )
}

async fn start_error(authz: &str, dir: &TempDir) -> String {
    dir.write("grants.yaml", evs_token_vending::demo::SAMPLE_GRANTS);
    let config = evs_token_vending::Config::from_yaml(&config_yaml(authz), dir.path()).unwrap();
    match evs_token_vending::start(config).await {
        Ok(_) => panic!("{authz} was accepted"),
        Err(e) => e.to_string(),
    }
}
