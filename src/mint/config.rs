//! `token:` and `signing:` — what is minted and what signs it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::claims::WRITTEN_CLAIMS;
use crate::config_check::ConfigCheck;
use crate::urls::check_url;

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
    #[serde(default = "TokenConfig::default_lifetime", with = "humantime_serde")]
    pub lifetime: Duration,
    /// Name of the claim that carries the grants.
    #[serde(default = "TokenConfig::default_grants_claim")]
    pub grants_claim: String,
    /// Reuse of minted tokens for repeated credentials.
    #[serde(default)]
    pub cache: TokenCacheConfig,
    /// A Check carrying a valid token of our own issuer passes unchanged (tokens from
    /// `/exchange` crossing an Envoy with this sidecar); default true.
    #[serde(default = "TokenConfig::default_accept_own")]
    pub accept_own: bool,
}

impl TokenConfig {
    fn default_lifetime() -> Duration {
        Duration::from_secs(3600)
    }

    fn default_accept_own() -> bool {
        true
    }

    fn default_grants_claim() -> String {
        "evs:grants".to_owned()
    }

    pub(crate) fn check(&self, path: &str, check: &mut ConfigCheck) {
        check.check(format!("{path}.issuer"), check_url(&self.issuer));
        if self.lifetime < Duration::from_secs(1) {
            check.problem(format!("{path}.lifetime"), "must be at least 1s");
        }
        if !(1..=99).contains(&self.cache.min_remaining_percent) {
            check.problem(
                format!("{path}.cache.min_remaining_percent"),
                "must be 1 to 99",
            );
        }
        if self.grants_claim.is_empty() {
            check.problem(format!("{path}.grants_claim"), "must not be empty");
        }
        if WRITTEN_CLAIMS.contains(&self.grants_claim.as_str()) {
            check.problem(
                format!("{path}.grants_claim"),
                format!(
                    "`{}` is a claim the minter writes itself",
                    self.grants_claim
                ),
            );
        }
    }
}

/// `token.cache`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// Off: every Check signs.
    pub enabled: bool,
    /// A cached token is served only while more than this share of its lifetime is left
    /// (percent, 1–99); a fresh one is minted in the background before it gets there.
    pub min_remaining_percent: u8,
    /// Upper bound of cached tokens.
    pub max_entries: u64,
    /// Upper bound of the memory the cached tokens take (bytes, or `64MiB`, `1GiB`), counted
    /// per entry as the token's text plus the cache's own bookkeeping.
    #[serde(deserialize_with = "byte_size")]
    pub max_bytes: u64,
    /// What an entry keeps: the token's `text` (a hit copies it), or only its `signature` (a
    /// third of the memory; a hit renders the payload again, about a microsecond).
    pub store: CacheStore,
}

/// `token.cache.store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStore {
    /// The compact JWS as it was signed.
    #[default]
    Text,
    /// The raw signature; the rest is rendered again from the Check's identity and grants.
    Signature,
}

/// `1048576`, `"512KiB"`, `"64MiB"` or `"1GiB"` as bytes.
fn byte_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Bytes(u64),
        WithUnit(String),
    }
    let text = match Written::deserialize(deserializer)? {
        Written::Bytes(bytes) => return Ok(bytes),
        Written::WithUnit(text) => text,
    };
    let units = [
        ("KiB", 1u64 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("B", 1),
    ];
    units
        .iter()
        .find_map(|(unit, scale)| {
            let number = text.trim().strip_suffix(unit)?.trim().parse::<u64>().ok()?;
            number.checked_mul(*scale)
        })
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a size: write bytes, or a whole number with KiB, MiB or GiB"
            ))
        })
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_remaining_percent: 50,
            max_entries: 100_000,
            max_bytes: 128 << 20,
            store: CacheStore::Text,
        }
    }
}

/// `signing:`, typed: one source of keys and how they are published.
#[derive(Debug, Clone)]
pub struct SigningConfig {
    /// Where the keys come from.
    pub source: SigningSource,
    /// `Cache-Control: max-age` of the JWKS answer.
    pub jwks_max_age: Duration,
    /// How often files are checked for changes (SIGHUP forces a check).
    pub reload_interval: Duration,
}

/// Where signing keys come from: exactly one of the `signing:` alternatives.
#[derive(Debug, Clone)]
pub enum SigningSource {
    /// A folder of PEM private keys plus the file `active` naming the signing one.
    KeysDir(PathBuf),
    /// A single PEM private key.
    KeyFile(PathBuf),
    /// Keys from an AWS Secrets Manager secret, polled for changes.
    SecretsManager(SecretsManagerConfig),
    /// An in-memory key generated at start (demo and development only).
    DevGenerate,
}

/// `signing:` as written: the alternatives are separate keys in the file.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SigningFile {
    keys_dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
    secrets_manager: Option<SecretsManagerConfig>,
    dev_generate: bool,
    #[serde(with = "humantime_serde")]
    jwks_max_age: Duration,
    #[serde(with = "humantime_serde")]
    reload_interval: Duration,
}

impl Default for SigningFile {
    fn default() -> Self {
        Self {
            keys_dir: None,
            key_file: None,
            secrets_manager: None,
            dev_generate: false,
            jwks_max_age: Duration::from_secs(300),
            reload_interval: Duration::from_secs(2),
        }
    }
}

impl SigningConfig {
    /// Types `signing:`; `None` (with the problems recorded) unless exactly one source is set.
    pub(crate) fn from_file(
        file: SigningFile,
        path: &str,
        check: &mut ConfigCheck,
    ) -> Option<Self> {
        if file.reload_interval < Duration::from_millis(100) {
            check.problem(format!("{path}.reload_interval"), "must be at least 100ms");
        }
        let mut sources = Vec::new();
        if let Some(mut dir) = file.keys_dir {
            check.resolve(&mut dir);
            sources.push(SigningSource::KeysDir(dir));
        }
        if let Some(mut key) = file.key_file {
            check.resolve(&mut key);
            sources.push(SigningSource::KeyFile(key));
        }
        if let Some(secret) = file.secrets_manager {
            secret.check(&format!("{path}.secrets_manager"), check);
            sources.push(SigningSource::SecretsManager(secret));
        }
        if file.dev_generate {
            sources.push(SigningSource::DevGenerate);
        }
        if sources.len() > 1 {
            check.problem(
                path,
                "keys_dir, key_file, secrets_manager and dev_generate are alternatives: set exactly one",
            );
            return None;
        }
        let Some(source) = sources.pop() else {
            check.problem(
                path,
                "one of keys_dir, key_file, secrets_manager or dev_generate is required",
            );
            return None;
        };
        Some(Self {
            source,
            jwks_max_age: file.jwks_max_age,
            reload_interval: file.reload_interval,
        })
    }
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
    #[serde(
        default = "SecretsManagerConfig::default_poll_interval",
        with = "humantime_serde"
    )]
    pub poll_interval: Duration,
}

impl SecretsManagerConfig {
    fn default_poll_interval() -> Duration {
        Duration::from_secs(60)
    }

    fn check(&self, path: &str, check: &mut ConfigCheck) {
        if self.secret_id.is_empty() {
            check.problem(format!("{path}.secret_id"), "must not be empty");
        }
        if self.poll_interval < Duration::from_secs(1) {
            check.problem(format!("{path}.poll_interval"), "must be at least 1s");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    fn with_token(extra: &str) -> String {
        format!(
            "token: {{ issuer: https://tv.example.com{extra} }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: https://idp.example.com }} ]
grants: {{ file: grants.yaml }}
"
        )
    }

    #[test]
    fn the_grants_claim_cannot_name_any_claim_the_minter_writes() {
        for claim in super::WRITTEN_CLAIMS {
            let text = with_token(&format!(", grants_claim: '{claim}'"));
            let err = Config::from_yaml(&text, Path::new(".")).unwrap_err();
            assert_eq!(err.problems[0].path, "token.grants_claim", "{claim}");
        }
        assert!(
            Config::from_yaml(&with_token(", grants_claim: 'evs:roles'"), Path::new(".")).is_ok()
        );
    }

    #[test]
    fn signing_needs_exactly_one_source() {
        let text = with_token("").replace("{ dev_generate: true }", "{ reload_interval: 1s }");
        let err = Config::from_yaml(&text, Path::new(".")).unwrap_err();
        assert!(err.problems[0].reason.contains("is required"), "{err}");
        let text = with_token("").replace(
            "{ dev_generate: true }",
            "{ keys_dir: keys, secrets_manager: { secret_id: s } }",
        );
        let err = Config::from_yaml(&text, Path::new(".")).unwrap_err();
        assert!(err.problems[0].reason.contains("alternatives"), "{err}");
    }
}
