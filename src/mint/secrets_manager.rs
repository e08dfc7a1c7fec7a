//! Signing keys from an AWS Secrets Manager secret (`signing.secrets_manager`).
//!
//! The secret's string is either one PEM private key, or a JSON object that mirrors a keys
//! folder — every key is published, `active` names the signer:
//!
//! ```json
//! {"active": "2026-11", "keys": {"2026-10": "-----BEGIN PRIVATE KEY-----…", "2026-11": "…"}}
//! ```
//!
//! Rotation is the same three steps as with files, done with `PutSecretValue`. Credentials,
//! region and endpoint come from the standard AWS chain; `AWS_ENDPOINT_URL_SECRETS_MANAGER`
//! works without any flag.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde::Deserialize;

use super::SecretsManagerConfig;
use super::keys::{KeyError, SigningKey};

/// Upper bound of one GetSecretValue call, retries included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A secret holding signing keys.
pub struct SecretKeys {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySetSecret {
    active: Option<String>,
    keys: BTreeMap<String, String>,
}

impl SecretKeys {
    /// A client for the configured secret (no call is made yet).
    pub async fn connect(config: &SecretsManagerConfig) -> Self {
        let sdk_config = crate::aws::sdk_config(
            config.region.as_deref(),
            config.endpoint_url.as_deref(),
            CALL_TIMEOUT,
            3,
        )
        .await;
        Self {
            client: aws_sdk_secretsmanager::Client::new(&sdk_config),
            secret_id: config.secret_id.clone(),
        }
    }

    /// Reads the secret's current version and parses its keys: (signing index, keys).
    pub async fn load(&self) -> Result<(usize, Vec<SigningKey>), KeyError> {
        let error = |reason: String| KeyError::Secret {
            secret_id: self.secret_id.clone(),
            reason,
        };
        let answer = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                error(format!(
                    "GetSecretValue failed: {}",
                    DisplayErrorContext(&e)
                ))
            })?;
        let text = answer
            .secret_string()
            .ok_or_else(|| error("the secret has no SecretString".into()))?;
        parse_secret(text, &self.secret_id)
    }
}

/// Parses a secret string: one PEM key, or the JSON key set described above.
fn parse_secret(text: &str, secret_id: &str) -> Result<(usize, Vec<SigningKey>), KeyError> {
    let error = |reason: &str| KeyError::Secret {
        secret_id: secret_id.to_owned(),
        reason: reason.to_owned(),
    };
    if !text.trim_start().starts_with('{') {
        return Ok((0, vec![SigningKey::from_pem(text.as_bytes(), secret_id)?]));
    }
    // serde's message could quote the document, which holds private keys: keep only its kind.
    let set: KeySetSecret = serde_json::from_str(text).map_err(|e| {
        error(match e.classify() {
            serde_json::error::Category::Data => {
                "expected {\"active\": name, \"keys\": {name: PEM}}"
            }
            _ => "not valid JSON",
        })
    })?;
    if set.keys.is_empty() {
        return Err(error("`keys` is empty"));
    }
    let names: Vec<&String> = set.keys.keys().collect();
    let keys = set
        .keys
        .iter()
        .map(|(name, pem)| {
            SigningKey::from_pem(pem.as_bytes(), &format!("{secret_id} keys.{name}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let active = match &set.active {
        Some(name) => names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| error("`active` names no key in `keys`"))?,
        None if keys.len() == 1 => 0,
        None => return Err(error("several keys and no `active`")),
    };
    Ok((active, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_set_secret_signs_with_its_active_key() {
        let a = SigningKey::generate_rsa(2048).unwrap();
        let b = SigningKey::generate(super::super::keys::SigningAlgorithm::Es256, 0).unwrap();
        let text = serde_json::json!({
            "active": "b",
            "keys": {"a": a.to_pkcs8_pem().unwrap(), "b": b.to_pkcs8_pem().unwrap()},
        })
        .to_string();
        let (active, keys) = parse_secret(&text, "s").unwrap();
        assert_eq!(keys[active].kid(), b.kid());
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn a_broken_secret_says_what_is_wrong_without_quoting_it() {
        let pem = SigningKey::generate_rsa(2048)
            .unwrap()
            .to_pkcs8_pem()
            .unwrap();
        let no_active = serde_json::json!({"active": "x", "keys": {"a": pem}}).to_string();
        let err = parse_secret(&no_active, "s").err().unwrap().to_string();
        assert!(err.contains("`active` names no key"), "{err}");
        let truncated = &no_active[..no_active.len() / 2];
        let err = parse_secret(truncated, "s").err().unwrap().to_string();
        assert!(
            err.contains("not valid JSON") && !err.contains("PRIVATE"),
            "{err}"
        );
        let wrong_shape = serde_json::json!({"keys": [pem]}).to_string();
        let err = parse_secret(&wrong_shape, "s").err().unwrap().to_string();
        assert!(
            err.contains("expected") && !err.contains("PRIVATE"),
            "{err}"
        );
    }
}
