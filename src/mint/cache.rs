//! Mint once, serve many: minted tokens reused for a repeated credential.
//!
//! The key is SHA-256 over everything the token says or depends on — every identity field that
//! reaches a claim or bounds `exp` (certificate binding included), the inbound credential
//! itself, the canonical grants, the audience and the active `kid` — so new grants, another
//! certificate or a new signing key simply miss. A cached token is served only
//! while more than `min_remaining_percent` of its lifetime is left; ten points before that a
//! replacement is minted in the background (one per entry), so a hot caller never waits for a
//! signature. Concurrent misses of one key share one signature. A key-ring change empties the
//! cache, and every entry remembers the ring it was signed under, so a token is never served
//! after its key left the ring. Since the minted `exp` never exceeds the credential's, neither
//! does a cached token outlive the credential it came from.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};

use super::TokenCacheConfig;
use super::{MintError, MintedToken};
use crate::telemetry::Metrics;

/// SHA-256 of what a token depends on.
pub type TokenKey = [u8; 32];

/// A cached token and whether its replacement is being minted.
struct Cached {
    token: MintedToken,
    /// The key ring generation it was signed under.
    ring_generation: u64,
    refreshing: AtomicBool,
}

/// What a look-up found.
pub enum Found {
    /// Serve it.
    Fresh(MintedToken),
    /// Serve it, and mint its replacement in the background.
    RefreshDue(MintedToken),
    /// Nothing servable.
    Miss,
}

/// The cache of minted tokens.
pub struct TokenCache {
    entries: Cache<TokenKey, Arc<Cached>>,
    /// Serve only above this share of the lifetime left.
    min_remaining: f64,
    /// Start a background refresh at or below this share.
    refresh_at: f64,
    metrics: Arc<Metrics>,
}

/// What one entry costs besides its token's text: moka's node, timer and deque bookkeeping, the
/// key and the `Cached` around the token (measured with `cargo bench --bench cache_memory`).
const ENTRY_OVERHEAD: u64 = 480;

/// An entry's weight: its bytes, but never less than `max_bytes / max_entries`, so one weighted
/// capacity enforces both bounds.
fn entry_weight(token: &MintedToken, floor: u64) -> u32 {
    let bytes = ENTRY_OVERHEAD + token.token.len() as u64;
    u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
}

/// Entries leave the cache when they stop being servable.
struct UntilUnservable {
    min_remaining: f64,
}

impl Expiry<TokenKey, Arc<Cached>> for UntilUnservable {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Arc<Cached>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let token = &value.token;
        let lifetime = token.expires_at.saturating_sub(token.issued_at) as f64;
        let servable_until = token.expires_at as f64 - lifetime * self.min_remaining;
        let now = crate::clock::unix_now() as f64;
        Some(Duration::from_secs_f64((servable_until - now).max(0.0)))
    }
}

impl TokenCache {
    /// A cache as `config` describes; counts into `metrics`.
    pub fn new(config: &TokenCacheConfig, metrics: Arc<Metrics>) -> Self {
        let min_remaining = f64::from(config.min_remaining_percent) / 100.0;
        let evictions = metrics.clone();
        let floor = config.max_bytes / config.max_entries.max(1);
        Self {
            entries: Cache::builder()
                .max_capacity(config.max_bytes)
                .weigher(move |_key, cached: &Arc<Cached>| entry_weight(&cached.token, floor))
                .expire_after(UntilUnservable { min_remaining })
                .eviction_listener(move |_key, _value, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        evictions.token_cache_eviction();
                    }
                })
                .build(),
            min_remaining,
            refresh_at: (min_remaining + 0.1).min(0.99),
            metrics,
        }
    }

    /// Looks a key up at `now` (Unix seconds) for ring `generation`.
    pub async fn find(&self, key: &TokenKey, now: u64, generation: u64) -> Found {
        let Some(cached) = self.entries.get(key).await else {
            self.metrics.token_cache_miss();
            return Found::Miss;
        };
        match self.share_left(&cached, now, generation) {
            share if share > self.refresh_at => {
                self.metrics.token_cache_hit();
                Found::Fresh(cached.token.clone())
            }
            share if share > self.min_remaining => {
                self.metrics.token_cache_hit();
                // Only the first caller past the refresh point starts the replacement.
                if cached.refreshing.swap(true, Ordering::AcqRel) {
                    Found::Fresh(cached.token.clone())
                } else {
                    self.metrics.token_cache_refresh();
                    Found::RefreshDue(cached.token.clone())
                }
            }
            _ => {
                self.metrics.token_cache_miss();
                Found::Miss
            }
        }
    }

    /// Mints for a missed key; concurrent callers with the same key share one signature.
    pub async fn mint_once(
        &self,
        key: TokenKey,
        now: u64,
        generation: u64,
        mint: impl FnOnce() -> Result<MintedToken, MintError>,
    ) -> Result<MintedToken, MintError> {
        let outcome = self
            .entries
            .entry(key)
            .and_try_compute_with(|existing| {
                let servable = existing.is_some_and(|e| {
                    self.share_left(e.value(), now, generation) > self.min_remaining
                });
                let minted = if servable { None } else { Some(mint()) };
                async move {
                    match minted {
                        None => Ok(Op::Nop),
                        Some(minted) => Ok(Op::Put(Arc::new(Cached {
                            token: minted?,
                            ring_generation: generation,
                            refreshing: AtomicBool::new(false),
                        }))),
                    }
                }
            })
            .await?;
        match outcome {
            CompResult::Inserted(entry)
            | CompResult::ReplacedWith(entry)
            | CompResult::Unchanged(entry) => Ok(entry.into_value().token.clone()),
            CompResult::StillNone(_) | CompResult::Removed(_) => Err(MintError::Signing),
        }
    }

    /// Stores a token minted in the background.
    pub async fn store(&self, key: TokenKey, token: MintedToken, generation: u64) {
        let cached = Cached {
            token,
            ring_generation: generation,
            refreshing: AtomicBool::new(false),
        };
        self.entries.insert(key, Arc::new(cached)).await;
    }

    /// Drops every cached token (the key ring changed).
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// The share of its lifetime a token has left at `now`; 0 when it was signed under
    /// another key ring.
    fn share_left(&self, cached: &Cached, now: u64, generation: u64) -> f64 {
        if cached.ring_generation != generation {
            return 0.0;
        }
        let token = &cached.token;
        let lifetime = token.expires_at.saturating_sub(token.issued_at);
        if lifetime == 0 {
            return 0.0;
        }
        token.expires_at.saturating_sub(now) as f64 / lifetime as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(issued_at: u64, expires_at: u64) -> MintedToken {
        MintedToken {
            token: format!("t-{issued_at}").into(),
            issued_at,
            expires_at,
            kid: "k".into(),
        }
    }

    fn cache() -> TokenCache {
        TokenCache::new(&TokenCacheConfig::default(), Arc::default())
    }

    #[tokio::test]
    async fn a_token_serves_while_more_than_half_its_life_is_left_and_refreshes_before() {
        // Entries also expire by the wall clock, so the token lives around now.
        let now = crate::clock::unix_now();
        let cache = cache();
        let key = [7u8; 32];
        cache.store(key, token(now, now + 1_000), 1).await;
        assert!(matches!(
            cache.find(&key, now + 100, 1).await,
            Found::Fresh(_)
        ));
        // 55 % of the life spent: past the refresh point (60 % left), still servable.
        assert!(matches!(
            cache.find(&key, now + 450, 1).await,
            Found::RefreshDue(_)
        ));
        // Half or less left: never served.
        assert!(matches!(cache.find(&key, now + 500, 1).await, Found::Miss));
    }

    #[tokio::test]
    async fn a_token_of_another_key_ring_or_after_clear_is_never_served() {
        let now = crate::clock::unix_now();
        let cache = cache();
        let key = [9u8; 32];
        cache.store(key, token(now, now + 1_000), 1).await;
        assert!(matches!(
            cache.find(&key, now + 10, 1).await,
            Found::Fresh(_)
        ));
        assert!(matches!(cache.find(&key, now + 10, 2).await, Found::Miss));
        cache.clear();
        assert!(matches!(cache.find(&key, now + 10, 1).await, Found::Miss));
    }

    async fn fill(config: TokenCacheConfig) -> (u64, u64) {
        let now = crate::clock::unix_now();
        let cache = TokenCache::new(&config, Arc::default());
        for i in 0..200u8 {
            let mut minted = token(now, now + 1_000);
            minted.token = "x".repeat(1_000).into();
            cache.store([i; 32], minted, 1).await;
        }
        cache.entries.run_pending_tasks().await;
        (cache.entries.entry_count(), cache.entries.weighted_size())
    }

    #[tokio::test]
    async fn the_cache_stays_within_max_bytes_and_within_max_entries() {
        let by_bytes = TokenCacheConfig {
            max_bytes: 20_000,
            ..Default::default()
        };
        let (entries, bytes) = fill(by_bytes).await;
        assert!(bytes <= 20_000, "{bytes} bytes held");
        assert!(
            (1..=13).contains(&entries),
            "{entries} tokens of ~1.5 KB held"
        );

        let by_entries = TokenCacheConfig {
            max_entries: 5,
            ..Default::default()
        };
        let (entries, _) = fill(by_entries).await;
        assert!((1..=5).contains(&entries), "{entries} tokens held");
    }

    #[test]
    fn max_bytes_reads_plain_bytes_and_binary_units_and_refuses_the_rest() {
        let read = |yaml: &str| serde_norway::from_str::<TokenCacheConfig>(yaml);
        assert_eq!(read("max_bytes: 4096").unwrap().max_bytes, 4096);
        assert_eq!(read("max_bytes: 64MiB").unwrap().max_bytes, 64 << 20);
        assert_eq!(read("max_bytes: 1 GiB").unwrap().max_bytes, 1 << 30);
        let error = read("max_bytes: 64MB").unwrap_err().to_string();
        assert!(error.contains("`64MB` is not a size"), "{error}");
    }
}
