//! Row 8 of `loadgen` (`-- --floor` runs it alone): what the real `serve` process costs per
//! cached Check against the floor of any token-swapping server, and what each feature adds.
//!
//! The floor is the no-op ext_authz server answering with the sidecar's own recorded answer:
//! it decodes, builds and sends exactly the bytes the sidecar does, so the ratio to it is the
//! sidecar's own work. Every server is its own process, run as users run it (no `RUST_LOG`:
//! the default `info`), and measured the same way: closed loop, one repeated credential,
//! `--connections` × `--concurrency`, `--seconds` per row; the servers take turns, three
//! rounds, and each keeps its quietest row (the least CPU per Check), so a noisy neighbour
//! on a shared machine inflates no single server's figure.
//!
//! The uncached rows have a floor of their own: the same-answer no-op that also verifies one
//! RS256 token and makes one RSA-2048 signature per Check (`NoopMode::Crypto`). The share of
//! its CPU that is the signature is the most any server can reach on the machine at hand,
//! with the load generator on the same cores.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use evs_token_vending::demo::DemoIdp;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use super::common::NoopMode;
use super::{Knobs, Server, closed_loop, fixed_rate, free_port, record_sidecar_answer, requests};

/// One server variant: its name, the config added to the defaults, its environment.
#[derive(Default)]
struct Variant {
    name: &'static str,
    config: String,
    /// Spliced into the defaults' `listen: { … }`.
    listen: &'static str,
    /// Spliced into the defaults' `token: { … }`.
    token: &'static str,
    env: Vec<(&'static str, String)>,
}

/// An OTLP/gRPC collector that keeps nothing but a count: what the sidecar's exporter talks to.
#[derive(Default, Clone)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the sink on a free port; its URL and its span count.
async fn start_sink() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind sink");
    let addr: SocketAddr = listener.local_addr().expect("sink address");
    let sink = Sink::default();
    let count = sink.0.clone();
    tokio::spawn(async move {
        let incoming = futures_util::stream::unfold(listener, |listener| async move {
            Some((listener.accept().await.map(|(s, _)| s), listener))
        });
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink))
            .serve_with_incoming(incoming)
            .await
    });
    (format!("http://{addr}"), count)
}

/// The variants: the default, everything observable on, and each feature alone.
fn variants(sink: &str) -> Vec<Variant> {
    let traces = |ratio: &str| {
        vec![
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG", ratio.to_owned()),
        ]
    };
    let otlp = format!("telemetry: {{ otlp: {{ endpoint: '{sink}' }} }}\n");
    let decision_log =
        "telemetry: { decision_log: { enabled: true, sample_ok: 0.01, path: decisions.jsonl } }\n";
    let rules = "grants: { sources: [file, rules], file: grants.yaml, rules: [ \
                 { attribute: subject, match: 'team-*@example.com', grant: { databases: { '{1}': [reader] } } }, \
                 { attribute: email, match: '*@example.com', grant: { databases: { shared: [reader] } } }, \
                 { claim: groups, match: 'evs-*-writer', grant: { databases: { '{1}': [writer] } } } ] }\n";
    vec![
        Variant {
            name: "serve, default config",
            config: String::new(),
            ..Variant::default()
        },
        Variant {
            name: "serve, all observable on (metrics, decision log 1 %, traces 1 %)",
            config: format!(
                "telemetry: {{ otlp: {{ endpoint: '{sink}' }}, decision_log: {{ enabled: true, sample_ok: 0.01, path: decisions.jsonl }} }}\n"
            ),
            env: traces("0.01"),
            ..Variant::default()
        },
        Variant {
            name: "− stage metrics (`telemetry.stage_metrics: false`)",
            config: "telemetry: { stage_metrics: false }\n".to_owned(),
            ..Variant::default()
        },
        Variant {
            name: "+ spans for the log (a debug directive)",
            config: String::new(),
            env: vec![("RUST_LOG", "info,evs_token_vending::none=debug".to_owned())],
            ..Variant::default()
        },
        Variant {
            name: "+ decision log at 1 %",
            config: decision_log.to_owned(),
            ..Variant::default()
        },
        Variant {
            name: "+ traces at 1 %",
            config: otlp.clone(),
            env: traces("0.01"),
            ..Variant::default()
        },
        Variant {
            name: "+ traces at 100 %",
            config: otlp,
            env: traces("1.0"),
            ..Variant::default()
        },
        Variant {
            name: "+ 3 grant rules",
            config: rules.to_owned(),
            ..Variant::default()
        },
        Variant {
            name: "+ payload rendered again on each hit (`token.cache.store: signature`)",
            token: ", cache: { store: signature }",
            ..Variant::default()
        },
        Variant {
            name: "+ HTTP/2 keep-alive pings (`listen.authz_http2_keepalive: 30s`)",
            listen: ", authz_http2_keepalive: 30s",
            ..Variant::default()
        },
    ]
}

/// `serve` with the defaults plus `variant`'s config and environment.
fn spawn(idp: &DemoIdp, variant: &Variant) -> Server {
    let port = free_port();
    let addr = evs_token_vending::AuthzAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    let dir = std::env::temp_dir().join(format!("evs-tv-floor-{}-{port}", std::process::id()));
    let mut yaml = super::common::config_yaml(idp, &dir, &addr.to_string(), "");
    if variant.config.starts_with("grants:") {
        yaml = yaml.replace("grants: { file: grants.yaml }\n", "");
    }
    yaml.push_str(&variant.config);
    let yaml = yaml
        .replace(
            "http: 127.0.0.1:0 }",
            &format!("http: 127.0.0.1:0{} }}", variant.listen),
        )
        .replace("lifetime: 1h ", &format!("lifetime: 1h{} ", variant.token));
    std::fs::write(dir.join("config.yaml"), yaml).expect("config");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_evs-token-vending"));
    command
        .args(["serve", "--config"])
        .arg(dir.join("config.yaml"))
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stderr(std::process::Stdio::null());
    for (key, value) in &variant.env {
        command.env(key, value);
    }
    let child = command.spawn().expect("serve");
    Server::ready(child, addr, Some(dir))
}

/// What a server is sent in each of its rows.
#[derive(Clone, Copy)]
enum Load<'a> {
    /// The same requests over and over (warmed first: the credential cached, connections open).
    Repeated(&'a [CheckRequest]),
    /// Each request at most once: round `r` sends the `r`-th run of `per_round` of them.
    Fresh {
        requests: &'a [CheckRequest],
        per_round: usize,
    },
}

/// The quietest of `rounds` rows per server, taken in turns: CPU per Check (µs) and Checks/s.
/// `before_each_round` runs before each round's rows (a reference timing taken between them).
async fn cpu_per_check(
    servers: &[(&Server, Load<'_>)],
    knobs: &Knobs,
    rounds: usize,
    mut before_each_round: impl FnMut(),
) -> Vec<(f64, f64)> {
    let mut clients = Vec::new();
    for (server, load) in servers {
        let c = server.clients(knobs.connections).await;
        if let Load::Repeated(request) = load {
            closed_loop(
                &c,
                knobs.concurrency,
                request,
                Duration::from_secs(1),
                false,
            )
            .await;
        }
        clients.push(c);
    }
    let mut best = vec![(f64::MAX, 0.0); servers.len()];
    for round in 0..rounds {
        before_each_round();
        for (i, (server, load)) in servers.iter().enumerate() {
            let (requests, once) = match *load {
                Load::Repeated(request) => (request, false),
                Load::Fresh {
                    requests,
                    per_round,
                } => (&requests[round * per_round..(round + 1) * per_round], true),
            };
            let before = server.cpu_seconds();
            let stats = closed_loop(
                &clients[i],
                knobs.concurrency,
                requests,
                Duration::from_secs(knobs.seconds),
                once,
            )
            .await;
            let cpu = server.cpu_seconds() - before;
            let per_check = cpu / stats.latencies.len().max(1) as f64 * 1e6;
            if per_check < best[i].0 {
                best[i] = (per_check, stats.throughput());
            }
        }
    }
    best
}

/// The lowest p99 of `rounds` open-loop rows at `rate` per server, taken in turns.
async fn p99_at(
    servers: &[&Server],
    request: &[CheckRequest],
    rate: u64,
    seconds: u64,
    rounds: usize,
) -> Vec<Duration> {
    let mut clients = Vec::new();
    for server in servers {
        clients.push(server.clients(2).await);
    }
    let mut best = vec![Duration::MAX; servers.len()];
    for _ in 0..rounds {
        for (i, c) in clients.iter().enumerate() {
            let stats = fixed_rate(c, request, rate, Duration::from_secs(seconds)).await;
            best[i] = best[i].min(stats.quantile(0.99));
        }
    }
    best
}

/// Row 8.
pub(super) async fn run(idp: &DemoIdp, knobs: &Knobs, sign_rate: f64) {
    let request = requests(idp, 1);
    let recorded = record_sidecar_answer(idp, &request[0]).await;
    let (sink, exported) = start_sink().await;
    let plain = Server::spawn_noop(false, None);
    let same_answer = Server::spawn_noop(false, Some(&recorded));
    let gated = Server::spawn_noop_in(false, Some(&recorded), NoopMode::Gated);
    // `-- --variants N`: only the first N sidecar variants (1: the default config alone).
    let args: Vec<String> = std::env::args().collect();
    let limit = args
        .iter()
        .position(|a| a == "--variants")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    let mut variants = variants(&sink);
    variants.truncate(limit.max(2));
    let sidecars: Vec<Server> = variants.iter().map(|v| spawn(idp, v)).collect();

    println!(
        "8. a cached Check against the floor (one repeated credential; quietest of 3 rows of {} s each, servers in turns):\n",
        knobs.seconds
    );
    let mut servers: Vec<&Server> = vec![&plain, &same_answer, &gated];
    servers.extend(sidecars.iter());
    let loaded: Vec<_> = servers
        .iter()
        .map(|server| (*server, Load::Repeated(&request)))
        .collect();
    let cpu = cpu_per_check(&loaded, knobs, 3, || {}).await;
    let floor = cpu[1].0;
    println!("| server | Checks/s | CPU per Check | × same-answer no-op | × plain no-op |");
    println!("|---|---:|---:|---:|---:|");
    let names = [
        "no-op",
        "no-op answering the sidecar's recorded answer",
        "the same + the sidecar's HTTP/2 preface gate",
    ]
    .into_iter()
    .chain(variants.iter().map(|v| v.name));
    for (name, (per_check, throughput)) in names.zip(&cpu) {
        println!(
            "| {name} | {throughput:.0} | {per_check:.1} µs | {:.2}× | {:.2}× |",
            per_check / floor,
            per_check / cpu[0].0
        );
    }
    println!(
        "\n   spans received by the OTLP sink: {}\n",
        exported.load(Ordering::Relaxed)
    );

    let main: Vec<&Server> = vec![&plain, &same_answer, &sidecars[0], &sidecars[1]];
    let p99 = p99_at(&main, &request, 5_000, knobs.seconds, 3).await;
    println!(
        "   p99 at 5,000 Checks/s (lowest of 3 rows of {} s):\n",
        knobs.seconds
    );
    println!("| server | p99 | × same-answer no-op |");
    println!("|---|---:|---:|");
    for (name, p) in [
        "no-op",
        "no-op, same answer",
        "serve, default config",
        "serve, all observable on",
    ]
    .into_iter()
    .zip(&p99)
    {
        println!(
            "| {name} | {} µs | {:.2}× |",
            p.as_micros(),
            p.as_secs_f64() / p99[1].as_secs_f64()
        );
    }

    // Uncached: the share of a Check's CPU that is the one RSA signature, for the sidecar and
    // for its floor (the same-answer no-op that also verifies one RS256 token and signs one
    // RSA-2048 payload of the same size per Check), in turns, quietest of 3 rows each.
    let crypto_floor = Server::spawn_noop_in(false, Some(&recorded), NoopMode::Crypto);
    let per_round = (sign_rate * 2.0 * knobs.seconds as f64 * 1.2) as usize + 1000;
    let fresh = requests(idp, per_round * 3);
    // The signature alone, timed again before each round (the host's speed drifts over a run):
    // the fastest, as each server keeps its quietest row.
    let mut signature = 1e6 / sign_rate;
    let uncached = cpu_per_check(
        &[
            (&crypto_floor, Load::Repeated(&request)),
            (
                &sidecars[0],
                Load::Fresh {
                    requests: &fresh,
                    per_round,
                },
            ),
        ],
        knobs,
        3,
        || signature = signature.min(1e6 / super::rsa_sign_rate(Duration::from_secs(1))),
    )
    .await;
    println!(
        "\n   uncached (a fresh credential each; the RSA-2048 signature alone, fastest of 4 timings between the rows: {signature:.0} µs):\n"
    );
    println!("| server | CPU per Check | the signature's share | × floor |");
    println!("|---|---:|---:|---:|");
    let names = [
        "floor: same-answer no-op + one RS256 verification + one RSA-2048 signature",
        "serve, default config",
    ];
    for (name, (per_check, _)) in names.into_iter().zip(&uncached) {
        println!(
            "| {name} | {per_check:.0} µs | {:.0} % | {:.2}× |",
            signature / per_check * 100.0,
            per_check / uncached[0].0
        );
    }
    println!();
}
