//! Logs and metrics.
//!
//! Logs go to stderr through `tracing` (level from `RUST_LOG`, default `info`); nothing logged
//! anywhere in the crate carries a token, a key or a certificate. Metrics are plain atomic
//! counters rendered in the Prometheus text format on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Installs the stderr log subscriber at `default_level` unless `RUST_LOG` says otherwise.
/// `json` switches to one JSON object per line.
pub fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
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

    /// How many Checks ended with `outcome`.
    pub fn checks(&self, outcome: Outcome) -> u64 {
        let index = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        self.checks[index].load(Ordering::Relaxed)
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
        text
    }
}
