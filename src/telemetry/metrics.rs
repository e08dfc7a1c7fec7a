//! `/metrics`: what every Check, cache and fetch did, on `prometheus-client`.
//!
//! Counters and histograms live in one [`Registry`] built at start-up and updated lock-free on
//! the request path. What is a state rather than an event — key ring, issuer keys' age, cache
//! sizes, the process itself — is read when Prometheus scrapes ([`Live`]). Every label value is
//! a fixed text of ours or a configured issuer: never a subject, a request id or a token.
//! Histogram buckets suit a sub-millisecond service: 50 µs doubling to ~0.8 s.

use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use super::histogram::SecondsHistogram;
use super::{Outcome, process};
use crate::stage_times::StageTimes;

/// One label: its name and a value from a fixed set.
type Label = [(&'static str, &'static str); 1];
/// Two labels.
type Labels = [(&'static str, &'static str); 2];

/// Seconds histograms by label set, all with [`SecondsHistogram`]'s buckets.
type Histograms<L> = Family<L, SecondsHistogram>;

const OUTCOMES: [Outcome; 4] = [
    Outcome::Ok,
    Outcome::Unauthenticated,
    Outcome::Forbidden,
    Outcome::Unavailable,
];
const STAGES: [&str; 4] = ["extract", "authenticate", "grants", "mint"];
const TOKEN_CACHE_EVENTS: [&str; 4] = ["hit", "miss", "refresh", "eviction"];

/// The series of `family` for each of `values` of label `name`, resolved once so the request
/// path touches no map or lock to find them.
fn series<M: Clone, C: prometheus_client::metrics::family::MetricConstructor<M>>(
    family: &Family<Label, M, C>,
    name: &'static str,
    values: [&'static str; 4],
) -> [M; 4] {
    values.map(|value| family.get_or_create(&[(name, value)]).clone())
}

/// Every counter and histogram, shared by every request.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// By [`OUTCOMES`].
    checks: [Counter; 4],
    /// By [`OUTCOMES`].
    check_seconds: [SecondsHistogram; 4],
    /// By [`STAGES`]; `None` with `telemetry.stage_metrics: false`.
    stage_seconds: Option<[SecondsHistogram; 4]>,
    /// By [`TOKEN_CACHE_EVENTS`].
    token_cache: [Counter; 4],
    grants_store: Family<Label, Counter>,
    grants_store_seconds: Histograms<Label>,
    grants_cache_hits: Counter,
    grants_cache_misses: Counter,
    grants_cache_evictions: Counter,
    grants_stale_served: Counter,
    grants_file_reloads_refused: Counter,
    key_fetches: Family<Labels, Counter>,
    key_fetch_seconds: Histograms<Labels>,
    exchanges: Family<Labels, Counter>,
    decision_log_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Metrics {
    /// Every metric; the per-stage histograms only with `stage_metrics`
    /// (`telemetry.stage_metrics`).
    pub fn new(stage_metrics: bool) -> Self {
        let mut registry = Registry::default();
        let outcomes = OUTCOMES.map(Outcome::label);
        let checks = Family::<Label, Counter>::default();
        let check_seconds = Histograms::<Label>::default();
        let stage_seconds = Histograms::<Label>::default();
        let token_cache = Family::<Label, Counter>::default();
        let metrics = Self {
            registry: Registry::default(),
            checks: series(&checks, "outcome", outcomes),
            check_seconds: series(&check_seconds, "outcome", outcomes),
            stage_seconds: stage_metrics.then(|| series(&stage_seconds, "stage", STAGES)),
            token_cache: series(&token_cache, "event", TOKEN_CACHE_EVENTS),
            grants_store: Family::default(),
            grants_store_seconds: Histograms::default(),
            grants_cache_hits: Counter::default(),
            grants_cache_misses: Counter::default(),
            grants_cache_evictions: Counter::default(),
            grants_stale_served: Counter::default(),
            grants_file_reloads_refused: Counter::default(),
            key_fetches: Family::default(),
            key_fetch_seconds: Histograms::default(),
            exchanges: Family::default(),
            decision_log_dropped: Counter::default(),
        };
        let r = &mut registry;
        r.register(
            "evs_tv_checks",
            "ext_authz Check calls answered, by outcome",
            checks,
        );
        r.register_with_unit(
            "evs_tv_check_duration",
            "Time from a Check's arrival to its answer, by outcome",
            Unit::Seconds,
            check_seconds,
        );
        if stage_metrics {
            r.register_with_unit(
                "evs_tv_stage_duration",
                "Time of each stage of a swap: extract, authenticate, grants, mint",
                Unit::Seconds,
                stage_seconds,
            );
        }
        r.register(
            "evs_tv_grants_store_requests",
            "Look-ups that reached the grants store, by result",
            metrics.grants_store.clone(),
        );
        r.register_with_unit(
            "evs_tv_grants_store_duration",
            "Time of look-ups that reached the grants store, by result",
            Unit::Seconds,
            metrics.grants_store_seconds.clone(),
        );
        r.register(
            "evs_tv_grants_cache_hits",
            "Grants look-ups answered by the cache",
            metrics.grants_cache_hits.clone(),
        );
        r.register(
            "evs_tv_grants_cache_misses",
            "Grants look-ups that found no fresh entry on arrival (then served stale, or asked the store, or waited for the look-up already asking it)",
            metrics.grants_cache_misses.clone(),
        );
        r.register(
            "evs_tv_grants_cache_evictions",
            "Subjects dropped from the grants cache to stay within max_entries",
            metrics.grants_cache_evictions.clone(),
        );
        r.register(
            "evs_tv_grants_stale_served",
            "Look-ups answered with stale grants because the store failed",
            metrics.grants_stale_served.clone(),
        );
        r.register(
            "evs_tv_grants_file_reloads_refused",
            "Changes of the grants file or of grant rules refused (unparsable, empty, vanished); the last good ones serve",
            metrics.grants_file_reloads_refused.clone(),
        );
        r.register(
            "evs_tv_token_cache",
            "Minted-token cache events: hits, misses (signed now), background refreshes, evictions",
            token_cache,
        );
        r.register(
            "evs_tv_key_fetches",
            "Fetches of trusted issuers' keys (jwks) and STS calls (sts), by result",
            metrics.key_fetches.clone(),
        );
        r.register_with_unit(
            "evs_tv_key_fetch_duration",
            "Time of fetches of issuers' keys and of STS calls, by result",
            Unit::Seconds,
            metrics.key_fetch_seconds.clone(),
        );
        r.register(
            "evs_tv_exchanges",
            "/exchange answers, by grant type and outcome (ok, busy, or the OAuth error)",
            metrics.exchanges.clone(),
        );
        r.register(
            "evs_tv_decision_log_dropped",
            "Decision-log lines dropped because the writer fell behind",
            metrics.decision_log_dropped.clone(),
        );
        let build_info = Family::<Label, Gauge>::default();
        build_info
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        r.register(
            "evs_tv_build_info",
            "The running release (always 1)",
            build_info,
        );
        // Series a dashboard or alert reads exist from the start, at zero.
        for result in ["found", "not_found", "error"] {
            let result = [("result", result)];
            let _ = metrics.grants_store.get_or_create(&result);
            let _ = metrics.grants_store_seconds.get_or_create(&result);
        }
        for labels in [
            ("jwks", "ok"),
            ("jwks", "error"),
            ("sts", "ok"),
            ("sts", "error"),
            ("sts", "throttled"),
        ] {
            let labels = [("kind", labels.0), ("result", labels.1)];
            let _ = metrics.key_fetches.get_or_create(&labels);
            let _ = metrics.key_fetch_seconds.get_or_create(&labels);
        }
        Self {
            registry,
            ..metrics
        }
    }
}

/// What `/metrics` reads at scrape time: states, not events.
#[derive(Debug, Default)]
pub struct Live {
    /// Keys in the published JWKS.
    pub published_keys: usize,
    /// Seconds since the signing key last changed (or since start-up).
    pub active_key_age_seconds: u64,
    /// The last change of the signing keys was refused (the last good keys still sign).
    pub key_ring_reload_failing: bool,
    /// Per configured issuer, the age of its fetched keys in seconds; `None` if never fetched.
    pub issuer_keys_age_seconds: Vec<(String, Option<f64>)>,
    /// Minted tokens cached and the bytes they cost, when the cache is on.
    pub token_cache: Option<(usize, usize)>,
    /// Subjects in the grants cache, when a remote store has one.
    pub grants_cache_entries: Option<u64>,
}

impl Metrics {
    /// Counts one Check and its durations: the whole, and each stage it reached.
    pub fn checked(&self, outcome: Outcome, elapsed: Duration, stages: &StageTimes) {
        let index = outcome as usize;
        self.checks[index].inc();
        self.check_seconds[index].observe(elapsed);
        let Some(stage_seconds) = &self.stage_seconds else {
            return;
        };
        let reached = [
            stages.extract,
            stages.authenticate,
            stages.grants,
            stages.mint,
        ];
        for (histogram, time) in stage_seconds.iter().zip(reached) {
            if let Some(time) = time {
                histogram.observe(time.0);
            }
        }
    }

    /// How many Checks ended with `outcome`.
    pub fn checks(&self, outcome: Outcome) -> u64 {
        self.checks[outcome as usize].get()
    }

    /// Counts one refused change of the grants file.
    pub fn grants_file_reload_refused(&self) {
        self.grants_file_reloads_refused.inc();
    }

    /// Counts one `/exchange` answer: `outcome` is `ok`, `busy` or the OAuth error code.
    pub fn count_exchange(&self, grant_type: &'static str, outcome: &'static str) {
        self.exchanges
            .get_or_create(&[("grant_type", grant_type), ("outcome", outcome)])
            .inc();
    }

    /// A grants look-up answered from the cache.
    pub fn grants_cache_hit(&self) {
        self.grants_cache_hits.inc();
    }

    /// The grants store answered (found or not) after `elapsed`.
    pub fn grants_store_answer(&self, found: bool, elapsed: Duration) {
        self.grants_store_result(if found { "found" } else { "not_found" }, elapsed);
    }

    /// The grants store failed after `elapsed`.
    pub fn grants_store_error(&self, elapsed: Duration) {
        self.grants_store_result("error", elapsed);
    }

    fn grants_store_result(&self, result: &'static str, elapsed: Duration) {
        let result = [("result", result)];
        self.grants_store.get_or_create(&result).inc();
        self.grants_store_seconds
            .get_or_create(&result)
            .observe(elapsed);
    }

    /// A grants look-up found no fresh entry.
    pub fn grants_cache_miss(&self) {
        self.grants_cache_misses.inc();
    }

    /// The grants cache dropped a subject to stay within its bound.
    pub fn grants_cache_eviction(&self) {
        self.grants_cache_evictions.inc();
    }

    /// Stale grants were served because the store failed.
    pub fn grants_stale_served(&self) {
        self.grants_stale_served.inc();
    }

    /// A fetch of `kind` (`jwks` or `sts`) ended after `elapsed` with `result` (`ok`,
    /// `error`, or `throttled` for STS).
    pub fn key_fetch(&self, kind: &'static str, result: &'static str, elapsed: Duration) {
        let labels = [("kind", kind), ("result", result)];
        self.key_fetches.get_or_create(&labels).inc();
        self.key_fetch_seconds
            .get_or_create(&labels)
            .observe(elapsed);
    }

    /// A minted token was served from the cache.
    pub fn token_cache_hit(&self) {
        self.token_cache[0].inc();
    }

    /// No servable cached token: one is signed now.
    pub fn token_cache_miss(&self) {
        self.token_cache[1].inc();
    }

    /// A replacement token is being signed in the background.
    pub fn token_cache_refresh(&self) {
        self.token_cache[2].inc();
    }

    /// The cache dropped a live token to stay within its bounds.
    pub fn token_cache_eviction(&self) {
        self.token_cache[3].inc();
    }

    /// A decision-log line was dropped because the writer fell behind.
    pub fn decision_log_dropped(&self) {
        self.decision_log_dropped.inc();
    }

    /// The OpenMetrics text exposition: the counters and histograms, then `live`'s states and
    /// the process's own.
    pub fn render(&self, live: &Live) -> String {
        let mut text = String::new();
        let states = states_registry(live);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, &states))
            .and_then(|()| encode_eof(&mut text));
        text
    }
}

/// A registry of this scrape's states.
fn states_registry(live: &Live) -> Registry {
    let mut r = Registry::default();
    let gauge = |value: i64| ConstGauge::new(value);
    let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    r.register(
        "evs_tv_published_keys",
        "Keys in the JWKS this sidecar publishes",
        gauge(as_i64(live.published_keys)),
    );
    r.register_with_unit(
        "evs_tv_signing_key_age",
        "Seconds since the signing key last changed (or since start-up)",
        Unit::Seconds,
        gauge(i64::try_from(live.active_key_age_seconds).unwrap_or(i64::MAX)),
    );
    r.register(
        "evs_tv_key_ring_reload_failing",
        "1 while the last change of the signing keys is refused and the last good keys sign",
        gauge(i64::from(live.key_ring_reload_failing)),
    );
    let issuers =
        Family::<[(&'static str, String); 1], Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (issuer, age) in &live.issuer_keys_age_seconds {
        // Never fetched: +Inf, so "stale" alerts fire for it too.
        issuers
            .get_or_create(&[("issuer", issuer.clone())])
            .set(age.unwrap_or(f64::INFINITY));
    }
    r.register_with_unit(
        "evs_tv_issuer_keys_age",
        "Seconds since each trusted issuer's keys were last fetched (+Inf: never)",
        Unit::Seconds,
        issuers,
    );
    if let Some((entries, bytes)) = live.token_cache {
        r.register(
            "evs_tv_token_cache_entries",
            "Minted tokens in the cache",
            gauge(as_i64(entries)),
        );
        r.register_with_unit(
            "evs_tv_token_cache_size",
            "What the cached tokens cost (table slots and signatures)",
            Unit::Bytes,
            gauge(as_i64(bytes)),
        );
    }
    if let Some(entries) = live.grants_cache_entries {
        r.register(
            "evs_tv_grants_cache_entries",
            "Subjects in the grants cache",
            gauge(i64::try_from(entries).unwrap_or(i64::MAX)),
        );
    }
    process::register(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage_times::Micros;

    #[test]
    fn a_check_counts_once_and_observes_its_duration_and_stages() {
        let metrics = Metrics::default();
        let stages = StageTimes {
            extract: Some(Micros(Duration::from_micros(3))),
            authenticate: Some(Micros(Duration::from_micros(70))),
            ..Default::default()
        };
        metrics.checked(Outcome::Unauthenticated, Duration::from_micros(90), &stages);
        let text = metrics.render(&Live::default());
        for line in [
            "evs_tv_checks_total{outcome=\"unauthenticated\"} 1\n",
            "evs_tv_check_duration_seconds_count{outcome=\"unauthenticated\"} 1\n",
            "evs_tv_stage_duration_seconds_count{stage=\"authenticate\"} 1\n",
            "evs_tv_build_info{version=\"",
            "# EOF\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(
            text.contains("evs_tv_stage_duration_seconds_count{stage=\"mint\"} 0\n"),
            "a stage not reached is not observed"
        );
        assert_eq!(metrics.checks(Outcome::Unauthenticated), 1);
    }
}
