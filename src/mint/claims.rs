//! The claims of a minted token (SPEC §6), serialized in one pass, and the list of every
//! claim name the minter writes — the names `token.grants_claim` may not take.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::Minter;
use crate::grants::Grants;
use crate::identity::Identity;

/// Every claim name the minter may write besides the grants claim.
pub(crate) const WRITTEN_CLAIMS: &[&str] = &[
    "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "email", "name", "cert:cn", "cert:org", "cnf",
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

/// The claims of SPEC §6, serialized in one pass with the configured grants claim name.
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
        map.end()
    }
}
