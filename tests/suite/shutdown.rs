//! SIGTERM always ends the process: connections that sent nothing, half an HTTP/2 preface,
//! or half an HTTP request are cut once `shutdown.grace` is over, instead of holding the
//! process until Kubernetes' SIGKILL.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::process::ServeProcess;
use evs_token_vending::demo::DemoIdp;

#[tokio::test]
async fn sigterm_ends_the_process_within_the_grace_despite_idle_and_half_sent_connections() {
    let idp = DemoIdp::start().await.unwrap();
    let mut serve = ServeProcess::trusting(
        "shutdown",
        idp.issuer(),
        "shutdown: { drain: 1s, grace: 2s }",
        |_, _| {},
    );
    serve.wait_listening().await;
    let (authz, http) = (serve.authz, serve.http);
    // Checks are served before the signal.
    let ready = reqwest::get(format!("http://127.0.0.1:{http}/healthz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let _silent = TcpStream::connect(("127.0.0.1", authz)).unwrap();
    let mut half_preface = TcpStream::connect(("127.0.0.1", authz)).unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let mut half_request = TcpStream::connect(("127.0.0.1", http)).unwrap();
    half_request
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    serve.terminate();
    let status = serve.exit_status(signalled, Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    let idp = DemoIdp::start().await.unwrap();
    let mut serve = ServeProcess::trusting(
        "second-signal",
        idp.issuer(),
        "shutdown: { drain: 60s, grace: 60s }",
        |_, _| {},
    );
    serve.wait_listening().await;
    serve.terminate();
    // The first signal starts a 60 s drain: the process is still there, now unready.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "exited without draining"
    );
    let readyz = reqwest::get(format!("http://127.0.0.1:{}/readyz", serve.http))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    let second = Instant::now();
    serve.terminate();
    serve.exit_status(second, Duration::from_secs(5)).await;
}

/// A SIGTERM while the sidecar is still starting (here: waiting up to 5 s for an issuer whose
/// JWKS never answers) is not fatal: once started, it drains and exits 0 like any other.
#[tokio::test]
async fn a_sigterm_during_start_up_drains_once_started_instead_of_killing_it() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let mut serve = ServeProcess::trusting(
        "signal-at-start",
        &issuer,
        "shutdown: { drain: 0s, grace: 1s }",
        |_, _| {},
    );
    // The side port listens before the issuer prefetch ends; signal then.
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", serve.http)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", serve.http))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "still starting when signalled");
    let signalled = Instant::now();
    serve.terminate();
    let status = serve.exit_status(signalled, Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
}

/// The decision log's last lines survive a SIGTERM: its writer is stopped, not dropped, so what
/// was queued when the listeners closed is written and flushed before the process exits. The log
/// is a FIFO the test reads only after the signal, so the writer is still blocked on a full pipe
/// with thousands of lines queued when the process is told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_every_queued_decision_line() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const CHECKS: usize = 2_000;

    let idp = DemoIdp::start().await.unwrap();
    let fifo_dir = crate::support::TempDir::new("decision-fifo");
    let fifo = fifo_dir.path().join("decisions.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    // Opened without blocking, so the sidecar's open for writing finds a reader; not read yet.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(0o4000) // O_NONBLOCK
        .open(&fifo)
        .unwrap();
    let mut serve = ServeProcess::trusting(
        "decision-flush",
        idp.issuer(),
        &format!(
            "shutdown: {{ drain: 0s, grace: 10s }}\n\
             telemetry: {{ decision_log: {{ enabled: true, path: '{}', sample_ok: 1.0 }} }}",
            fifo.display()
        ),
        |_, _| {},
    );
    serve.wait_listening().await;
    let address = evs_token_vending::AuthzAddress::Tcp(([127, 0, 0, 1], serve.authz).into());
    let mut client =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            evs_testkit::authz_channel(&address).await.unwrap(),
        );
    for _ in 0..CHECKS {
        // No credential: a denial, which is always logged.
        client
            .check(evs_testkit::check_request(&[]))
            .await
            .expect("answered");
    }
    let signalled = Instant::now();
    serve.terminate();
    let mut written = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break, // every writer closed: the process has gone
            Ok(n) => written.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(signalled.elapsed() < Duration::from_secs(30), "no EOF");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("reading the FIFO: {e}"),
        }
    }
    let status = serve.exit_status(signalled, Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
    let lines = written
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(lines, CHECKS, "decision lines lost at shutdown");
}
