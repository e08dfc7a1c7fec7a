//! Signing keys: loading PEM files, generating new keys, and their public JWK form.
//!
//! A key's `kid` is its RFC 7638 thumbprint, so every replica that loads the same file
//! publishes and signs with the same `kid`. RSA keys shorter than 2048 bits are refused.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Shortest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// A private key we sign with, and what we publish about it.
pub struct SigningKey {
    kid: String,
    key_pair: RsaKeyPair,
    /// `base64url({"alg":…,"typ":"JWT","kid":…})`, computed once.
    encoded_header: String,
    /// The public JWK as published in the JWKS.
    public_jwk: serde_json::Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be used. Never includes key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key {path}: {reason}")]
    Read {
        path: String,
        reason: std::io::ErrorKind,
    },
    /// No PEM private key in the file.
    #[error("{path}: no PEM private key found (expected PRIVATE KEY or RSA PRIVATE KEY)")]
    NotPem { path: String },
    /// A password-protected key.
    #[error(
        "{path}: encrypted private keys are not supported; store the key unencrypted in a Secret"
    )]
    Encrypted { path: String },
    /// A PEM block that is not an RSA private key.
    #[error("{path}: not an RSA private key (this release signs with RS256)")]
    Unsupported { path: String },
    /// The key did not parse or is inconsistent.
    #[error("{path}: the RSA private key is invalid")]
    Invalid { path: String },
    /// Shorter than [`MIN_RSA_BITS`].
    #[error("{path}: the RSA key is shorter than 2048 bits")]
    TooShort { path: String },
    /// A folder without any key.
    #[error("keys folder {dir} holds no .pem key")]
    NoKeys { dir: String },
    /// `active` names a file that is not a loadable key in the folder.
    #[error("keys folder {dir}: `active` names {name}, which is not a key file there")]
    ActiveMissing { dir: String, name: String },
    /// Several keys and no `active` file.
    #[error("keys folder {dir} holds {count} keys but no `active` file naming the signing one")]
    NoActive { dir: String, count: usize },
    /// Key generation failed.
    #[error("key generation failed")]
    Generate,
    /// The signing operation failed.
    #[error("signing failed")]
    Sign,
    /// Writing a new key failed.
    #[error("cannot write key {path}: {reason}")]
    Write { path: String, reason: String },
}

impl SigningKey {
    /// Reads a PEM private key (PKCS#8 or PKCS#1 RSA) from a file.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|e| KeyError::Read {
            path: shown.clone(),
            reason: e.kind(),
        })?;
        Self::from_pem(&text, &shown)
    }

    /// Parses PEM text; `origin` names it in errors.
    pub fn from_pem(text: &[u8], origin: &str) -> Result<Self, KeyError> {
        let path = || origin.to_owned();
        let blocks = pem::parse_many(text).map_err(|_| KeyError::NotPem { path: path() })?;
        let block = blocks
            .iter()
            .find(|b| b.tag().ends_with("PRIVATE KEY"))
            .ok_or_else(|| KeyError::NotPem { path: path() })?;
        let key_pair = match block.tag() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(block.contents()),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents()),
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted { path: path() }),
            _ => return Err(KeyError::Unsupported { path: path() }),
        };
        let key_pair = key_pair.map_err(|e| {
            // aws-lc says "TooSmall" for short moduli; report the size when we can.
            if e.description_() == "TooSmall" {
                KeyError::TooShort { path: path() }
            } else if block.tag() == "PRIVATE KEY" && e.description_() == "WrongAlgorithm" {
                KeyError::Unsupported { path: path() }
            } else {
                KeyError::Invalid { path: path() }
            }
        })?;
        if key_pair.public_modulus_len() * 8 < MIN_RSA_BITS {
            return Err(KeyError::TooShort { path: path() });
        }
        Ok(Self::from_key_pair(key_pair))
    }

    /// Generates a new RSA key of `bits` (2048, 3072 or 4096).
    pub fn generate_rsa(bits: usize) -> Result<Self, KeyError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => return Err(KeyError::Generate),
        };
        let key_pair = RsaKeyPair::generate(size).map_err(|_| KeyError::Generate)?;
        Ok(Self::from_key_pair(key_pair))
    }

    fn from_key_pair(key_pair: RsaKeyPair) -> Self {
        let public = key_pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let kid = rsa_thumbprint(&n, &e);
        let header = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#);
        let public_jwk = serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": n,
            "e": e,
        });
        Self {
            encoded_header: URL_SAFE_NO_PAD.encode(header),
            kid,
            key_pair,
            public_jwk,
        }
    }

    /// The RFC 7638 thumbprint, used as `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS algorithm this key signs with.
    pub fn algorithm(&self) -> &'static str {
        "RS256"
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.public_jwk
    }

    /// Signs a JSON payload into a compact JWS: `header.payload.signature`.
    pub fn sign_jws(&self, payload_json: &[u8]) -> Result<String, KeyError> {
        let header = &self.encoded_header;
        let modulus_len = self.key_pair.public_modulus_len();
        let mut token = String::with_capacity(
            header.len() + 2 + (payload_json.len() + modulus_len) * 4 / 3 + 4,
        );
        token.push_str(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload_json, &mut token);
        let mut signature = vec![0; modulus_len];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.key_pair
            .sign(&RSA_PKCS1_SHA256, &rng, token.as_bytes(), &mut signature)
            .map_err(|_| KeyError::Sign)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }

    /// The private key as PKCS#8 PEM (for `keygen`; never logged).
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let der: Pkcs8V1Der<'static> = self.key_pair.as_der().map_err(|_| KeyError::Generate)?;
        Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref())))
    }

    /// Writes the key as `<dir>/<kid>.pem`, readable by its owner only; never overwrites.
    pub fn write_into(&self, dir: &Path) -> Result<PathBuf, KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(format!("{}.pem", self.kid));
        let write_error = |e: std::io::Error| KeyError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(write_error)?;
        let pem = self.to_pkcs8_pem()?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(write_error)?;
        file.write_all(pem.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        Ok(path)
    }
}

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order, no whitespace.
fn rsa_thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Loads the keys of a folder: every `*.pem` is published; `active` names the signer.
/// Returns (signing key, every key including the signing one).
pub fn load_keys_dir(dir: &Path) -> Result<(usize, Vec<SigningKey>), KeyError> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| KeyError::Read {
        path: shown.clone(),
        reason: e.kind(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Kubernetes mounts Secrets through hidden `..data` folders; skip hidden names.
            !name.starts_with('.') && name.ends_with(".pem") && path.is_file()
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(KeyError::NoKeys { dir: shown });
    }
    let keys = files
        .iter()
        .map(|path| SigningKey::from_pem_file(path))
        .collect::<Result<Vec<_>, _>>()?;
    let active_path = dir.join("active");
    let active = match std::fs::read_to_string(&active_path) {
        Ok(name) => {
            let name = name.trim().to_owned();
            files
                .iter()
                .position(|path| path.file_name().and_then(|n| n.to_str()) == Some(name.as_str()))
                .ok_or(KeyError::ActiveMissing { dir: shown, name })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if keys.len() == 1 {
                0
            } else {
                return Err(KeyError::NoActive {
                    dir: shown,
                    count: keys.len(),
                });
            }
        }
        Err(e) => {
            return Err(KeyError::Read {
                path: active_path.display().to_string(),
                reason: e.kind(),
            });
        }
    };
    Ok((active, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 7638 §3.1 example key and its published thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            rsa_thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn a_generated_key_survives_a_pem_round_trip_with_the_same_kid() {
        let key = SigningKey::generate_rsa(2048).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        let again = SigningKey::from_pem(pem.as_bytes(), "test").unwrap();
        assert_eq!(key.kid(), again.kid());
    }

    #[test]
    fn garbage_is_not_a_key_and_the_error_shows_no_content() {
        let err = SigningKey::from_pem(
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
            "k.pem",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("k.pem") && !err.contains("c2VjcmV0"), "{err}");
        assert!(matches!(
            SigningKey::from_pem(b"hello", "k.pem"),
            Err(KeyError::NotPem { .. })
        ));
    }
}
