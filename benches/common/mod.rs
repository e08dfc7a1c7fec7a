//! What the benchmarks share: a description of the machine, a sidecar with a demo IdP, latency
//! statistics, an open-loop driver and a no-op ext_authz server.
#![allow(dead_code)]

use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use evs_token_vending::demo::{DemoIdp, SAMPLE_GRANTS};
use evs_token_vending::{Config, RunningSidecar};

/// One line naming the machine the numbers come from.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {:.0} GiB, Linux {}",
        memory_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// Writes the sample grants into `dir` and returns the YAML of a sidecar trusting `idp` with
/// ext_authz on `authz`; `extra_token` is spliced into `token:`
/// (e.g. `, cache: { enabled: false }`).
pub fn config_yaml(idp: &DemoIdp, dir: &std::path::Path, authz: &str, extra_token: &str) -> String {
    std::fs::create_dir_all(dir).expect("bench dir");
    std::fs::write(dir.join("grants.yaml"), SAMPLE_GRANTS).expect("grants file");
    format!(
        "listen: {{ authz: '{authz}', http: 127.0.0.1:0 }}
token: {{ issuer: https://token-vending.example.com, audience: [evidentsource], lifetime: 1h {extra_token} }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{}' }} ]
grants: {{ file: grants.yaml }}
",
        idp.issuer()
    )
}

/// The same, parsed.
pub fn config(idp: &DemoIdp, dir: &std::path::Path, authz: &str, extra_token: &str) -> Config {
    Config::from_yaml(&config_yaml(idp, dir, authz, extra_token), dir).expect("bench config")
}

/// A demo IdP and a sidecar in this process.
pub async fn sidecar(extra_token: &str) -> (DemoIdp, RunningSidecar) {
    let idp = DemoIdp::start().await.expect("IdP");
    let dir = std::env::temp_dir().join(format!("evs-tv-bench-{}", std::process::id()));
    let sidecar = evs_token_vending::start(config(&idp, &dir, "127.0.0.1:0", extra_token))
        .await
        .expect("sidecar");
    (idp, sidecar)
}

/// `n` distinct IdP tokens for one user (distinct `jti`), valid for an hour, signed on every
/// core.
pub fn tokens(idp: &DemoIdp, n: usize) -> Vec<String> {
    signed(idp, n, "")
}

/// [`tokens`] as `authorization` header values, each formatted as it is signed, so no large
/// block of freed token text is left for later allocations to reuse (which would hide growth
/// from an RSS measurement).
#[allow(dead_code)]
pub fn bearers(idp: &DemoIdp, n: usize) -> Vec<String> {
    signed(idp, n, "Bearer ")
}

fn signed(idp: &DemoIdp, n: usize, prefix: &str) -> Vec<String> {
    let now = evs_token_vending::unix_now();
    let exp = now + Duration::from_secs(3600).as_secs();
    let sign = |i: usize| {
        let token = idp.sign(&serde_json::json!({
            "iss": idp.issuer(), "sub": "user@example.com", "email": "user@example.com",
            "iat": now, "exp": exp, "jti": format!("bench-{i}"),
        }));
        format!("{prefix}{token}")
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                scope.spawn(move || {
                    (start..(start + chunk).min(n))
                        .map(sign)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    })
}

/// Latencies of one run.
pub struct Stats {
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub elapsed: Duration,
}

impl Stats {
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `quantile` (0 when nothing answered).
    pub fn quantile(&self, quantile: f64) -> Duration {
        let index = ((self.latencies.len() as f64 * quantile) as usize)
            .min(self.latencies.len().saturating_sub(1));
        self.latencies.get(index).copied().unwrap_or_default()
    }

    pub fn at(&self, quantile: f64) -> String {
        let micros = self.quantile(quantile).as_micros();
        if micros >= 10_000 {
            format!("{:.1} ms", micros as f64 / 1000.0)
        } else {
            format!("{:.2} ms", micros as f64 / 1000.0)
        }
    }

    pub fn percentiles(&self) -> String {
        format!(
            "{} | {} | {} | {}",
            self.at(0.5),
            self.at(0.9),
            self.at(0.99),
            self.at(0.999)
        )
    }

    pub fn summary(&self) -> String {
        format!(
            "{:.0} Checks/s (p50 {}, p90 {}, p99 {}, p99.9 {}; {} errors)",
            self.throughput(),
            self.at(0.5),
            self.at(0.9),
            self.at(0.99),
            self.at(0.999),
            self.errors
        )
    }

    pub fn from(mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        Self {
            latencies,
            errors,
            elapsed,
        }
    }
}

/// Calls `call(i)` for i = 0, 1, … at `rate` per second for `duration` (open loop: a slow
/// answer does not delay the next call); `call` says whether the answer was the expected one.
pub async fn fixed_rate_with<F, Fut>(rate: u64, duration: Duration, call: F) -> Stats
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let total = rate * duration.as_secs();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let results = std::sync::Arc::new(std::sync::Mutex::new((
        Vec::with_capacity(total as usize),
        0usize,
    )));
    let started = std::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = started + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (answer, results) = (call(i), results.clone());
        tasks.push(tokio::spawn(async move {
            let sent = std::time::Instant::now();
            let ok = answer.await;
            let latency = sent.elapsed();
            let mut results = results.lock().expect("results");
            if ok {
                results.0.push(latency);
            } else {
                results.1 += 1;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let (latencies, errors) = std::mem::take(&mut *results.lock().expect("results"));
    Stats::from(latencies, errors, elapsed)
}

/// The transport limit: an ext_authz server that answers OK with one header, doing nothing.
pub struct Noop {
    /// When set, every Check is answered with a copy of this (a recorded sidecar answer, so
    /// the no-op pays for an answer of the same size: the floor for answering with a token).
    pub recorded: Option<CheckResponse>,
    /// When set, every Check also pays for one RS256 verification and one RSA-2048 signature:
    /// the floor of an uncached Check.
    pub crypto: Option<CryptoFloor>,
}

/// An RSA public JWK parsed once for RS256 verification, as the sidecar keeps its issuers' keys.
pub fn parsed_rs256_key(jwk: &serde_json::Value) -> aws_lc_rs::signature::ParsedPublicKey {
    use base64::Engine;
    let component = |name: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().expect("an RSA JWK"))
            .expect("base64url")
    };
    let (n, e) = (component("n"), component("e"));
    aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .to_parsed_public_key(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256)
        .expect("parsed key")
}

/// A JWS's signed text (`header.payload`) and its decoded signature.
pub fn signed_and_signature(token: &str) -> (&str, Vec<u8>) {
    use base64::Engine;
    let (signed, signature) = token.rsplit_once('.').expect("a JWS");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .expect("base64url");
    (signed, signature)
}

/// The cryptography an uncached Check cannot avoid, and nothing else: the cheapest RS256
/// verification (the signature segment decoded, then checked with an RSA key parsed once, as
/// aws-lc-rs allows) and one signature with the sidecar's own `SigningKey`, on a payload the
/// size of the sidecar's.
pub struct CryptoFloor {
    key: evs_token_vending::SigningKey,
    verifying: aws_lc_rs::signature::ParsedPublicKey,
    payload: Vec<u8>,
    /// A token signed by `key`, verified on every Check.
    token: String,
}

impl CryptoFloor {
    /// A fresh RSA-2048 key signing `payload`.
    pub fn new(payload: Vec<u8>) -> Self {
        let key = evs_token_vending::SigningKey::generate_rsa(2048).expect("key");
        let verifying = parsed_rs256_key(key.public_jwk());
        let token = key.sign_jws(&payload).expect("sign");
        Self {
            verifying,
            payload,
            token,
            key,
        }
    }

    /// One verification and one signature.
    fn pay(&self) {
        let (signed, signature) = signed_and_signature(&self.token);
        self.verifying
            .verify_sig(signed.as_bytes(), &signature)
            .expect("verifies");
        std::hint::black_box(self.key.sign_jws(&self.payload).expect("sign"));
    }
}

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        if let Some(crypto) = &self.crypto {
            crypto.pay();
        }
        if let Some(recorded) = &self.recorded {
            return Ok(tonic::Response::new(recorded.clone()));
        }
        Ok(tonic::Response::new(CheckResponse {
            status: Some(RpcStatus::default()),
            http_response: Some(
                envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::OkResponse(
                    envoy_types::pb::envoy::service::auth::v3::OkHttpResponse {
                        headers: vec![
                            envoy_types::pb::envoy::config::core::v3::HeaderValueOption {
                                header: Some(
                                    envoy_types::pb::envoy::config::core::v3::HeaderValue {
                                        key: "authorization".into(),
                                        value: "Bearer noop".into(),
                                        ..Default::default()
                                    },
                                ),
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    },
                ),
            ),
            dynamic_metadata: None,
        }))
    }
}

/// How the no-op server runs besides answering.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NoopMode {
    /// Nothing else.
    Plain,
    /// Behind the sidecar's HTTP/2 preface gate (TCP only).
    Gated,
    /// Paying for an uncached Check's cryptography ([`CryptoFloor`]); needs `recorded`.
    Crypto,
}

impl NoopMode {
    /// The word on the `__noop` command line.
    pub fn arg(self) -> Option<&'static str> {
        match self {
            Self::Plain => None,
            Self::Gated => Some("gated"),
            Self::Crypto => Some("crypto"),
        }
    }

    /// Reads [`Self::arg`] back.
    pub fn from_arg(arg: Option<&str>) -> Self {
        match arg {
            Some("gated") => Self::Gated,
            Some("crypto") => Self::Crypto,
            _ => Self::Plain,
        }
    }
}

/// The no-op server on `host:port` or `unix:/path`; with `recorded` (a file holding an encoded
/// CheckResponse), it answers every Check with that.
pub fn noop_server(addr: &str, recorded: Option<&str>, mode: NoopMode) {
    let recorded: Option<CheckResponse> = recorded.map(|path| {
        let bytes = std::fs::read(path).expect("recorded answer");
        prost::Message::decode(bytes.as_slice()).expect("a CheckResponse")
    });
    let crypto = (mode == NoopMode::Crypto).then(|| {
        CryptoFloor::new(recorded_payload(
            recorded
                .as_ref()
                .expect("the crypto floor answers a recorded answer"),
        ))
    });
    let gated = mode == NoopMode::Gated;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Noop { recorded, crypto }));
        match addr.strip_prefix("unix:") {
            Some(path) => {
                let listener = tokio::net::UnixListener::bind(path).expect("bind socket");
                let incoming = futures_util::stream::unfold(listener, |listener| async move {
                    let accepted = listener.accept().await.map(|(socket, _)| socket);
                    Some((accepted, listener))
                });
                server.serve_with_incoming(incoming).await
            }
            None if gated => {
                // The sidecar's own HTTP/2 preface gate in front, nothing else changed.
                let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
                let incoming = evs_token_vending::prefaced_tcp(listener, Duration::from_secs(5));
                server.serve_with_incoming(incoming).await
            }
            None => server.serve(addr.parse().expect("host:port")).await,
        }
        .expect("no-op server");
    });
}

/// The JSON payload of the token in a recorded answer's `authorization` header.
fn recorded_payload(answer: &CheckResponse) -> Vec<u8> {
    use base64::Engine;
    let Some(envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::OkResponse(
        ok,
    )) = &answer.http_response
    else {
        panic!("the recorded answer is an OK");
    };
    let value = &ok.headers[0].header.as_ref().expect("a header").value;
    let payload = value.split('.').nth(1).expect("a compact JWS");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url")
}

/// `evs-token-vending serve` as its own process, trusting `idp`, ext_authz on `authz`; killed
/// when dropped.
pub struct SidecarProcess {
    child: std::process::Child,
    /// The TCP port (0 for a Unix socket).
    pub port: u16,
}

/// `evs-token-vending serve --config config` (warnings only).
pub fn spawn_serve(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_evs-token-vending"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("sidecar")
}

/// Starts [`SidecarProcess`] with its config in `dir` and waits until ext_authz accepts.
pub fn sidecar_process(
    idp: &DemoIdp,
    dir: &std::path::Path,
    authz: &evs_token_vending::AuthzAddress,
) -> SidecarProcess {
    let yaml = config_yaml(idp, dir, &authz.to_string(), "");
    std::fs::write(dir.join("config.yaml"), yaml).expect("config");
    let child = spawn_serve(&dir.join("config.yaml"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !evs_testkit::accepting(authz) {
        assert!(
            std::time::Instant::now() < deadline,
            "the sidecar did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = authz.tcp().map_or(0, |addr| addr.port());
    SidecarProcess { child, port }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
