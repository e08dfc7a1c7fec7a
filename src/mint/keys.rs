//! Signing keys: loading PEM files, generating new keys, and their public JWK form.
//!
//! The key's type chooses the algorithm: an RSA key signs RS256, an RSA-PSS key (PKCS#8 with
//! the `id-RSASSA-PSS` OID, as `openssl genpkey -algorithm RSA-PSS` writes) signs PS256, a P-256
//! key ES256, an Ed25519 key EdDSA. A key's `kid` is its RFC 7638 thumbprint, so every replica
//! that loads the same file publishes and signs with the same `kid`. RSA keys shorter than
//! 2048 bits are refused.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RSA_PSS_SHA256,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::der;
use crate::algorithms::MIN_RSA_BITS;

/// The signature algorithms we mint with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256: the default, and what AWS ALB verifies.
    Rs256,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl SigningAlgorithm {
    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            SigningAlgorithm::Rs256 => "RS256",
            SigningAlgorithm::Ps256 => "PS256",
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::EdDsa => "EdDSA",
        }
    }
}

enum KeyMaterial {
    Rsa(RsaKeyPair),
    RsaPss(RsaKeyPair),
    P256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private key we sign with, and what we publish about it.
pub struct SigningKey {
    kid: std::sync::Arc<str>,
    material: KeyMaterial,
    /// `base64url({"alg":…,"typ":"JWT","kid":…})`, computed once.
    encoded_header: String,
    /// The public JWK as published in the JWKS.
    public_jwk: serde_json::Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm().name())
            .finish_non_exhaustive()
    }
}

/// Why a key could not be used. Never includes key material.
///
/// The fields name what failed (a file, a folder, a secret) and why, as displayed.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key {path}: {}", crate::config_check::kind_reason(*.reason))]
    Read {
        path: String,
        reason: std::io::ErrorKind,
    },
    /// No PEM private key in the file.
    #[error(
        "{path}: no PEM private key found (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NotPem { path: String },
    /// A password-protected key.
    #[error(
        "{path}: encrypted private keys are not supported; store the key unencrypted in a Secret"
    )]
    Encrypted { path: String },
    /// A private key of a type we do not sign with.
    #[error("{path}: unsupported key type (RSA, RSA-PSS, P-256 and Ed25519 keys are supported)")]
    Unsupported { path: String },
    /// The key did not parse or is inconsistent.
    #[error("{path}: the private key is invalid")]
    Invalid { path: String },
    /// Shorter than the minimum of [`crate::algorithms`].
    #[error("{path}: the RSA key is shorter than {MIN_RSA_BITS} bits")]
    TooShort { path: String },
    /// A folder without any key.
    #[error("keys folder {dir} holds no .pem key")]
    NoKeys { dir: String },
    /// `active` names a file that is not a key file in the folder.
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
    /// The Secrets Manager secret could not be read or parsed.
    #[error("secret {secret_id}: {reason}")]
    Secret { secret_id: String, reason: String },
    /// Writing a new key failed.
    #[error("cannot write key {path}: {reason}")]
    Write { path: String, reason: String },
}

impl SigningKey {
    /// Reads a PEM private key from a file.
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
        let der = block.contents();
        let material = match block.tag() {
            "RSA PRIVATE KEY" => KeyMaterial::Rsa(parse_rsa(RsaKeyPair::from_der(der), origin)?),
            "EC PRIVATE KEY" => KeyMaterial::P256(
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| KeyError::Unsupported { path: path() })?,
            ),
            "PRIVATE KEY" => parse_pkcs8(der, origin)?,
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted { path: path() }),
            _ => return Err(KeyError::Unsupported { path: path() }),
        };
        Ok(Self::from_material(material))
    }

    /// Generates a new key for `algorithm`; `rsa_bits` (2048, 3072, 4096) applies to RSA.
    pub fn generate(algorithm: SigningAlgorithm, rsa_bits: usize) -> Result<Self, KeyError> {
        let rsa = || {
            let size = match rsa_bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                _ => return Err(KeyError::Generate),
            };
            RsaKeyPair::generate(size).map_err(|_| KeyError::Generate)
        };
        let material = match algorithm {
            SigningAlgorithm::Rs256 => KeyMaterial::Rsa(rsa()?),
            SigningAlgorithm::Ps256 => KeyMaterial::RsaPss(rsa()?),
            SigningAlgorithm::Es256 => KeyMaterial::P256(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| KeyError::Generate)?,
            ),
            SigningAlgorithm::EdDsa => {
                KeyMaterial::Ed25519(Ed25519KeyPair::generate().map_err(|_| KeyError::Generate)?)
            }
        };
        Ok(Self::from_material(material))
    }

    /// Generates a new RSA key of `bits` signing RS256.
    pub fn generate_rsa(bits: usize) -> Result<Self, KeyError> {
        Self::generate(SigningAlgorithm::Rs256, bits)
    }

    fn from_material(material: KeyMaterial) -> Self {
        let (public_jwk, kid) = public_jwk(&material);
        let alg = algorithm_of(&material).name();
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#);
        Self {
            encoded_header: URL_SAFE_NO_PAD.encode(header),
            kid: kid.into(),
            material,
            public_jwk,
        }
    }

    /// The RFC 7638 thumbprint, used as `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The `kid`, shared (every token it signs points at the same text).
    pub fn shared_kid(&self) -> std::sync::Arc<str> {
        self.kid.clone()
    }

    /// The JWS algorithm this key signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        algorithm_of(&self.material)
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.public_jwk
    }

    /// Signs a JSON payload into a compact JWS: `header.payload.signature`.
    pub fn sign_jws(&self, payload_json: &[u8]) -> Result<String, KeyError> {
        self.sign_jws_parts(payload_json).map(|(token, _)| token)
    }

    /// [`Self::sign_jws`], with the raw signature too (what a token cache keeps).
    pub fn sign_jws_parts(&self, payload_json: &[u8]) -> Result<(String, Vec<u8>), KeyError> {
        let mut token = self.jws_with_capacity(payload_json.len(), 512);
        URL_SAFE_NO_PAD.encode_string(payload_json, &mut token);
        let signature = self.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok((token, signature))
    }

    /// The compact JWS of a payload this key signed earlier, from its raw parts.
    pub fn assemble_jws(&self, payload_json: &[u8], signature: &[u8]) -> String {
        let mut token = self.jws_with_capacity(payload_json.len(), signature.len());
        URL_SAFE_NO_PAD.encode_string(payload_json, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        token
    }

    /// The header and its dot, in a string with room for the rest.
    fn jws_with_capacity(&self, payload_len: usize, signature_len: usize) -> String {
        let header = &self.encoded_header;
        let mut token =
            String::with_capacity(header.len() + 2 + (payload_len + signature_len) * 4 / 3 + 4);
        token.push_str(header);
        token.push('.');
        token
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let rsa_sign = |key: &RsaKeyPair, padding| {
            let mut signature = vec![0; key.public_modulus_len()];
            key.sign(padding, &rng, message, &mut signature)
                .map(|()| signature)
                .map_err(|_| KeyError::Sign)
        };
        match &self.material {
            KeyMaterial::Rsa(key) => rsa_sign(key, &RSA_PKCS1_SHA256),
            KeyMaterial::RsaPss(key) => rsa_sign(key, &RSA_PSS_SHA256),
            KeyMaterial::P256(key) => key
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign),
            KeyMaterial::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
        }
    }

    /// The private key as PKCS#8 PEM (for `keygen`; never logged).
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let der: Vec<u8> = match &self.material {
            KeyMaterial::Rsa(key) => rsa_pkcs8(key)?,
            KeyMaterial::RsaPss(key) => {
                let rsa = rsa_pkcs8(key)?;
                let pkcs1 = der::pkcs8_private_key(&rsa).ok_or(KeyError::Generate)?;
                der::pkcs8_wrap(der::OID_RSASSA_PSS, pkcs1)
            }
            KeyMaterial::P256(key) => key
                .to_pkcs8v1()
                .map_err(|_| KeyError::Generate)?
                .as_ref()
                .to_vec(),
            KeyMaterial::Ed25519(key) => key
                .to_pkcs8v1()
                .map_err(|_| KeyError::Generate)?
                .as_ref()
                .to_vec(),
        };
        Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
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

fn algorithm_of(material: &KeyMaterial) -> SigningAlgorithm {
    match material {
        KeyMaterial::Rsa(_) => SigningAlgorithm::Rs256,
        KeyMaterial::RsaPss(_) => SigningAlgorithm::Ps256,
        KeyMaterial::P256(_) => SigningAlgorithm::Es256,
        KeyMaterial::Ed25519(_) => SigningAlgorithm::EdDsa,
    }
}

/// A PKCS#8 `PRIVATE KEY`: RSA, RSA-PSS, P-256 or Ed25519, by its algorithm OID.
fn parse_pkcs8(der: &[u8], origin: &str) -> Result<KeyMaterial, KeyError> {
    let path = || origin.to_owned();
    let oid = der::pkcs8_algorithm(der).ok_or_else(|| KeyError::Invalid { path: path() })?;
    match oid {
        der::OID_RSA_ENCRYPTION => Ok(KeyMaterial::Rsa(parse_rsa(
            RsaKeyPair::from_pkcs8(der),
            origin,
        )?)),
        der::OID_RSASSA_PSS => {
            let pkcs1 =
                der::pkcs8_private_key(der).ok_or_else(|| KeyError::Invalid { path: path() })?;
            Ok(KeyMaterial::RsaPss(parse_rsa(
                RsaKeyPair::from_der(pkcs1),
                origin,
            )?))
        }
        der::OID_EC_PUBLIC_KEY => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map(KeyMaterial::P256)
            // Another curve (P-384, secp256k1, …) is a key type we do not sign with.
            .map_err(|_| KeyError::Unsupported { path: path() }),
        der::OID_ED25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(KeyMaterial::Ed25519)
            .map_err(|_| KeyError::Invalid { path: path() }),
        _ => Err(KeyError::Unsupported { path: path() }),
    }
}

fn parse_rsa(
    parsed: Result<RsaKeyPair, aws_lc_rs::error::KeyRejected>,
    origin: &str,
) -> Result<RsaKeyPair, KeyError> {
    let key = parsed.map_err(|e| match e.description_() {
        "TooSmall" => KeyError::TooShort {
            path: origin.to_owned(),
        },
        _ => KeyError::Invalid {
            path: origin.to_owned(),
        },
    })?;
    if key.public_modulus_len() * 8 < MIN_RSA_BITS {
        return Err(KeyError::TooShort {
            path: origin.to_owned(),
        });
    }
    Ok(key)
}

fn rsa_pkcs8(key: &RsaKeyPair) -> Result<Vec<u8>, KeyError> {
    let der: Pkcs8V1Der<'static> = key.as_der().map_err(|_| KeyError::Generate)?;
    Ok(der.as_ref().to_vec())
}

/// The public JWK of a key and its RFC 7638 thumbprint: SHA-256 over the required members in
/// lexicographic order, without whitespace.
fn public_jwk(material: &KeyMaterial) -> (serde_json::Value, String) {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let alg = algorithm_of(material).name();
    let (canonical, mut jwk) = match material {
        KeyMaterial::Rsa(key) | KeyMaterial::RsaPss(key) => {
            let public = key.public_key();
            let n = b64(public.modulus().big_endian_without_leading_zero());
            let e = b64(public.exponent().big_endian_without_leading_zero());
            (
                format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
                serde_json::json!({"kty": "RSA", "n": n, "e": e}),
            )
        }
        KeyMaterial::P256(key) => {
            // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
            let point = key.public_key().as_ref();
            let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
            (
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
            )
        }
        KeyMaterial::Ed25519(key) => {
            let x = b64(key.public_key().as_ref());
            (
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
            )
        }
    };
    let kid = thumbprint(&canonical);
    jwk["use"] = "sig".into();
    jwk["alg"] = alg.into();
    jwk["kid"] = kid.clone().into();
    (jwk, kid)
}

fn thumbprint(canonical_jwk: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical_jwk.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_kid_is_the_rfc7638_example_thumbprint() {
        // RFC 7638 §3.1 example key and its published thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            thumbprint(&format!(r#"{{"e":"AQAB","kty":"RSA","n":"{n}"}}"#)),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn ed25519_kid_is_the_rfc8037_example_thumbprint() {
        // RFC 8037 Appendix A.3.
        assert_eq!(
            thumbprint(
                r#"{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#
            ),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn every_key_type_survives_a_pem_round_trip_with_the_same_kid_and_algorithm() {
        for alg in [
            SigningAlgorithm::Rs256,
            SigningAlgorithm::Ps256,
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa,
        ] {
            let key = SigningKey::generate(alg, 2048).unwrap();
            let pem = key.to_pkcs8_pem().unwrap();
            let again = SigningKey::from_pem(pem.as_bytes(), "test").unwrap();
            assert_eq!(key.kid(), again.kid(), "{alg:?}");
            assert_eq!(again.algorithm(), alg);
            assert_eq!(again.public_jwk()["alg"], alg.name());
        }
    }

    #[test]
    fn keys_written_by_openssl_load_with_the_algorithm_of_their_type() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        for (file, alg) in [
            ("rsa-pss-openssl.pem", SigningAlgorithm::Ps256),
            ("ed25519-openssl.pem", SigningAlgorithm::EdDsa),
            ("ec-p256-sec1-openssl.pem", SigningAlgorithm::Es256),
        ] {
            let key = SigningKey::from_pem_file(&data.join(file)).unwrap();
            assert_eq!(key.algorithm(), alg, "{file}");
        }
        assert!(matches!(
            SigningKey::from_pem_file(&data.join("ec-p384-unsupported.pem")),
            Err(KeyError::Unsupported { .. })
        ));
        assert!(matches!(
            SigningKey::from_pem_file(&data.join("rsa-1024-too-short.pem")),
            Err(KeyError::TooShort { .. })
        ));
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
