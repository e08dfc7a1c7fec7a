//! Stage 2, authenticate: turn a [`Credential`] into a verified [`Identity`].
//!
//! Bearer tokens are verified by [`oidc`] against the configured issuers only. The identity
//! carries the credential's own expiry, so later stages can never mint a token that outlives it.

pub mod oidc;

use std::time::Instant;

use crate::credential::Credential;

/// Who the caller is, as proven by their credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject (`sub` of a bearer token).
    pub subject: String,
    /// Who vouched for the subject (the token's `iss`).
    pub issuer: String,
    /// The `email` claim, used as a fallback grants key and minted as-is.
    pub email: Option<String>,
    /// The `name` claim, minted as-is.
    pub name: Option<String>,
    /// Unix time after which the credential is no longer valid.
    pub expires_at: u64,
}

impl Identity {
    /// The keys to look grants up with, in order: the subject, then the e-mail address.
    pub fn grant_keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.subject.as_str())
            .chain(self.email.as_deref().filter(|email| *email != self.subject))
    }
}

/// Why a credential was not accepted. Descriptions name the check that failed and never
/// include any part of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is not a well-formed JWS compact serialization.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg: none`, in any letter case.
    #[error("unsigned token: alg none is never accepted")]
    AlgorithmNone,
    /// The algorithm is not allowed for this issuer or this key.
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(&'static str),
    /// `iss` is not one of the configured issuers.
    #[error("unknown issuer: the token's iss is not a trusted issuer")]
    UnknownIssuer,
    /// A claim every token must carry is missing or of the wrong type.
    #[error("missing or invalid claim: {0}")]
    InvalidClaim(&'static str),
    /// The issuer has no key with the token's `kid`, even after refetching its keys.
    #[error("unknown kid: the issuer publishes no key with the token's kid")]
    UnknownKid,
    /// The signature does not verify with the issuer's key.
    #[error("bad signature: the token's signature does not verify")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid: nbf is in the future")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token not yet valid: iat is in the future")]
    IssuedInFuture,
    /// `aud` does not name an accepted audience.
    #[error("wrong audience: aud names no accepted audience")]
    WrongAudience,
    /// The issuer's keys could not be obtained and none are cached.
    #[error("keys of the token's issuer are unavailable")]
    KeysUnavailable,
}

impl AuthError {
    /// True when the caller is not at fault and a retry may succeed (answered 503, not 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable)
    }
}

/// Verifies every kind of credential this release accepts.
pub struct Authenticator {
    oidc: oidc::OidcVerifier,
}

impl Authenticator {
    /// Wraps the verifiers.
    pub fn new(oidc: oidc::OidcVerifier) -> Self {
        Self { oidc }
    }

    /// The bearer-token verifier (for readiness reports and start-up prefetch).
    pub fn oidc(&self) -> &oidc::OidcVerifier {
        &self.oidc
    }

    /// Verifies a credential; network work (a key refetch) stops at `deadline`.
    pub async fn authenticate(
        &self,
        credential: &Credential,
        deadline: Instant,
    ) -> Result<Identity, AuthError> {
        match credential {
            Credential::Bearer(token) => self.oidc.verify(token.expose(), deadline).await,
        }
    }
}
