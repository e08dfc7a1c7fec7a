//! The `evs-token-vending` command line: parsing and wiring only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use evs_token_vending::{Config, SigningAlgorithm, SigningKey, demo};

#[derive(Parser)]
#[command(
    name = "evs-token-vending",
    version,
    about = "Envoy ext_authz sidecar that swaps inbound credentials for signed EvidentSource JWTs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Serve {
        /// The YAML config file.
        #[arg(long, env = "EVS_TV_CONFIG")]
        config: PathBuf,
        /// Log one JSON object per line instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Run a whole token swap locally with embedded defaults and show it.
    Demo,
    /// Run the demo's identity provider on a fixed loopback port for local trials: prints its
    /// issuer and a token, and serves discovery and JWKS until stopped.
    DevIdp {
        /// Port on 127.0.0.1 (the issuer is `http://127.0.0.1:PORT`).
        #[arg(long, default_value_t = 9400)]
        port: u16,
        /// Subject (and email) of the printed token.
        #[arg(long, default_value = "user@example.com")]
        subject: String,
        /// Lifetime of the printed token.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        lifetime: std::time::Duration,
        /// Also write the token to this file (for scripts).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Write a new signing key (PEM, mode 0600) named after its kid; `active` is not touched.
    Keygen {
        /// The folder to write into (e.g. `signing.keys_dir`).
        #[arg(long)]
        out: PathBuf,
        /// Signature algorithm: the key's type follows from it (RSA, RSA-PSS, P-256, Ed25519).
        #[arg(long, value_enum, default_value_t = KeyAlgorithm::Rs256)]
        alg: KeyAlgorithm,
        /// RSA modulus size (RS256 and PS256).
        #[arg(long, default_value_t = 2048, value_parser = parse_rsa_bits)]
        bits: usize,
    },
    /// Print an AWS IAM token (`k8s-aws-v1.…`) from the standard AWS credential chain.
    IamToken {
        /// The sidecar's `aws_iam.server_id` (signed as `x-k8s-aws-id`).
        #[arg(long)]
        server_id: String,
        /// AWS region of the STS endpoint; default from the chain (`AWS_REGION`, profile).
        #[arg(long)]
        region: Option<String>,
    },
    /// Explain an identity's grants: each source's answer, the rules that matched, and what a
    /// Check would mint.
    Explain {
        /// The YAML config file.
        #[arg(long, env = "EVS_TV_CONFIG")]
        config: PathBuf,
        /// Claims as JSON: {"sub": …, "iss": …, "email": …, "groups": […], "cert:ou": …}.
        #[arg(long, conflicts_with = "token", required_unless_present = "token")]
        identity: Option<String>,
        /// A bearer token, verified against `trust:` as in a Check.
        #[arg(long)]
        token: Option<String>,
    },
    /// Validate a config and print every problem with its key path; exit 1 on error.
    CheckConfig {
        /// The YAML config file.
        #[arg(long, env = "EVS_TV_CONFIG")]
        config: PathBuf,
        /// Also contact remote stores: the DynamoDB table must exist, keyed by `subject` (S).
        #[arg(long)]
        probe: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyAlgorithm {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "PS256")]
    Ps256,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
}

impl From<KeyAlgorithm> for SigningAlgorithm {
    fn from(alg: KeyAlgorithm) -> Self {
        match alg {
            KeyAlgorithm::Rs256 => SigningAlgorithm::Rs256,
            KeyAlgorithm::Ps256 => SigningAlgorithm::Ps256,
            KeyAlgorithm::Es256 => SigningAlgorithm::Es256,
            KeyAlgorithm::EdDsa => SigningAlgorithm::EdDsa,
        }
    }
}

/// clap's value parser for `--bits`; clap prints the `String` as the argument's error, the one
/// place a string error is the interface.
fn parse_rsa_bits(text: &str) -> Result<usize, String> {
    match text {
        "2048" | "3072" | "4096" => text.parse().map_err(|_| "not a number".to_owned()),
        _ => Err("RSA keys are 2048, 3072 or 4096 bits".to_owned()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_json } => {
            let config = match Config::load(&config) {
                Ok(config) => config,
                Err(e) => return fail(&e),
            };
            let runtime = runtime();
            // The span exporter's gRPC client lives on the runtime.
            let traces = {
                let _inside = runtime.enter();
                evs_token_vending::init_logging_and_traces(log_json, "info", &config.telemetry.otlp)
            };
            let traces = match traces {
                Ok(traces) => traces,
                Err(e) => return fail(&e),
            };
            let code = runtime.block_on(serve(config));
            if let Some(traces) = traces {
                let _inside = runtime.enter();
                traces.shutdown();
            }
            code
        }
        Command::Demo => {
            // The demo's output is the story; only warnings interrupt it.
            evs_token_vending::init_logging(false, "warn");
            match runtime().block_on(demo::run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&*e),
            }
        }
        Command::DevIdp {
            port,
            subject,
            lifetime,
            token_file,
        } => {
            evs_token_vending::init_logging(false, "warn");
            runtime().block_on(dev_idp(port, &subject, lifetime, token_file))
        }
        Command::Keygen { out, alg, bits } => {
            let generated = SigningKey::generate(alg.into(), bits)
                .and_then(|key| Ok((key.write_into(&out)?, key)));
            match generated {
                Ok((path, key)) => {
                    println!(
                        "wrote {} ({}, kid {}); `active` was not changed",
                        path.display(),
                        key.algorithm().name(),
                        key.kid()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::IamToken { server_id, region } => {
            match runtime().block_on(evs_token_vending::iam_token(&server_id, region.as_deref())) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::CheckConfig { config, probe } => runtime().block_on(check_config(&config, probe)),
        Command::Explain {
            config,
            identity,
            token,
        } => runtime().block_on(explain(&config, identity, token)),
    }
}

async fn dev_idp(
    port: u16,
    subject: &str,
    lifetime: std::time::Duration,
    token_file: Option<PathBuf>,
) -> ExitCode {
    let idp = match demo::DemoIdp::start_on(port).await {
        Ok(idp) => idp,
        Err(e) => return fail(&format!("dev-idp: cannot listen on 127.0.0.1:{port}: {e}")),
    };
    let token = idp.token_for(subject, Some(subject), lifetime);
    println!(
        "issuer: {}   (trust it: trust: [ {{ issuer: '{}' }} ])",
        idp.issuer(),
        idp.issuer()
    );
    println!(
        "a token for {subject}, valid {}:",
        humantime::format_duration(lifetime)
    );
    println!("{token}");
    if let Some(file) = token_file
        && let Err(e) = std::fs::write(&file, &token)
    {
        return fail(&format!("dev-idp: cannot write {}: {e}", file.display()));
    }
    println!("serving until Ctrl-C or SIGTERM; a restart makes a new key, so get a new token then");
    StopSignals::listen().next().await;
    ExitCode::SUCCESS
}

/// Every problem `serve` would meet, on stderr, all at once: the structure, then the files,
/// then (with `--probe`) the remote stores and issuers. Exit 1 on any problem.
async fn check_config(path: &std::path::Path, probe: bool) -> ExitCode {
    // Every problem in one run: structural ones in every section, each section's checks, and
    // every file the typed parts name — each line prefixed with the config file.
    let (config, mut problems) = Config::inspect(path);
    let problems: Vec<String> = match config {
        Some(config) => {
            for warning in &config.warnings {
                eprintln!("{}: warning: {warning}", path.display());
            }
            let mut found: Vec<String> = problems.drain(..).map(|p| p.to_string()).collect();
            found.extend(evs_token_vending::check_files(&config).await);
            if probe && found.is_empty() {
                match evs_token_vending::probe_remote_stores(&config).await {
                    Ok(reached) => reached.iter().for_each(|line| println!("{line}")),
                    Err(more) => found.extend(more),
                }
            }
            found
        }
        None => problems.iter().map(ToString::to_string).collect(),
    };
    if !problems.is_empty() {
        let mut seen = std::collections::HashSet::new();
        for problem in problems.iter().filter(|p| seen.insert(p.as_str())) {
            eprintln!("{}: {problem}", path.display());
        }
        return ExitCode::FAILURE;
    }
    println!("{}: OK", path.display());
    ExitCode::SUCCESS
}

async fn explain(
    path: &std::path::Path,
    identity: Option<String>,
    token: Option<String>,
) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            e.problems.iter().for_each(|problem| eprintln!("{problem}"));
            return ExitCode::FAILURE;
        }
    };
    let subject = match (&identity, &token) {
        (_, Some(token)) => evs_token_vending::ExplainSubject::Token(token.trim()),
        (Some(identity), None) => evs_token_vending::ExplainSubject::Identity(identity),
        (None, None) => return fail(&"explain needs --identity or --token"),
    };
    match evs_token_vending::explain(&config, subject).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(reason) => fail(&reason),
    }
}

async fn serve(config: Config) -> ExitCode {
    for warning in &config.warnings {
        tracing::warn!(%warning, "configuration");
    }
    // Listened for before start-up: a signal that arrives while the sidecar starts (fetching
    // issuer keys, say) drains it once started instead of killing it half-way.
    let mut signals = StopSignals::listen();
    let mut sidecar = match evs_token_vending::start(config).await {
        Ok(sidecar) => sidecar,
        Err(e) => return fail(&e),
    };
    if let Err(e) = sidecar.reload_keys_on_hangup() {
        tracing::warn!(error = %e, "SIGHUP cannot be listened for; keys reload on change only");
    }
    // First signal: drain (readiness fails, everything still serves), then stop accepting and
    // give in-flight work the grace period. A second signal ends the process at once.
    signals.next().await;
    sidecar.begin_drain();
    tracing::info!(drain = ?sidecar.drain, grace = ?sidecar.grace, "signal: draining, then shutting down");
    let (drain, grace) = (sidecar.drain, sidecar.grace);
    let shut_down = async {
        tokio::time::sleep(drain).await;
        let _ = sidecar.stopper().send(true);
        sidecar.wait_within_grace().await
    };
    tokio::select! {
        finished = shut_down => if !finished {
            tracing::warn!(?grace, "shutdown grace over: closing the connections left");
        },
        () = signals.next() => tracing::warn!("second signal: exiting at once"),
    }
    ExitCode::SUCCESS
}

/// SIGTERM and SIGINT, each delivered once to [`StopSignals::next`].
struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            term: signal(SignalKind::terminate()).ok(),
            interrupt: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// The next SIGTERM or SIGINT (including one that arrived before this was called).
    async fn next(&mut self) {
        async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = one(&mut self.term) => {}
            () = one(&mut self.interrupt) => {}
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("evs-token-vending: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("evs-token-vending: {error}");
    ExitCode::FAILURE
}
