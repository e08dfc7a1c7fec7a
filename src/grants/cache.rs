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

use super::{GrantSource, Grants, GrantsError, LookupFuture};
use crate::config::GrantsCacheConfig;
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
        let keep = config.ttl.0.max(config.negative_ttl.0) + config.stale_for.0;
        Self {
            store,
            cache: Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(keep)
                .build(),
            ttl: config.ttl.0,
            negative_ttl: config.negative_ttl.0,
            stale_for: config.stale_for.0,
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
