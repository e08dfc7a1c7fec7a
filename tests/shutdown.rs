//! SIGTERM always ends the process: connections that sent nothing, half an HTTP/2 preface,
//! or half an HTTP request are cut once `shutdown.grace` is over, instead of holding the
//! process until Kubernetes' SIGKILL.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evs_token_vending::demo::DemoIdp;
use support::{TempDir, free_port};

#[tokio::test]
async fn sigterm_ends_the_process_within_the_grace_despite_idle_and_half_sent_connections() {
    let idp = DemoIdp::start().await.unwrap();
    let dir = TempDir::new("shutdown");
    dir.write("grants.yaml", evs_token_vending::demo::SAMPLE_GRANTS);
    let (authz, http) = (free_port(), free_port());
    let config = dir.write(
        "config.yaml",
        &format!(
            "listen: {{ authz: '127.0.0.1:{authz}', http: '127.0.0.1:{http}' }}
token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{}' }} ]
grants: {{ file: grants.yaml }}
shutdown: {{ drain: 1s, grace: 2s }}
",
            idp.issuer()
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_evs-token-vending"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > deadline {
            let _ = child.kill();
            panic!("still running {deadline:?} after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
}
