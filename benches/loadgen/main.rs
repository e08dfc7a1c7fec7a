//! Load generator: `cargo bench --bench loadgen [-- --seconds 5 --connections 2 --concurrency 32]`
//! (`-- --transports-only` runs only the TCP/Unix-socket comparison, `-- --floor` only row 8:
//! the cached Check against the floor, per feature).
//!
//! Drives ext_authz Check over loopback gRPC against the real `evs-token-vending serve`
//! process and, for comparison, a no-op ext_authz server, and prints in one run on one machine:
//! the RSA-2048 sign rate per core (the limit of the uncached path), the no-op server's
//! throughput (the transport limit), our throughput uncached and cached, and a latency table at
//! fixed rates with the sidecar's CPU and RSS. Client and servers share the machine's cores, as
//! the ratios between the rows assume.

#[path = "../common/mod.rs"]
mod common;
mod floor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Stats;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use evs_testkit::{check_request, minted_token};
use evs_token_vending::demo::DemoIdp;
use evs_token_vending::{AuthzAddress, SigningKey};
use tonic::transport::Channel;

/// Command-line knobs.
struct Knobs {
    seconds: u64,
    connections: usize,
    concurrency: usize,
}

fn knobs() -> Knobs {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Knobs {
        seconds: value("--seconds", 5),
        connections: value("--connections", 2) as usize,
        concurrency: value("--concurrency", 32) as usize,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__noop") {
        return common::noop_server(
            args.get(2).expect("address"),
            args.get(3).map(String::as_str),
            common::NoopMode::from_arg(args.get(4).map(String::as_str)),
        );
    }
    let knobs = knobs();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("# evs-token-vending load test\n");
    println!("machine: {}", common::machine());
    println!(
        "load: {} s per row, {} connections, {} requests in flight (closed loop); client and server on the same machine\n",
        knobs.seconds, knobs.connections, knobs.concurrency
    );

    let sign_rate = rsa_sign_rate(Duration::from_secs(2));
    println!(
        "1. RSA-2048 signatures: {sign_rate:.0}/s on one core; limit of the uncached path on {cores} cores: {:.0}/s\n",
        sign_rate * cores as f64
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(knobs, sign_rate, cores));
}

async fn run(knobs: Knobs, sign_rate: f64, cores: usize) {
    let duration = Duration::from_secs(knobs.seconds);
    let idp = DemoIdp::start().await.expect("IdP");
    if std::env::args().any(|a| a == "--transports-only") {
        return transports(&idp, &knobs, duration).await;
    }
    if std::env::args().any(|a| a == "--floor") {
        return floor::run(&idp, &knobs, sign_rate).await;
    }

    // 2. The transport limit.
    let noop = Server::spawn_noop(false, None);
    let noop_cpu_before = noop.cpu_seconds();
    let noop_stats = closed_loop(
        &noop.clients(knobs.connections).await,
        knobs.concurrency,
        &[check_request(&[])],
        duration,
        false,
    )
    .await;
    let noop_cpu = (noop.cpu_seconds() - noop_cpu_before) / noop_stats.elapsed.as_secs_f64();
    println!(
        "2. no-op ext_authz server: {}, server CPU {:.0}% ({:.1} µs per Check)\n",
        noop_stats.summary(),
        noop_cpu * 100.0,
        noop_cpu / noop_stats.throughput() * 1e6
    );

    // 3–5. The sidecar, as its own process.
    let sidecar = Server::spawn_sidecar(&idp, false);
    let clients = sidecar.clients(knobs.connections).await;

    let expected = (sign_rate * cores as f64 * knobs.seconds as f64 * 1.5) as usize + 1000;
    let fresh = requests(&idp, expected);
    let cpu = sidecar.cpu_seconds();
    let uncached = closed_loop(&clients, knobs.concurrency, &fresh, duration, true).await;
    let uncached_cpu = (sidecar.cpu_seconds() - cpu) / uncached.elapsed.as_secs_f64();
    println!(
        "3. uncached (a fresh credential every request): {}, sidecar CPU {:.0}%\n   = {:.0}% of the sign limit ({:.0}/s)\n",
        uncached.summary(),
        uncached_cpu * 100.0,
        uncached.throughput() / (sign_rate * cores as f64) * 100.0,
        sign_rate * cores as f64
    );

    println!("4. cached (repeated credentials):\n");
    println!(
        "| distinct credentials | Checks/s | % of no-op | p50 | p90 | p99 | p99.9 | sidecar CPU | CPU per Check |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for distinct in [1, 100, 10_000] {
        let repeated = requests(&idp, distinct);
        let (stats, cpu) = cached_closed_loop(&sidecar, &clients, &knobs, &repeated).await;
        println!(
            "| {distinct} | {:.0} | {:.0}% | {} | {:.0}% | {:.1} µs |",
            stats.throughput(),
            stats.throughput() / noop_stats.throughput() * 100.0,
            stats.percentiles(),
            cpu * 100.0,
            cpu / stats.throughput() * 1e6
        );
    }

    println!("\n5. fixed rates, cached (100 distinct credentials), open loop:\n");
    println!(
        "| rate (Checks/s) | achieved | p50 | p90 | p99 | p99.9 | sidecar CPU | sidecar RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let repeated = requests(&idp, 100);
    for rate in [100, 1_000, 5_000] {
        let cpu = sidecar.cpu_seconds();
        let stats = fixed_rate(&clients, &repeated, rate, duration).await;
        let cpu = (sidecar.cpu_seconds() - cpu) / stats.elapsed.as_secs_f64();
        println!(
            "| {rate} | {:.0} | {} | {:.0}% | {:.1} MiB |",
            stats.throughput(),
            stats.percentiles(),
            cpu * 100.0,
            sidecar.rss_mib()
        );
    }

    println!("\n6. Checks at 1,000/s (cached) while /exchange is flooded with fresh IdP tokens:\n");
    println!(
        "| run | Checks/s achieved | p50 | p90 | p99 | p99.9 | exchanges OK/s | exchanges refused busy/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let quiet = fixed_rate(&clients, &repeated, 1_000, duration).await;
    println!(
        "| quiet | {:.0} | {} | - | - |",
        quiet.throughput(),
        quiet.percentiles()
    );
    let flood_tokens = Arc::new(
        (0..expected)
            .map(|i| {
                idp.token_for(
                    &format!("flood-{i}@example.com"),
                    None,
                    Duration::from_secs(3600),
                )
            })
            .collect::<Vec<_>>(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts = Arc::new([
        std::sync::atomic::AtomicU64::new(0),
        std::sync::atomic::AtomicU64::new(0),
    ]);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let url = format!("http://{}/exchange", sidecar.http_addr);
    let flooders: Vec<_> = (0..knobs.concurrency * 2)
        .map(|_| {
            let (stop, counts, next, tokens) = (
                stop.clone(),
                counts.clone(),
                next.clone(),
                flood_tokens.clone(),
            );
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                use std::sync::atomic::Ordering::Relaxed;
                while !stop.load(Relaxed) {
                    let token = &tokens[next.fetch_add(1, Relaxed) % tokens.len()];
                    let body = format!(r#"{{"token":"{token}"}}"#);
                    let answer = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    match answer.map(|a| a.status().as_u16()) {
                        Ok(200) => counts[0].fetch_add(1, Relaxed),
                        Ok(503) => counts[1].fetch_add(1, Relaxed),
                        _ => 0,
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = [
        counts[0].load(std::sync::atomic::Ordering::Relaxed),
        counts[1].load(std::sync::atomic::Ordering::Relaxed),
    ];
    let flooded = fixed_rate(&clients, &repeated, 1_000, duration).await;
    let after = [
        counts[0].load(std::sync::atomic::Ordering::Relaxed),
        counts[1].load(std::sync::atomic::Ordering::Relaxed),
    ];
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.await;
    }
    let seconds = flooded.elapsed.as_secs_f64();
    println!(
        "| during the flood | {:.0} | {} | {:.0} | {:.0} |",
        flooded.throughput(),
        flooded.percentiles(),
        (after[0] - before[0]) as f64 / seconds,
        (after[1] - before[1]) as f64 / seconds,
    );
    println!();
    drop(sidecar);
    drop(noop);
    transports(&idp, &knobs, duration).await;
    floor::run(&idp, &knobs, sign_rate).await;
}

/// Row 7: the same servers over TCP and over a Unix socket — CPU per Check (closed loop,
/// cached, 100 credentials) and latency at fixed rates.
async fn transports(idp: &DemoIdp, knobs: &Knobs, duration: Duration) {
    println!("7. TCP against a Unix socket (cached, 100 distinct credentials):\n");
    println!(
        "| server | transport | Checks/s (closed loop) | server CPU per Check | p50 @1,000/s | p99 @1,000/s | p50 @5,000/s | p99 @5,000/s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let repeated = requests(idp, 100);
    let recorded = record_sidecar_answer(idp, &repeated[0]).await;
    for (name, server) in [
        ("no-op", Serving::Noop(None)),
        (
            "no-op, sidecar-sized answer",
            Serving::Noop(Some(&recorded)),
        ),
        ("sidecar", Serving::Sidecar),
    ] {
        for unix in [false, true] {
            let server = match server {
                Serving::Sidecar => Server::spawn_sidecar(idp, unix),
                Serving::Noop(recorded) => Server::spawn_noop(unix, recorded),
            };
            let clients = server.clients(knobs.connections).await;
            closed_loop(
                &clients,
                knobs.concurrency,
                &repeated,
                Duration::from_secs(60),
                true,
            )
            .await;
            let cpu = server.cpu_seconds();
            let stats = closed_loop(&clients, knobs.concurrency, &repeated, duration, false).await;
            let cpu = (server.cpu_seconds() - cpu) / stats.elapsed.as_secs_f64();
            let at_1k = fixed_rate(&clients, &repeated, 1_000, duration).await;
            let at_5k = fixed_rate(&clients, &repeated, 5_000, duration).await;
            println!(
                "| {name} | {} | {:.0} | {:.1} µs | {} | {} | {} | {} |",
                if unix { "Unix socket" } else { "TCP" },
                stats.throughput(),
                cpu / stats.throughput() * 1e6,
                at_1k.at(0.5),
                at_1k.at(0.99),
                at_5k.at(0.5),
                at_5k.at(0.99),
            );
        }
    }
    println!();
}

/// Which server a transport row measures.
#[derive(Clone, Copy)]
enum Serving<'a> {
    /// The no-op server, answering with a recorded answer when one is given.
    Noop(Option<&'a std::path::Path>),
    Sidecar,
}

/// One answer of the real sidecar to `request`, encoded into a file for the no-op server to
/// repeat: the no-op then builds and sends as many bytes as the sidecar does, so the difference
/// between the two rows is the sidecar's own work.
async fn record_sidecar_answer(idp: &DemoIdp, request: &CheckRequest) -> std::path::PathBuf {
    let sidecar = Server::spawn_sidecar(idp, false);
    let mut client = sidecar.clients(1).await.remove(0);
    let answer = client
        .check(request.clone())
        .await
        .expect("a recorded Check")
        .into_inner();
    assert!(
        minted_token(&answer).is_some(),
        "the recorded answer is an OK"
    );
    let path = std::env::temp_dir().join(format!("evs-tv-loadgen-{}.answer", std::process::id()));
    std::fs::write(&path, prost::Message::encode_to_vec(&answer)).expect("recorded answer");
    path
}

/// Every credential once (so the measured run is all cache hits), then a closed loop of
/// `knobs.seconds`; returns its stats and the server's CPU share meanwhile.
async fn cached_closed_loop(
    server: &Server,
    clients: &[AuthorizationClient<Channel>],
    knobs: &Knobs,
    repeated: &[CheckRequest],
) -> (Stats, f64) {
    closed_loop(
        clients,
        knobs.concurrency,
        repeated,
        Duration::from_secs(60),
        true,
    )
    .await;
    let cpu = server.cpu_seconds();
    let duration = Duration::from_secs(knobs.seconds);
    let stats = closed_loop(clients, knobs.concurrency, repeated, duration, false).await;
    let cpu = (server.cpu_seconds() - cpu) / stats.elapsed.as_secs_f64();
    (stats, cpu)
}

/// Single-core RSA-2048 PKCS#1 v1.5 signatures per second.
fn rsa_sign_rate(over: Duration) -> f64 {
    let key = SigningKey::generate_rsa(2048).expect("key");
    let payload = br#"{"sub":"user@example.com","evs:grants":{}}"#;
    let started = Instant::now();
    let mut signed = 0u64;
    while started.elapsed() < over {
        key.sign_jws(payload).expect("sign");
        signed += 1;
    }
    signed as f64 / started.elapsed().as_secs_f64()
}

/// Check requests carrying `n` distinct IdP tokens, signed on every core.
fn requests(idp: &DemoIdp, n: usize) -> Vec<CheckRequest> {
    common::tokens(idp, n)
        .into_iter()
        .map(|token| check_request(&[("authorization", &format!("Bearer {token}"))]))
        .collect()
}

/// `concurrency` callers, each sending its next request as soon as the last is answered.
/// With `once`, every request is used at most once (fresh credentials).
async fn closed_loop(
    clients: &[AuthorizationClient<Channel>],
    concurrency: usize,
    requests: &[CheckRequest],
    duration: Duration,
    once: bool,
) -> Stats {
    let requests = Arc::new(requests.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let (mut client, requests, next) = (
                clients[i % clients.len()].clone(),
                requests.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while Instant::now() < until {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if once && n >= requests.len() {
                        break;
                    }
                    let request = requests[n % requests.len()].clone();
                    let sent = Instant::now();
                    match client.check(request).await {
                        Ok(answer)
                            if answer
                                .get_ref()
                                .status
                                .as_ref()
                                .is_some_and(|s| s.code == 0) =>
                        {
                            latencies.push(sent.elapsed())
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for worker in workers {
        let (l, e) = worker.await.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    Stats::from(latencies, errors, started.elapsed())
}

/// Requests sent on a fixed schedule (open loop): every request is its own task, so a slow
/// answer never delays the next send. Latency counts from the send; counting from the schedule
/// would add tokio's 1 ms timer granularity to every sample.
async fn fixed_rate(
    clients: &[AuthorizationClient<Channel>],
    requests: &[CheckRequest],
    rate: u64,
    duration: Duration,
) -> Stats {
    common::fixed_rate_with(rate, duration, |i| {
        let mut client = clients[i as usize % clients.len()].clone();
        let request = requests[i as usize % requests.len()].clone();
        async move {
            client
                .check(request)
                .await
                .is_ok_and(|a| minted_token(a.get_ref()).is_some())
        }
    })
    .await
}

/// A free loopback port, or a socket path in the temporary folder.
fn fresh_address(unix: bool) -> AuthzAddress {
    if unix {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        AuthzAddress::Unix(std::env::temp_dir().join(format!(
            "evs-tv-loadgen-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    } else {
        AuthzAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], free_port())))
    }
}

/// A server process under test.
struct Server {
    child: std::process::Child,
    addr: AuthzAddress,
    /// The side port (the sidecar's; unused for the no-op server).
    http_addr: SocketAddr,
    _dir: Option<std::path::PathBuf>,
}

impl Server {
    /// This benchmark binary again, as a no-op ext_authz server.
    fn spawn_noop(unix: bool, recorded: Option<&std::path::Path>) -> Self {
        Self::spawn_noop_in(unix, recorded, common::NoopMode::Plain)
    }

    /// The no-op server in `mode` (a mode needs `recorded`).
    fn spawn_noop_in(
        unix: bool,
        recorded: Option<&std::path::Path>,
        mode: common::NoopMode,
    ) -> Self {
        let addr = fresh_address(unix);
        let child = std::process::Command::new(std::env::current_exe().expect("self"))
            .args(["__noop", &addr.to_string()])
            .args(recorded)
            .args(mode.arg())
            .spawn()
            .expect("no-op server");
        Self::ready(child, addr, None)
    }

    /// The real sidecar binary, trusting `idp`.
    fn spawn_sidecar(idp: &DemoIdp, unix: bool) -> Self {
        let addr = fresh_address(unix);
        let http_port = free_port();
        // One folder per sidecar: its side port is unique.
        let dir =
            std::env::temp_dir().join(format!("evs-tv-loadgen-{}-{http_port}", std::process::id()));
        let yaml = common::config_yaml(idp, &dir, &addr.to_string(), "")
            .replace("http: 127.0.0.1:0", &format!("http: 127.0.0.1:{http_port}"));
        std::fs::write(dir.join("config.yaml"), yaml).expect("config");
        let child = common::spawn_serve(&dir.join("config.yaml"));
        let mut server = Self::ready(child, addr, Some(dir));
        server.http_addr = SocketAddr::from(([127, 0, 0, 1], http_port));
        server
    }

    fn ready(
        child: std::process::Child,
        addr: AuthzAddress,
        dir: Option<std::path::PathBuf>,
    ) -> Self {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !evs_testkit::accepting(&addr) {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            addr,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            _dir: dir,
        }
    }

    async fn clients(&self, connections: usize) -> Vec<AuthorizationClient<Channel>> {
        let mut clients = Vec::new();
        for _ in 0..connections {
            clients.push(AuthorizationClient::new(
                evs_testkit::authz_channel(&self.addr)
                    .await
                    .expect("connect"),
            ));
        }
        clients
    }

    /// User + system CPU seconds the process has used.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at ')'.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }

    fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
