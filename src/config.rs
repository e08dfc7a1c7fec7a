//! Typed configuration: the YAML file of SPEC §3, its defaults, and its validation.
//!
//! The file is read once at start-up into these structs; nothing on the request path parses a
//! string that could have been parsed here. Every problem is reported with the key path it was
//! found at (`trust[0].jwks_uri: …`), and `check-config` prints all of them at once.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Deserializer};

/// Everything the sidecar needs to run, validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the two listeners bind.
    #[serde(default)]
    pub listen: ListenConfig,
    /// What is minted.
    pub token: TokenConfig,
    /// Where the signing key comes from.
    pub signing: SigningConfig,
    /// Inbound identity providers; only these issuers are ever accepted.
    #[serde(default)]
    pub trust: Vec<TrustedIssuerConfig>,
    /// Client certificates as credentials.
    #[serde(default)]
    pub client_certs: ClientCertsConfig,
    /// AWS IAM identities as credentials (not in this release: must stay disabled).
    #[serde(default)]
    pub aws_iam: FeatureToggle,
    /// Where grants come from.
    pub grants: GrantsConfig,
    /// How the OK answer shapes the request that goes on to the backend.
    #[serde(default)]
    pub response: ResponseConfig,
}

/// `listen:` — the two sockets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// ext_authz gRPC (and grpc.health.v1); loopback by default because only Envoy calls it.
    #[serde(default = "default_authz_addr")]
    pub authz: SocketAddr,
    /// JWKS, discovery, health and metrics.
    #[serde(default = "default_http_addr")]
    pub http: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            authz: default_authz_addr(),
            http: default_http_addr(),
        }
    }
}

fn default_authz_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9001))
}

fn default_http_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9002))
}

/// `token:` — the claims every minted token carries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The minted `iss`, and the base of `jwks_uri` in discovery.
    pub issuer: String,
    /// The minted `aud`; omitted when empty.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Upper bound of a minted token's life; the inbound credential's expiry may cut it shorter.
    #[serde(default = "default_lifetime")]
    pub lifetime: HumanDuration,
    /// Name of the claim that carries the grants.
    #[serde(default = "default_grants_claim")]
    pub grants_claim: String,
    /// Reuse of minted tokens for repeated credentials.
    #[serde(default)]
    pub cache: TokenCacheConfig,
}

/// `token.cache`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// Off: every Check signs.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A cached token is served only while more than this share of its lifetime is left
    /// (percent, 1–99); a fresh one is minted in the background before it gets there.
    #[serde(default = "default_min_remaining_percent")]
    pub min_remaining_percent: u8,
    /// Upper bound of cached tokens.
    #[serde(default = "default_token_cache_entries")]
    pub max_entries: u64,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_remaining_percent: default_min_remaining_percent(),
            max_entries: default_token_cache_entries(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_min_remaining_percent() -> u8 {
    50
}

fn default_token_cache_entries() -> u64 {
    100_000
}

fn default_lifetime() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

fn default_grants_claim() -> String {
    "evs:grants".to_owned()
}

/// `signing:` — exactly one of `keys_dir`, `key_file`, `secrets_manager`, `dev_generate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// A folder of PEM private keys plus the file `active` naming the signing one.
    #[serde(default)]
    pub keys_dir: Option<PathBuf>,
    /// A single PEM private key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Keys from an AWS Secrets Manager secret, polled for changes.
    #[serde(default)]
    pub secrets_manager: Option<SecretsManagerConfig>,
    /// Generate an in-memory key at start (demo and development only).
    #[serde(default)]
    pub dev_generate: bool,
    /// `Cache-Control: max-age` of the JWKS answer.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age: HumanDuration,
    /// How often `keys_dir` / `key_file` are checked for changes (SIGHUP forces a check).
    #[serde(default = "default_reload_interval")]
    pub reload_interval: HumanDuration,
}

fn default_reload_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

/// `signing.secrets_manager` — a secret holding the keys (see `mint::secrets_manager`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsManagerConfig {
    /// The secret's name or ARN.
    pub secret_id: String,
    /// AWS region; default from the standard chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override; `AWS_ENDPOINT_URL_SECRETS_MANAGER` works as well.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// How often the secret is read for a new version.
    #[serde(default = "default_secret_poll_interval")]
    pub poll_interval: HumanDuration,
}

fn default_secret_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_jwks_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// One entry of `trust:` — an identity provider whose tokens are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    /// Must equal the token's `iss` exactly.
    pub issuer: String,
    /// Where the issuer's keys are; when absent, OIDC discovery on `issuer` finds it.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// When non-empty, the token's `aud` must contain one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allowed signature algorithms; default: every asymmetric algorithm supported.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Extra CA bundle (PEM) for the issuer's HTTPS endpoints, e.g. the Kubernetes API server.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A file whose content is sent as `Authorization: Bearer` when fetching keys.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Clock skew tolerated on `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    /// How often the keys are refreshed in the background.
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: HumanDuration,
    /// How long the last keys keep serving while the issuer cannot be reached.
    #[serde(default = "default_max_stale")]
    pub max_stale: HumanDuration,
}

fn default_leeway() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_refresh_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_max_stale() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}

/// `client_certs:` — client certificates as credentials (SPEC §5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertsConfig {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Where a certificate may come from, in order of preference.
    #[serde(default = "default_cert_sources")]
    pub from: Vec<CertSourceKind>,
    /// CA bundle (PEM) that header-sourced certificates must chain to.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify header-sourced (`xfcc`, `alb`) certificates against `ca_file` (default true).
    #[serde(default = "default_true")]
    pub verify_header_chains: bool,
    /// How the subject is named: `cn` → `cert:<CN>`, `spiffe` → the SPIFFE URI SAN.
    #[serde(default)]
    pub subject: CertSubject,
    /// Which XFCC element to trust: the one the nearest proxy appended (`last`) or `first`.
    #[serde(default)]
    pub xfcc_element: XfccElementChoice,
    /// What a request carrying both a bearer token and a certificate is.
    #[serde(default)]
    pub when_both: WhenBoth,
}

impl Default for ClientCertsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            from: default_cert_sources(),
            ca_file: None,
            verify_header_chains: true,
            subject: CertSubject::default(),
            xfcc_element: XfccElementChoice::default(),
            when_both: WhenBoth::default(),
        }
    }
}

fn default_cert_sources() -> Vec<CertSourceKind> {
    vec![CertSourceKind::Peer]
}

/// `client_certs.from` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSourceKind {
    /// Envoy's own TLS peer (`include_peer_certificate`).
    Peer,
    /// The `x-forwarded-client-cert` header.
    Xfcc,
    /// AWS ALB's `x-amzn-mtls-clientcert` header.
    Alb,
}

/// `client_certs.subject`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSubject {
    /// `cert:<CN>`.
    #[default]
    Cn,
    /// The `spiffe://` URI SAN.
    Spiffe,
}

/// `client_certs.xfcc_element`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XfccElementChoice {
    /// The element the nearest proxy appended.
    #[default]
    Last,
    /// The first element.
    First,
}

/// `client_certs.when_both`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenBoth {
    /// The bearer token is the credential.
    #[default]
    Bearer,
    /// The certificate is the credential.
    Certificate,
    /// Both must be present and valid; the identity is the bearer token's, bound to the certificate.
    RequireBoth,
}

/// A credential source that this release does not implement yet; accepted only when off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureToggle {
    /// Must be false.
    #[serde(default)]
    pub enabled: bool,
}

/// `grants:` — where grants come from and what happens to unknown subjects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// The store.
    #[serde(default)]
    pub source: GrantsSourceKind,
    /// The grants file, for `source: file`; relative paths are relative to the config file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The table, for `source: dynamodb`.
    #[serde(default)]
    pub dynamodb: Option<DynamoDbConfig>,
    /// Cache settings (used by remote stores).
    #[serde(default)]
    pub cache: GrantsCacheConfig,
    /// What a subject without an entry gets.
    #[serde(default)]
    pub unknown_subject: UnknownSubjectPolicy,
    /// What a subject whose store entry is not valid grants gets.
    #[serde(default)]
    pub malformed_item: MalformedItemPolicy,
}

/// `grants.dynamodb`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbConfig {
    /// The table, keyed by the string attribute `subject`.
    pub table: String,
    /// AWS region; default from the standard chain.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override; `AWS_ENDPOINT_URL_DYNAMODB` works as well.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Upper bound of one GetItem, retries included (the Check's deadline bounds it too).
    #[serde(default = "default_store_timeout")]
    pub timeout: HumanDuration,
    /// Attempts per GetItem, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_store_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(250))
}

fn default_max_attempts() -> u32 {
    2
}

/// `grants.malformed_item`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedItemPolicy {
    /// 503, logged with the subject: the operator must fix the item (default).
    #[default]
    Unavailable,
    /// Mint with empty grants, logged with the subject.
    Empty,
}

/// `grants.source`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantsSourceKind {
    /// A YAML file, hot-reloaded.
    #[default]
    File,
    /// A DynamoDB table.
    Dynamodb,
    /// IAM role tags (a later release).
    IamRoleTags,
}

/// `grants.cache`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsCacheConfig {
    /// How long found grants are reused.
    #[serde(default = "default_cache_ttl")]
    pub ttl: HumanDuration,
    /// How long "no such subject" is reused.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: HumanDuration,
    /// Upper bound of cached subjects.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// How long past its freshness a cached answer keeps serving while the store fails.
    #[serde(default = "default_stale_for")]
    pub stale_for: HumanDuration,
}

fn default_stale_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

impl Default for GrantsCacheConfig {
    fn default() -> Self {
        Self {
            ttl: default_cache_ttl(),
            negative_ttl: default_negative_ttl(),
            max_entries: default_max_entries(),
            stale_for: default_stale_for(),
        }
    }
}

fn default_cache_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_negative_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_max_entries() -> u64 {
    100_000
}

/// `grants.unknown_subject`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSubjectPolicy {
    /// Mint with empty grants (the reference behaviour).
    #[default]
    Empty,
    /// Refuse with 403.
    Deny,
}

/// `response:` — header edits on the way to the backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// Headers Envoy removes before the request goes on.
    #[serde(default = "default_remove_headers")]
    pub remove_headers: Vec<String>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        Self {
            remove_headers: default_remove_headers(),
        }
    }
}

fn default_remove_headers() -> Vec<String> {
    vec!["x-forwarded-client-cert".to_owned()]
}

/// A duration written the human way (`90s`, `1h`, `5m 30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!("not a duration like `90s` or `1h`: {e}"))
            })
    }
}

/// One problem found in a config, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `trust[0].jwks_uri`; empty for the file as a whole.
    pub path: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Why a config could not be used: every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The problems, in file order as far as possible.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    fn single(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            problems: vec![ConfigProblem {
                path: path.into(),
                reason: reason.into(),
            }],
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it are resolved
    /// against the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::single("", format!("cannot read {}: {}", path.display(), e.kind()))
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_yaml(&text, base)
    }

    /// Parses and validates YAML text; relative paths are resolved against `base_dir`.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let deserializer = serde_norway::Deserializer::from_str(text);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let mut reason = e.into_inner().to_string();
            // serde_norway prefixes its own (shorter) path; ours is the precise one.
            if let Some((head, rest)) = reason.split_once(": ")
                && !head.contains(' ')
                && path.starts_with(head)
            {
                reason = rest.to_owned();
            }
            ConfigError::single(path, reason)
        })?;
        config.resolve_paths(base_dir);
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.signing.keys_dir.as_mut().map(resolve);
        self.signing.key_file.as_mut().map(resolve);
        self.grants.file.as_mut().map(resolve);
        self.client_certs.ca_file.as_mut().map(resolve);
        for issuer in &mut self.trust {
            issuer.ca_file.as_mut().map(resolve);
            issuer.bearer_token_file.as_mut().map(resolve);
        }
    }

    /// Every semantic problem of an already parsed config.
    fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem =
            |path: String, reason: String| problems.push(ConfigProblem { path, reason });

        if let Err(reason) = check_url(&self.token.issuer) {
            problem("token.issuer".into(), reason);
        }
        if self.token.lifetime.0 < Duration::from_secs(1) {
            problem("token.lifetime".into(), "must be at least 1s".into());
        }
        if !(1..=99).contains(&self.token.cache.min_remaining_percent) {
            problem(
                "token.cache.min_remaining_percent".into(),
                "must be 1 to 99".into(),
            );
        }
        if self.token.grants_claim.is_empty() {
            problem("token.grants_claim".into(), "must not be empty".into());
        }
        if RESERVED_CLAIMS.contains(&self.token.grants_claim.as_str()) {
            problem(
                "token.grants_claim".into(),
                format!("`{}` is a registered claim name", self.token.grants_claim),
            );
        }

        let key_sources = [
            self.signing.keys_dir.is_some(),
            self.signing.key_file.is_some(),
            self.signing.secrets_manager.is_some(),
            self.signing.dev_generate,
        ];
        match key_sources.iter().filter(|set| **set).count() {
            0 => problem(
                "signing".into(),
                "one of keys_dir, key_file, secrets_manager or dev_generate is required".into(),
            ),
            1 => {}
            _ => problem(
                "signing".into(),
                "keys_dir, key_file, secrets_manager and dev_generate are alternatives: set exactly one"
                    .into(),
            ),
        }
        if let Some(secret) = &self.signing.secrets_manager {
            if secret.secret_id.is_empty() {
                problem(
                    "signing.secrets_manager.secret_id".into(),
                    "must not be empty".into(),
                );
            }
            if secret.poll_interval.0 < Duration::from_secs(1) {
                problem(
                    "signing.secrets_manager.poll_interval".into(),
                    "must be at least 1s".into(),
                );
            }
        }

        if self.signing.reload_interval.0 < Duration::from_millis(100) {
            problem(
                "signing.reload_interval".into(),
                "must be at least 100ms".into(),
            );
        }
        if self.trust.is_empty() {
            problem(
                "trust".into(),
                "no trusted issuer: every bearer token would be refused".into(),
            );
        }
        for (i, issuer) in self.trust.iter().enumerate() {
            if let Err(reason) = check_fetch_url(&issuer.issuer) {
                problem(format!("trust[{i}].issuer"), reason);
            }
            if let Some(Err(reason)) = issuer.jwks_uri.as_deref().map(check_fetch_url) {
                problem(format!("trust[{i}].jwks_uri"), reason);
            }
            if let Err(reason) = parse_algorithms(&issuer.algorithms) {
                problem(format!("trust[{i}].algorithms"), reason);
            }
            if self.trust[..i]
                .iter()
                .any(|other| other.issuer == issuer.issuer)
            {
                problem(format!("trust[{i}].issuer"), "listed twice".into());
            }
            for (field, file) in [
                ("ca_file", &issuer.ca_file),
                ("bearer_token_file", &issuer.bearer_token_file),
            ] {
                if let Some(file) = file
                    && let Err(e) = std::fs::metadata(file)
                {
                    problem(
                        format!("trust[{i}].{field}"),
                        format!("cannot read {}: {}", file.display(), e.kind()),
                    );
                }
            }
            if issuer.refresh_interval.0 < Duration::from_secs(1) {
                problem(
                    format!("trust[{i}].refresh_interval"),
                    "must be at least 1s".into(),
                );
            }
        }

        let certs = &self.client_certs;
        if certs.enabled {
            if certs.from.is_empty() {
                problem(
                    "client_certs.from".into(),
                    "name at least one source".into(),
                );
            }
            let from_headers = certs
                .from
                .iter()
                .any(|s| matches!(s, CertSourceKind::Xfcc | CertSourceKind::Alb));
            if from_headers && certs.verify_header_chains && certs.ca_file.is_none() {
                problem(
                    "client_certs.ca_file".into(),
                    "required to verify certificates from xfcc or alb headers (or set \
                     verify_header_chains: false when the proxy verified them)"
                        .into(),
                );
            }
        }
        if let Some(file) = &certs.ca_file
            && let Err(e) = std::fs::metadata(file)
        {
            problem(
                "client_certs.ca_file".into(),
                format!("cannot read {}: {}", file.display(), e.kind()),
            );
        }
        if self.aws_iam.enabled {
            problem(
                "aws_iam.enabled".into(),
                "AWS IAM identities are not supported by this release".into(),
            );
        }

        match self.grants.source {
            GrantsSourceKind::File => {
                if self.grants.file.is_none() {
                    problem(
                        "grants.file".into(),
                        "required when grants.source is file".into(),
                    );
                }
            }
            GrantsSourceKind::Dynamodb => match &self.grants.dynamodb {
                None => problem(
                    "grants.dynamodb".into(),
                    "required when grants.source is dynamodb".into(),
                ),
                Some(table) => {
                    if table.table.is_empty() {
                        problem("grants.dynamodb.table".into(), "must not be empty".into());
                    }
                    if table.max_attempts == 0 || table.max_attempts > 5 {
                        problem(
                            "grants.dynamodb.max_attempts".into(),
                            "must be 1 to 5".into(),
                        );
                    }
                }
            },
            GrantsSourceKind::IamRoleTags => problem(
                "grants.source".into(),
                "`iam_role_tags` is not supported by this release (file, dynamodb)".into(),
            ),
        }

        for (i, header) in self.response.remove_headers.iter().enumerate() {
            let lower = header.to_ascii_lowercase();
            if lower == "authorization" {
                problem(
                    format!("response.remove_headers[{i}]"),
                    "removing `authorization` would strip the minted token".into(),
                );
            } else if lower.is_empty()
                || lower.starts_with(':')
                || !lower.bytes().all(is_token_char)
            {
                problem(
                    format!("response.remove_headers[{i}]"),
                    "not a removable header name".into(),
                );
            }
        }
        problems
    }

    /// The algorithms accepted from issuer `index`, parsed (validation guarantees success).
    pub fn issuer_algorithms(&self, index: usize) -> Vec<Algorithm> {
        parse_algorithms(&self.trust[index].algorithms).unwrap_or_default()
    }
}

/// Claim names the grants claim must not shadow.
const RESERVED_CLAIMS: &[&str] = &[
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "email", "name",
];

/// Asymmetric algorithms accepted from JWKS issuers when `algorithms` is not set.
pub const DEFAULT_INBOUND_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Parses an issuer's allow-list; `none` and HMAC are refused because a JWKS carries public keys.
fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Ok(DEFAULT_INBOUND_ALGORITHMS.to_vec());
    }
    names
        .iter()
        .map(|name| {
            if name.eq_ignore_ascii_case("none") {
                return Err("`none` is never accepted".to_owned());
            }
            if name.to_ascii_uppercase().starts_with("HS") {
                return Err(format!(
                    "`{name}` is a shared-secret algorithm; JWKS issuers publish public keys"
                ));
            }
            name.parse::<Algorithm>()
                .map_err(|_| format!("unknown algorithm `{name}`"))
        })
        .collect()
}

/// The token header characters allowed in an HTTP field name (RFC 9110 `tchar`).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A URL that names something (the minted issuer): any absolute http(s) URL.
fn check_url(text: &str) -> Result<(), String> {
    let (scheme, _) = split_url(text)?;
    if scheme != "https" && scheme != "http" {
        return Err("must be an http(s) URL".into());
    }
    Ok(())
}

/// A URL that is fetched for keys: https, or plain http to a loopback host only.
pub fn check_fetch_url(text: &str) -> Result<(), String> {
    let (scheme, host) = split_url(text)?;
    match scheme.as_str() {
        "https" => Ok(()),
        "http" if is_loopback_host(&host) => Ok(()),
        "http" => Err("must use https:// (plain http:// only for loopback hosts)".into()),
        _ => Err("must be an https:// URL".into()),
    }
}

/// Splits `scheme://host[:port]/…` into the lowercase scheme and the host.
fn split_url(text: &str) -> Result<(String, String), String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| "must be an absolute URL".to_owned())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("must not carry credentials".into());
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("").to_owned()
    } else {
        authority.split(':').next().unwrap_or("").to_owned()
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    Ok((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
token: { issuer: https://tv.example.com }
signing: { dev_generate: true }
trust: [ { issuer: https://idp.example.com } ]
grants: { file: grants.yaml }
";

    fn paths(err: ConfigError) -> Vec<String> {
        err.problems.into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config = Config::from_yaml(MINIMAL, Path::new("/etc/tv")).unwrap();
        assert_eq!(config.listen.authz, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(config.token.lifetime.0, Duration::from_secs(3600));
        assert_eq!(config.token.grants_claim, "evs:grants");
        assert_eq!(config.trust[0].leeway.0, Duration::from_secs(60));
        assert_eq!(
            config.grants.file.as_deref(),
            Some(Path::new("/etc/tv/grants.yaml"))
        );
        assert_eq!(
            config.response.remove_headers,
            vec!["x-forwarded-client-cert"]
        );
    }

    #[test]
    fn unknown_key_is_reported_with_its_path() {
        let text = MINIMAL.replace("issuer: https://tv", "isuer: x, issuer: https://tv");
        let err = Config::from_yaml(&text, Path::new(".")).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].reason.contains("isuer"), "{err}");
        assert_eq!(err.problems[0].path, "token.isuer");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let text = MINIMAL.replace(
            "issuer: https://tv.example.com",
            "issuer: https://tv.example.com, lifetime: soon",
        );
        let err = Config::from_yaml(&text, Path::new(".")).unwrap_err();
        assert_eq!(paths(err), vec!["token.lifetime"]);
    }

    #[test]
    fn every_semantic_problem_is_listed() {
        let text = "
token: { issuer: not-a-url }
signing: { dev_generate: true, key_file: k.pem }
trust:
  - { issuer: http://idp.example.com, algorithms: [RS256, none] }
  - { issuer: https://idp2.example.com, jwks_uri: http://10.0.0.1/jwks, algorithms: [HS256] }
grants: { source: file }
response: { remove_headers: [Authorization] }
";
        let err = Config::from_yaml(text, Path::new(".")).unwrap_err();
        assert_eq!(
            paths(err),
            vec![
                "token.issuer",
                "signing",
                "trust[0].issuer",
                "trust[0].algorithms",
                "trust[1].jwks_uri",
                "trust[1].algorithms",
                "grants.file",
                "response.remove_headers[0]",
            ]
        );
    }

    #[test]
    fn loopback_http_is_allowed_for_key_fetching() {
        assert!(check_fetch_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_fetch_url("http://localhost/jwks").is_ok());
        assert!(check_fetch_url("http://[::1]:80/jwks").is_ok());
        assert!(check_fetch_url("http://127.0.0.1.evil.com/jwks").is_err());
        assert!(check_fetch_url("https://user:pw@idp.example.com").is_err());
    }
}
