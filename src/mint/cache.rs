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
//!
//! An entry keeps the token's text (`token.cache.store: text`, the default: a hit copies it) or
//! only what its key does not already pin down (`store: signature`): the raw signature and the
//! token's times and `jti`. Everything else the payload says is a function of what the key
//! hashes — identity, grants, audience, signing key — so a hit then renders the payload again
//! from the Check's own identity and grants, byte for byte as it was signed, and the signing key
//! adds its shared header: a third of the memory per entry for about a microsecond more per hit
//! (see docs/benchmarks.md, memory and "What each feature costs").

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

use super::{CacheStore, TokenCacheConfig};
use super::{KeyRing, MintError, MintedToken, Signed};
use crate::digest_map::{DigestMap, Expiring};
use crate::telemetry::Metrics;

/// SHA-256 of what a token depends on.
pub type TokenKey = [u8; 32];

/// What a token says besides its identity, grants and signer: when, and which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Its `iat` (and `nbf`).
    pub issued_at: u64,
    /// Its `exp`.
    pub expires_at: u64,
    /// Its `jti`, raw.
    pub jti: [u8; 16],
}

/// Renders a cached token's text from its stamp and raw signature (the minter, with the
/// Check's identity and grants and the ring's active key).
pub trait Render {
    /// The compact JWS; `None` if it cannot be rendered (then the cache misses).
    fn render(&self, stamp: &Stamp, signature: &[u8]) -> Option<MintedToken>;
}

/// What an entry keeps of its token.
enum Kept {
    /// The compact JWS, served as it is, and the `kid` that signed it.
    Text(Box<str>, Arc<str>),
    /// The raw signature: the rest is rendered again on each hit.
    Signature(Box<[u8]>),
}

/// A cached token.
struct CachedToken {
    kept: Kept,
    stamp: Stamp,
    /// No longer served from this second on (its `min_remaining_percent` point).
    servable_until: u64,
    /// The key ring generation it was signed under.
    ring_generation: u64,
    /// A replacement is being minted.
    refreshing: bool,
}

impl Expiring for CachedToken {
    fn expired(&self, now: u64) -> bool {
        now >= self.servable_until
    }

    fn heap_bytes(&self) -> usize {
        // The allocator's header and rounding included.
        let kept = match &self.kept {
            Kept::Text(text, _) => text.len(),
            Kept::Signature(signature) => signature.len(),
        };
        kept.next_multiple_of(16) + 16
    }
}

impl CachedToken {
    /// The token as served: the kept text, or one rendered from the signature.
    fn token(&self, render: &impl Render) -> Option<MintedToken> {
        match &self.kept {
            Kept::Text(text, kid) => Some(MintedToken {
                token: String::from(&**text),
                issued_at: self.stamp.issued_at,
                expires_at: self.stamp.expires_at,
                kid: kid.clone(),
            }),
            Kept::Signature(signature) => render.render(&self.stamp, signature),
        }
    }
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

/// A mint in progress for one key, shared by every caller that missed it meanwhile.
type Flight = Arc<OnceCell<Result<MintedToken, MintError>>>;

/// The cache of minted tokens.
pub struct TokenCache {
    entries: DigestMap<CachedToken>,
    in_flight: Mutex<HashMap<TokenKey, Flight>>,
    /// What entries keep of their tokens (`token.cache.store`).
    store: CacheStore,
    /// Serve only above this share of the lifetime left.
    min_remaining: f64,
    /// Start a background refresh at or below this share.
    refresh_at: f64,
    metrics: Arc<Metrics>,
}

impl TokenCache {
    /// A cache as `config` describes; counts into `metrics`.
    pub fn new(config: &TokenCacheConfig, metrics: Arc<Metrics>) -> Self {
        let min_remaining = f64::from(config.min_remaining_percent) / 100.0;
        Self {
            entries: DigestMap::new(config.max_entries, config.max_bytes),
            in_flight: Mutex::default(),
            store: config.store,
            min_remaining,
            refresh_at: (min_remaining + 0.1).min(0.99),
            metrics,
        }
    }

    /// Looks a key up at `now` (Unix seconds) under `ring`, rendering a hit with `render`.
    pub fn find(&self, key: &TokenKey, now: u64, ring: &KeyRing, render: &impl Render) -> Found {
        let found = self.entries.read(key, now, |cached| {
            let share = self.share_left(cached, now, ring.generation());
            if share <= self.min_remaining {
                return Found::Miss;
            }
            let Some(token) = cached.token(render) else {
                return Found::Miss;
            };
            // Only the first caller past the refresh point starts the replacement.
            if share <= self.refresh_at && !std::mem::replace(&mut cached.refreshing, true) {
                Found::RefreshDue(token)
            } else {
                Found::Fresh(token)
            }
        });
        match found.unwrap_or(Found::Miss) {
            Found::Miss => {
                self.metrics.token_cache_miss();
                Found::Miss
            }
            found => {
                self.metrics.token_cache_hit();
                if matches!(found, Found::RefreshDue(_)) {
                    self.metrics.token_cache_refresh();
                }
                found
            }
        }
    }

    /// Mints for a missed key; concurrent callers with the same key share one signature.
    pub async fn mint_once(
        &self,
        key: TokenKey,
        now: u64,
        ring: &KeyRing,
        render: &impl Render,
        mint: impl FnOnce() -> Result<Signed, MintError>,
    ) -> Result<MintedToken, MintError> {
        let flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        let minted = flight
            .get_or_init(|| async {
                // A flight that ended between this caller's miss and now left its token.
                if let Some(token) = self.peek(&key, now, ring, render) {
                    return Ok(token);
                }
                let signed = mint()?;
                let token = signed.minted.clone();
                self.store(key, signed, ring.generation(), now);
                Ok(token)
            })
            .await
            .clone();
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if in_flight
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, &flight))
        {
            in_flight.remove(&key);
        }
        minted
    }

    /// A servable token of `key`, without counting or starting a refresh.
    fn peek(
        &self,
        key: &TokenKey,
        now: u64,
        ring: &KeyRing,
        render: &impl Render,
    ) -> Option<MintedToken> {
        self.entries
            .read(key, now, |cached| {
                (self.share_left(cached, now, ring.generation()) > self.min_remaining)
                    .then(|| cached.token(render))
                    .flatten()
            })
            .flatten()
    }

    /// Stores a token signed under ring `generation`.
    pub fn store(&self, key: TokenKey, signed: Signed, generation: u64, now: u64) {
        let Signed {
            minted,
            stamp,
            signature,
        } = signed;
        let lifetime = stamp.expires_at.saturating_sub(stamp.issued_at);
        let served_for = lifetime as f64 * (1.0 - self.min_remaining);
        let cached = CachedToken {
            kept: match self.store {
                CacheStore::Text => Kept::Text(minted.token.into_boxed_str(), minted.kid),
                CacheStore::Signature => Kept::Signature(signature.into_boxed_slice()),
            },
            stamp,
            servable_until: stamp.issued_at + served_for as u64,
            ring_generation: generation,
            refreshing: false,
        };
        for _ in 0..self.entries.insert(key, cached, now) {
            self.metrics.token_cache_eviction();
        }
    }

    /// How many tokens are cached, and what they cost in bytes.
    pub fn size(&self) -> (usize, usize) {
        (self.entries.len(), self.entries.bytes())
    }

    /// Drops every cached token (the key ring changed).
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// The share of its lifetime a token has left at `now`; 0 when it was signed under
    /// another key ring.
    fn share_left(&self, cached: &CachedToken, now: u64, generation: u64) -> f64 {
        if cached.ring_generation != generation {
            return 0.0;
        }
        let Stamp {
            issued_at,
            expires_at,
            ..
        } = cached.stamp;
        let lifetime = expires_at.saturating_sub(issued_at);
        if lifetime == 0 {
            return 0.0;
        }
        expires_at.saturating_sub(now) as f64 / lifetime as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mint::{SigningAlgorithm, SigningKey};

    fn ring() -> KeyRing {
        let key = SigningKey::generate(SigningAlgorithm::EdDsa, 0).unwrap();
        KeyRing::new(0, vec![key])
    }

    /// Payloads of `.1` bytes that depend only on the stamp, signed by `.0`.
    struct Padded<'a>(&'a SigningKey, usize);

    impl Padded<'_> {
        fn payload(&self, stamp: &Stamp) -> String {
            format!(
                r#"{{"iat":{},"pad":"{}"}}"#,
                stamp.issued_at,
                "x".repeat(self.1)
            )
        }
    }

    impl Render for Padded<'_> {
        fn render(&self, stamp: &Stamp, signature: &[u8]) -> Option<MintedToken> {
            Some(MintedToken {
                token: self
                    .0
                    .assemble_jws(self.payload(stamp).as_bytes(), signature),
                issued_at: stamp.issued_at,
                expires_at: stamp.expires_at,
                kid: self.0.shared_kid(),
            })
        }
    }

    /// A token signed by `ring`'s key with a payload of `payload_len` bytes.
    fn signed(ring: &KeyRing, issued_at: u64, expires_at: u64, payload_len: usize) -> Signed {
        let stamp = Stamp {
            issued_at,
            expires_at,
            jti: [1; 16],
        };
        let key = ring.active();
        let payload = Padded(key, payload_len).payload(&stamp);
        let (token, signature) = key.sign_jws_parts(payload.as_bytes()).unwrap();
        Signed {
            minted: MintedToken {
                token,
                issued_at,
                expires_at,
                kid: key.shared_kid(),
            },
            stamp,
            signature,
        }
    }

    fn cache() -> TokenCache {
        TokenCache::new(&TokenCacheConfig::default(), Arc::default())
    }

    fn token_of(found: Found) -> Option<String> {
        match found {
            Found::Fresh(minted) | Found::RefreshDue(minted) => Some(minted.token),
            Found::Miss => None,
        }
    }

    #[test]
    fn a_cached_token_is_served_as_the_exact_text_that_was_signed_whatever_is_stored() {
        for store in [CacheStore::Text, CacheStore::Signature] {
            let (now, ring) = (crate::clock::unix_now(), ring());
            let cache = TokenCache::new(
                &TokenCacheConfig {
                    store,
                    ..TokenCacheConfig::default()
                },
                Arc::default(),
            );
            let signed = signed(&ring, now, now + 1_000, 200);
            let original = signed.minted.token.clone();
            cache.store([3; 32], signed, ring.generation(), now);
            assert_eq!(
                token_of(cache.find(&[3; 32], now, &ring, &Padded(ring.active(), 200))),
                Some(original),
                "{store:?}"
            );
        }
    }

    /// Renders nothing: what a hit serves from kept text never comes from here.
    struct NoRendering;

    impl Render for NoRendering {
        fn render(&self, _: &Stamp, _: &[u8]) -> Option<MintedToken> {
            None
        }
    }

    #[test]
    fn kept_text_is_served_without_rendering_and_a_kept_signature_needs_it() {
        let (now, ring) = (crate::clock::unix_now(), ring());
        for (store, served) in [(CacheStore::Text, true), (CacheStore::Signature, false)] {
            let config = TokenCacheConfig {
                store,
                ..TokenCacheConfig::default()
            };
            let cache = TokenCache::new(&config, Arc::default());
            cache.store(
                [4; 32],
                signed(&ring, now, now + 1_000, 50),
                ring.generation(),
                now,
            );
            let found = token_of(cache.find(&[4; 32], now, &ring, &NoRendering));
            assert_eq!(found.is_some(), served, "{store:?}");
        }
    }

    #[test]
    fn a_token_serves_while_more_than_half_its_life_is_left_and_refreshes_before() {
        let (now, ring, cache) = (crate::clock::unix_now(), ring(), cache());
        let render = Padded(ring.active(), 10);
        let key = [7u8; 32];
        cache.store(
            key,
            signed(&ring, now, now + 1_000, 10),
            ring.generation(),
            now,
        );
        assert!(matches!(
            cache.find(&key, now + 100, &ring, &render),
            Found::Fresh(_)
        ));
        // 55 % of the life spent: past the refresh point (60 % left), still servable, and
        // only the first caller past it refreshes.
        assert!(matches!(
            cache.find(&key, now + 450, &ring, &render),
            Found::RefreshDue(_)
        ));
        assert!(matches!(
            cache.find(&key, now + 451, &ring, &render),
            Found::Fresh(_)
        ));
        // Half or less left: never served.
        assert!(matches!(
            cache.find(&key, now + 500, &ring, &render),
            Found::Miss
        ));
    }

    #[test]
    fn a_token_of_another_key_ring_or_after_clear_is_never_served() {
        let (now, ring, cache) = (crate::clock::unix_now(), ring(), cache());
        let render = Padded(ring.active(), 10);
        let key = [9u8; 32];
        cache.store(
            key,
            signed(&ring, now, now + 1_000, 10),
            ring.generation(),
            now,
        );
        assert!(matches!(
            cache.find(&key, now + 10, &ring, &render),
            Found::Fresh(_)
        ));
        assert!(matches!(
            cache.find(&key, now + 10, &self::ring(), &render),
            Found::Miss
        ));
        cache.clear();
        assert!(matches!(
            cache.find(&key, now + 10, &ring, &render),
            Found::Miss
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_misses_of_one_key_share_one_signature() {
        let (now, ring) = (crate::clock::unix_now(), Arc::new(ring()));
        let cache = Arc::new(cache());
        let signatures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (ring, cache, signatures) = (ring.clone(), cache.clone(), signatures.clone());
                tokio::spawn(async move {
                    cache
                        .mint_once([5; 32], now, &ring, &Padded(ring.active(), 10), || {
                            signatures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(signed(&ring, now, now + 1_000, 10))
                        })
                        .await
                        .unwrap()
                        .token
                })
            })
            .collect();
        let mut tokens = Vec::new();
        for caller in callers {
            tokens.push(caller.await.unwrap());
        }
        assert_eq!(signatures.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(tokens.iter().all(|token| *token == tokens[0]));
    }

    fn fill(config: TokenCacheConfig) -> (usize, usize) {
        let (now, ring) = (crate::clock::unix_now(), ring());
        let cache = TokenCache::new(&config, Arc::default());
        for i in 0..200u8 {
            let signed = signed(&ring, now, now + 1_000, 1_000);
            cache.store([i; 32], signed, ring.generation(), now);
        }
        (cache.entries.len(), cache.entries.bytes())
    }

    #[test]
    fn the_cache_stays_within_max_bytes_and_within_max_entries() {
        let by_bytes = TokenCacheConfig {
            max_bytes: 16_000,
            store: CacheStore::Signature,
            ..Default::default()
        };
        let (entries, bytes) = fill(by_bytes);
        assert!(bytes <= 16_000, "{bytes} bytes held");
        assert!((32..=64).contains(&entries), "{entries} tokens held");
        // Kept text counts its whole length (~1.4 KiB here): fewer tokens fit in more bytes.
        let (text_entries, bytes) = fill(TokenCacheConfig {
            max_bytes: 100_000,
            ..Default::default()
        });
        assert!(bytes <= 100_000, "{bytes} bytes held as text");
        assert!(
            (32..100).contains(&text_entries),
            "{text_entries} tokens held as text"
        );

        let by_entries = TokenCacheConfig {
            max_entries: 64,
            ..Default::default()
        };
        let (entries, _) = fill(by_entries);
        assert!((32..=64).contains(&entries), "{entries} tokens held");
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
