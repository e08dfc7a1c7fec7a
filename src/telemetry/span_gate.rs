//! Whether a decision gets spans at all, decided before any span data is built.
//!
//! Spans cost on every Check (the subscriber's registry allocates, enters, exits and frees
//! each one), so they are made only when something will read them:
//! - the log would print them: `RUST_LOG` (or the default level) enables `debug` or more
//!   (then every Check has its span and its stage spans, and every log line inside a Check
//!   carries the request id);
//! - traces are exported and this decision is sampled. The sampler the OpenTelemetry
//!   environment names (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`) is asked here,
//!   first, with the caller's trace context; the SDK's own sampler is then always-on, so an
//!   unsampled Check costs one sampler call and no span.
//!
//! With neither (the default: `info`, no OTLP endpoint), no span is created. Before
//! [`install`] runs (tests, benchmarks, embedding), spans are left to whatever subscriber
//! is set, as `tracing` always does.

use std::sync::OnceLock;

use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SamplingDecision, ShouldSample};

/// What reads spans, once the process's subscriber is installed.
struct Gate {
    /// The log prints spans (debug or more).
    for_logs: bool,
    /// Traces are exported, sampled by this.
    sampler: Option<Box<dyn ShouldSample>>,
}

static GATE: OnceLock<Gate> = OnceLock::new();

/// Records what reads spans; the first call wins (the process installs one subscriber).
pub(super) fn install(for_logs: bool, sampler: Option<Box<dyn ShouldSample>>) {
    let _ = GATE.set(Gate { for_logs, sampler });
}

/// Whether anything might want a span: when false, a caller need not even build the trace
/// context it would parent spans with.
pub(crate) fn spans_possible() -> bool {
    GATE.get()
        .is_none_or(|gate| gate.for_logs || gate.sampler.is_some())
}

/// Whether the decision named `name`, under `parent`, gets a span.
pub(crate) fn wants_span(name: &str, parent: Option<&Context>) -> bool {
    let Some(gate) = GATE.get() else {
        return true;
    };
    if gate.for_logs {
        return true;
    }
    let Some(sampler) = &gate.sampler else {
        return false;
    };
    let trace_id = parent
        .map(|cx| cx.span().span_context().trace_id())
        .filter(|id| *id != opentelemetry::trace::TraceId::INVALID)
        .unwrap_or_else(|| RandomIdGenerator::default().new_trace_id());
    let result = sampler.should_sample(parent, trace_id, name, &SpanKind::Server, &[], &[]);
    !matches!(result.decision, SamplingDecision::Drop)
}
