//! What an ext_authz connection costs and carries besides Checks: HTTP/2 PING keep-alive only
//! when `listen.authz_http2_keepalive` asks for it (hyper's pings take a lock and read the
//! clock on every frame received, docs/benchmarks.md), and the per-stage histograms only while
//! `telemetry.stage_metrics` is on.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Harness, Options};

/// HTTP/2 frame types (RFC 9113 §6).
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// Opens a raw HTTP/2 connection to the sidecar's ext_authz port, sends nothing after the
/// handshake, and returns the types of the frames the server sent within `listening` (a PING
/// the server sends is answered, as a live client would).
async fn frames_on_an_idle_connection(h: &Harness, listening: Duration) -> Vec<(u8, u8)> {
    let evs_token_vending::AuthzAddress::Tcp(addr) = &h.sidecar.as_ref().unwrap().authz_addr else {
        panic!("a TCP listener");
    };
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    socket.write_all(&frame(SETTINGS, 0, &[])).await.unwrap();
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + listening;
    loop {
        let mut header = [0u8; 9];
        match tokio::time::timeout_at(until, socket.read_exact(&mut header)).await {
            Err(_) => return seen,
            Ok(Err(e)) => panic!("the server closed the idle connection: {e} (frames {seen:?})"),
            Ok(Ok(_)) => {}
        }
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let mut payload = vec![0u8; length];
        socket.read_exact(&mut payload).await.unwrap();
        seen.push((kind, flags));
        match kind {
            SETTINGS if flags & ACK == 0 => socket.write_all(&frame(SETTINGS, ACK, &[])).await,
            PING if flags & ACK == 0 => socket.write_all(&frame(PING, ACK, &payload)).await,
            _ => Ok(()),
        }
        .unwrap();
    }
}

/// A frame on stream 0.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

fn pings(frames: &[(u8, u8)]) -> usize {
    frames
        .iter()
        .filter(|(kind, flags)| *kind == PING && flags & ACK == 0)
        .count()
}

#[tokio::test]
async fn an_idle_connection_is_pinged_only_when_authz_http2_keepalive_is_set() {
    let quiet = Harness::start().await;
    let frames = frames_on_an_idle_connection(&quiet, Duration::from_millis(2500)).await;
    assert!(
        frames.iter().any(|(kind, _)| *kind == SETTINGS),
        "no HTTP/2 handshake: {frames:?}"
    );
    assert_eq!(pings(&frames), 0, "pinged without being asked: {frames:?}");

    let pinging = Harness::start_with(Options {
        listen: "{ authz: 127.0.0.1:0, http: 127.0.0.1:0, authz_http2_keepalive: 1s }".to_owned(),
        ..Options::default()
    })
    .await;
    let frames = frames_on_an_idle_connection(&pinging, Duration::from_millis(2500)).await;
    assert!(
        pings(&frames) >= 1,
        "no PING within 2.5 s of a 1 s keep-alive: {frames:?}"
    );
}

#[tokio::test]
async fn stage_histograms_are_exported_unless_stage_metrics_is_off() {
    for (extra_config, stages_expected) in
        [("", true), ("telemetry: { stage_metrics: false }", false)]
    {
        let h = Harness::start_with(Options {
            extra_config: extra_config.to_owned(),
            ..Options::default()
        })
        .await;
        crate::support::minted(&h.check_bearer(&h.user_token()).await);
        let metrics = h.metrics().await;
        assert!(
            metrics.contains("evs_tv_check_duration_seconds_count{outcome=\"ok\"} 1"),
            "{metrics}"
        );
        assert_eq!(
            metrics.contains("evs_tv_stage_duration_seconds_bucket{"),
            stages_expected,
            "with `{extra_config}`:\n{metrics}"
        );
    }
}
