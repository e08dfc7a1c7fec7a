//! SIGTERM under load through a real Envoy: `/readyz` turns 503 at once, every request during
//! the drain still succeeds, and the process exits 0 within `drain + grace`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::envoy::Envoy;
use crate::support::process::ServeProcess;
use evs_testkit::EchoBackend;
use evs_testkit::echo_proto::WhoAmIRequest;
use evs_testkit::echo_proto::echo_client::EchoClient;
use evs_token_vending::demo::DemoIdp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_under_load_through_envoy_without_a_failed_request() {
    let idp = DemoIdp::start().await.unwrap();
    let mut serve = ServeProcess::trusting(
        "drain",
        idp.issuer(),
        "shutdown: { drain: 2s, grace: 3s }",
        |_, _| {},
    );
    let (authz, http) = (serve.authz, serve.http);
    let readyz = format!("http://127.0.0.1:{http}/readyz");
    let started = Instant::now();
    while !reqwest::get(&readyz).await.is_ok_and(|r| r.status() == 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let backend = EchoBackend::new(format!("http://127.0.0.1:{http}/.well-known/jwks.json"))
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(authz, backend.port()))
        .await
        .unwrap();

    let bearer = format!(
        "Bearer {}",
        idp.token_for(
            "user@example.com",
            Some("user@example.com"),
            Duration::from_secs(600)
        )
    );
    let client = EchoClient::connect(format!("http://127.0.0.1:{}", envoy.listener_port))
        .await
        .unwrap();
    let (ok, failed, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::<String>::new())),
        Arc::new(AtomicBool::new(false)),
    );
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (mut client, bearer) = (client.clone(), bearer.clone());
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut request = tonic::Request::new(WhoAmIRequest {});
                    request
                        .metadata_mut()
                        .insert("authorization", bearer.parse().unwrap());
                    match client.who_am_i(request).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            failed.lock().unwrap().push(status.to_string());
                            0
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_signal = ok.load(Ordering::Relaxed);
    assert!(before_signal > 0, "no request passed before the signal");

    let signalled = Instant::now();
    serve.terminate();
    let not_ready_after = loop {
        let status = reqwest::get(&readyz).await.map(|r| r.status().as_u16());
        if status.is_ok_and(|s| s == 503) {
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "/readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!("readyz 503 after {not_ready_after:?}");
    // Measured at about 10 ms (the poll's own HTTP round trip included) while Envoy is loaded.
    assert!(
        not_ready_after < Duration::from_millis(100),
        "/readyz turned 503 only {not_ready_after:?} after SIGTERM"
    );

    // Requests keep flowing through the drain (2 s); the load stops before the listeners close,
    // as Envoy's own drain would stop sending.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(signalled.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let during_drain = ok.load(Ordering::Relaxed) - before_signal;
    assert!(
        during_drain > 10,
        "{during_drain} requests passed during the drain"
    );
    assert_eq!(
        failed.lock().unwrap().clone(),
        Vec::<String>::new(),
        "failed requests"
    );

    let status = serve
        .exit_status(signalled, Duration::from_secs(2 + 3 + 2))
        .await;
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited before the drain was over"
    );
}
