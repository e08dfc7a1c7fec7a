//! OpenTelemetry traces through a real Envoy: Envoy (its OpenTelemetry tracer on) and the
//! sidecar (`serve` with `OTEL_EXPORTER_OTLP_ENDPOINT`) export to one real OTLP/gRPC receiver
//! (`tests/support/otlp_receiver.py`, on the OpenTelemetry project's `opentelemetry-proto` and
//! `grpcio` from PyPI). One call makes one trace: the sidecar's Check span is a child of
//! Envoy's span for the ext_authz call, with a child per stage and the decision's attributes;
//! a denied Check's span carries an error status and the reason.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::envoy::{Envoy, TlsFiles};
use crate::support::process::ServeProcess;
use crate::support::python::python_with;
use crate::support::{TempDir, eventually};
use evs_testkit::EchoBackend;
use evs_testkit::echo_proto::WhoAmIRequest;
use evs_testkit::echo_proto::echo_client::EchoClient;
use evs_token_vending::demo::DemoIdp;
use serde_json::Value;

/// The venv's Python with `opentelemetry-proto` and `grpcio` installed.
fn receiver_python() -> PathBuf {
    python_with("grpcio==1.85.3", "grpc");
    python_with(
        "opentelemetry-proto==1.45.2",
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
    )
}

/// The receiver process, killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    spans: PathBuf,
    _dir: TempDir,
}

impl Receiver {
    fn start() -> Self {
        let dir = TempDir::new("otlp");
        let spans = dir.path().join("spans.jsonl");
        let mut child = Command::new(receiver_python())
            .arg(crate::support::repo("tests/support/otlp_receiver.py"))
            .arg(&spans)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the OTLP receiver");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .expect("the receiver's port");
        let port = first.trim().parse().expect("a port number");
        Self {
            child,
            port,
            spans,
            _dir: dir,
        }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a span line"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `envoy.yaml` with its OpenTelemetry tracer on, exporting to the receiver at `port`.
fn tracing_edits(port: u16) -> Vec<(&'static str, String)> {
    let codec =
        "                codec_type: AUTO            # accepts h2c prior-knowledge gRPC clients\n";
    let tracing = format!(
        "{codec}                tracing:
                  random_sampling: {{ value: 100 }}
                  provider:
                    name: envoy.tracers.opentelemetry
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                      grpc_service: {{ envoy_grpc: {{ cluster_name: otlp }}, timeout: 1s }}
                      service_name: envoy
"
    );
    let cluster = format!(
        "  clusters:
    - name: otlp
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: otlp
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"
    );
    vec![(codec, tracing), ("  clusters:\n", cluster)]
}

#[tokio::test]
async fn a_check_through_envoy_is_one_trace_with_the_sidecars_span_under_envoys() {
    let receiver = Receiver::start();
    let idp = DemoIdp::start().await.expect("IdP");
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let sidecar = ServeProcess::trusting(
        "traces",
        idp.issuer(),
        "telemetry: { trace_subjects: true }",
        |command, _| {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
                .env("OTEL_SERVICE_NAME", "evs-token-vending-test")
                .env("OTEL_BSP_SCHEDULE_DELAY", "100");
        },
    );
    sidecar.wait_listening().await;
    let backend = EchoBackend::new(format!(
        "http://127.0.0.1:{}/.well-known/jwks.json",
        sidecar.http
    ))
    .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
    .await
    .expect("backend");
    let (authz, receiver_port) = (sidecar.authz, receiver.port);
    let envoy = tokio::task::spawn_blocking(move || {
        let edits = tracing_edits(receiver_port);
        let edits: Vec<(&str, &str)> = edits.iter().map(|(a, b)| (*a, b.as_str())).collect();
        Envoy::start_template(
            "envoy.yaml",
            &edits,
            authz,
            backend.port(),
            &TlsFiles::throwaway(),
        )
    })
    .await
    .expect("envoy");

    let token = idp.token_for(
        "user@example.com",
        Some("user@example.com"),
        Duration::from_secs(600),
    );
    let mut client = EchoClient::connect(format!("http://127.0.0.1:{}", envoy.listener_port))
        .await
        .expect("connect to Envoy");
    let call = |authorization: String| {
        let mut request = tonic::Request::new(WhoAmIRequest {});
        request
            .metadata_mut()
            .insert("authorization", authorization.parse().unwrap());
        request
    };
    client
        .who_am_i(call(format!("Bearer {token}")))
        .await
        .expect("the swapped call reaches the backend");
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{signed}.{flipped}{}", &signature[1..]);
    let denied = client
        .who_am_i(call(format!("Bearer {tampered}")))
        .await
        .expect_err("a tampered token is refused");
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);

    // An exchange outside the mesh joins the trace its caller names in `traceparent`.
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        )
        .append_pair("subject_token", &token)
        .append_pair(
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:id_token",
        )
        .finish();
    let exchanged = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/exchange", sidecar.http))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(body)
        .send()
        .await
        .expect("POST /exchange");
    assert_eq!(exchanged.status(), 200);

    let checks = |spans: &[Value]| -> Vec<Value> {
        spans
            .iter()
            .filter(|s| s["name"] == "ext_authz.Check")
            .cloned()
            .collect()
    };
    eventually(
        "two Check spans and Envoy's spans",
        Duration::from_secs(20),
        async || {
            let spans = receiver.spans();
            checks(&spans).len() >= 2
                && spans.iter().filter(|s| s["service"] == "envoy").count() >= 4
                && spans.iter().any(|s| s["name"] == "POST /exchange")
        },
    )
    .await;
    let spans = receiver.spans();
    let by_id = |id: &Value| spans.iter().find(|s| s["span_id"] == *id);
    let check_spans = checks(&spans);
    let ok = check_spans
        .iter()
        .find(|s| s["attributes"]["outcome"] == "ok")
        .unwrap_or_else(|| panic!("no OK Check span: {spans:#?}"));
    assert_eq!(ok["service"], "evs-token-vending-test");
    // Its parent is Envoy's span for the ext_authz call, in the same trace.
    let parent = by_id(&ok["parent_span_id"])
        .unwrap_or_else(|| panic!("the Check span's parent was not exported: {spans:#?}"));
    assert_eq!(parent["service"], "envoy", "{parent}");
    assert_eq!(parent["trace_id"], ok["trace_id"]);
    let attributes = &ok["attributes"];
    assert_eq!(attributes["http.status_code"], 200);
    assert_eq!(attributes["credential"], "bearer");
    assert_eq!(attributes["issuer"], idp.issuer());
    assert_eq!(attributes["subject"], "user@example.com");
    assert_eq!(attributes["cache_hit"], false);
    assert!(attributes["kid"].is_string(), "{attributes}");
    // The log's trace id is the trace's.
    assert_eq!(attributes["trace_id"], ok["trace_id"]);
    // A child per stage.
    let children: Vec<&Value> = spans
        .iter()
        .filter(|s| s["parent_span_id"] == ok["span_id"])
        .map(|s| &s["name"])
        .collect();
    for stage in ["extract", "authenticate", "grants", "mint"] {
        assert!(
            children.contains(&&Value::from(stage)),
            "no {stage} span: {children:?}"
        );
    }

    let refused = check_spans
        .iter()
        .find(|s| s["attributes"]["outcome"] == "unauthenticated")
        .unwrap_or_else(|| panic!("no denied Check span: {spans:#?}"));
    assert_eq!(refused["status_code"], 2, "error status: {refused}");
    assert!(
        refused["status_message"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{refused}"
    );
    assert_eq!(refused["attributes"]["http.status_code"], 401);
    let exchange = spans
        .iter()
        .find(|s| s["name"] == "POST /exchange")
        .unwrap();
    assert_eq!(exchange["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(exchange["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(exchange["attributes"]["credential"], "token_exchange");
    assert_eq!(exchange["attributes"]["outcome"], "ok");

    // No span holds a piece of either token.
    let all = serde_json::to_string(&spans).unwrap();
    for secret in [&token, &tampered] {
        for piece in secret.as_bytes().chunks(24) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!all.contains(piece), "a span holds a piece of a token");
        }
    }
}
