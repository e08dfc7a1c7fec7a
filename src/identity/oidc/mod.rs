//! Bearer JWTs from trusted identity providers.
//!
//! Verification order: shape → header (`alg` never `none`, never HMAC) → `iss` must be a
//! configured issuer → key by `kid` (one refetch on a miss) → the key's pinned algorithm →
//! signature → time claims → audience. The unverified `iss` is only used to choose among the
//! configured issuers; nothing is fetched from a URL that a token carries.

mod claims;
mod config;
pub(crate) mod jwks;
mod kubernetes;
pub(crate) mod unverified;
mod verify_key;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::config::{IssuerKind, TrustedIssuerConfig};

use self::claims::{ClaimRules, IdpClaims};
pub(crate) use self::config::TrustedIssuerFile;
use self::jwks::{IssuerKeys, KeySet};
use self::kubernetes::{TokenReviewSetupError, TokenReviewer};
use self::unverified::UnverifiedJwt;
use self::verify_key::VerifyKey;
use super::{AuthError, Identity, OtherClaims};
use crate::clock::unix_now;
use crate::digest_map::{DigestMap, Expiring};

/// Verifies bearer tokens against the configured issuers.
pub struct OidcVerifier {
    issuers: HashMap<String, TrustedIssuer>,
    /// Tokens already verified, by SHA-256 of the token: a repeated token skips the signature
    /// check (90 % of a cached swap's cost, see docs/benchmarks.md).
    verified: DigestMap<Verified>,
    /// Whether identities carry the IdP's other claims (grant rules are configured).
    keep_other_claims: bool,
}

/// A verified token: who it proved, and the key that proved it.
struct Verified {
    identity: Arc<Identity>,
    kid: Option<Box<str>>,
}

/// Verified tokens are forgotten at their `exp`.
impl Expiring for Verified {
    fn expired(&self, now: u64) -> bool {
        now >= self.identity.expires_at
    }

    fn heap_bytes(&self) -> usize {
        // The identity is shared with the Checks it answers; counted here as its struct.
        std::mem::size_of::<Identity>()
            + self.kid.as_ref().map_or(0, |kid| kid.len() + 16)
            + self.identity.claims.as_ref().map_or(0, |c| c.heap_bytes())
            + self.identity.kubernetes.as_ref().map_or(0, |k| {
                std::mem::size_of::<crate::identity::KubernetesClaims>()
                    + k.namespace.len()
                    + k.service_account.len()
                    + k.pod.as_ref().map_or(0, String::len)
            })
    }
}

/// Upper bound of remembered verifications.
const VERIFIED_CAPACITY: u64 = 100_000;

/// A configured issuer with its keys and validation rules, fixed at start-up.
struct TrustedIssuer {
    keys: Arc<IssuerKeys>,
    audiences: Vec<String>,
    leeway: Duration,
    refresh_interval: Duration,
    assertion: bool,
    kind: IssuerKind,
    /// TokenReview, when configured (an `Err` when it could not be set up: every token of the
    /// issuer is then 503; `serve` and `check-config` refuse such a config first).
    review: Option<Result<Arc<TokenReviewer>, Arc<TokenReviewSetupError>>>,
}

/// Which audiences a token must name.
#[derive(Clone, Copy)]
enum Audience<'a> {
    /// The issuer's `audiences` (none configured: not checked).
    OfIssuer,
    /// One of these, always (an assertion names the token endpoint).
    OneOf(&'a [String]),
}

/// A verified RFC 7523 assertion.
#[derive(Debug, Clone)]
pub struct Assertion {
    /// Who it asserts.
    pub identity: Identity,
    /// Its `jti`, for replay protection until `identity.expires_at`.
    pub jti: String,
}

/// What a trusted issuer's keys look like right now (for `/readyz` and logs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuerStatus {
    /// The issuer.
    pub issuer: String,
    /// Whether the issuer's keys were fetched (and are not older than `max_stale`).
    pub keys_loaded: bool,
    /// How many of the fetched keys can verify tokens; 0 with `keys_loaded` means every token
    /// of this issuer is refused with "no usable key".
    pub usable_keys: usize,
    /// Why the last fetch failed, when it did.
    pub last_error: Option<String>,
}

impl OidcVerifier {
    /// Sets up one key cache per configured issuer; nothing is fetched yet.
    pub fn new(
        trust: &[TrustedIssuerConfig],
        client: reqwest::Client,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Self {
        let issuers = trust
            .iter()
            .map(|trusted| {
                let keys = IssuerKeys::new(trusted, client.clone(), metrics.clone());
                let review = trusted.token_review.as_ref().map(|review| {
                    TokenReviewer::new(review, &trusted.audiences)
                        .map(Arc::new)
                        .map_err(Arc::new)
                });
                let issuer = TrustedIssuer {
                    keys: Arc::new(keys),
                    audiences: trusted.audiences.clone(),
                    leeway: trusted.leeway,
                    refresh_interval: trusted.refresh_interval,
                    assertion: trusted.assertion,
                    kind: trusted.kind,
                    review,
                };
                (trusted.issuer.clone(), issuer)
            })
            .collect();
        let verified = DigestMap::new(VERIFIED_CAPACITY, u64::MAX);
        Self {
            issuers,
            verified,
            keep_other_claims: false,
        }
    }

    /// Keeps the IdP's other claims (`groups` …) on verified identities, for grant rules.
    pub fn keeping_other_claims(mut self, keep: bool) -> Self {
        self.keep_other_claims = keep;
        self
    }

    /// Fetches every issuer's keys once, concurrently, waiting at most `wait`; failures are
    /// logged and retried by the background refresh.
    pub async fn prefetch(&self, wait: Duration) {
        let fetches = self.issuers.values().map(|issuer| {
            let keys = issuer.keys.clone();
            async move {
                match tokio::time::timeout(wait, keys.refresh()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(issuer = %keys.issuer(), error = %e, "could not fetch issuer keys at start-up")
                    }
                    Err(_) => {
                        tracing::warn!(issuer = %keys.issuer(), "fetching issuer keys at start-up timed out")
                    }
                }
            }
        });
        futures_util::future::join_all(fetches).await;
    }

    /// Starts one key refresh per issuer in `background`, which stops them.
    pub(crate) fn spawn_refreshers(&self, background: &crate::background::Background) {
        for issuer in self.issuers.values() {
            background
                .spawn_until_stopped(issuer.keys.clone().refresh_forever(issuer.refresh_interval));
        }
    }

    /// The state of every issuer's keys.
    pub fn status(&self) -> Vec<IssuerStatus> {
        let mut status: Vec<IssuerStatus> = self
            .issuers
            .values()
            .map(|issuer| IssuerStatus {
                issuer: issuer.keys.issuer().to_owned(),
                keys_loaded: issuer.keys.current().is_some(),
                usable_keys: issuer
                    .keys
                    .current()
                    .map_or(0, |set| set.by_kid.len() + set.without_kid.len()),
                last_error: issuer.keys.last_error().map(|e| e.as_ref().clone()),
            })
            .collect();
        status.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        status
    }

    /// Per configured issuer, how long ago its keys were fetched (`None`: never).
    pub fn keys_ages(&self) -> Vec<(String, Option<Duration>)> {
        self.issuers
            .iter()
            .map(|(issuer, trusted)| (issuer.clone(), trusted.keys.age()))
            .collect()
    }

    /// Verifies a bearer token; a key refetch gives up at `deadline`.
    ///
    /// A token verified before is accepted again without its signature check while it has not
    /// expired and the key that verified it is still published by its issuer (a key the IdP
    /// withdraws takes its tokens' verifications with it).
    pub async fn verify(&self, token: &str, deadline: Instant) -> Result<Arc<Identity>, AuthError> {
        let fingerprint = crate::credential::fingerprint_of(token.as_bytes());
        self.verify_known(token, &fingerprint, deadline).await
    }

    /// [`Self::verify`] for a token whose SHA-256 the caller already has.
    pub async fn verify_known(
        &self,
        token: &str,
        fingerprint: &crate::credential::Fingerprint,
        deadline: Instant,
    ) -> Result<Arc<Identity>, AuthError> {
        let now = unix_now();
        // One look-up of the issuer serves both the key check and the TokenReview it may ask.
        let remembered = self.verified.read(fingerprint, now, |known| {
            let issuer = self.issuers.get(known.identity.issuer.as_str())?;
            still_published(issuer, known).then(|| (known.identity.clone(), issuer.review.clone()))
        });
        if let Some(Some((identity, review))) = remembered {
            reviewed(review.as_ref(), token, fingerprint, &identity, deadline).await?;
            return Ok(identity);
        }
        let (identity, kid, _) = self
            .verify_signature_and_claims(token, Audience::OfIssuer, deadline)
            .await?;
        let identity = Arc::new(identity);
        let review = self
            .issuers
            .get(identity.issuer.as_str())
            .and_then(|issuer| issuer.review.as_ref());
        reviewed(review, token, fingerprint, &identity, deadline).await?;
        let verified = Verified {
            identity: identity.clone(),
            kid: kid.map(String::into_boxed_str),
        };
        self.verified.insert(*fingerprint, verified, now);
        Ok(identity)
    }

    /// Why a configured TokenReview cannot be set up, per issuer (for start-up and
    /// `check-config`).
    pub fn token_review_problems(&self) -> Vec<String> {
        self.issuers
            .iter()
            .filter_map(|(issuer, trusted)| match &trusted.review {
                Some(Err(reason)) => Some(format!("trust ({issuer}): {reason}")),
                _ => None,
            })
            .collect()
    }

    /// Whether `token` names (unverified) an issuer with `assertion: true`: at `/exchange`,
    /// such a token is an assertion however it arrives, so it is used once.
    pub fn is_from_assertion_issuer(&self, token: &str) -> bool {
        UnverifiedJwt::parse(token).is_ok_and(|parts| {
            self.issuers
                .get(parts.issuer.as_str())
                .is_some_and(|issuer| issuer.assertion)
        })
    }

    /// Verifies an RFC 7523 assertion: from an issuer with `assertion: true`, naming one of
    /// `audiences` (our token endpoint) in `aud`, with `exp` and a `jti`. Never remembered:
    /// each assertion is used once.
    pub async fn verify_assertion(
        &self,
        token: &str,
        audiences: &[String],
        deadline: Instant,
    ) -> Result<Assertion, AuthError> {
        let parts = UnverifiedJwt::parse(token)?;
        let issuer = self
            .issuers
            .get(parts.issuer.as_str())
            .ok_or(AuthError::UnknownIssuer)?;
        if !issuer.assertion {
            return Err(AuthError::AssertionNotAllowed);
        }
        let (identity, _, jti) = self
            .verify_signature_and_claims(token, Audience::OneOf(audiences), deadline)
            .await?;
        let jti = jti
            .filter(|jti| !jti.is_empty())
            .ok_or(AuthError::InvalidClaim("jti is required in an assertion"))?;
        Ok(Assertion { identity, jti })
    }

    /// The full check; returns the identity, the `kid` of the key that verified it, and the
    /// token's `jti`.
    async fn verify_signature_and_claims(
        &self,
        token: &str,
        audience: Audience<'_>,
        deadline: Instant,
    ) -> Result<(Identity, Option<String>, Option<String>), AuthError> {
        let parts = UnverifiedJwt::parse(token)?;
        let issuer = self
            .issuers
            .get(parts.issuer.as_str())
            .ok_or(AuthError::UnknownIssuer)?;
        if issuer.kind == IssuerKind::Kubernetes {
            kubernetes::refuse_legacy(&parts.payload)?;
        }
        if !issuer.keys.allowed().contains(&parts.algorithm) {
            return Err(AuthError::AlgorithmNotAllowed(
                "the issuer is not allowed to use this algorithm",
            ));
        }
        let key = find_key(&issuer.keys, parts.kid.as_deref(), deadline).await?;
        key.verify(
            parts.algorithm,
            &token.as_bytes()[..parts.signed_len],
            &parts.signature,
        )?;

        let mut claims = IdpClaims::parse(&parts.payload)?;
        let rules = ClaimRules {
            now: unix_now(),
            leeway: issuer.leeway.as_secs(),
            audiences: match audience {
                Audience::OfIssuer => issuer.audiences.as_slice(),
                Audience::OneOf(audiences) => audiences,
            },
        };
        let (expires_at, subject) = claims.check(&rules)?;
        let kubernetes = match issuer.kind {
            IssuerKind::Kubernetes => Some(Box::new(kubernetes::service_account(
                &subject,
                claims.kubernetes,
            )?)),
            IssuerKind::Oidc => None,
        };
        let other_claims = if self.keep_other_claims {
            other_claims(&parts.payload)
        } else {
            None
        };
        let identity = Identity {
            subject,
            issuer: claims.iss,
            email: claims.email,
            name: claims.name,
            expires_at,
            certificate: None,
            aws: None,
            claims: other_claims,
            kubernetes,
        };
        Ok((identity, parts.kid, claims.jti))
    }
}

/// Whether the key that verified a remembered token is still among its issuer's keys.
fn still_published(issuer: &TrustedIssuer, known: &Verified) -> bool {
    issuer
        .keys
        .current()
        .is_some_and(|set| lookup(&set, known.kid.as_deref()).is_some())
}

/// Confirms a Kubernetes token with TokenReview when its issuer asks for that (`review`); a
/// remembered verification is confirmed again once its confirmation is older than
/// `token_review.cache_for`.
async fn reviewed(
    review: Option<&Result<Arc<TokenReviewer>, Arc<TokenReviewSetupError>>>,
    token: &str,
    fingerprint: &crate::credential::Fingerprint,
    identity: &Identity,
    deadline: Instant,
) -> Result<(), AuthError> {
    let Some(review) = review else {
        return Ok(());
    };
    let reviewer = review.as_ref().map_err(|reason| {
        tracing::error!(%reason, "TokenReview is not set up");
        AuthError::TokenReviewUnavailable
    })?;
    reviewer
        .confirm(
            token,
            fingerprint,
            &identity.subject,
            identity.expires_at,
            deadline,
        )
        .await
}

/// Finds the key a token names, refetching once when it is unknown.
async fn find_key(
    keys: &IssuerKeys,
    kid: Option<&str>,
    deadline: Instant,
) -> Result<Arc<VerifyKey>, AuthError> {
    let current = keys.current();
    if let Some(found) = current.as_ref().and_then(|set| lookup(set, kid)) {
        return Ok(found);
    }
    let refetched = keys
        .refetch_after_miss(current.as_ref(), deadline)
        .await
        .map_err(|_| AuthError::KeysUnavailable)?;
    match refetched {
        None => Err(AuthError::KeysUnavailable),
        Some(set) if set.is_empty() => Err(AuthError::NoUsableKey),
        Some(set) => lookup(&set, kid).ok_or(AuthError::UnknownKid),
    }
}

fn lookup(set: &KeySet, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
    match kid {
        Some(kid) => set.by_kid.get(kid).cloned(),
        // Without a kid the key must be unambiguous.
        None => match (set.without_kid.as_slice(), set.by_kid.len()) {
            ([only], 0) => Some(only.clone()),
            ([], 1) => set.by_kid.values().next().cloned(),
            _ => None,
        },
    }
}

/// Claims that [`Identity`] carries in fields of its own, or that only validation reads.
const REGISTERED_CLAIMS: [&str; 10] = [
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "email", "name", "azp",
];

/// The claims grant rules may match on, from a payload whose signature was verified: all but
/// the registered ones and nested objects. Read only when rules are configured.
fn other_claims(payload: &[u8]) -> Option<Box<OtherClaims>> {
    let all: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(payload).unwrap_or_default();
    let kept: Vec<_> = all
        .into_iter()
        .filter(|(name, value)| !REGISTERED_CLAIMS.contains(&name.as_str()) && !value.is_object())
        .collect();
    (!kept.is_empty()).then(|| Box::new(OtherClaims(kept)))
}

#[cfg(test)]
mod tests;
