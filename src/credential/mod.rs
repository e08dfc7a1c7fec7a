//! Stage 1, extract: find the inbound credential in a request.
//!
//! Front doors (ext_authz, later `/exchange`) reduce their request to an [`InboundRequest`];
//! this stage decides which credential it carries — a bearer token, a client certificate, or
//! both — and rejects malformed ones before any cryptography runs. Certificate headers are read
//! only from the sources `client_certs.from` enables, because only a proxy that sanitizes them
//! makes them trustworthy. Nothing here knows about gRPC or HTTP.

mod config;
pub(crate) mod xfcc;

use std::fmt;

use percent_encoding::percent_decode_str;

pub use self::config::{
    CertSourceKind, CertSubject, ClientCertsConfig, WhenBoth, XfccElementChoice,
};

/// Longest `authorization` value accepted. IdP tokens are a few KiB; anything far larger is
/// either a mistake or an attempt to make us work.
pub const MAX_AUTHORIZATION_BYTES: usize = 16 * 1024;
/// Longest certificate header (`x-amzn-mtls-clientcert`) or peer certificate accepted.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

/// The parts of a request that can carry a credential, as received.
#[derive(Debug, Default, Clone)]
pub struct InboundRequest<'a> {
    /// Every `authorization` header value (Envoy may also comma-join repeats).
    pub authorization: Vec<&'a [u8]>,
    /// Envoy's peer certificate: URL-encoded PEM (`include_peer_certificate`).
    pub peer_certificate: Option<&'a str>,
    /// Every `x-forwarded-client-cert` value.
    pub xfcc: Vec<&'a [u8]>,
    /// Every `x-amzn-mtls-clientcert` value.
    pub alb_certificate: Vec<&'a [u8]>,
}

/// A credential found in a request, not yet verified.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <jwt>` from an identity provider.
    Bearer(BearerToken<'a>),
    /// A client certificate.
    Certificate(ClientCertificate),
    /// Both, when `client_certs.when_both: require_both`.
    Both(BearerToken<'a>, ClientCertificate),
}

/// A bearer token's text, borrowed from the request it came in (a Check copies no token).
/// Its `Debug` never shows the token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BearerToken<'a>(&'a str);

impl<'a> BearerToken<'a> {
    /// A token given whole (by `explain`), not read from a header.
    pub(crate) fn new(token: &'a str) -> Self {
        Self(token)
    }

    /// The token text, for verification only; never log it.
    pub fn expose(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for BearerToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken(<{} bytes>)", self.0.len())
    }
}

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource {
    /// Envoy terminated mTLS and verified the chain itself.
    Peer,
    /// `x-forwarded-client-cert`.
    Xfcc,
    /// `x-amzn-mtls-clientcert`.
    Alb,
}

/// A client certificate, as DER. Its `Debug` never shows the certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// Where it came from.
    pub source: CertSource,
    /// The leaf certificate.
    pub der: Vec<u8>,
    /// Intermediates that came with it (XFCC `Chain`), leaf excluded.
    pub chain: Vec<Vec<u8>>,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientCertificate({:?}, <{} bytes>)",
            self.source,
            self.der.len()
        )
    }
}

/// SHA-256 of a credential's bytes: what caches remember it by.
pub type Fingerprint = [u8; 32];

/// The SHA-256 of `bytes`.
pub fn fingerprint_of(bytes: &[u8]) -> Fingerprint {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(digest.as_ref());
    fingerprint
}

impl Credential<'_> {
    /// SHA-256 of [`Self::as_bytes`], computed once per Check and shared by every cache.
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint_of(self.as_bytes())
    }

    /// The credential's bytes, for keys of caches only (never logged).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Credential::Bearer(token) | Credential::Both(token, _) => token.0.as_bytes(),
            Credential::Certificate(cert) => &cert.der,
        }
    }
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Bearer(token) => token.fmt(f),
            Credential::Certificate(cert) => cert.fmt(f),
            Credential::Both(token, cert) => write!(f, "Both({token:?}, {cert:?})"),
        }
    }
}

/// Why no usable credential was found. Descriptions never include the header's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// The request carries no credential at all.
    #[error("no credential: the request has no authorization header or client certificate")]
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
    /// A certificate source held something that is not one PEM certificate.
    #[error("malformed client certificate: {0}")]
    Certificate(&'static str),
    /// `when_both: require_both` and one of the two is missing.
    #[error("both a bearer token and a client certificate are required")]
    BothRequired,
}

/// Finds credentials as `client_certs` says; built once at start-up.
#[derive(Debug, Clone)]
pub struct Extractor {
    /// Enabled certificate sources, in order; empty when certificates are off.
    sources: Vec<CertSourceKind>,
    xfcc_element: XfccElementChoice,
    when_both: WhenBoth,
}

impl Default for Extractor {
    /// Bearer tokens only.
    fn default() -> Self {
        Self::from_config(&ClientCertsConfig::default())
    }
}

impl Extractor {
    /// The extractor `client_certs` describes.
    pub fn from_config(config: &ClientCertsConfig) -> Self {
        Self {
            sources: if config.enabled {
                config.from.clone()
            } else {
                Vec::new()
            },
            xfcc_element: config.xfcc_element,
            when_both: config.when_both,
        }
    }

    /// Finds the credential a request carries.
    pub fn extract<'a>(
        &self,
        request: &InboundRequest<'a>,
    ) -> Result<Credential<'a>, ExtractError> {
        let bearer = match request.authorization.as_slice() {
            [] => None,
            values => Some(bearer_token(values)?),
        };
        let certificate = self.certificate(request)?;
        match (bearer, certificate, self.when_both) {
            (None, None, _) => Err(ExtractError::Missing),
            (Some(_), None, WhenBoth::RequireBoth) | (None, Some(_), WhenBoth::RequireBoth) => {
                Err(ExtractError::BothRequired)
            }
            (Some(token), Some(cert), WhenBoth::RequireBoth) => Ok(Credential::Both(token, cert)),
            (Some(token), Some(_), WhenBoth::Bearer) | (Some(token), None, _) => {
                Ok(Credential::Bearer(token))
            }
            (_, Some(cert), _) => Ok(Credential::Certificate(cert)),
        }
    }

    /// The certificate of the first enabled source that carries one.
    fn certificate(
        &self,
        request: &InboundRequest<'_>,
    ) -> Result<Option<ClientCertificate>, ExtractError> {
        for source in &self.sources {
            let found = match source {
                CertSourceKind::Peer => match request.peer_certificate.filter(|c| !c.is_empty()) {
                    Some(encoded) => Some(single_certificate(encoded, CertSource::Peer)?),
                    None => None,
                },
                CertSourceKind::Alb => match request.alb_certificate.as_slice() {
                    [] => None,
                    [one] => {
                        let text = std::str::from_utf8(one)
                            .map_err(|_| ExtractError::Certificate("the header is not UTF-8"))?;
                        Some(single_certificate(text, CertSource::Alb)?)
                    }
                    _ => {
                        return Err(ExtractError::Certificate(
                            "more than one certificate header",
                        ));
                    }
                },
                CertSourceKind::Xfcc => match request.xfcc.as_slice() {
                    [] => None,
                    [one] => Some(self.xfcc_certificate(one)?),
                    _ => {
                        return Err(ExtractError::Certificate(
                            "more than one x-forwarded-client-cert header",
                        ));
                    }
                },
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    fn xfcc_certificate(&self, header: &[u8]) -> Result<ClientCertificate, ExtractError> {
        let text = std::str::from_utf8(header)
            .map_err(|_| ExtractError::Certificate("x-forwarded-client-cert is not UTF-8"))?;
        let elements = xfcc::parse(text).map_err(|e| ExtractError::Certificate(e.describe()))?;
        let element = match self.xfcc_element {
            XfccElementChoice::Last => elements.last(),
            XfccElementChoice::First => elements.first(),
        }
        .ok_or(ExtractError::Certificate(
            "x-forwarded-client-cert is empty",
        ))?;
        let cert = match element.cert.as_deref() {
            None => return Err(ExtractError::Certificate("the XFCC element has no Cert")),
            Some("") => {
                return Err(ExtractError::Certificate(
                    "the XFCC element's Cert is empty",
                ));
            }
            Some(cert) => cert,
        };
        let mut certificate = single_certificate(cert, CertSource::Xfcc)?;
        if let Some(chain) = element.chain.as_deref().filter(|c| !c.is_empty()) {
            let mut ders = pem_certificates(chain)?;
            // Envoy's Chain starts with the leaf itself.
            ders.retain(|der| *der != certificate.der);
            certificate.chain = ders;
        }
        Ok(certificate)
    }
}

/// The one certificate in a URL-encoded PEM value.
fn single_certificate(
    encoded: &str,
    source: CertSource,
) -> Result<ClientCertificate, ExtractError> {
    if encoded.len() > MAX_CERTIFICATE_BYTES {
        return Err(ExtractError::Certificate("larger than 16 KiB"));
    }
    let mut certs = pem_certificates(encoded)?;
    match certs.len() {
        1 => Ok(ClientCertificate {
            source,
            der: certs.remove(0),
            chain: Vec::new(),
        }),
        _ => Err(ExtractError::Certificate(
            "expected exactly one certificate",
        )),
    }
}

/// DER of every `CERTIFICATE` block of a URL-encoded PEM value.
fn pem_certificates(encoded: &str) -> Result<Vec<Vec<u8>>, ExtractError> {
    let pem_text = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| ExtractError::Certificate("not URL-encoded PEM"))?;
    let blocks =
        pem::parse_many(pem_text.as_bytes()).map_err(|_| ExtractError::Certificate("not PEM"))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(ExtractError::Certificate("no PEM certificate"));
    }
    // An armour with nothing inside would otherwise reach the verifier as a certificate.
    if certs.iter().any(Vec::is_empty) {
        return Err(ExtractError::Certificate("an empty PEM certificate"));
    }
    Ok(certs)
}

/// The bearer token of the `authorization` value(s).
pub(crate) fn bearer_token<'a>(values: &[&'a [u8]]) -> Result<BearerToken<'a>, ExtractError> {
    let raw = match values {
        [one] => *one,
        _ => return Err(ExtractError::MultipleValues),
    };
    if raw.len() > MAX_AUTHORIZATION_BYTES {
        return Err(ExtractError::TooLarge);
    }
    // One branch-free pass the compiler vectorises: visible ASCII plus space and tab (anything
    // else cannot be part of a JWT), and no comma (a JWT never contains one, so a comma means
    // Envoy joined two headers).
    let (outside, comma) = raw.iter().fold((false, false), |(outside, comma), &byte| {
        let allowed = (b' '..=b'~').contains(&byte) || byte == b'\t';
        (outside | !allowed, comma | (byte == b','))
    });
    if outside {
        return Err(ExtractError::NotAscii);
    }
    let text = std::str::from_utf8(raw).map_err(|_| ExtractError::NotAscii)?;
    let text = text.trim_matches([' ', '\t']);
    if text.is_empty() {
        return Err(ExtractError::Missing);
    }
    if comma {
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
    if memchr::memchr2(b' ', b'\t', token.as_bytes()).is_some() {
        return Err(ExtractError::MultipleValues);
    }
    Ok(BearerToken(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bearer tokens only (client certificates off).
    fn extract<'a>(request: &InboundRequest<'a>) -> Result<Credential<'a>, ExtractError> {
        Extractor::default().extract(request)
    }

    fn from(header: &[u8]) -> Result<Credential<'_>, ExtractError> {
        extract(&InboundRequest {
            authorization: vec![header],
            ..Default::default()
        })
    }

    #[test]
    fn bearer_token_is_found_case_insensitively() {
        let Ok(Credential::Bearer(token)) = from(b"bearer  a.b.c ") else {
            panic!("expected a bearer token");
        };
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

    #[test]
    fn certificate_headers_are_ignored_unless_their_source_is_enabled() {
        let request = InboundRequest {
            xfcc: vec![b"Hash=abc;Cert=x"],
            alb_certificate: vec![b"x"],
            ..Default::default()
        };
        assert_eq!(extract(&request), Err(ExtractError::Missing));
    }

    /// Found by fuzz/fuzz_targets/alb_header.rs: an armour with nothing inside was taken for a
    /// certificate of zero bytes.
    #[test]
    fn an_empty_pem_certificate_is_refused_as_such() {
        let extractor = Extractor::from_config(&ClientCertsConfig {
            enabled: true,
            from: vec![CertSourceKind::Alb],
            ..ClientCertsConfig::default()
        });
        let empty = b"-----BEGIN%20CERTIFICATE-----%0A-----END%20CERTIFICATE-----%0A";
        let request = InboundRequest {
            alb_certificate: vec![empty],
            ..Default::default()
        };
        assert_eq!(
            extractor.extract(&request),
            Err(ExtractError::Certificate("an empty PEM certificate"))
        );
    }
}
