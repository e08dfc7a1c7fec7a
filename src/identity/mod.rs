//! Stage 2, authenticate: turn a [`Credential`] into a verified [`Identity`].
//!
//! Bearer tokens are verified by [`oidc`] against the configured issuers only. The identity
//! carries the credential's own expiry, so later stages can never mint a token that outlives it.

pub(crate) mod aws_iam;
pub mod oidc;
pub(crate) mod x509;

use std::sync::Arc;
use std::time::Instant;

use crate::credential::{Credential, Fingerprint};

pub use self::aws_iam::AwsIamConfig;
use self::aws_iam::AwsIamVerifier;
use self::aws_iam::presigned::TOKEN_PREFIX;

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
    /// Set when a client certificate proved (or was bound to) the identity (boxed: most
    /// identities have none, and a remembered identity should stay small).
    pub certificate: Option<Box<CertificateClaims>>,
    /// Set when an AWS IAM principal proved the identity (boxed, as the certificate).
    pub aws: Option<Box<AwsClaims>>,
    /// The IdP's other claims (`groups` …), kept only when grant rules may read them.
    pub claims: Option<Box<OtherClaims>>,
    /// Set when a Kubernetes service-account token proved the identity (`trust[].kind:
    /// kubernetes`).
    pub kubernetes: Option<Box<KubernetesClaims>>,
}

/// Who a Kubernetes service-account token names (its `kubernetes.io` claim), for grant rules
/// and `explain`; not minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesClaims {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub service_account: String,
    /// The pod the token is bound to, when it is.
    pub pod: Option<String>,
}

/// A bearer token's claims beyond the registered ones (`iss`, `sub`, `aud`, `exp`, `nbf`,
/// `iat`, `jti`, `email`, `name`): what grant rules match on. Nested objects are not kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtherClaims(pub Vec<(String, serde_json::Value)>);

impl OtherClaims {
    /// The value of the claim `name`, if the token had it.
    pub fn get(&self, name: &str) -> Option<&serde_json::Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// About what the claims occupy on the heap (for cache bounds).
    pub fn heap_bytes(&self) -> usize {
        fn value_bytes(value: &serde_json::Value) -> usize {
            let own = std::mem::size_of::<serde_json::Value>();
            match value {
                serde_json::Value::String(s) => own + s.len(),
                serde_json::Value::Array(items) => {
                    own + items.iter().map(value_bytes).sum::<usize>()
                }
                _ => own,
            }
        }
        self.0
            .iter()
            .map(|(name, value)| name.len() + std::mem::size_of::<String>() + value_bytes(value))
            .sum()
    }
}

/// What an AWS IAM identity adds to the minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsClaims {
    /// `aws`, `aws-cn` or `aws-us-gov` (for grant rules; not minted).
    pub partition: String,
    /// The 12-digit account (`aws:account`).
    pub account: String,
    /// STS's unique id of the caller (`aws:user_id`).
    pub user_id: String,
    /// The session name of an assumed role (`aws:session`).
    pub session: Option<String>,
    /// The role's name when the caller is a role (for grants from its tags; not minted).
    pub role_name: Option<String>,
}

/// What a client certificate adds to the minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateClaims {
    /// The subject CN (`cert:cn`).
    pub cn: Option<String>,
    /// The subject O (`cert:org`).
    pub org: Option<String>,
    /// The subject OU (for grant rules; not minted).
    pub ou: Option<String>,
    /// The SPIFFE ID (URI SAN), when the certificate has one (for grant rules; not minted).
    pub spiffe_id: Option<String>,
    /// base64url SHA-256 of the certificate's DER: `cnf.x5t#S256` (RFC 8705).
    pub thumbprint_s256: String,
}

/// Remembered identities are forgotten when their credential expires.
impl crate::clock::ExpiresAt for Identity {
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
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
    /// The client certificate is unusable (malformed, expired, untrusted, no usable name).
    #[error("invalid client certificate: {0}")]
    Certificate(&'static str),
    /// The issuer answered, but publishes no key this sidecar can verify with (all too short,
    /// for encryption, or outside the allowed algorithms).
    #[error("no usable key: the issuer publishes no key that can verify its tokens")]
    NoUsableKey,
    /// An assertion from an issuer not allowed for JWT bearer grants (`trust[].assertion`).
    #[error("the assertion's issuer is not allowed for JWT bearer grants")]
    AssertionNotAllowed,
    /// An assertion's `jti` was used before, within its lifetime.
    #[error("the assertion was already used (jti replayed)")]
    Replayed,
    /// An AWS IAM token broke a rule checked before any STS call.
    #[error("invalid AWS IAM token: {0}")]
    AwsToken(&'static str),
    /// STS refused the presigned request: a bad or expired signature, or a token made for
    /// another server id.
    #[error("invalid AWS IAM token: STS refused its signature")]
    StsRefused,
    /// STS could not be reached or answered with something unusable.
    #[error("AWS STS is unavailable")]
    StsUnavailable,
    /// STS throttled the call (`Throttling`): retry later.
    #[error("AWS STS is throttling; retry later")]
    StsThrottled,
    /// A genuine identity this sidecar does not serve: an AWS account or partition it was
    /// not configured for, the account root, a federated user.
    #[error("identity not served: {0}")]
    NotServed(&'static str),
    /// A Kubernetes service-account token broke a rule of its kind, or the API server does
    /// not confirm it.
    #[error("invalid service-account token: {0}")]
    Kubernetes(&'static str),
    /// The API server could not be asked to confirm a token (TokenReview).
    #[error("the Kubernetes API server is unavailable for TokenReview")]
    TokenReviewUnavailable,
    /// The issuer's keys could not be obtained and none are cached.
    #[error("keys of the token's issuer are unavailable")]
    KeysUnavailable,
}

impl AuthError {
    /// True when the caller is not at fault and a retry may succeed (answered 503, not 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            AuthError::KeysUnavailable
                | AuthError::StsUnavailable
                | AuthError::StsThrottled
                | AuthError::TokenReviewUnavailable
        )
    }

    /// True when the credential is genuine but names a caller this sidecar does not serve
    /// (answered 403, not 401: presenting it again will not help).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::NotServed(_))
    }
}

/// Verifies every kind of credential this release accepts.
pub struct Authenticator {
    oidc: oidc::OidcVerifier,
    x509: Option<x509::X509Verifier>,
    aws_iam: Option<AwsIamVerifier>,
}

impl Authenticator {
    /// Wraps the verifiers; `x509` and `aws_iam` are `None` when their credentials are off.
    pub fn new(
        oidc: oidc::OidcVerifier,
        x509: Option<x509::X509Verifier>,
        aws_iam: Option<AwsIamVerifier>,
    ) -> Self {
        Self {
            oidc,
            x509,
            aws_iam,
        }
    }

    /// A bearer value: an AWS IAM token by its prefix, else a JWT of a trusted issuer.
    async fn verify_bearer(
        &self,
        token: &str,
        fingerprint: &Fingerprint,
        deadline: Instant,
    ) -> Result<Arc<Identity>, AuthError> {
        if !token.starts_with(TOKEN_PREFIX) {
            return self.oidc.verify_known(token, fingerprint, deadline).await;
        }
        match &self.aws_iam {
            Some(aws_iam) => aws_iam.verify(token, fingerprint, deadline).await,
            None => Err(AuthError::AwsToken("AWS IAM identities are not enabled")),
        }
    }

    /// The bearer-token verifier (for readiness reports and start-up prefetch).
    pub fn oidc(&self) -> &oidc::OidcVerifier {
        &self.oidc
    }

    /// Verifies a credential; network work (a key refetch) stops at `deadline`. A remembered
    /// verification is shared, not copied.
    pub async fn authenticate(
        &self,
        credential: &Credential<'_>,
        fingerprint: &Fingerprint,
        deadline: Instant,
    ) -> Result<Arc<Identity>, AuthError> {
        let certificate = |cert| match &self.x509 {
            Some(x509) => x509.verify(cert, crate::clock::unix_now()),
            None => Err(AuthError::Certificate(
                "client certificates are not enabled",
            )),
        };
        match credential {
            Credential::Bearer(token) => {
                self.verify_bearer(token.expose(), fingerprint, deadline)
                    .await
            }
            Credential::Certificate(cert) => certificate(cert).map(Arc::new),
            Credential::Both(token, cert) => {
                // The bearer token says who; the certificate binds the minted token to the key.
                let mut identity = self
                    .verify_bearer(token.expose(), fingerprint, deadline)
                    .await?;
                let proof = certificate(cert)?;
                let bound = Arc::make_mut(&mut identity);
                bound.expires_at = bound.expires_at.min(proof.expires_at);
                bound.certificate = proof.certificate;
                Ok(identity)
            }
        }
    }
}
