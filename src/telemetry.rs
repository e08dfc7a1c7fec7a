//! Logs and metrics.
//!
//! Logs go to stderr through `tracing` (level from `RUST_LOG`, default `info`); nothing logged
//! anywhere in the crate carries a token, a key or a certificate. Dependencies are held to
//! `info` whatever `RUST_LOG` says: at `debug` and `trace` the AWS SDK writes canonical
//! requests with session tokens, and HTTP stacks dump headers. Metrics are plain atomic
//! counters rendered in the Prometheus text format on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Installs the stderr log subscriber at `default_level` unless `RUST_LOG` says otherwise.
/// `json` switches to one JSON object per line.
pub fn init_logging(json: bool, default_level: &str) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let requested = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: a log file or collector gets plain `key=value` text.
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let output = if json {
        output.json().boxed()
    } else {
        output.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(requested)
        .with(output.with_filter(tracing_subscriber::filter::filter_fn(safe_to_log)))
        .try_init();
}

/// Our own events at any level; a dependency's only up to `info`.
fn safe_to_log(event: &tracing::Metadata<'_>) -> bool {
    event.target().starts_with(env!("CARGO_CRATE_NAME")) || *event.level() <= tracing::Level::INFO
}

/// How a Check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A token was minted.
    Ok,
    /// 401.
    Unauthenticated,
    /// 403.
    Forbidden,
    /// 503.
    Unavailable,
}

impl Outcome {
    /// The label `/metrics` and the decision log use.
    pub fn label(self) -> &'static str {
        OUTCOMES
            .iter()
            .find(|(o, _)| *o == self)
            .map_or("ok", |(_, label)| label)
    }
}

const OUTCOMES: [(Outcome, &str); 4] = [
    (Outcome::Ok, "ok"),
    (Outcome::Unauthenticated, "unauthenticated"),
    (Outcome::Forbidden, "forbidden"),
    (Outcome::Unavailable, "unavailable"),
];

/// Counters, shared by every request; lock-free.
#[derive(Debug, Default)]
pub struct Metrics {
    checks: [AtomicU64; 4],
    grants_cache_hits: AtomicU64,
    grants_store_found: AtomicU64,
    grants_store_not_found: AtomicU64,
    grants_store_errors: AtomicU64,
    grants_stale_served: AtomicU64,
    token_cache_hits: AtomicU64,
    token_cache_misses: AtomicU64,
    token_cache_refreshes: AtomicU64,
    token_cache_evictions: AtomicU64,
    grants_file_reloads_refused: AtomicU64,
    decision_log_dropped: AtomicU64,
    /// `/exchange` answers by (grant type, outcome); both labels are fixed texts of ours.
    exchanges: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    /// Counts one Check.
    pub fn count(&self, outcome: Outcome) {
        let index = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        self.checks[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refused change of the grants file.
    pub fn grants_file_reload_refused(&self) {
        self.grants_file_reloads_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one `/exchange` answer: `outcome` is `ok`, `busy` or the OAuth error code.
    pub fn count_exchange(&self, grant_type: &'static str, outcome: &'static str) {
        if let Ok(mut exchanges) = self.exchanges.lock() {
            *exchanges.entry((grant_type, outcome)).or_default() += 1;
        }
    }

    /// How many Checks ended with `outcome`.
    pub fn checks(&self, outcome: Outcome) -> u64 {
        let index = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        self.checks[index].load(Ordering::Relaxed)
    }

    /// A grants look-up answered from the cache.
    pub fn grants_cache_hit(&self) {
        self.grants_cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// The grants store answered (found or not).
    pub fn grants_store_answer(&self, found: bool) {
        let counter = if found {
            &self.grants_store_found
        } else {
            &self.grants_store_not_found
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The grants store failed.
    pub fn grants_store_error(&self) {
        self.grants_store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Stale grants were served because the store failed.
    pub fn grants_stale_served(&self) {
        self.grants_stale_served.fetch_add(1, Ordering::Relaxed);
    }

    /// A minted token was served from the cache.
    pub fn token_cache_hit(&self) {
        self.token_cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// No servable cached token: one is signed now.
    pub fn token_cache_miss(&self) {
        self.token_cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// A replacement token is being signed in the background.
    pub fn token_cache_refresh(&self) {
        self.token_cache_refreshes.fetch_add(1, Ordering::Relaxed);
    }

    /// The cache dropped a token to stay within `max_entries`.
    pub fn token_cache_eviction(&self) {
        self.token_cache_evictions.fetch_add(1, Ordering::Relaxed);
    }

    /// A decision-log line was dropped because the writer fell behind.
    pub fn decision_log_dropped(&self) {
        self.decision_log_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# HELP evs_tv_checks_total ext_authz Check calls answered, by outcome.\n\
             # TYPE evs_tv_checks_total counter\n",
        );
        for (outcome, label) in OUTCOMES {
            text.push_str(&format!(
                "evs_tv_checks_total{{outcome=\"{label}\"}} {}\n",
                self.checks(outcome)
            ));
        }
        let counter = |text: &mut String, name: &str, help: &str, rows: &[(&str, &AtomicU64)]| {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (labels, value) in rows {
                text.push_str(&format!(
                    "{name}{labels} {}\n",
                    value.load(Ordering::Relaxed)
                ));
            }
        };
        counter(
            &mut text,
            "evs_tv_grants_store_requests_total",
            "Look-ups that reached the grants store, by result.",
            &[
                ("{result=\"found\"}", &self.grants_store_found),
                ("{result=\"not_found\"}", &self.grants_store_not_found),
                ("{result=\"error\"}", &self.grants_store_errors),
            ],
        );
        counter(
            &mut text,
            "evs_tv_grants_cache_hits_total",
            "Grants look-ups answered by the cache.",
            &[("", &self.grants_cache_hits)],
        );
        counter(
            &mut text,
            "evs_tv_token_cache_total",
            "Minted-token cache events: hits, misses (signed now), background refreshes, evictions.",
            &[
                ("{event=\"hit\"}", &self.token_cache_hits),
                ("{event=\"miss\"}", &self.token_cache_misses),
                ("{event=\"refresh\"}", &self.token_cache_refreshes),
                ("{event=\"eviction\"}", &self.token_cache_evictions),
            ],
        );
        counter(
            &mut text,
            "evs_tv_grants_stale_served_total",
            "Look-ups answered with stale grants because the store failed.",
            &[("", &self.grants_stale_served)],
        );
        counter(
            &mut text,
            "evs_tv_grants_file_reloads_refused_total",
            "Changes of the grants file refused (unparsable, empty, vanished); the last good grants serve.",
            &[("", &self.grants_file_reloads_refused)],
        );
        counter(
            &mut text,
            "evs_tv_decision_log_dropped_total",
            "Decision-log lines dropped because the writer fell behind.",
            &[("", &self.decision_log_dropped)],
        );
        text.push_str(
            "# HELP evs_tv_exchanges_total /exchange answers, by grant type and outcome (ok, busy, or the OAuth error).\n\
             # TYPE evs_tv_exchanges_total counter\n",
        );
        if let Ok(exchanges) = self.exchanges.lock() {
            for ((grant_type, outcome), count) in exchanges.iter() {
                text.push_str(&format!(
                    "evs_tv_exchanges_total{{grant_type=\"{grant_type}\",outcome=\"{outcome}\"}} {count}\n"
                ));
            }
        }
        text
    }
}
