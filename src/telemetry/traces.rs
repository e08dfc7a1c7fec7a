//! OpenTelemetry traces: one span per Check (and per `/exchange`) with a child per stage,
//! exported over OTLP/gRPC when an endpoint is configured, and joined to the caller's trace.
//!
//! The endpoint is `telemetry.otlp.endpoint`, else the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`; with none, nothing is
//! exported and spans cost what the log's spans already cost. `OTEL_SERVICE_NAME` (default
//! `evs-token-vending`) and `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` are read by the
//! OpenTelemetry SDK as its specification says. A span's parent is the trace context Envoy
//! sends in the ext_authz call's own gRPC metadata (`traceparent`, when its tracing is on),
//! else the checked request's `traceparent` or B3 headers. Spans carry no token, key or
//! certificate; subjects only with `telemetry.trace_subjects: true`.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;

/// `telemetry.otlp:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint (`http://otel-collector:4317`); unset: the
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` environment variable, else no export.
    pub endpoint: Option<String>,
}

impl OtlpConfig {
    /// Checks that a configured endpoint is an `http://` URL.
    pub(crate) fn check(&self, path: &str, check: &mut crate::config_check::ConfigCheck) {
        if let Some(problem) = self.endpoint.as_deref().and_then(endpoint_problem) {
            check.problem(format!("{path}.endpoint"), problem);
        }
    }

    /// The endpoint to export to, if any.
    fn endpoint(&self) -> Option<String> {
        self.endpoint
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .filter(|endpoint| !endpoint.trim().is_empty())
    }
}

/// Why `endpoint` cannot be exported to, if it cannot. This build speaks OTLP/gRPC in plain
/// HTTP/2 only: send spans to a collector in the pod or on the node, which forwards them on.
fn endpoint_problem(endpoint: &str) -> Option<&'static str> {
    match url::Url::parse(endpoint) {
        Ok(url) if url.scheme() == "http" && url.host().is_some() => None,
        Ok(url) if url.scheme() == "https" => Some(
            "https is not supported: export over http:// to a collector in the pod or on the node",
        ),
        _ => Some("must be the collector's http:// URL (OTLP/gRPC, usually port 4317)"),
    }
}

/// Why trace export could not start; each names the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TraceExportError {
    /// The endpoint is not an http:// URL of a collector.
    #[error("OTLP endpoint {endpoint}: {problem}")]
    Endpoint {
        /// The configured (or environment's) endpoint.
        endpoint: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The exporter refused the endpoint.
    #[error("telemetry.otlp.endpoint {endpoint}: {source}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// What the exporter said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The running export: flushed and stopped on [`Traces::shutdown`].
pub struct Traces(SdkTracerProvider);

impl Traces {
    /// Sends the spans still queued, waiting at most the SDK's timeout.
    pub fn shutdown(self) {
        let _ = self.0.shutdown();
    }

    pub(super) fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        self.0.tracer("evs-token-vending")
    }
}

/// Builds the OTLP exporter when an endpoint is configured; must run inside the Tokio runtime
/// (the gRPC client lives there).
pub(super) fn exporter(config: &OtlpConfig) -> Result<Option<Traces>, TraceExportError> {
    let Some(endpoint) = config.endpoint() else {
        return Ok(None);
    };
    if let Some(problem) = endpoint_problem(&endpoint) {
        return Err(TraceExportError::Endpoint { endpoint, problem });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|source| TraceExportError::Exporter {
            endpoint: endpoint.clone(),
            source,
        })?;
    let mut resource = opentelemetry_sdk::Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("evs-token-vending");
    }
    let resource = resource.build();
    // Sampling is decided before a span is built (see `span_gate`): every span that reaches
    // the SDK was sampled already.
    let provider = SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok(Some(Traces(provider)))
}

/// The sampler `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` name, as the SDK reads them
/// (default: parent-based, always on).
pub(super) fn sampler_from_environment() -> Box<dyn opentelemetry_sdk::trace::ShouldSample> {
    opentelemetry_sdk::trace::Config::default().sampler
}

/// The span of one decision (a Check or an exchange): its children are the stages, its
/// attributes the outcome. Recorded fields are fixed texts of ours, the verified issuer and
/// `kid`, and the subject only when `subjects` is set.
pub struct DecisionSpan {
    span: tracing::Span,
    subjects: bool,
}

impl DecisionSpan {
    /// A span named `name` (`ext_authz.Check`, `POST /exchange`) under the trace context
    /// `parent` builds, if any — or none at all when nothing would read it
    /// ([`super::span_gate`]); `parent` is called only when a span may be made.
    pub fn start(
        name: &'static str,
        request_id: &str,
        trace_id: Option<&str>,
        parent: impl FnOnce() -> Option<Context>,
        subjects: bool,
    ) -> Self {
        use tracing::field::Empty;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let none = || Self {
            span: tracing::Span::none(),
            subjects,
        };
        if !super::span_gate::spans_possible() {
            return none();
        }
        let parent = parent();
        if !super::span_gate::wants_span(name, parent.as_ref()) {
            return none();
        }
        let span = tracing::info_span!(
            "decision",
            otel.name = name,
            otel.kind = "server",
            request_id = %request_id,
            trace_id = %trace_id.unwrap_or("-"),
            credential = Empty,
            issuer = Empty,
            subject = Empty,
            kid = Empty,
            cache_hit = Empty,
            outcome = Empty,
            http.status_code = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        if let Some(parent) = parent {
            let _ = span.set_parent(parent);
        }
        Self { span, subjects }
    }

    /// The span, to run the decision in.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Whether there is a span (its stages then get spans of their own).
    pub fn is_live(&self) -> bool {
        !self.span.is_none()
    }

    /// What was presented, once known.
    pub fn credential(&self, kind: Option<&str>) {
        if let Some(kind) = kind {
            self.span.record("credential", kind);
        }
    }

    /// A token was minted (or ours passed): who, and which key signed it.
    pub fn allowed(
        &self,
        issuer: Option<&str>,
        subject: &str,
        kid: Option<&str>,
        cache_hit: Option<bool>,
    ) {
        let span = &self.span;
        span.record("outcome", "ok");
        span.record("http.status_code", 200i64);
        if let Some(issuer) = issuer {
            span.record("issuer", issuer);
        }
        if self.subjects {
            span.record("subject", subject);
        }
        if let Some(kid) = kid {
            span.record("kid", kid);
        }
        if let Some(hit) = cache_hit {
            span.record("cache_hit", hit);
        }
    }

    /// Refused: the outcome, the HTTP status and the reason, as an error status.
    pub fn refused(&self, outcome: &str, status: u16, reason: &str) {
        let span = &self.span;
        span.record("outcome", outcome);
        span.record("http.status_code", i64::from(status));
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", reason);
    }
}

/// The parent of a Check's span: the ext_authz call's own `traceparent` (Envoy's span for the
/// call), else the checked request's `traceparent`, else its B3 `x-b3-traceid` and
/// `x-b3-spanid`. Malformed values are ignored.
pub fn parent_context(
    call_traceparent: Option<&[u8]>,
    request_traceparent: Option<&[u8]>,
    b3: B3Headers<'_>,
) -> Option<Context> {
    let context = call_traceparent
        .and_then(traceparent)
        .or_else(|| request_traceparent.and_then(traceparent))
        .or_else(|| b3_context(b3))?;
    Some(Context::new().with_remote_span_context(context))
}

/// W3C `traceparent`: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
fn traceparent(value: &[u8]) -> Option<SpanContext> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    span_context(trace, span, flags & 1 == 1)
}

/// B3 multi-header propagation: `x-b3-traceid` (16 or 32 hex), `x-b3-spanid`, `x-b3-sampled`.
#[derive(Debug, Default, Clone, Copy)]
pub struct B3Headers<'a> {
    /// `x-b3-traceid`.
    pub trace_id: Option<&'a [u8]>,
    /// `x-b3-spanid`.
    pub span_id: Option<&'a [u8]>,
    /// `x-b3-sampled`.
    pub sampled: Option<&'a [u8]>,
}

fn b3_context(b3: B3Headers<'_>) -> Option<SpanContext> {
    let sampled = b3.sampled;
    let trace = std::str::from_utf8(b3.trace_id?).ok()?;
    let span = std::str::from_utf8(b3.span_id?).ok()?;
    let trace = match trace.len() {
        16 => format!("{:0>32}", trace),
        32 => trace.to_owned(),
        _ => return None,
    };
    let sampled = sampled.is_none_or(|value| value == b"1" || value == b"true");
    span_context(&trace, span, sampled)
}

fn span_context(trace: &str, span: &str, sampled: bool) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calls_own_traceparent_wins_then_the_requests_then_b3() {
        let call = b"00-11111111111111111111111111111111-2222222222222222-01";
        let request = b"00-33333333333333333333333333333333-4444444444444444-01";
        let b3 = B3Headers {
            trace_id: Some(b"5555555555555555"),
            span_id: Some(b"6666666666666666"),
            sampled: None,
        };
        let trace = |context: Option<Context>| {
            let context = context.expect("a parent");
            let span = context.span();
            let span = span.span_context();
            (span.trace_id().to_string(), span.span_id().to_string())
        };
        assert_eq!(
            trace(parent_context(Some(call), Some(request), b3)).1,
            "2222222222222222"
        );
        assert_eq!(
            trace(parent_context(None, Some(request), b3)).1,
            "4444444444444444"
        );
        assert_eq!(
            trace(parent_context(None, None, b3)),
            (
                "00000000000000005555555555555555".to_owned(),
                "6666666666666666".to_owned()
            )
        );
    }

    /// Keeps every span it is given.
    #[derive(Debug, Clone, Default)]
    struct Keep(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Keep {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// The attribute names of an allowed decision's span, recorded with `subjects` as given.
    fn recorded_attributes(subjects: bool) -> Vec<String> {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let kept = Keep::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(kept.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let span = DecisionSpan::start("ext_authz.Check", "req-1", None, || None, subjects);
            span.allowed(
                Some("https://idp.example.com"),
                "alice@example.com",
                Some("k1"),
                Some(true),
            );
        });
        let spans = kept.0.lock().unwrap();
        spans[0]
            .attributes
            .iter()
            .map(|kv| kv.key.to_string())
            .collect()
    }

    #[test]
    fn subjects_are_on_spans_only_when_trace_subjects_is_set() {
        let without = recorded_attributes(false);
        assert!(without.contains(&"issuer".to_owned()), "{without:?}");
        assert!(!without.contains(&"subject".to_owned()), "{without:?}");
        assert!(recorded_attributes(true).contains(&"subject".to_owned()));
    }

    #[test]
    fn an_otlp_endpoint_must_be_an_http_url() {
        let problems = |endpoint: &str| {
            let yaml = format!(
                "token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: https://idp.example.com }} ]
grants: {{ file: grants.yaml }}
telemetry: {{ otlp: {{ endpoint: '{endpoint}' }} }}
"
            );
            match crate::Config::from_yaml(&yaml, std::path::Path::new(".")) {
                Ok(_) => Vec::new(),
                Err(e) => e.problems.into_iter().map(|p| p.path).collect(),
            }
        };
        assert!(problems("http://otel-collector:4317").is_empty());
        assert_eq!(problems("otel-collector:4317"), ["telemetry.otlp.endpoint"]);
        assert_eq!(problems("ftp://collector"), ["telemetry.otlp.endpoint"]);
        assert_eq!(
            problems("https://collector:4317"),
            ["telemetry.otlp.endpoint"]
        );
    }

    #[test]
    fn malformed_or_all_zero_contexts_are_ignored() {
        for bad in [
            &b"00-00000000000000000000000000000000-2222222222222222-01"[..],
            b"01-11111111111111111111111111111111-2222222222222222-01",
            b"00-1111-2222222222222222-01",
            b"00-zz111111111111111111111111111111-2222222222222222-01",
            b"\xff",
        ] {
            assert!(parent_context(Some(bad), None, B3Headers::default()).is_none());
        }
    }
}
