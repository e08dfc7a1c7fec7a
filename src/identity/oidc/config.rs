//! `trust:` — the identity providers whose tokens are accepted, and how each is checked.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::algorithms::parse_inbound;
use crate::config_check::ConfigCheck;
use crate::urls::check_fetch_url;

/// One trusted issuer, typed.
#[derive(Debug, Clone)]
pub struct TrustedIssuerConfig {
    /// Must equal the token's `iss` exactly.
    pub issuer: String,
    /// Where the issuer's keys are; when absent, OIDC discovery on `issuer` finds it.
    pub jwks_uri: Option<String>,
    /// When non-empty, the token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Allowed signature algorithms, parsed; never `none`, never HMAC.
    pub algorithms: Vec<Algorithm>,
    /// Extra CA bundle (PEM) for the issuer's HTTPS endpoints, e.g. the Kubernetes API server.
    pub ca_file: Option<PathBuf>,
    /// A file whose content is sent as `Authorization: Bearer` when fetching keys.
    pub bearer_token_file: Option<PathBuf>,
    /// Clock skew tolerated on `nbf` and `iat`.
    pub leeway: Duration,
    /// How often the keys are refreshed in the background.
    pub refresh_interval: Duration,
    /// How long the last keys keep serving while the issuer cannot be reached.
    pub max_stale: Duration,
    /// Whether its tokens may be used as RFC 7523 assertions at `/exchange`.
    pub assertion: bool,
    /// `oidc` (default) or `kubernetes`: a cluster's service-account issuer, whose tokens
    /// must also name a service account consistently (see `identity::oidc::kubernetes`).
    pub kind: IssuerKind,
    /// With `kind: kubernetes`: confirm each token with the API server's TokenReview too.
    pub token_review: Option<TokenReviewConfig>,
}

/// What kind of issuer a `trust:` entry is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuerKind {
    /// Any OpenID Connect issuer.
    #[default]
    Oidc,
    /// A Kubernetes cluster's service-account token issuer.
    Kubernetes,
}

/// `trust[].token_review`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenReviewConfig {
    /// The API server, e.g. `https://kubernetes.default.svc`.
    pub api_server: String,
    /// The CA bundle (PEM) that signed the API server's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The sidecar's own service-account token, sent as its bearer (allowed to create
    /// `tokenreviews`); read again when it changes.
    pub token_file: PathBuf,
    /// How long a confirmation is trusted (never past the token's `exp`).
    #[serde(default = "default_review_cache", with = "humantime_serde")]
    pub cache_for: Duration,
}

fn default_review_cache() -> Duration {
    Duration::from_secs(30)
}

/// Audiences a service-account token issued for the API server itself carries: accepting
/// them would accept every pod's default token, which the API server also takes.
const API_SERVER_AUDIENCES: &[&str] = &[
    "https://kubernetes.default.svc",
    "https://kubernetes.default.svc.cluster.local",
    "kubernetes.default.svc",
    "kubernetes",
    "api",
];

/// One `trust:` entry as written (algorithms still names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrustedIssuerFile {
    issuer: String,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    algorithms: Vec<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    #[serde(default = "default_leeway", with = "humantime_serde")]
    leeway: Duration,
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    refresh_interval: Duration,
    #[serde(default = "default_max_stale", with = "humantime_serde")]
    max_stale: Duration,
    #[serde(default)]
    assertion: bool,
    #[serde(default)]
    kind: IssuerKind,
    #[serde(default)]
    token_review: Option<TokenReviewConfig>,
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_max_stale() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl TrustedIssuerConfig {
    /// An issuer (keys at `jwks_uri`, else found by discovery) with every other setting at
    /// its default, as a `trust:` entry naming only these would get.
    pub(crate) fn with_defaults(issuer: &str, jwks_uri: Option<String>) -> Self {
        Self {
            issuer: issuer.to_owned(),
            jwks_uri,
            audiences: Vec::new(),
            algorithms: crate::algorithms::default_inbound(),
            ca_file: None,
            bearer_token_file: None,
            leeway: default_leeway(),
            refresh_interval: default_refresh_interval(),
            max_stale: default_max_stale(),
            assertion: false,
            kind: IssuerKind::Oidc,
            token_review: None,
        }
    }

    /// Types `trust[index]`; `None` when its algorithms do not parse (recorded in `check`).
    pub(crate) fn from_file(
        mut file: TrustedIssuerFile,
        index: usize,
        check: &mut ConfigCheck,
    ) -> Option<Self> {
        let path = format!("trust[{index}]");
        check.check(format!("{path}.issuer"), check_fetch_url(&file.issuer));
        if let Some(uri) = &file.jwks_uri {
            check.check(format!("{path}.jwks_uri"), check_fetch_url(uri));
        }
        let algorithms = parse_inbound(&file.algorithms)
            .map_err(|reason| check.problem(format!("{path}.algorithms"), reason.to_string()))
            .ok();
        if let Some(ca_file) = &mut file.ca_file {
            check.readable(format!("{path}.ca_file"), ca_file);
        }
        if let Some(token_file) = &mut file.bearer_token_file {
            check.readable(format!("{path}.bearer_token_file"), token_file);
        }
        if file.refresh_interval < Duration::from_secs(1) {
            check.problem(format!("{path}.refresh_interval"), "must be at least 1s");
        }
        file.check_kubernetes(&path, check);
        Some(Self {
            issuer: file.issuer,
            jwks_uri: file.jwks_uri,
            audiences: file.audiences,
            algorithms: algorithms?,
            ca_file: file.ca_file,
            bearer_token_file: file.bearer_token_file,
            leeway: file.leeway,
            refresh_interval: file.refresh_interval,
            max_stale: file.max_stale,
            assertion: file.assertion,
            kind: file.kind,
            token_review: file.token_review,
        })
    }
}

impl TrustedIssuerFile {
    /// A Kubernetes issuer needs audiences of its own (never the API server's, nor the
    /// issuer URL, which is the default audience of every pod's token); TokenReview only
    /// for Kubernetes issuers.
    fn check_kubernetes(&mut self, path: &str, check: &mut ConfigCheck) {
        if self.kind != IssuerKind::Kubernetes {
            if self.token_review.is_some() {
                check.problem(
                    format!("{path}.token_review"),
                    "only for kind: kubernetes issuers",
                );
            }
            return;
        }
        if self.issuer == "kubernetes/serviceaccount" {
            check.problem(
                format!("{path}.issuer"),
                "legacy Secret-based service-account tokens (no expiry) are never accepted; \
                 use the cluster's service-account issuer URL",
            );
        }
        if self.audiences.is_empty() {
            check.problem(
                format!("{path}.audiences"),
                "required with kind: kubernetes: the audience callers' projected tokens are \
                 minted for (e.g. evidentsource)",
            );
        }
        for (i, audience) in self.audiences.iter().enumerate() {
            let audience = audience.trim_end_matches('/');
            if API_SERVER_AUDIENCES.contains(&audience)
                || audience == self.issuer.trim_end_matches('/')
            {
                check.problem(
                    format!("{path}.audiences[{i}]"),
                    "is the API server's audience: every pod's default token carries it; \
                     choose an audience of this service",
                );
            }
        }
        if let Some(review) = &mut self.token_review {
            check.check(
                format!("{path}.token_review.api_server"),
                check_fetch_url(&review.api_server),
            );
            if let Some(ca_file) = &mut review.ca_file {
                check.readable(format!("{path}.token_review.ca_file"), ca_file);
            }
            check.readable(
                format!("{path}.token_review.token_file"),
                &mut review.token_file,
            );
            if review.cache_for > Duration::from_secs(300) {
                check.problem(
                    format!("{path}.token_review.cache_for"),
                    "at most 5m: a deleted pod's token must stop working soon",
                );
            }
        }
    }
}
