//! One trusted issuer's signing keys: fetched from its JWKS, held as a lock-free snapshot,
//! refreshed in the background, refetched once on an unknown `kid`, served stale while the
//! issuer is unreachable for at most `max_stale`.
//!
//! Keys are only ever fetched from the configured `jwks_uri` or from the `jwks_uri` that the
//! configured issuer's own discovery document names — never from anything a token says.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::outbound::{BodyError, describe_reqwest_error, read_capped};
use crate::telemetry::Metrics;

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;

use super::TrustedIssuerConfig;
use super::verify_key::{Unusable, VerifyKey};
use crate::algorithms::MIN_RSA_BITS;
use crate::urls::check_fetch_url;

/// Largest JWKS or discovery document read; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Unknown-`kid` refetches of one issuer happen at most this often, so a stream of forged
/// kids cannot turn us into a load generator against the IdP.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Longest an unknown-`kid` refetch may hold a Check (within its deadline too).
const REFETCH_WAIT: Duration = Duration::from_millis(500);

/// The keys of one fetch.
pub struct KeySet {
    /// Keys by `kid`.
    pub by_kid: HashMap<String, Arc<VerifyKey>>,
    /// Keys published without a `kid` (usable only when the token has none either).
    pub without_kid: Vec<Arc<VerifyKey>>,
    /// When this set was fetched.
    pub fetched_at: Instant,
}

impl KeySet {
    /// True when the issuer published no key this sidecar can verify with.
    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.without_kid.is_empty()
    }
}

/// Why keys could not be fetched; shown in logs and `/readyz`, never to callers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// Connection, TLS or timeout failure.
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    /// A non-200 answer.
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// The document was not what it should be.
    #[error("{url}: {reason}")]
    Document { url: String, reason: String },
}

/// The keys of one trusted issuer.
pub struct IssuerKeys {
    issuer: String,
    configured_jwks_uri: Option<String>,
    discovered_jwks_uri: ArcSwapOption<String>,
    bearer_token_file: Option<PathBuf>,
    allowed: Vec<Algorithm>,
    max_stale: Duration,
    client: reqwest::Client,
    current: ArcSwapOption<KeySet>,
    last_error: ArcSwapOption<String>,
    /// Serializes fetches (single flight) and remembers when the last unknown-`kid` refetch
    /// started; scheduled refreshes do not count, so a key the IdP adds right after one is
    /// still picked up at once.
    fetch_gate: tokio::sync::Mutex<Option<Instant>>,
    /// Set when an unknown-`kid` refetch starts, cleared when one succeeds: while set, the
    /// issuer is taken to be down and later misses answer at once instead of waiting again.
    refetch_failing: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
}

/// An unknown-`kid` refetch could not reach the issuer: the sidecar cannot tell whether the
/// key exists (answered 503, not 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuerUnreachable;

impl IssuerKeys {
    /// Sets up (without fetching) the keys of one configured issuer.
    pub fn new(
        config: &TrustedIssuerConfig,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            issuer: config.issuer.clone(),
            configured_jwks_uri: config.jwks_uri.clone(),
            discovered_jwks_uri: ArcSwapOption::empty(),
            bearer_token_file: config.bearer_token_file.clone(),
            allowed: config.algorithms.clone(),
            max_stale: config.max_stale,
            client,
            current: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            fetch_gate: tokio::sync::Mutex::new(None),
            refetch_failing: std::sync::atomic::AtomicBool::new(false),
            metrics,
        }
    }

    /// The issuer these keys belong to.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The algorithms the issuer may use.
    pub fn allowed(&self) -> &[Algorithm] {
        &self.allowed
    }

    /// The last fetched keys, unless they are older than `max_stale`.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .load_full()
            .filter(|set| set.fetched_at.elapsed() <= self.max_stale)
    }

    /// How long ago the last keys were fetched, stale or not; `None` if never.
    pub fn age(&self) -> Option<Duration> {
        self.current
            .load()
            .as_ref()
            .map(|set| set.fetched_at.elapsed())
    }

    /// The reason the last fetch failed, if it did.
    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    /// Fetches the keys now (start-up prefetch and background refresh).
    pub async fn refresh(&self) -> Result<(), FetchError> {
        let _gate = self.fetch_gate.lock().await;
        self.fetch_and_store().await
    }

    /// Called when a token names a `kid` that `seen` lacks (or no keys were ever fetched):
    /// refetches once, shared by every caller waiting at the same time, at most every
    /// [`MIN_REFETCH_INTERVAL`], waiting at most [`REFETCH_WAIT`] and never past `deadline`.
    /// `Err` when the issuer could not be reached — then, until a refetch succeeds, later
    /// misses get `Err` at once instead of waiting again.
    pub async fn refetch_after_miss(
        &self,
        seen: Option<&Arc<KeySet>>,
        deadline: Instant,
    ) -> Result<Option<Arc<KeySet>>, IssuerUnreachable> {
        use std::sync::atomic::Ordering;
        let wait_until = deadline.min(Instant::now() + REFETCH_WAIT);
        let attempt = async {
            let mut gate = self.fetch_gate.lock().await;
            let latest = self.current();
            let changed = match (seen, &latest) {
                (Some(seen), Some(latest)) => !Arc::ptr_eq(seen, latest),
                (None, Some(_)) => true,
                _ => false,
            };
            if changed {
                return Ok(latest);
            }
            if gate.is_some_and(|last| last.elapsed() < MIN_REFETCH_INTERVAL) {
                return if self.refetch_failing.load(Ordering::Acquire) {
                    Err(IssuerUnreachable)
                } else {
                    Ok(latest)
                };
            }
            *gate = Some(Instant::now());
            // Pessimistic until it succeeds: a refetch cut off by the wait counts as failed.
            self.refetch_failing.store(true, Ordering::Release);
            match self.fetch_and_store().await {
                Ok(()) => {
                    self.refetch_failing.store(false, Ordering::Release);
                    Ok(self.current())
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer, error = %e, "refetching issuer keys failed");
                    Err(IssuerUnreachable)
                }
            }
        };
        match tokio::time::timeout_at(wait_until.into(), attempt).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(issuer = %self.issuer, "refetching issuer keys timed out");
                Err(IssuerUnreachable)
            }
        }
    }

    /// Runs forever: refreshes every `interval`, retrying sooner after a failure.
    pub async fn refresh_forever(self: Arc<Self>, interval: Duration) {
        let retry = interval.min(Duration::from_secs(10));
        let mut wait = interval;
        loop {
            tokio::time::sleep(wait).await;
            wait = match self.refresh().await {
                Ok(()) => interval,
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer, error = %e, "refreshing issuer keys failed; serving the last keys");
                    retry
                }
            };
        }
    }

    async fn fetch_and_store(&self) -> Result<(), FetchError> {
        let started = Instant::now();
        let fetched = self
            .fetch()
            .instrument(tracing::info_span!("jwks.fetch", issuer = %self.issuer))
            .await;
        self.metrics.key_fetch(
            "jwks",
            if fetched.is_ok() { "ok" } else { "error" },
            started.elapsed(),
        );
        match fetched {
            Ok(set) => {
                tracing::info!(issuer = %self.issuer, keys = set.by_kid.len() + set.without_kid.len(), "issuer keys fetched");
                self.current.store(Some(Arc::new(set)));
                self.last_error.store(None);
                self.refetch_failing
                    .store(false, std::sync::atomic::Ordering::Release);
                Ok(())
            }
            Err(e) => {
                self.last_error.store(Some(Arc::new(e.to_string())));
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, FetchError> {
        let jwks_uri = self.jwks_uri().await?;
        let body = self.get(&jwks_uri).await?;
        let document: JwksDocument =
            serde_json::from_slice(&body).map_err(|e| FetchError::Document {
                url: jwks_uri.clone(),
                reason: format!("not a JWKS: {e}"),
            })?;
        let mut set = KeySet {
            by_kid: HashMap::new(),
            without_kid: Vec::new(),
            fetched_at: Instant::now(),
        };
        for raw in document.keys {
            let jwk: Jwk = match serde_json::from_value(raw) {
                Ok(jwk) => jwk,
                Err(e) => {
                    tracing::debug!(issuer = %self.issuer, error = %e, "ignoring a JWK of an unsupported kind");
                    continue;
                }
            };
            let Some(key) = self.verify_key(&jwk) else {
                continue;
            };
            match jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid, Arc::new(key));
                }
                None => set.without_kid.push(Arc::new(key)),
            }
        }
        if set.is_empty() {
            // The issuer answered; its keys are just none we can use (too short, `use: enc`,
            // an algorithm outside the allow-list). Holding the empty set makes its tokens
            // 401 "no usable key" rather than 503 as if the issuer were down.
            tracing::warn!(issuer = %self.issuer, url = %jwks_uri, "the issuer's JWKS holds no usable signing key");
        }
        Ok(set)
    }

    /// Turns a JWK into a verification key pinned to its algorithms; `None` when it cannot
    /// verify any allowed algorithm.
    fn verify_key(&self, jwk: &Jwk) -> Option<VerifyKey> {
        match VerifyKey::from_jwk(jwk, &self.allowed) {
            Ok(key) => Some(key),
            Err(Unusable::ShortRsa { bits }) => {
                tracing::warn!(issuer = %self.issuer, bits, min_bits = MIN_RSA_BITS, "ignoring a short RSA key");
                None
            }
            Err(_) => None,
        }
    }

    /// The configured `jwks_uri`, or the one the issuer's discovery document names.
    async fn jwks_uri(&self) -> Result<String, FetchError> {
        if let Some(uri) = &self.configured_jwks_uri {
            return Ok(uri.clone());
        }
        if let Some(uri) = self.discovered_jwks_uri.load_full() {
            return Ok(uri.as_ref().clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let discovery: DiscoveryDocument =
            serde_json::from_slice(&body).map_err(|e| FetchError::Document {
                url: url.clone(),
                reason: format!("not an OpenID configuration: {e}"),
            })?;
        if discovery.issuer != self.issuer {
            return Err(FetchError::Document {
                url,
                reason: "its issuer differs from the configured issuer".into(),
            });
        }
        check_fetch_url(&discovery.jwks_uri).map_err(|reason| FetchError::Document {
            url: url.clone(),
            reason: format!("jwks_uri {reason}"),
        })?;
        self.discovered_jwks_uri
            .store(Some(Arc::new(discovery.jwks_uri.clone())));
        Ok(discovery.jwks_uri)
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: url.to_owned(),
            reason: describe_reqwest_error(&e),
        };
        let mut request = self.client.get(url).header("accept", "application/json");
        if let Some(file) = &self.bearer_token_file {
            // Read on every fetch: projected service-account tokens are rotated on disk.
            let token =
                tokio::fs::read_to_string(file)
                    .await
                    .map_err(|e| FetchError::Document {
                        url: url.to_owned(),
                        reason: format!("cannot read bearer_token_file: {}", e.kind()),
                    })?;
            request = request.bearer_auth(token.trim());
        }
        let mut response = request.send().await.map_err(transport)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        read_capped(&mut response, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => transport(e),
                BodyError::TooLarge => FetchError::Document {
                    url: url.to_owned(),
                    reason: "larger than 1 MiB".into(),
                },
            })
    }
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}
