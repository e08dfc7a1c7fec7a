//! What a cached Check costs beyond the gRPC round trip, counted, not timed: heap
//! allocations per Check with the log subscriber `serve` installs (default level, no trace
//! export, no decision log). A feature that adds work to every Check — a span, a formatted
//! field, a decision-log line built for nobody — shows up here as allocations, so it fails this
//! test instead of a benchmark nobody ran (docs: "Benchmarks", what a Check costs).
//!
//! The count includes the in-process gRPC client's own allocations: the budget is the whole
//! loopback round trip, measured when this test was written, plus a small margin.

use evs_testkit::process::{CountingAllocator, set_env};

/// Counts every allocation of the process.
#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator::new();

/// Allocations per cached Check (client and server together) this build may make: 107–108
/// in 0.16.1 (110–111 in 0.16.0, 128 with 0.10.0's spans), plus a margin for HTTP/2 framing
/// that varies with timing (window updates, coalesced writes).
const BUDGET_PER_CHECK: u64 = 113;

/// Allocations per cached Check under the subscriber `serve` installs with `traced` (an OTLP
/// endpoint, whatever the environment's sampler says) or without.
fn allocations_per_cached_check(traced: bool) -> u64 {
    let runtime = crate::support::runtime();
    runtime.block_on(async {
        let otlp = evs_token_vending::OtlpConfig {
            // Nothing listens there: an unsampled Check must never get as far as exporting.
            endpoint: traced.then(|| "http://127.0.0.1:9".to_owned()),
        };
        let traces = evs_token_vending::init_logging_and_traces(false, "info", &otlp)
            .expect("the subscriber serve installs");
        assert_eq!(traces.is_some(), traced);
        // Nothing in the subscriber may ask for more than `info`: a layer that does (0.10.0's
        // `None` trace layer answered "always") makes the registry build every dependency's
        // trace-level span on every request, which no allocation count sees (they are pooled).
        assert!(
            !tracing::span_enabled!(target: "h2::proto::connection", tracing::Level::TRACE),
            "h2's per-request trace spans would be built"
        );
        // The level every line is first compared with (one atomic load, no callsite asked):
        // at the default `info`, every dependency's per-frame `trace!` and `debug!` stops
        // there.
        assert_eq!(
            tracing::level_filters::LevelFilter::current(),
            tracing::level_filters::LevelFilter::INFO,
            "the subscriber gives no level hint: each dependency line asks its callsite"
        );
        // Our own debug lines on the Check's path (a swap logged at debug) are off at `info`
        // for good: a callsite the subscriber answers "sometimes" asks every layer's filter
        // again on each Check, for a line nobody prints.
        assert!(
            own_debug_interest().is_never(),
            "our debug lines are re-filtered on every Check: {:?}",
            own_debug_interest()
        );
        let h = crate::support::Harness::start().await;
        let token = h.user_token();
        for _ in 0..200 {
            crate::support::minted(&h.check_bearer(&token).await);
        }
        const CHECKS: u64 = 1000;
        let before = COUNTING.allocations();
        for _ in 0..CHECKS {
            crate::support::minted(&h.check_bearer(&token).await);
        }
        (COUNTING.allocations() - before) / CHECKS
    })
}

/// What the installed subscriber answers, once and for all, for a debug line of this crate.
fn own_debug_interest() -> tracing::subscriber::Interest {
    let callsite = tracing::callsite! {
        name: "credential swapped",
        kind: tracing::metadata::Kind::EVENT,
        target: "evs_token_vending::decision",
        level: tracing::Level::DEBUG,
        fields: []
    };
    tracing::dispatcher::get_default(|dispatch| {
        dispatch.register_callsite(tracing::callsite::Callsite::metadata(callsite))
    })
}

#[test]
fn a_cached_check_allocates_within_its_budget_under_the_serve_subscriber() {
    set_env(&[
        ("RUST_LOG", None),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", None),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None),
    ]);
    let per_check = allocations_per_cached_check(false);
    println!("allocations per cached Check (client and server): {per_check}");
    assert!(
        per_check <= BUDGET_PER_CHECK,
        "a cached Check allocates {per_check} times, over its budget of {BUDGET_PER_CHECK}: \
         something now works on every Check (a span, a log field, a record nobody reads)"
    );
}

/// With traces exported but this Check not sampled, the sampler is asked first and no span
/// is built: the OpenTelemetry layer allocates for every span it sees (its attributes, its
/// builder), so one built for nothing shows here.
#[test]
fn an_unsampled_check_costs_what_an_untraced_one_does() {
    set_env(&[
        ("RUST_LOG", None),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", None),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None),
        ("OTEL_TRACES_SAMPLER", Some("traceidratio")),
        ("OTEL_TRACES_SAMPLER_ARG", Some("0")),
    ]);
    let per_check = allocations_per_cached_check(true);
    println!("allocations per unsampled cached Check (client and server): {per_check}");
    assert!(
        per_check <= BUDGET_PER_CHECK,
        "an unsampled Check allocates {per_check} times, over the untraced budget of \
         {BUDGET_PER_CHECK}: spans are built before sampling is decided"
    );
}
