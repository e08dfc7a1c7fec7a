//! Logs and metrics.
//!
//! Logs go to stderr through `tracing` (level from `RUST_LOG`, default `info`); nothing logged
//! anywhere in the crate carries a token, a key or a certificate. Dependencies are held to
//! `info` whatever `RUST_LOG` says: at `debug` and `trace` the AWS SDK writes canonical
//! requests with session tokens, and HTTP stacks dump headers. Metrics ([`metrics`]) are
//! `prometheus-client` counters and histograms, served on `/metrics`.

mod histogram;
mod metrics;
mod process;
pub(crate) mod span_gate;
pub(crate) mod traces;

pub use self::metrics::{Live, Metrics};
pub use self::traces::{OtlpConfig, TraceExportError, Traces};

/// Installs the stderr log subscriber at `default_level` unless `RUST_LOG` says otherwise.
/// `json` switches to one JSON object per line.
pub fn init_logging(json: bool, default_level: &str) {
    install(json, default_level, None);
}

/// [`init_logging`], plus span export to the OTLP endpoint `otlp` names (or the standard
/// environment does), when there is one. Call inside the Tokio runtime; shut the returned
/// export down at exit so queued spans are sent.
pub fn init_logging_and_traces(
    json: bool,
    default_level: &str,
    otlp: &OtlpConfig,
) -> Result<Option<Traces>, TraceExportError> {
    let traces = traces::exporter(otlp)?;
    install(json, default_level, traces.as_ref().map(Traces::tracer));
    Ok(traces)
}

fn install(json: bool, default_level: &str, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let requested = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Spans only for what reads them: a log at debug or more, or sampled exported traces.
    let logs_print_spans = requested
        .max_level_hint()
        .is_none_or(|level| level >= tracing_subscriber::filter::LevelFilter::DEBUG);
    span_gate::install(
        logs_print_spans,
        tracer.as_ref().map(|_| traces::sampler_from_environment()),
    );
    // Colours only on a terminal: a log file or collector gets plain `key=value` text.
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let output = if json {
        output.json().boxed()
    } else {
        output.boxed()
    };
    // One filter, both conditions: two stacked filters answer "sometimes" for a line one of
    // them enables and the other does not (each of our debug lines at `info`), and every such
    // line is filtered again each time it runs.
    // The filter's hint is the level's: without one, `tracing` compares every line with TRACE
    // and asks its callsite, instead of stopping a dependency's `trace!` at one atomic load.
    let hint = requested
        .max_level_hint()
        .unwrap_or(tracing_subscriber::filter::LevelFilter::TRACE);
    let output =
        output.with_filter(requested.and(filter_fn(safe_to_log).with_max_level_hint(hint)));
    // Two subscriber shapes, never an `Option` layer: a `None` layer answers "always
    // interested" for every callsite, which makes the registry build every dependency's
    // trace-level span (h2 opens several per request) for no layer to read. That was a
    // quarter of a cached Check's CPU in 0.10.0 (docs: "Benchmarks").
    let _ = match tracer {
        Some(tracer) => {
            // Spans of ours at `info` and above, whatever the log level: the trace of a Check.
            let spans = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(
                    filter_fn(|meta| {
                        meta.target().starts_with(env!("CARGO_CRATE_NAME"))
                            && *meta.level() <= tracing::Level::INFO
                    })
                    .with_max_level_hint(tracing::Level::INFO),
                );
            tracing_subscriber::registry()
                .with(output)
                .with(spans)
                .try_init()
        }
        None => tracing_subscriber::registry().with(output).try_init(),
    };
}

/// Our own events at any level; a dependency's only up to `info`.
fn safe_to_log(event: &tracing::Metadata<'_>) -> bool {
    event.target().starts_with(env!("CARGO_CRATE_NAME")) || *event.level() <= tracing::Level::INFO
}

/// How a Check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A token was minted.
    Ok = 0,
    /// 401.
    Unauthenticated = 1,
    /// 403.
    Forbidden = 2,
    /// 503.
    Unavailable = 3,
}

impl Outcome {
    /// The label `/metrics` and the decision log use.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::Unavailable => "unavailable",
        }
    }
}
