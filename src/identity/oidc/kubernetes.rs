//! Kubernetes service-account tokens (`trust[].kind: kubernetes`): the projected, audience-bound
//! tokens every pod can mount, verified like any issuer's (discovery, JWKS, pinned algorithms,
//! `exp`, `nbf`, the configured audiences) and then held to what the API server writes into
//! them: a `kubernetes.io` claim naming the namespace and service account, and a `sub` of
//! `system:serviceaccount:<namespace>:<name>` that agrees with it. Legacy Secret-based tokens
//! (no expiry, flat `kubernetes.io/serviceaccount/…` claims) are refused as a class.
//!
//! Optionally each token is also confirmed with the API server's TokenReview ([`TokenReviewer`]),
//! so a deleted pod's token stops working within `token_review.cache_for`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::config::TokenReviewConfig;
use crate::clock::unix_now;
use crate::file_stamp::SecretFile;
use crate::identity::{AuthError, KubernetesClaims};

/// The `kubernetes.io` claim of a projected service-account token.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct KubernetesIo {
    namespace: Option<String>,
    serviceaccount: Option<NamedObject>,
    pod: Option<NamedObject>,
}

#[derive(Debug, Clone, Deserialize)]
struct NamedObject {
    name: Option<String>,
}

/// The prefix of every service account's username.
const SUBJECT_PREFIX: &str = "system:serviceaccount:";

/// Refuses a legacy Secret-based token before anything else is checked: its claims are flat
/// `kubernetes.io/serviceaccount/…` keys and it never expires.
pub(super) fn refuse_legacy(payload: &[u8]) -> Result<(), AuthError> {
    let legacy = payload
        .windows(b"\"kubernetes.io/serviceaccount/".len())
        .any(|w| w == b"\"kubernetes.io/serviceaccount/");
    if legacy {
        return Err(AuthError::Kubernetes(
            "a legacy Secret-based service-account token (it never expires); mount a projected token",
        ));
    }
    Ok(())
}

/// The service account `sub` and the `kubernetes.io` claim name, when they agree.
pub(super) fn service_account(
    subject: &str,
    claim: Option<KubernetesIo>,
) -> Result<KubernetesClaims, AuthError> {
    let claim = claim.ok_or(AuthError::Kubernetes(
        "the kubernetes.io claim is missing: not a service-account token",
    ))?;
    let namespace = claim
        .namespace
        .filter(|n| !n.is_empty())
        .ok_or(AuthError::Kubernetes("kubernetes.io.namespace is missing"))?;
    let name = claim
        .serviceaccount
        .and_then(|sa| sa.name)
        .filter(|n| !n.is_empty())
        .ok_or(AuthError::Kubernetes(
            "kubernetes.io.serviceaccount.name is missing",
        ))?;
    let (sub_namespace, sub_name) = subject
        .strip_prefix(SUBJECT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or(AuthError::Kubernetes(
            "sub is not system:serviceaccount:<namespace>:<name>",
        ))?;
    if sub_namespace != namespace || sub_name != name {
        return Err(AuthError::Kubernetes(
            "sub does not agree with the kubernetes.io claim",
        ));
    }
    Ok(KubernetesClaims {
        namespace,
        service_account: name,
        pod: claim.pod.and_then(|pod| pod.name).filter(|n| !n.is_empty()),
    })
}

/// Largest TokenReview answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Upper bound of one TokenReview call (the Check's deadline bounds it too).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(2);

/// Confirms tokens with the API server (`POST /apis/authentication.k8s.io/v1/tokenreviews`)
/// and remembers each confirmation, by the token's SHA-256, for `cache_for` (never past the
/// token's `exp`). Refusals are never remembered.
pub(super) struct TokenReviewer {
    client: reqwest::Client,
    url: String,
    /// The sidecar's own token (read again when the kubelet rotates it).
    own_token: SecretFile,
    audiences: Vec<String>,
    cache_for: Duration,
    confirmed: moka::future::Cache<[u8; 32], u64>,
}

#[derive(Deserialize)]
struct Review {
    status: Option<ReviewStatus>,
}

#[derive(Deserialize)]
struct ReviewStatus {
    #[serde(default)]
    authenticated: bool,
    #[serde(default)]
    audiences: Vec<String>,
    user: Option<ReviewUser>,
}

#[derive(Deserialize)]
struct ReviewUser {
    username: Option<String>,
}

/// Why TokenReview cannot be set up for an issuer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenReviewSetupError {
    /// `token_review.ca_file` is not a usable CA bundle.
    #[error("token_review.ca_file: {0}")]
    CaFile(#[from] crate::outbound::CaBundleError),
    /// The HTTPS client could not be built.
    #[error("token_review: cannot build the HTTPS client: {0}")]
    Client(#[from] reqwest::Error),
}

impl TokenReviewer {
    /// A reviewer for `config`, asking for `audiences`.
    pub(super) fn new(
        config: &TokenReviewConfig,
        audiences: &[String],
    ) -> Result<Self, TokenReviewSetupError> {
        let mut builder = crate::outbound::client_builder(REVIEW_TIMEOUT).timeout(REVIEW_TIMEOUT);
        if let Some(ca_file) = &config.ca_file {
            builder = crate::outbound::trusting(builder, ca_file)?;
        }
        Ok(Self {
            client: builder.build()?,
            url: format!(
                "{}/apis/authentication.k8s.io/v1/tokenreviews",
                config.api_server.trim_end_matches('/')
            ),
            own_token: SecretFile::new(config.token_file.clone()),
            audiences: audiences.to_vec(),
            cache_for: config.cache_for,
            confirmed: moka::future::Cache::builder()
                .max_capacity(100_000)
                .expire_after(crate::clock::UntilItExpires)
                .build(),
        })
    }

    /// `Ok` when the API server confirms `token` for `subject` (or did within `cache_for`);
    /// 401 when it does not; 503 when it cannot be asked by `deadline`.
    pub(super) async fn confirm(
        self: &Arc<Self>,
        token: &str,
        fingerprint: &[u8; 32],
        subject: &str,
        expires_at: u64,
        deadline: Instant,
    ) -> Result<(), AuthError> {
        if self.confirmed.get(fingerprint).await.is_some() {
            return Ok(());
        }
        let budget = REVIEW_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        let asked = tokio::time::timeout(budget, self.ask(token, subject))
            .await
            .unwrap_or_else(|_| {
                tracing::warn!("the API server did not answer the TokenReview in time");
                Err(AuthError::TokenReviewUnavailable)
            });
        asked?;
        let until = expires_at.min(unix_now() + self.cache_for.as_secs());
        self.confirmed.insert(*fingerprint, until).await;
        Ok(())
    }

    async fn ask(&self, token: &str, subject: &str) -> Result<(), AuthError> {
        let unavailable = |what: &str| {
            tracing::warn!(what, "the TokenReview could not be made");
            AuthError::TokenReviewUnavailable
        };
        let own = self
            .own_token
            .current()
            .map_err(|_| unavailable("the sidecar's token_file cannot be read"))?;
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": { "token": token, "audiences": self.audiences },
        });
        let mut answer = self
            .client
            .post(&self.url)
            .bearer_auth(own.trim())
            .json(&body)
            .send()
            .await
            .map_err(|_| unavailable("the API server could not be reached"))?;
        if !answer.status().is_success() {
            // 401/403 here is the sidecar's own token or RBAC: not the caller's fault.
            return Err(unavailable(
                "the API server refused the TokenReview request",
            ));
        }
        let bytes = crate::outbound::read_capped(&mut answer, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                crate::outbound::BodyError::Transport(_) => unavailable("the answer was cut"),
                crate::outbound::BodyError::TooLarge => {
                    unavailable("the answer is larger than 64 KiB")
                }
            })?;
        let review: Review = serde_json::from_slice(&bytes)
            .map_err(|_| unavailable("the answer is not a TokenReview"))?;
        let status = review
            .status
            .ok_or_else(|| unavailable("the answer has no status"))?;
        if !status.authenticated {
            return Err(AuthError::Kubernetes(
                "the API server does not confirm this token (TokenReview): a deleted pod or a revoked token",
            ));
        }
        // An empty status.audiences means "valid for the API server": not for us.
        if !status.audiences.iter().any(|a| self.audiences.contains(a)) {
            return Err(AuthError::Kubernetes(
                "the API server confirms this token for no audience of ours (TokenReview)",
            ));
        }
        if status.user.and_then(|u| u.username).as_deref() != Some(subject) {
            return Err(AuthError::Kubernetes(
                "the API server names another user for this token (TokenReview)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(json: serde_json::Value) -> Option<KubernetesIo> {
        Some(serde_json::from_value(json).unwrap())
    }

    #[test]
    fn sub_must_agree_with_the_kubernetes_io_claim() {
        let good = json_claim("shop", "orders");
        let sa = service_account("system:serviceaccount:shop:orders", good.clone()).unwrap();
        assert_eq!(
            (
                sa.namespace.as_str(),
                sa.service_account.as_str(),
                sa.pod.as_deref()
            ),
            ("shop", "orders", Some("orders-7f9c"))
        );
        for (sub, expected) in [
            ("system:serviceaccount:shop:billing", "does not agree"),
            ("system:serviceaccount:other:orders", "does not agree"),
            ("orders", "is not system:serviceaccount"),
            ("system:serviceaccount:shop", "is not system:serviceaccount"),
        ] {
            let refused = service_account(sub, good.clone()).unwrap_err();
            assert!(refused.to_string().contains(expected), "{sub}: {refused}");
        }
        assert!(service_account("system:serviceaccount:shop:orders", None).is_err());
    }

    fn json_claim(namespace: &str, name: &str) -> Option<KubernetesIo> {
        claim(serde_json::json!({
            "namespace": namespace,
            "serviceaccount": { "name": name, "uid": "1" },
            "pod": { "name": "orders-7f9c", "uid": "2" },
            "node": { "name": "ip-10-0-0-1", "uid": "3" },
        }))
    }

    #[test]
    fn legacy_tokens_are_refused_by_their_claims() {
        let legacy = br#"{"iss":"kubernetes/serviceaccount","kubernetes.io/serviceaccount/namespace":"shop"}"#;
        assert!(refuse_legacy(legacy).is_err());
        assert!(refuse_legacy(br#"{"kubernetes.io":{"namespace":"shop"}}"#).is_ok());
    }
}
