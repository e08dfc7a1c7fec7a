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
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};

use super::AuthError;
use crate::algorithms::{MIN_RSA_BITS, RSA_FAMILY};

/// A public key of the issuer, parsed for each algorithm it may verify.
pub struct VerifyKey {
    /// The algorithms this key is pinned to (the JWK's `alg`, or its type's, within the
    /// issuer's allow-list), each with the key parsed for it.
    pinned: Vec<(Algorithm, ParsedPublicKey)>,
}

/// Why a published key is not used.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    /// `use` is something other than `sig`.
    NotForSigning,
    /// An RSA modulus shorter than [`MIN_RSA_BITS`].
    ShortRsa { bits: usize },
    /// A key type or curve this sidecar does not verify with (shared secrets among them).
    KeyType,
    /// Its `alg`, or its type's algorithms, fall outside the issuer's allow-list.
    NoAllowedAlgorithm,
    /// The key material is not a valid key of its type.
    Material,
}

impl VerifyKey {
    /// Parses `jwk` for each algorithm it is pinned to: the JWK's `alg`, else its type's
    /// family, always within `allowed` (the issuer's allow-list).
    pub fn from_jwk(jwk: &Jwk, allowed: &[Algorithm]) -> Result<Self, Unusable> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return Err(Unusable::NotForSigning);
        }
        let pin: Option<Algorithm> = match jwk.common.key_algorithm {
            Some(alg) => Some(Algorithm::try_from(alg).map_err(|_| Unusable::NoAllowedAlgorithm)?),
            None => None,
        };
        let pinned_within = |family: &[Algorithm]| -> Result<Vec<Algorithm>, Unusable> {
            let algorithms: Vec<Algorithm> = family
                .iter()
                .copied()
                .filter(|alg| pin.is_none_or(|p| p == *alg) && allowed.contains(alg))
                .collect();
            if algorithms.is_empty() {
                return Err(Unusable::NoAllowedAlgorithm);
            }
            Ok(algorithms)
        };
        let decode = |text: &str| URL_SAFE_NO_PAD.decode(text).map_err(|_| Unusable::Material);
        let pinned = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let n = decode(&rsa.n)?;
                let e = decode(&rsa.e)?;
                let bits = n.iter().skip_while(|byte| **byte == 0).count() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(Unusable::ShortRsa { bits });
                }
                let components = RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                };
                pinned_within(RSA_FAMILY)?
                    .into_iter()
                    .map(|alg| {
                        let parameters = rsa_parameters(alg).ok_or(Unusable::KeyType)?;
                        let parsed = components
                            .to_parsed_public_key(parameters)
                            .map_err(|_| Unusable::Material)?;
                        Ok((alg, parsed))
                    })
                    .collect::<Result<Vec<_>, _>>()?
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
                    _ => return Err(Unusable::KeyType),
                };
                pinned_within(&[alg])?;
                // SEC 1 uncompressed point: 0x04 ‖ x ‖ y, each coordinate at the curve's size.
                let mut point = vec![0x04];
                point.extend(coordinate(&ec.x, size).ok_or(Unusable::Material)?);
                point.extend(coordinate(&ec.y, size).ok_or(Unusable::Material)?);
                let parsed =
                    ParsedPublicKey::new(verification, point).map_err(|_| Unusable::Material)?;
                vec![(alg, parsed)]
            }
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                pinned_within(&[Algorithm::EdDSA])?;
                let parsed = ParsedPublicKey::new(&signature::ED25519, decode(&okp.x)?)
                    .map_err(|_| Unusable::Material)?;
                vec![(Algorithm::EdDSA, parsed)]
            }
            _ => return Err(Unusable::KeyType),
        };
        Ok(Self { pinned })
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
    use serde_json::json;

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

        // A PKCS#1 v1.5 signature presented as PSS fails the arithmetic, not just the pin (the
        // JWK without its `alg`, so the whole RSA family is allowed).
        let mut unpinned = key.public_jwk().clone();
        unpinned.as_object_mut().unwrap().remove("alg");
        let family = VerifyKey::from_jwk(&jwk(unpinned), crate::algorithms::RSA_FAMILY).unwrap();
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
        assert!(VerifyKey::from_jwk(&jwk(short_x), &[Algorithm::ES256]).is_err());
        let not_base64 = json!({"kty": "RSA", "n": "!!!", "e": "AQAB"});
        assert!(VerifyKey::from_jwk(&jwk(not_base64), &[Algorithm::RS256]).is_err());
        // (RSA keys under 2048 bits: `an_issuer_publishing_only_unusable_keys_…` in oidc tests.)
        // A P-256 key asked to verify ES384 only: nothing it could verify.
        let p256 = json!({
            "kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        });
        assert!(VerifyKey::from_jwk(&jwk(p256.clone()), &[Algorithm::ES384]).is_err());
        assert!(VerifyKey::from_jwk(&jwk(p256), &[Algorithm::ES256]).is_ok());
    }
}
