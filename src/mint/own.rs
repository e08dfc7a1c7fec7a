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

/// The longest header a token of ours may have, decoded (ours are under 100 bytes): a longer
/// one is not ours, and the header is decoded on the stack.
const HEADER_PEEK_BYTES: usize = 512;

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
        let mut decoded = [0u8; HEADER_PEEK_BYTES];
        let length = URL_SAFE_NO_PAD.decode_slice(header, &mut decoded).ok()?;
        let ring = self.ring.load();
        // An IdP's token (nearly every Check) names none of our kids: not ours, and no JSON
        // is parsed (docs/benchmarks.md: parsing was 2.5 % of a cached Check's CPU).
        if !ring.is_named_in(&decoded[..length]) {
            return None;
        }
        let kid = serde_json::from_slice::<HeaderPeek>(&decoded[..length])
            .ok()?
            .kid?;
        ring.verifier(kid)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::mint::{Grants, KeyRing, SigningKey, TokenConfig};

    fn minter() -> Minter {
        let token: TokenConfig =
            serde_norway::from_str("{ issuer: https://tv.example.com, audience: [a] }").unwrap();
        let ring = KeyRing::new(0, vec![SigningKey::generate_rsa(2048).unwrap()]);
        Minter::new(&token, ring, Default::default())
    }

    fn own_token(minter: &Minter) -> String {
        let identity = Identity {
            subject: "user@example.com".into(),
            issuer: "https://idp.example.com".into(),
            email: None,
            name: None,
            expires_at: u64::MAX / 2,
            certificate: None,
            aws: None,
            claims: None,
            kubernetes: None,
        };
        let now = crate::clock::unix_now();
        minter
            .mint(&identity, &Grants::default(), now)
            .unwrap()
            .token
    }

    /// The header with `json` in place of the token's own, the rest unchanged.
    fn with_header(token: &str, json: &str) -> String {
        let (_, rest) = token.split_once('.').unwrap();
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(json))
    }

    #[test]
    fn a_token_of_ours_is_recognised_whatever_its_header_order() {
        let minter = minter();
        let token = own_token(&minter);
        let verdict = minter.verify_own(&token).expect("ours");
        assert_eq!(verdict.unwrap().subject, "user@example.com");
        // The header is read as JSON, so another writer's field order (a replica of another
        // version) is still recognised as ours, and its signature checked.
        let kid = minter.ring.load().kids()[0].to_owned();
        let reordered = with_header(
            &token,
            &format!(r#"{{"kid":"{kid}","typ":"JWT","alg":"RS256"}}"#),
        );
        assert!(matches!(
            minter.verify_own(&reordered),
            Some(Err(AuthError::BadSignature))
        ));
    }

    #[test]
    fn a_header_naming_none_of_our_kids_or_too_long_is_not_ours() {
        let minter = minter();
        let token = own_token(&minter);
        let kid = minter.ring.load().kids()[0].to_owned();
        let other = with_header(&token, r#"{"alg":"RS256","typ":"JWT","kid":"idp-key-1"}"#);
        assert!(minter.verify_own(&other).is_none());
        let padded = format!(
            r#"{{"alg":"RS256","kid":"{kid}","x":"{}"}}"#,
            "a".repeat(HEADER_PEEK_BYTES)
        );
        assert!(minter.verify_own(&with_header(&token, &padded)).is_none());
        // Named only outside the `kid` member: not ours either.
        let elsewhere = with_header(&token, &format!(r#"{{"alg":"RS256","x":"{kid}"}}"#));
        assert!(minter.verify_own(&elsewhere).is_none());
        assert!(minter.verify_own("not a token").is_none());
        assert!(minter.verify_own("%%%.e30.sig").is_none());
    }
}
