//! Tokens of our own issuer, coming back: a token from `/exchange` sent through an Envoy with
//! this sidecar is already what the backend needs. It is verified against our own key ring
//! (no HTTP), and a valid one passes unchanged; a forged or expired one is refused like any
//! other bad token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Validation;
use serde::Deserialize;

use super::Minter;
use crate::identity::AuthError;

/// A valid token of ours: who it was minted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnToken {
    /// Its `sub`.
    pub subject: String,
}

/// What is read of a token's header before deciding whether it may be ours.
#[derive(Deserialize)]
struct HeaderPeek<'a> {
    #[serde(borrow, default)]
    kid: Option<&'a str>,
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

/// A JWS segment's JSON, base64url-decoded; `None` when it is not.
fn decode_segment(segment: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(segment).ok()
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Minter {
    /// `None` when `token` does not claim our issuer (it goes the usual way); otherwise its
    /// verdict against the published keys, the key's own algorithm, and `exp`.
    ///
    /// Every Check asks this of an IdP token first, so the cheap test comes first: a token of
    /// ours names a `kid` of our key ring in its ~100-byte header, and only then is its payload
    /// decoded to read `iss`.
    pub fn verify_own(&self, token: &str) -> Option<Result<OwnToken, AuthError>> {
        let (header, rest) = token.split_once('.')?;
        let header_json = decode_segment(header)?;
        let kid = serde_json::from_slice::<HeaderPeek>(&header_json)
            .ok()?
            .kid?;
        self.ring.load().verifier(kid)?;
        let payload = rest.split('.').next()?;
        let peek: Peek = serde_json::from_slice(&decode_segment(payload)?).ok()?;
        if peek.iss.as_deref() != Some(self.issuer.as_str()) {
            return None;
        }
        Some(self.verify_own_signature(token))
    }

    fn verify_own_signature(&self, token: &str) -> Result<OwnToken, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Malformed("the header is not a JSON object"))?;
        let kid = header.kid.ok_or(AuthError::UnknownKid)?;
        let ring = self.ring();
        let (algorithm, decoding) = ring.verifier(&kid).ok_or(AuthError::UnknownKid)?;
        if algorithm != header.alg {
            return Err(AuthError::AlgorithmNotAllowed(
                "the key is pinned to another algorithm",
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, decoding, &validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed("the token could not be decoded"),
            }
        })?;
        Ok(OwnToken {
            subject: claims.claims.sub,
        })
    }
}
