//! The cache in front of a remote grants store.
//!
//! Found grants are reused for `ttl`, "no such subject" for `negative_ttl`. Each subject has a
//! slot with at most one store call in flight: concurrent look-ups of one subject share it, and
//! while it runs, whoever can be answered from the last known grants is answered at once. When
//! the store fails, the slot backs off (200 ms, doubling to 5 s) instead of calling again per
//! request, and the last known answer keeps serving for up to `stale_for` past its freshness,
//! counted in a metric and logged once per interval; beyond that the look-up fails (503),
//! never quietly empty. The file source needs none of this: it is already in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use moka::future::Cache;
use tracing::Instrument;

use super::GrantsCacheConfig;
use super::{GrantSource, Grants, GrantsError, LookupFuture};
use crate::telemetry::Metrics;

/// First wait after a failed store call; doubles per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between store calls for one subject while the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A store call gives up this long before the Check's deadline, so a hanging store still
/// leaves time to answer from the last known grants instead of timing the Check out.
const STALE_ANSWER_MARGIN: Duration = Duration::from_millis(20);
/// At most one "serving stale grants" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The last answer the store gave for a subject.
struct Known {
    /// `None`: the store has no entry for the subject.
    grants: Option<Arc<Grants>>,
    fetched_at: Instant,
}

/// One subject's cache state.
#[derive(Default)]
struct Slot {
    known: ArcSwapOption<Known>,
    /// Held while a store call for this subject runs.
    flight: tokio::sync::Mutex<()>,
    /// No store call before this instant (after failures).
    retry_at: std::sync::Mutex<Option<Instant>>,
    failures: AtomicU32,
}

impl Slot {
    fn backing_off(&self) -> bool {
        self.retry_at
            .lock()
            .map(|at| at.is_some_and(|at| Instant::now() < at))
            .unwrap_or(false)
    }

    fn failed(&self) {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel).min(16);
        let wait = FIRST_BACKOFF.saturating_mul(1 << failures).min(MAX_BACKOFF);
        if let Ok(mut at) = self.retry_at.lock() {
            *at = Some(Instant::now() + wait);
        }
    }

    fn succeeded(&self, grants: Option<Arc<Grants>>) {
        self.known.store(Some(Arc::new(Known {
            grants,
            fetched_at: Instant::now(),
        })));
        self.failures.store(0, Ordering::Release);
        if let Ok(mut at) = self.retry_at.lock() {
            *at = None;
        }
    }
}

/// A caching [`GrantSource`] wrapping another.
pub struct CachedGrants<S> {
    store: S,
    slots: Cache<String, Arc<Slot>>,
    ttl: Duration,
    negative_ttl: Duration,
    stale_for: Duration,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Milliseconds after `started` of the last stale warning, and how many were held back.
    last_warned_ms: AtomicU64,
    unwarned: AtomicU64,
}

impl<S: GrantSource> CachedGrants<S> {
    /// Wraps `store` with the cache `config` describes.
    pub fn new(store: S, config: &GrantsCacheConfig, metrics: Arc<Metrics>) -> Self {
        let keep = config.ttl.max(config.negative_ttl) + config.stale_for;
        Self {
            store,
            slots: Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_idle(keep)
                .eviction_listener({
                    let metrics = metrics.clone();
                    move |_, _, cause| {
                        if cause == moka::notification::RemovalCause::Size {
                            metrics.grants_cache_eviction();
                        }
                    }
                })
                .build(),
            ttl: config.ttl,
            negative_ttl: config.negative_ttl,
            stale_for: config.stale_for,
            metrics,
            started: Instant::now(),
            last_warned_ms: AtomicU64::new(0),
            unwarned: AtomicU64::new(0),
        }
    }

    fn fresh_for(&self, known: &Known) -> Duration {
        if known.grants.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        }
    }

    fn is_fresh(&self, known: &Known) -> bool {
        known.fetched_at.elapsed() < self.fresh_for(known)
    }

    fn is_servable_stale(&self, known: &Known) -> bool {
        known.fetched_at.elapsed() < self.fresh_for(known) + self.stale_for
    }

    async fn lookup_cached(
        &self,
        key: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<Grants>>, GrantsError> {
        let slot = self
            .slots
            .get_with_by_ref(key, async { Arc::new(Slot::default()) })
            .await;
        let known = slot.known.load_full();
        if let Some(known) = known.as_ref().filter(|k| self.is_fresh(k)) {
            self.metrics.grants_cache_hit();
            return Ok(known.grants.clone());
        }
        self.metrics.grants_cache_miss();
        let stale = known.filter(|k| self.is_servable_stale(k));
        // Someone is already asking the store, or it failed a moment ago: the last known
        // answer serves now, without queueing behind the call.
        if let Some(stale) = &stale
            && (slot.backing_off() || slot.flight.try_lock().is_err())
        {
            return Ok(self.serve_stale(key, stale));
        }
        let flight = tokio::time::timeout_at(deadline.into(), slot.flight.lock())
            .await
            .map_err(|_| GrantsError::Unavailable)?;
        // Whoever held the flight before us may have answered already.
        if let Some(known) = slot.known.load_full().filter(|k| self.is_fresh(k)) {
            self.metrics.grants_cache_hit();
            return Ok(known.grants.clone());
        }
        if slot.backing_off() {
            drop(flight);
            return match &stale {
                Some(stale) => Ok(self.serve_stale(key, stale)),
                None => Err(GrantsError::Unavailable),
            };
        }
        let store_deadline = deadline
            .checked_sub(STALE_ANSWER_MARGIN)
            .unwrap_or(deadline);
        let asked = Instant::now();
        let answer = tokio::time::timeout_at(
            store_deadline.into(),
            self.store
                .lookup(key, store_deadline)
                .instrument(tracing::info_span!("grants.store")),
        )
        .await
        .unwrap_or_else(|_| {
            tracing::warn!("grants store call ran past the Check's deadline");
            Err(GrantsError::Unavailable)
        });
        match answer {
            Ok(grants) => {
                self.metrics
                    .grants_store_answer(grants.is_some(), asked.elapsed());
                slot.succeeded(grants.clone());
                Ok(grants)
            }
            Err(GrantsError::Unavailable) => {
                self.metrics.grants_store_error(asked.elapsed());
                slot.failed();
                match &stale {
                    Some(stale) => Ok(self.serve_stale(key, stale)),
                    None => Err(GrantsError::Unavailable),
                }
            }
            Err(other) => Err(other),
        }
    }

    /// Answers from the last known grants, counted, warned about at most once an interval.
    fn serve_stale(&self, key: &str, stale: &Known) -> Option<Arc<Grants>> {
        self.metrics.grants_stale_served();
        let now_ms = self.started.elapsed().as_millis() as u64;
        let last = self.last_warned_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= WARN_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_warned_ms
                .compare_exchange(last, now_ms.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let held_back = self.unwarned.swap(0, Ordering::AcqRel);
            tracing::warn!(
                subject = key,
                age_s = stale.fetched_at.elapsed().as_secs(),
                held_back,
                "grants store unavailable; serving the last known grants"
            );
        } else {
            self.unwarned.fetch_add(1, Ordering::Relaxed);
        }
        stale.grants.clone()
    }
}

impl<S> CachedGrants<S> {
    /// The store behind the cache.
    pub(crate) fn store(&self) -> &S {
        &self.store
    }
}

impl<S: GrantSource> GrantSource for CachedGrants<S> {
    fn lookup<'a>(&'a self, key: &'a str, deadline: Instant) -> LookupFuture<'a> {
        Box::pin(self.lookup_cached(key, deadline))
    }

    fn label(&self) -> String {
        format!("{} (cached)", self.store.label())
    }

    fn cached_entries(&self) -> Option<u64> {
        Some(self.slots.entry_count())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;

    /// A store that counts its calls, knows one subject, and can be made to fail at once
    /// (`down`) or to hang until the caller's deadline (`hanging`).
    #[derive(Default)]
    struct CountingStore {
        calls: AtomicUsize,
        down: AtomicBool,
        hanging: AtomicBool,
    }

    impl GrantSource for Arc<CountingStore> {
        fn lookup<'a>(&'a self, key: &'a str, deadline: Instant) -> LookupFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if self.hanging.load(Ordering::SeqCst) {
                    tokio::time::sleep_until(deadline.into()).await;
                    return Err(GrantsError::Unavailable);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                if self.down.load(Ordering::SeqCst) {
                    return Err(GrantsError::Unavailable);
                }
                Ok((key == "alice").then(|| Arc::new(Grants::default())))
            })
        }

        fn label(&self) -> String {
            "counting".into()
        }
    }

    fn cache(ttl_ms: u64, stale_ms: u64) -> (Arc<CountingStore>, CachedGrants<Arc<CountingStore>>) {
        let store = Arc::new(CountingStore::default());
        let config = GrantsCacheConfig {
            ttl: Duration::from_millis(ttl_ms),
            negative_ttl: Duration::from_millis(ttl_ms),
            max_entries: 100,
            stale_for: Duration::from_millis(stale_ms),
        };
        let cached = CachedGrants::new(store.clone(), &config, Arc::default());
        (store, cached)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(1)
    }

    #[tokio::test]
    async fn subjects_evicted_for_room_are_counted_and_the_size_is_bounded() {
        let store = Arc::new(CountingStore::default());
        let config = GrantsCacheConfig {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            max_entries: 4,
            stale_for: Duration::from_secs(60),
        };
        let metrics = Arc::new(Metrics::default());
        let cached = CachedGrants::new(store, &config, metrics.clone());
        for subject in 0..40 {
            let _ = cached.lookup(&format!("user-{subject}"), soon()).await;
        }
        cached.slots.run_pending_tasks().await;
        assert!(cached.cached_entries().unwrap() <= 4);
        let text = metrics.render(&Default::default());
        let evicted: u64 = text
            .lines()
            .find_map(|line| line.strip_prefix("evs_tv_grants_cache_evictions_total "))
            .and_then(|n| n.parse().ok())
            .expect("the eviction counter");
        assert!(evicted >= 30, "{evicted} evictions counted");
        assert!(
            text.contains("evs_tv_grants_cache_misses_total 40\n"),
            "every first look-up is a miss: {text}"
        );
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_subject_make_one_store_call() {
        let (store, cached) = cache(60_000, 60_000);
        let answers =
            futures_util::future::join_all((0..16).map(|_| cached.lookup("alice", soon()))).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(Some(_)))));
        assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unknown_subject_is_remembered_for_the_negative_ttl() {
        let (store, cached) = cache(60_000, 60_000);
        assert_eq!(cached.lookup("bob", soon()).await, Ok(None));
        assert_eq!(cached.lookup("bob", soon()).await, Ok(None));
        assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failing_store_is_covered_by_stale_grants_until_the_stale_window_ends() {
        let (store, cached) = cache(50, 200);
        assert!(matches!(cached.lookup("alice", soon()).await, Ok(Some(_))));
        store.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            matches!(cached.lookup("alice", soon()).await, Ok(Some(_))),
            "stale grants serve while the store is down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            cached.lookup("alice", soon()).await,
            Err(GrantsError::Unavailable)
        );
    }

    #[tokio::test]
    async fn a_busy_cached_subject_gets_stale_grants_at_once_while_the_store_hangs() {
        let (store, cached) = cache(50, 60_000);
        assert!(matches!(cached.lookup("alice", soon()).await, Ok(Some(_))));
        store.hanging.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let answers = futures_util::future::join_all(
            (0..32).map(|_| cached.lookup("alice", Instant::now() + Duration::from_millis(300))),
        )
        .await;
        assert!(
            answers.iter().all(|a| matches!(a, Ok(Some(_)))),
            "no 503 within the stale window"
        );
        assert_eq!(
            store.calls.load(Ordering::SeqCst),
            2,
            "one call for the 32 look-ups"
        );
        // Right after the failure the store is left alone (backoff), and stale grants serve.
        assert!(matches!(cached.lookup("alice", soon()).await, Ok(Some(_))));
        assert_eq!(
            store.calls.load(Ordering::SeqCst),
            2,
            "no call during the backoff"
        );
    }

    #[tokio::test]
    async fn concurrent_misses_during_an_outage_make_one_store_call() {
        let (store, cached) = cache(60_000, 60_000);
        store.down.store(true, Ordering::SeqCst);
        let answers =
            futures_util::future::join_all((0..16).map(|_| cached.lookup("alice", soon()))).await;
        assert!(answers.iter().all(|a| *a == Err(GrantsError::Unavailable)));
        assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    }
}
