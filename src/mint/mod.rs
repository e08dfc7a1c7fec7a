//! Stage 4, sign: an [`Identity`] and its [`Grants`] become a fresh EvidentSource JWT.
//!
//! The key ring is a lock-free snapshot: the request path loads it without a lock, and a key
//! rotation ([`keyring::KeyRingReloader`]) swaps it whole. The JWS is assembled here (header
//! precomputed per key, claims serialized once, one RSA signature) rather than through a generic
//! JWT encoder.

pub(crate) mod cache;
mod claims;
mod config;
mod der;
mod key_digest;
pub(crate) mod keyring;
pub(crate) mod keys;
mod own;
pub(crate) mod secrets_manager;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use self::cache::{Found, Render, Stamp, TokenCache, TokenKey};
use self::claims::MintedClaims;
pub(crate) use self::claims::WRITTEN_CLAIMS;
pub(crate) use self::config::SigningFile;
pub use self::config::{
    CacheStore, SecretsManagerConfig, SigningConfig, SigningSource, TokenCacheConfig, TokenConfig,
};
use self::key_digest::KeyDigest;
pub use self::keyring::KeyRing;
pub use self::keys::{KeyError, SigningAlgorithm, SigningKey};
pub use self::own::OwnToken;
use crate::credential::Fingerprint;
use crate::grants::Grants;
use crate::identity::Identity;
use crate::telemetry::Metrics;

/// A minted token.
#[derive(Clone)]
pub struct MintedToken {
    /// The compact JWS.
    pub token: String,
    /// Its `iat` (and `nbf`).
    pub issued_at: u64,
    /// Its `exp`.
    pub expires_at: u64,
    /// The `kid` that signed it (shared with the key).
    pub kid: Arc<str>,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("kid", &self.kid)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A token just signed, with the raw parts the cache keeps of it.
pub(crate) struct Signed {
    minted: MintedToken,
    stamp: Stamp,
    signature: Vec<u8>,
}

/// Renders cached tokens of one Check: its identity and grants, signed by the ring's active key.
struct Rendering<'a> {
    minter: &'a Minter,
    key: &'a SigningKey,
    identity: &'a Identity,
    grants: &'a Grants,
}

impl Render for Rendering<'_> {
    fn render(&self, stamp: &Stamp, signature: &[u8]) -> Option<MintedToken> {
        let payload = self
            .minter
            .payload(self.identity, self.grants, stamp)
            .ok()?;
        Some(MintedToken {
            token: self.key.assemble_jws(&payload, signature),
            issued_at: stamp.issued_at,
            expires_at: stamp.expires_at,
            kid: self.key.shared_kid(),
        })
    }
}

/// Why a token could not be minted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MintError {
    /// The credential expires before a token could be used.
    #[error("the credential has expired")]
    CredentialExpired,
    /// The signing operation failed.
    #[error("signing failed")]
    Signing,
}

/// Mints tokens with the configured claims and the current key ring.
pub struct Minter {
    issuer: String,
    audience: Vec<String>,
    lifetime: Duration,
    grants_claim: String,
    ring: ArcSwap<KeyRing>,
    /// When the signing key last changed (Unix seconds).
    active_since: std::sync::atomic::AtomicU64,
    cache: Option<TokenCache>,
}

impl Minter {
    /// A minter for `token:` signing with `ring`, caching as `token.cache` says.
    pub fn new(token: &TokenConfig, ring: KeyRing, metrics: Arc<Metrics>) -> Self {
        let cache = &token.cache;
        Self {
            issuer: token.issuer.clone(),
            audience: token.audience.clone(),
            lifetime: token.lifetime,
            grants_claim: token.grants_claim.clone(),
            ring: ArcSwap::from_pointee(ring),
            active_since: crate::clock::unix_now().into(),
            cache: cache.enabled.then(|| TokenCache::new(cache, metrics)),
        }
    }

    /// Seconds since the signing key last changed (or since start-up).
    pub fn active_key_age(&self) -> u64 {
        crate::clock::unix_now()
            .saturating_sub(self.active_since.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Tokens cached and their bytes; `None` with the cache off.
    pub fn cache_size(&self) -> Option<(usize, usize)> {
        self.cache.as_ref().map(TokenCache::size)
    }

    /// The current key ring.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Swaps in a new key ring; tokens minted from now on are signed by its active key, and
    /// no token cached under the old ring is served again.
    pub fn replace_ring(&self, ring: KeyRing) {
        if ring.active().kid() != self.ring.load().active().kid() {
            self.active_since.store(
                crate::clock::unix_now(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.ring.store(Arc::new(ring));
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// A token for `identity` with `grants`, reused from the cache when the same
    /// credential (`credential`: its [`Fingerprint`]) was swapped recently; `true` with it
    /// when it came from the cache.
    pub async fn mint_cached(
        self: &Arc<Self>,
        identity: &Identity,
        grants: &Arc<Grants>,
        credential: &Fingerprint,
        now: u64,
    ) -> Result<(MintedToken, bool), MintError> {
        let Some(cache) = &self.cache else {
            return self.mint(identity, grants, now).map(|token| (token, false));
        };
        let ring = self.ring.load();
        let key = self.token_key(identity, grants, credential, ring.active().kid());
        let rendering = Rendering {
            minter: self,
            key: ring.active(),
            identity,
            grants,
        };
        match cache.find(&key, now, &ring, &rendering) {
            Found::Fresh(token) => Ok((token, true)),
            Found::RefreshDue(token) => {
                let (minter, identity, grants) = (self.clone(), identity.clone(), grants.clone());
                let credential = *credential;
                tokio::spawn(async move {
                    minter.refresh(&identity, &grants, &credential).await;
                });
                Ok((token, true))
            }
            Found::Miss => cache
                .mint_once(key, now, &ring, &rendering, || {
                    self.mint_with(&ring, identity, grants, now)
                })
                .await
                .map(|token| (token, false)),
        }
    }

    /// Mints a replacement in the background and caches it under the current ring.
    async fn refresh(&self, identity: &Identity, grants: &Grants, credential: &Fingerprint) {
        let Some(cache) = &self.cache else {
            return;
        };
        let ring = self.ring.load_full();
        let now = crate::clock::unix_now();
        match self.mint_with(&ring, identity, grants, now) {
            Ok(signed) => {
                let key = self.token_key(identity, grants, credential, ring.active().kid());
                cache.store(key, signed, ring.generation(), now);
            }
            Err(e) => tracing::debug!(error = %e, "background token refresh failed"),
        }
    }

    /// SHA-256 over everything a minted token depends on, each part length-prefixed.
    fn token_key(
        &self,
        identity: &Identity,
        grants: &Grants,
        credential: &Fingerprint,
        kid: &str,
    ) -> TokenKey {
        let mut hash = KeyDigest::new();
        let mut part = |bytes: &[u8]| hash.part(bytes);
        // Every identity field that reaches the claims or bounds `exp`: two callers whose
        // tokens would differ in any claim must never share a cached token.
        part(identity.issuer.as_bytes());
        part(identity.subject.as_bytes());
        part(identity.email.as_deref().unwrap_or_default().as_bytes());
        part(identity.name.as_deref().unwrap_or_default().as_bytes());
        part(&identity.expires_at.to_be_bytes());
        if let Some(cert) = &identity.certificate {
            part(cert.cn.as_deref().unwrap_or_default().as_bytes());
            part(cert.org.as_deref().unwrap_or_default().as_bytes());
            part(cert.thumbprint_s256.as_bytes());
        }
        if let Some(aws) = &identity.aws {
            part(aws.account.as_bytes());
            part(aws.user_id.as_bytes());
            part(aws.session.as_deref().unwrap_or_default().as_bytes());
        }
        part(credential);
        part(grants.fingerprint());
        for audience in &self.audience {
            part(audience.as_bytes());
        }
        part(kid.as_bytes());
        hash.finish()
    }

    /// The minted `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Mints a token for `identity` carrying `grants`, valid from `now` until
    /// min(now + lifetime, the credential's expiry).
    pub fn mint(
        &self,
        identity: &Identity,
        grants: &Grants,
        now: u64,
    ) -> Result<MintedToken, MintError> {
        self.mint_with(&self.ring.load(), identity, grants, now)
            .map(|signed| signed.minted)
    }

    fn mint_with(
        &self,
        ring: &KeyRing,
        identity: &Identity,
        grants: &Grants,
        now: u64,
    ) -> Result<Signed, MintError> {
        let expires_at = identity
            .expires_at
            .min(now.saturating_add(self.lifetime.as_secs()));
        if expires_at <= now {
            return Err(MintError::CredentialExpired);
        }
        let mut stamp = Stamp {
            issued_at: now,
            expires_at,
            jti: [0u8; 16],
        };
        aws_lc_rs::rand::fill(&mut stamp.jti).map_err(|_| MintError::Signing)?;
        let payload = self.payload(identity, grants, &stamp)?;
        let key = ring.active();
        let (token, signature) = key
            .sign_jws_parts(&payload)
            .map_err(|_| MintError::Signing)?;
        let minted = MintedToken {
            token,
            issued_at: now,
            expires_at,
            kid: key.shared_kid(),
        };
        Ok(Signed {
            minted,
            stamp,
            signature,
        })
    }

    /// The payload JSON of a token for `identity` with `grants` and `stamp`: the same bytes
    /// for the same inputs, which is what lets the cache keep only the signature.
    fn payload(
        &self,
        identity: &Identity,
        grants: &Grants,
        stamp: &Stamp,
    ) -> Result<Vec<u8>, MintError> {
        let mut jti = [0u8; 22];
        let written = URL_SAFE_NO_PAD
            .encode_slice(stamp.jti, &mut jti)
            .map_err(|_| MintError::Signing)?;
        let claims = MintedClaims {
            minter: self,
            identity,
            grants,
            issued_at: stamp.issued_at,
            expires_at: stamp.expires_at,
            jti: std::str::from_utf8(&jti[..written]).map_err(|_| MintError::Signing)?,
        };
        serde_json::to_vec(&claims).map_err(|_| MintError::Signing)
    }
}
