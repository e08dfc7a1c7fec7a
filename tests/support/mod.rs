//! Shared fixtures of the integration tests: a throw-away folder, a running identity provider
//! plus sidecar ([`Harness`]), and readers for CheckResponses.
#![allow(dead_code)]

pub mod aws_iam;
pub mod certs;
pub mod envoy;
pub mod kustomize;
pub mod moto;
pub mod process;
pub mod python;
pub mod slapd;
pub mod store_front;

use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, check_response};
use evs_testkit::check_request;
use evs_token_vending::demo::{DemoIdp, SAMPLE_GRANTS};
use evs_token_vending::{Config, RunningSidecar};
use serde_json::Value;
use tonic::transport::Channel;

/// A folder removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("evs-tv-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Knobs of a harness's config; each string is spliced into the YAML as it is.
pub struct Options {
    /// Extra keys of the one `trust:` entry, e.g. `audiences: [demo-client]`.
    pub trust_extra: String,
    /// Extra `trust:` entries (full YAML list items).
    pub more_trust: String,
    /// Extra keys of `token:`.
    pub token_extra: String,
    /// Extra keys of `grants:`.
    pub grants_extra: String,
    /// The grants file.
    pub grants_file: String,
    /// The `signing:` value.
    pub signing: String,
    /// `grants.source`, or `grants.sources` when it is a YAML list (`[file, rules]`).
    pub grants_source: String,
    /// Top-level YAML appended to the config (e.g. a `client_certs:` block).
    pub extra_config: String,
    /// The `listen:` value.
    pub listen: String,
}

impl Options {
    /// The same options with another `grants.source`.
    pub fn with_grants_source(mut self, source: &str) -> Self {
        self.grants_source = source.to_owned();
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            trust_extra: String::new(),
            more_trust: String::new(),
            token_extra: String::new(),
            grants_extra: String::new(),
            grants_file: SAMPLE_GRANTS.to_owned(),
            signing: "{ dev_generate: true }".to_owned(),
            grants_source: "file".to_owned(),
            extra_config: String::new(),
            listen: "{ authz: 127.0.0.1:0, http: 127.0.0.1:0 }".to_owned(),
        }
    }
}

/// A real identity provider and a real sidecar on loopback ports, plus a gRPC client.
pub struct Harness {
    pub idp: DemoIdp,
    pub sidecar: Option<RunningSidecar>,
    pub client: AuthorizationClient<Channel>,
    pub dir: TempDir,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let idp = DemoIdp::start().await.expect("start IdP");
        let dir = TempDir::new("harness");
        dir.write("grants.yaml", &options.grants_file);
        let yaml = format!(
            "listen: {listen}
token:
  issuer: https://token-vending.example.com
  audience: [evidentsource]
  {token_extra}
signing: {signing}
trust:
  - issuer: '{issuer}'
    {trust_extra}
{more_trust}
grants:
  {source_key}: {grants_source}
  file: grants.yaml
  {grants_extra}
{extra_config}
",
            issuer = idp.issuer(),
            token_extra = options.token_extra,
            trust_extra = options.trust_extra,
            more_trust = options.more_trust,
            grants_extra = options.grants_extra,
            signing = options.signing,
            source_key = if options.grants_source.starts_with('[') {
                "sources"
            } else {
                "source"
            },
            grants_source = options.grants_source,
            extra_config = options.extra_config,
            listen = options.listen,
        );
        let config = Config::from_yaml(&yaml, dir.path()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let sidecar = evs_token_vending::start(config)
            .await
            .expect("start sidecar");
        // With `authz_tls` a plaintext client cannot connect; tests of it make their own.
        let channel = match (options.listen.contains("authz_tls"), &sidecar.authz_addr) {
            (true, evs_token_vending::AuthzAddress::Tcp(addr)) => {
                Channel::from_shared(format!("http://{addr}"))
                    .expect("URI")
                    .connect_lazy()
            }
            _ => evs_testkit::authz_channel(&sidecar.authz_addr)
                .await
                .expect("connect to ext_authz"),
        };
        let client = AuthorizationClient::new(channel);
        Self {
            idp,
            sidecar: Some(sidecar),
            client,
            dir,
        }
    }

    /// Shuts the sidecar down (in-flight work first), as SIGTERM's last step does.
    pub async fn stop(&mut self) {
        if let Some(sidecar) = self.sidecar.take() {
            sidecar.shutdown().await;
        }
    }

    pub fn sidecar(&self) -> &RunningSidecar {
        self.sidecar.as_ref().expect("sidecar running")
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sidecar().http_addr)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.http_url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn check_request(&self, request: CheckRequest) -> CheckResponse {
        self.client
            .clone()
            .check(request)
            .await
            .expect("Check must answer, never fail the RPC")
            .into_inner()
    }

    pub async fn check(&self, headers: &[(&str, &str)]) -> CheckResponse {
        self.check_request(check_request(headers)).await
    }

    pub async fn check_bearer(&self, token: &str) -> CheckResponse {
        self.check(&[("authorization", &format!("Bearer {token}"))])
            .await
    }

    /// A valid token for `user@example.com` for 10 minutes.
    pub fn user_token(&self) -> String {
        self.idp.token_for(
            "user@example.com",
            Some("user@example.com"),
            Duration::from_secs(600),
        )
    }

    /// Claims with this IdP as issuer, valid for 10 minutes, with `extra` merged in.
    pub fn claims(&self, extra: Value) -> Value {
        let now = now();
        let mut claims = serde_json::json!({
            "iss": self.idp.issuer(), "sub": "user@example.com", "iat": now, "exp": now + 600,
        });
        if let (Some(base), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            base.extend(extra);
        }
        claims
    }
}

/// Runs the binary with `args` off the async runtime (whose servers it may call): whether it
/// succeeded, and what it printed on stdout then stderr.
pub async fn run_cli(args: Vec<std::ffi::OsString>) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_evs-token-vending"));
    command.args(args);
    let output = tokio::task::spawn_blocking(move || command.output().expect("run the binary"))
        .await
        .expect("join");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

pub fn now() -> u64 {
    evs_token_vending::unix_now()
}

/// The minted token of an OK answer, or a panic describing the denial.
pub fn minted(answer: &CheckResponse) -> String {
    evs_testkit::minted_token(answer)
        .unwrap_or_else(|| panic!("expected OK, got {}", evs_testkit::denial_summary(answer)))
}

/// Decodes a JWT segment (0 header, 1 claims) without verifying.
pub fn segment(token: &str, index: usize) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(index).expect("segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// A denial as the caller sees it.
#[derive(Debug)]
pub struct Denied {
    pub http_status: i32,
    pub grpc_code: i32,
    pub body: Value,
    pub raw_body: String,
    pub www_authenticate: Option<String>,
    pub grpc_message: String,
}

impl Denied {
    pub fn description(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or("")
    }

    /// Asserts the HTTP status and that the description names `reason`.
    pub fn assert_refused(&self, status: i32, reason: &str) {
        assert_eq!(self.http_status, status, "{reason}: {}", self.description());
        assert!(
            self.description().contains(reason),
            "{reason}: {}",
            self.description()
        );
    }

    /// Asserts that nothing the caller sees contains `secret`.
    pub fn assert_does_not_echo(&self, secret: &str) {
        for (what, text) in [
            ("body", self.raw_body.as_str()),
            ("grpc message", self.grpc_message.as_str()),
            (
                "www-authenticate",
                self.www_authenticate.as_deref().unwrap_or(""),
            ),
        ] {
            assert!(
                !text.contains(secret),
                "{what} echoes the credential: {text}"
            );
        }
    }
}

/// The denial of an answer, or a panic when it was OK.
pub fn denied(answer: &CheckResponse) -> Denied {
    let Some(check_response::HttpResponse::DeniedResponse(denied)) = answer.http_response.as_ref()
    else {
        panic!("expected a denial, got {answer:?}");
    };
    let header = |name: &str| {
        denied
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key.eq_ignore_ascii_case(name))
            .map(|h| h.value.clone())
    };
    Denied {
        http_status: denied.status.as_ref().map(|s| s.code).unwrap_or(0),
        grpc_code: answer.status.as_ref().map(|s| s.code).unwrap_or(0),
        body: serde_json::from_str(&denied.body).expect("denial body is JSON"),
        raw_body: denied.body.clone(),
        www_authenticate: header("www-authenticate"),
        grpc_message: answer
            .status
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default(),
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `N` distinct free ports: every one stays bound until all are picked, so the kernel cannot
/// hand the same port out twice (one after the other, [`free_port`] sometimes can).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("bound").port())
}

/// GETs `url` and parses its JSON body.
pub async fn get_json(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON body")
}

/// Polls `condition` every 50 ms until it holds, failing the test after `within`.
pub async fn eventually(what: &str, within: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs futures concurrently on the test's runtime and collects their outputs in order.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::with_capacity(futures.len());
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    // Poll all of them together: a hand-rolled join so the tests need no extra crate.
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in pinned.iter_mut().enumerate() {
            if set.len() <= i {
                set.push(None);
            }
            if set[i].is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => set[i] = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    set.into_iter().map(|o| o.expect("completed")).collect()
}

/// A two-worker runtime, for tests that must change the environment before any thread exists.
/// A path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
}
