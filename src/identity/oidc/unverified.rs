//! What is read from a bearer token before its signature is checked: the issuer and the key
//! to check it with, and the decoded segments the check and the claims then use.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::AuthError;
use crate::algorithms::is_shared_secret;

/// What is read from a token before its signature is checked, to choose issuer and key.
pub(crate) struct UnverifiedJwt {
    pub(crate) algorithm: Algorithm,
    pub(crate) kid: Option<String>,
    pub(crate) issuer: String,
    /// The decoded payload, trusted only once the signature is.
    pub(crate) payload: Vec<u8>,
    /// How many leading bytes of the token the signature covers (`header.payload`).
    pub(crate) signed_len: usize,
    /// The decoded signature.
    pub(crate) signature: Vec<u8>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RawIssuer {
    iss: Option<serde_json::Value>,
}

impl UnverifiedJwt {
    pub(crate) fn parse(token: &str) -> Result<Self, AuthError> {
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(AuthError::Malformed("a JWT has exactly three segments"));
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(AuthError::Malformed("a segment is empty"));
        }
        let signed_len = header.len() + 1 + payload.len();
        let header_bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::Malformed("the header is not base64url"))?;
        let header: RawHeader = serde_json::from_slice(&header_bytes)
            .map_err(|_| AuthError::Malformed("the header is not a JSON object"))?;
        let alg = header
            .alg
            .ok_or(AuthError::Malformed("the header has no alg"))?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgorithmNone);
        }
        if header.crit.is_some() {
            return Err(AuthError::Malformed(
                "critical header extensions are not supported",
            ));
        }
        let algorithm: Algorithm = alg
            .parse()
            .map_err(|_| AuthError::AlgorithmNotAllowed("unknown algorithm"))?;
        if is_shared_secret(algorithm) {
            return Err(AuthError::AlgorithmNotAllowed(
                "shared-secret (HS*) tokens are never accepted",
            ));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed("the signature is not base64url"))?;
        let payload_bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::Malformed("the payload is not base64url"))?;
        let claims: RawIssuer = serde_json::from_slice(&payload_bytes)
            .map_err(|_| AuthError::Malformed("the payload is not a JSON object"))?;
        let issuer = match claims.iss {
            Some(serde_json::Value::String(iss)) => iss,
            Some(_) => return Err(AuthError::InvalidClaim("iss is not a string")),
            None => return Err(AuthError::InvalidClaim("iss is required")),
        };
        Ok(Self {
            algorithm,
            kid: header.kid,
            issuer,
            payload: payload_bytes,
            signed_len,
            signature,
        })
    }
}
