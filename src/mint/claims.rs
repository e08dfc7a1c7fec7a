//! The claims of a minted token (docs/configuration.md, "What is minted"), serialized in one pass,
//! and the list of every claim name the minter writes — the names `token.grants_claim` may not
//! take.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::Minter;
use crate::grants::Grants;
use crate::identity::Identity;

/// Every claim name the minter may write besides the grants claim.
pub(crate) const WRITTEN_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "iat",
    "nbf",
    "exp",
    "jti",
    "email",
    "name",
    "cert:cn",
    "cert:org",
    "cnf",
    "aws:account",
    "aws:user_id",
    "aws:session",
];

/// RFC 8705 `cnf`: `{"x5t#S256": <thumbprint>}`.
struct Confirmation<'a>(&'a str);

impl Serialize for Confirmation<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("x5t#S256", self.0)?;
        map.end()
    }
}

/// The claims docs/configuration.md lists, serialized in one pass with the configured grants claim
/// name.
pub(super) struct MintedClaims<'a> {
    pub(super) minter: &'a Minter,
    pub(super) identity: &'a Identity,
    pub(super) grants: &'a Grants,
    pub(super) issued_at: u64,
    pub(super) expires_at: u64,
    pub(super) jti: &'a str,
}

impl Serialize for MintedClaims<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("iss", &self.minter.issuer)?;
        map.serialize_entry("sub", &self.identity.subject)?;
        match self.minter.audience.as_slice() {
            [] => {}
            [one] => map.serialize_entry("aud", one)?,
            many => map.serialize_entry("aud", many)?,
        }
        map.serialize_entry("iat", &self.issued_at)?;
        map.serialize_entry("nbf", &self.issued_at)?;
        map.serialize_entry("exp", &self.expires_at)?;
        map.serialize_entry("jti", self.jti)?;
        map.serialize_entry(&self.minter.grants_claim, self.grants)?;
        if let Some(email) = &self.identity.email {
            map.serialize_entry("email", email)?;
        }
        if let Some(name) = &self.identity.name {
            map.serialize_entry("name", name)?;
        }
        if let Some(cert) = &self.identity.certificate {
            if let Some(cn) = &cert.cn {
                map.serialize_entry("cert:cn", cn)?;
            }
            if let Some(org) = &cert.org {
                map.serialize_entry("cert:org", org)?;
            }
            map.serialize_entry("cnf", &Confirmation(&cert.thumbprint_s256))?;
        }
        if let Some(aws) = &self.identity.aws {
            map.serialize_entry("aws:account", &aws.account)?;
            map.serialize_entry("aws:user_id", &aws.user_id)?;
            if let Some(session) = &aws.session {
                map.serialize_entry("aws:session", session)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::{AwsClaims, CertificateClaims};
    use crate::mint::{KeyRing, SigningKey, TokenConfig};

    fn identity_with_every_claim() -> Identity {
        Identity {
            subject: "s".into(),
            issuer: "i".into(),
            email: Some("e".into()),
            name: Some("n".into()),
            expires_at: u64::MAX / 2,
            certificate: Some(Box::new(CertificateClaims {
                cn: Some("cn".into()),
                org: Some("o".into()),
                ou: None,
                spiffe_id: None,
                thumbprint_s256: "t".into(),
            })),
            aws: Some(Box::new(AwsClaims {
                partition: "aws".into(),
                account: "123456789012".into(),
                user_id: "AROA:s".into(),
                session: Some("s".into()),
                role_name: Some("r".into()),
            })),
            claims: None,
            kubernetes: None,
        }
    }

    fn minter(cache: &str) -> Arc<Minter> {
        let token: TokenConfig = serde_norway::from_str(&format!(
            "{{ issuer: https://tv.example.com, audience: [a, b], grants_claim: 'evs:grants', cache: {cache} }}"
        ))
        .unwrap();
        let ring = KeyRing::new(0, vec![SigningKey::generate_rsa(2048).unwrap()]);
        Arc::new(Minter::new(&token, ring, Arc::default()))
    }

    /// The cache keeps only a token's signature and stamp and renders the payload again on a
    /// hit: for an identity with every claim, the served text is the signed text, byte for byte.
    #[tokio::test]
    async fn a_cached_token_is_served_byte_for_byte_as_it_was_signed() {
        let minter = minter("{ enabled: true }");
        let identity = identity_with_every_claim();
        let grants: Arc<Grants> = Arc::new(
            serde_json::from_str(
                r#"{"global": ["reader"], "databases": {"orders": ["writer", "admin"]}}"#,
            )
            .unwrap(),
        );
        let now = crate::clock::unix_now();
        let (first, cached) = minter
            .mint_cached(&identity, &grants, &[1; 32], now)
            .await
            .unwrap();
        assert!(!cached);
        let (again, cached) = minter
            .mint_cached(&identity, &grants, &[1; 32], now + 1)
            .await
            .unwrap();
        assert!(cached, "the second swap is a cache hit");
        assert_eq!(again.token, first.token);
    }

    /// Mints for an identity with every optional part set and reads the claim names back:
    /// each must be the grants claim or in [`WRITTEN_CLAIMS`], so validation refusing those
    /// names as `grants_claim` covers everything the minter writes.
    #[test]
    fn every_claim_the_minter_writes_is_listed() {
        let minter = minter("{ enabled: false }");
        let identity = identity_with_every_claim();
        let minted = minter.mint(&identity, &Grants::default(), 1_000).unwrap();
        let payload = minted.token.split('.').nth(1).unwrap();
        let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        for name in claims.keys() {
            assert!(
                name == "evs:grants" || WRITTEN_CLAIMS.contains(&name.as_str()),
                "{name} is written but not listed"
            );
        }
        assert_eq!(
            claims.len(),
            WRITTEN_CLAIMS.len() + 1,
            "every listed claim is written"
        );
    }
}
