//! The crate's seconds histogram (every duration metric uses it), observed with atomic adds
//! and no lock.
//!
//! `prometheus-client`'s own histogram takes a mutex on every observation; a Check observes
//! up to five histograms, and with two workers answering Checks at once those mutexes were
//! contended on every request (docs/benchmarks.md, "What each feature costs"). This one keeps a
//! count per bucket and the sum (in nanoseconds) in atomics — the total count is the buckets'
//! sum, worked out when scraped — and finds the bucket with integer arithmetic. Its buckets are the crate's usual ones — 50 µs doubling to ~0.8 s,
//! then `+Inf` — and it encodes exactly as `prometheus-client`'s histogram does, so a
//! dashboard cannot tell them apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// The first bucket's upper bound, in nanoseconds.
const FIRST_BOUND_NANOS: u64 = 50_000;
/// Bounded buckets (each twice the one before), then `+Inf`.
const BOUNDED: usize = 15;

/// A histogram of durations; clones share their counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct SecondsHistogram(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// Per bucket, not cumulative; the last is `+Inf`.
    buckets: [AtomicU64; BOUNDED + 1],
    sum_nanos: AtomicU64,
}

/// The bucket `nanos` falls in: the first whose bound (50 µs · 2^i) is at least `nanos`.
fn bucket_of(nanos: u64) -> usize {
    let over = nanos.saturating_sub(1) / FIRST_BOUND_NANOS;
    ((u64::BITS - over.leading_zeros()) as usize).min(BOUNDED)
}

/// The upper bounds in seconds, as `prometheus_client::metrics::histogram::exponential_buckets`
/// computes them (so the `le` labels are the same text as before).
fn bounds() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(
        FIRST_BOUND_NANOS as f64 * 1e-9,
        2.0,
        BOUNDED as u16,
    )
    .chain(std::iter::once(f64::INFINITY))
}

impl SecondsHistogram {
    /// Counts one observation of `elapsed`.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let counts = &self.0;
        counts.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        counts.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for SecondsHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SecondsHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        let buckets: Vec<(f64, u64)> = bounds()
            .zip(&counts.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total, so a scrape during an observation stays consistent.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = counts.sum_nanos.load(Ordering::Relaxed) as f64 * 1e-9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_holds_it() {
        let micros = |n: u64| bucket_of(n * 1_000);
        assert_eq!(bucket_of(0), 0);
        assert_eq!(micros(50), 0);
        assert_eq!(bucket_of(50_001), 1);
        assert_eq!(micros(100), 1);
        assert_eq!(micros(150), 2);
        assert_eq!(micros(200), 2);
        assert_eq!(bucket_of(200_001), 3);
        // 50 µs · 2^14 ≈ 0.82 s is the last bound; beyond it, +Inf.
        assert_eq!(micros(50 << 14), 14);
        assert_eq!(bucket_of((50_000 << 14) + 1), 15);
        assert_eq!(bucket_of(u64::MAX), 15);
    }

    #[test]
    fn it_encodes_like_the_prometheus_client_histogram_it_replaced() {
        use prometheus_client::metrics::histogram::Histogram;
        let ours = SecondsHistogram::default();
        let theirs = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            50e-6, 2.0, 15,
        ));
        for micros in [3, 50, 75, 100, 4_000, 900_000, 2_000_000] {
            ours.observe(Duration::from_micros(micros));
            theirs.observe(micros as f64 * 1e-6);
        }
        fn text(metric: impl prometheus_client::registry::Metric) -> String {
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register("d", "d", metric);
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
            out
        }
        let (ours, theirs) = (text(ours), text(theirs));
        // The sums differ in the last digits (nanoseconds against f64 seconds); all else is equal.
        let without_sum = |text: &str| {
            text.lines()
                .filter(|line| !line.starts_with("d_sum"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(without_sum(&ours), without_sum(&theirs));
        assert!(ours.contains("d_sum 2.904228"), "{ours}");
        assert!(ours.contains("d_bucket{le=\"0.0001\"} 4"), "{ours}");
    }
}
