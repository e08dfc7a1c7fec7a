//! What traces cost a cached swap: `cargo bench --bench tracing_overhead`.
//!
//! The same cached swap as `pipeline`'s `swap_cache_hit`, inside a root span shaped like the
//! sidecar's decision span, three ways in one run: no trace export (the log subscriber only),
//! then the OpenTelemetry layer with the SDK's batch processor sampling 1 % and 100 % of traces.
//! The exporter discards what it is given, so the figures are the sidecar's own work per Check
//! (span bookkeeping, sampling, handing spans to the batch thread), not a collector's network.

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use evs_token_vending::InboundRequest;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Drops every batch (the collector's side is not what is measured).
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

fn provider(ratio: f64) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(Sampler::TraceIdRatioBased(ratio))
        .with_batch_exporter(Discard)
        .build()
}

fn benchmarks(c: &mut Criterion) {
    println!("machine: {}", common::machine());
    // One thread: the future is polled where the scoped subscriber is the default.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (idp, sidecar) = runtime.block_on(common::sidecar(""));
    let token = common::tokens(&idp, 1).remove(0);
    let bearer = format!("Bearer {token}");
    let request = InboundRequest {
        authorization: vec![bearer.as_bytes()],
        ..Default::default()
    };
    let deadline = || Instant::now() + Duration::from_secs(5);
    let swap = || async {
        let span = tracing::info_span!(
            "decision",
            otel.name = "ext_authz.Check",
            request_id = "bench",
            outcome = tracing::field::Empty,
            http.status_code = tracing::field::Empty,
        );
        let swapped = sidecar
            .vending
            .swap(&request, deadline())
            .instrument(span.clone())
            .await
            .expect("swap");
        span.record("outcome", "ok");
        span.record("http.status_code", 200i64);
        swapped
    };
    // The log layer as `serve` installs it (info; nothing is printed on a cached swap).
    let logs = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    };
    use tracing_subscriber::Layer;

    tracing::subscriber::with_default(tracing_subscriber::registry().with(logs()), || {
        c.bench_function("cached_swap_traces_off", |b| {
            b.to_async(&runtime).iter(swap)
        });
    });
    for (name, ratio) in [
        ("cached_swap_traces_sampled_1_percent", 0.01),
        ("cached_swap_traces_sampled_100_percent", 1.0),
    ] {
        let provider = provider(ratio);
        let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
        let subscriber = tracing_subscriber::registry().with(logs()).with(traces);
        tracing::subscriber::with_default(subscriber, || {
            c.bench_function(name, |b| b.to_async(&runtime).iter(swap));
        });
        let _ = provider.shutdown();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = benchmarks
}
criterion_main!(benches);
