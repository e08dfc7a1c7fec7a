//! Stage 1, extract: find the inbound credential in a request's headers.
//!
//! Front doors (ext_authz, later `/exchange`) reduce their request to an [`InboundRequest`];
//! this stage decides which credential it carries and rejects malformed ones before any
//! cryptography runs. Nothing here knows about gRPC or HTTP.

use std::fmt;

/// Longest `authorization` value accepted. IdP tokens are a few KiB; anything far larger is
/// either a mistake or an attempt to make us work.
pub const MAX_AUTHORIZATION_BYTES: usize = 16 * 1024;

/// The parts of a request that can carry a credential, as raw bytes.
#[derive(Debug, Default, Clone)]
pub struct InboundRequest<'a> {
    /// Every `authorization` header value as received (Envoy may also comma-join repeats).
    pub authorization: Vec<&'a [u8]>,
}

/// A credential found in a request, not yet verified.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <jwt>` from an identity provider.
    Bearer(BearerToken),
}

/// A bearer token's text. Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The token text, for verification only; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken(<{} bytes>)", self.0.len())
    }
}

impl Credential {
    /// The credential's bytes, for keys of caches only (never logged).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Credential::Bearer(token) => token.0.as_bytes(),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Bearer(token) => token.fmt(f),
        }
    }
}

/// Why no usable credential was found. Descriptions never include the header's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// The request carries no credential at all.
    #[error("no credential: the request has no authorization header")]
    Missing,
    /// The header is larger than [`MAX_AUTHORIZATION_BYTES`].
    #[error("malformed authorization header: larger than 16 KiB")]
    TooLarge,
    /// The header holds bytes outside visible ASCII.
    #[error("malformed authorization header: contains bytes that are not visible ASCII")]
    NotAscii,
    /// Two `authorization` headers, which Envoy joins with a comma.
    #[error("malformed authorization header: more than one value")]
    MultipleValues,
    /// Some other scheme than `Bearer` (e.g. `Basic`).
    #[error("unsupported authorization scheme: expected Bearer")]
    NotBearer,
    /// `Bearer` with nothing after it.
    #[error("malformed authorization header: empty bearer token")]
    EmptyToken,
}

/// Finds the credential a request carries.
pub fn extract(request: &InboundRequest<'_>) -> Result<Credential, ExtractError> {
    let raw = match request.authorization.as_slice() {
        [] => return Err(ExtractError::Missing),
        [one] => *one,
        _ => return Err(ExtractError::MultipleValues),
    };
    if raw.len() > MAX_AUTHORIZATION_BYTES {
        return Err(ExtractError::TooLarge);
    }
    // Visible ASCII plus space and tab: anything else cannot be part of a JWT.
    if !raw
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\t')
    {
        return Err(ExtractError::NotAscii);
    }
    let text = std::str::from_utf8(raw).map_err(|_| ExtractError::NotAscii)?;
    let text = text.trim_matches([' ', '\t']);
    if text.is_empty() {
        return Err(ExtractError::Missing);
    }
    // A JWT never contains a comma, so a comma means Envoy joined two headers.
    if text.contains(',') {
        return Err(ExtractError::MultipleValues);
    }
    let (scheme, rest) = text.split_once([' ', '\t']).unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ExtractError::NotBearer);
    }
    let token = rest.trim_matches([' ', '\t']);
    if token.is_empty() {
        return Err(ExtractError::EmptyToken);
    }
    if token.contains([' ', '\t']) {
        return Err(ExtractError::MultipleValues);
    }
    Ok(Credential::Bearer(BearerToken(token.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(header: &[u8]) -> Result<Credential, ExtractError> {
        extract(&InboundRequest {
            authorization: vec![header],
        })
    }

    #[test]
    fn bearer_token_is_found_case_insensitively() {
        let Credential::Bearer(token) = from(b"bearer  a.b.c ").unwrap();
        assert_eq!(token.expose(), "a.b.c");
    }

    #[test]
    fn each_malformation_has_its_own_reason() {
        assert_eq!(
            extract(&InboundRequest::default()),
            Err(ExtractError::Missing)
        );
        assert_eq!(from(b"Basic dXNlcjpwdw=="), Err(ExtractError::NotBearer));
        assert_eq!(
            from(b"Bearer a.b.c,Bearer d.e.f"),
            Err(ExtractError::MultipleValues)
        );
        assert_eq!(from(b"Bearer "), Err(ExtractError::EmptyToken));
        assert_eq!(from(b"Bearer a.b\xffc"), Err(ExtractError::NotAscii));
        assert_eq!(from(b"Bearer a.b\r\nc"), Err(ExtractError::NotAscii));
        let huge = vec![b'a'; 64 * 1024];
        assert_eq!(from(&huge), Err(ExtractError::TooLarge));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let credential = from(b"Bearer secret.token.text").unwrap();
        assert!(!format!("{credential:?}").contains("secret"));
    }
}
