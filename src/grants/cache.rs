//! The cache in front of a remote grants store.
//!
//! Found grants are reused for `ttl`, "no such subject" for `negative_ttl`. Concurrent look-ups
//! of one subject share one store call (moka's per-key compute: the first caller fetches, the
//! others find its fresh entry). When the store fails, the last known answer keeps serving for
//! up to `stale_for` past its freshness, counted in a metric; beyond that the look-up fails
//! (503), never quietly empty. The file source needs none of this: it is already in memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};

use super::GrantsCacheConfig;
use super::{GrantSource, Grants, GrantsError, LookupFuture};
use crate::telemetry::Metrics;

/// One cached answer.
#[derive(Clone)]
struct Cached {
    /// `None`: the store has no entry for the subject.
    grants: Option<Arc<Grants>>,
    fetched_at: Instant,
}

/// A caching [`GrantSource`] wrapping another.
pub struct CachedGrants<S> {
    store: S,
    cache: Cache<String, Cached>,
    ttl: Duration,
    negative_ttl: Duration,
    stale_for: Duration,
    metrics: Arc<Metrics>,
}

impl<S: GrantSource> CachedGrants<S> {
    /// Wraps `store` with the cache `config` describes.
    pub fn new(store: S, config: &GrantsCacheConfig, metrics: Arc<Metrics>) -> Self {
        let keep = config.ttl.max(config.negative_ttl) + config.stale_for;
        Self {
            store,
            cache: Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(keep)
                .build(),
            ttl: config.ttl,
            negative_ttl: config.negative_ttl,
            stale_for: config.stale_for,
            metrics,
        }
    }

    fn fresh_for(&self, cached: &Cached) -> Duration {
        if cached.grants.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        }
    }

    fn is_fresh(&self, cached: &Cached) -> bool {
        cached.fetched_at.elapsed() < self.fresh_for(cached)
    }

    fn is_servable_stale(&self, cached: &Cached) -> bool {
        cached.fetched_at.elapsed() < self.fresh_for(cached) + self.stale_for
    }

    async fn lookup_cached(
        &self,
        key: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<Grants>>, GrantsError> {
        if let Some(cached) = self.cache.get(key).await
            && self.is_fresh(&cached)
        {
            self.metrics.grants_cache_hit();
            return Ok(cached.grants);
        }
        let mut stale = None;
        let outcome = self
            .cache
            .entry(key.to_owned())
            .and_try_compute_with(|existing| {
                // Whoever held the key's lock before us may have refreshed it already.
                let existing = existing.map(|e| e.into_value());
                let fresh = existing.as_ref().filter(|c| self.is_fresh(c)).cloned();
                stale = existing;
                async move {
                    if fresh.is_some() {
                        return Ok(Op::Nop);
                    }
                    let grants = self.store.lookup(key, deadline).await?;
                    self.metrics.grants_store_answer(grants.is_some());
                    Ok(Op::Put(Cached {
                        grants,
                        fetched_at: Instant::now(),
                    }))
                }
            })
            .await;
        match outcome {
            Ok(CompResult::Inserted(entry) | CompResult::ReplacedWith(entry)) => {
                Ok(entry.into_value().grants)
            }
            Ok(CompResult::Unchanged(entry)) => {
                self.metrics.grants_cache_hit();
                Ok(entry.into_value().grants)
            }
            Ok(CompResult::StillNone(_) | CompResult::Removed(_)) => Err(GrantsError::Unavailable),
            Err(GrantsError::Unavailable) => {
                self.metrics.grants_store_error();
                match stale.filter(|c| self.is_servable_stale(c)) {
                    Some(cached) => {
                        self.metrics.grants_stale_served();
                        tracing::warn!(
                            subject = key,
                            age_s = cached.fetched_at.elapsed().as_secs(),
                            "grants store unavailable; serving the last known grants"
                        );
                        Ok(cached.grants)
                    }
                    None => Err(GrantsError::Unavailable),
                }
            }
            Err(other) => Err(other),
        }
    }
}

impl<S: GrantSource> GrantSource for CachedGrants<S> {
    fn lookup<'a>(&'a self, key: &'a str, deadline: Instant) -> LookupFuture<'a> {
        Box::pin(self.lookup_cached(key, deadline))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// A store that counts its calls, knows one subject, and can be made to fail.
    #[derive(Default)]
    struct CountingStore {
        calls: AtomicUsize,
        down: AtomicBool,
    }

    impl GrantSource for Arc<CountingStore> {
        fn lookup<'a>(&'a self, key: &'a str, _deadline: Instant) -> LookupFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                if self.down.load(Ordering::SeqCst) {
                    return Err(GrantsError::Unavailable);
                }
                Ok((key == "alice").then(|| Arc::new(Grants::default())))
            })
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
}
