//! An issuer's public key, parsed once when its JWKS is fetched, and the JWS signature check
//! made with it.
//!
//! Each key holds one parsed aws-lc-rs key per algorithm it is pinned to, so a Check pays for
//! the signature arithmetic only: neither the key (an RSA modulus, a curve point) nor the
//! token's segments are decoded again. The algorithm is chosen by the key's pin list, never by
//! the token alone: a token whose `alg` the key is not pinned to is refused before any
//! arithmetic (docs/security.md, "Bearer tokens").

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};

use super::AuthError;

/// A public key of the issuer, parsed for each algorithm it may verify.
pub struct VerifyKey {
    /// The algorithms this key is pinned to (the JWK's `alg`, or its type's, within the
    /// issuer's allow-list), each with the key parsed for it.
    pinned: Vec<(Algorithm, ParsedPublicKey)>,
}

impl VerifyKey {
    /// Parses `jwk` for each of `algorithms` (all of one key type's family); `None` when the
    /// key material is not a valid key of that type.
    pub fn from_jwk(jwk: &Jwk, algorithms: &[Algorithm]) -> Option<Self> {
        let pinned = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let n = URL_SAFE_NO_PAD.decode(&rsa.n).ok()?;
                let e = URL_SAFE_NO_PAD.decode(&rsa.e).ok()?;
                let components = RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                };
                algorithms
                    .iter()
                    .map(|alg| {
                        let parsed = components
                            .to_parsed_public_key(rsa_parameters(*alg)?)
                            .ok()?;
                        Some((*alg, parsed))
                    })
                    .collect::<Option<Vec<_>>>()?
            }
            AlgorithmParameters::EllipticCurve(ec) => {
                let (alg, size, verification): (
                    _,
                    _,
                    &'static signature::EcdsaVerificationAlgorithm,
                ) = match ec.curve {
                    EllipticCurve::P256 => {
                        (Algorithm::ES256, 32, &signature::ECDSA_P256_SHA256_FIXED)
                    }
                    EllipticCurve::P384 => {
                        (Algorithm::ES384, 48, &signature::ECDSA_P384_SHA384_FIXED)
                    }
                    _ => return None,
                };
                if !algorithms.contains(&alg) {
                    return None;
                }
                // SEC 1 uncompressed point: 0x04 ‖ x ‖ y, each coordinate at the curve's size.
                let mut point = vec![0x04];
                point.extend(coordinate(&ec.x, size)?);
                point.extend(coordinate(&ec.y, size)?);
                vec![(alg, ParsedPublicKey::new(verification, point).ok()?)]
            }
            AlgorithmParameters::OctetKeyPair(okp) => {
                if okp.curve != EllipticCurve::Ed25519 || !algorithms.contains(&Algorithm::EdDSA) {
                    return None;
                }
                let x = URL_SAFE_NO_PAD.decode(&okp.x).ok()?;
                vec![(
                    Algorithm::EdDSA,
                    ParsedPublicKey::new(&signature::ED25519, x).ok()?,
                )]
            }
            _ => return None,
        };
        (!pinned.is_empty()).then_some(Self { pinned })
    }

    /// Checks a JWS signature: `signed` is the token's `header.payload` text, `signature` its
    /// decoded third segment.
    pub fn verify(
        &self,
        algorithm: Algorithm,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        let (_, key) = self
            .pinned
            .iter()
            .find(|(alg, _)| *alg == algorithm)
            .ok_or(AuthError::AlgorithmNotAllowed(
                "the key is pinned to another algorithm",
            ))?;
        key.verify_sig(signed, signature)
            .map_err(|_| AuthError::BadSignature)
    }
}

/// The aws-lc-rs parameters of an RSA JWS algorithm (RFC 7518 §3.3, §3.5), for keys of
/// 2048 bits and more.
fn rsa_parameters(algorithm: Algorithm) -> Option<&'static RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// An elliptic-curve coordinate at its full size (RFC 7518 §6.2.1.2 asks for it; a shorter
/// one, its leading zeros dropped, is padded back).
fn coordinate(encoded: &str, size: usize) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    if bytes.len() > size {
        return None;
    }
    let mut full = vec![0; size - bytes.len()];
    full.extend(bytes);
    Some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(value: serde_json::Value) -> Jwk {
        serde_json::from_value(value).unwrap()
    }

    /// A token's signing input and decoded signature.
    fn split(token: &str) -> (&str, Vec<u8>) {
        let (signed, signature) = token.rsplit_once('.').unwrap();
        (signed, URL_SAFE_NO_PAD.decode(signature).unwrap())
    }

    #[test]
    fn an_rsa_key_verifies_only_the_algorithms_it_is_pinned_to() {
        let key = crate::mint::SigningKey::generate_rsa(2048).unwrap();
        let public = jwk(key.public_jwk().clone());
        let token = key.sign_jws(br#"{"sub":"alice"}"#).unwrap();
        let (signed, sig) = split(&token);

        let rs256_only = VerifyKey::from_jwk(&public, &[Algorithm::RS256]).unwrap();
        rs256_only
            .verify(Algorithm::RS256, signed.as_bytes(), &sig)
            .unwrap();
        assert!(matches!(
            rs256_only.verify(Algorithm::PS256, signed.as_bytes(), &sig),
            Err(AuthError::AlgorithmNotAllowed(_))
        ));

        // A PKCS#1 v1.5 signature presented as PSS fails the arithmetic, not just the pin.
        let family = VerifyKey::from_jwk(&public, crate::algorithms::RSA_FAMILY).unwrap();
        assert!(matches!(
            family.verify(Algorithm::PS256, signed.as_bytes(), &sig),
            Err(AuthError::BadSignature)
        ));
        assert!(matches!(
            family.verify(Algorithm::RS384, signed.as_bytes(), &sig),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn a_changed_byte_of_the_signed_text_or_the_signature_fails() {
        let key = crate::mint::SigningKey::generate_rsa(2048).unwrap();
        let public = VerifyKey::from_jwk(&jwk(key.public_jwk().clone()), &[Algorithm::RS256]);
        let public = public.unwrap();
        let token = key.sign_jws(br#"{"sub":"alice"}"#).unwrap();
        let (signed, sig) = split(&token);
        let mut tampered = signed.as_bytes().to_vec();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(public.verify(Algorithm::RS256, &tampered, &sig).is_err());
        let mut bad_sig = sig.clone();
        bad_sig[10] ^= 1;
        assert!(
            public
                .verify(Algorithm::RS256, signed.as_bytes(), &bad_sig)
                .is_err()
        );
        assert!(
            public
                .verify(Algorithm::RS256, signed.as_bytes(), &sig[1..])
                .is_err()
        );
        assert!(
            public
                .verify(Algorithm::RS256, signed.as_bytes(), &[])
                .is_err()
        );
    }

    #[test]
    fn malformed_or_mismatched_key_material_gives_no_key() {
        let short_x = json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"});
        assert!(VerifyKey::from_jwk(&jwk(short_x), &[Algorithm::ES256]).is_none());
        let not_base64 = json!({"kty": "RSA", "n": "!!!", "e": "AQAB"});
        assert!(VerifyKey::from_jwk(&jwk(not_base64), &[Algorithm::RS256]).is_none());
        // (RSA keys under 2048 bits never get here: the JWKS reader drops them first.)
        // A P-256 key asked to verify ES384 only: nothing it could verify.
        let p256 = json!({
            "kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        });
        assert!(VerifyKey::from_jwk(&jwk(p256.clone()), &[Algorithm::ES384]).is_none());
        assert!(VerifyKey::from_jwk(&jwk(p256), &[Algorithm::ES256]).is_some());
    }

    use serde_json::json;
}
