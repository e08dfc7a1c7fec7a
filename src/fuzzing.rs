//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, never in a release
//! build): each parser an unauthenticated caller (or a store's reply, or an operator's file)
//! reaches, called exactly as the request path calls it, with its result in plain types the
//! targets can check properties of. docs/security.md, "Fuzzing", lists the targets.

use std::collections::{BTreeMap, HashMap};

use crate::credential::{CertSourceKind, ClientCertsConfig, Extractor, InboundRequest};
use crate::identity::aws_iam::{arn, presigned, sts};
use crate::identity::oidc::unverified::UnverifiedJwt;

/// A refusal as the request path states it: the text a caller or the log sees, which is what
/// the targets check (that it carries no certificate material, that it names the file).
#[derive(Debug)]
pub struct RefusalText(pub String);

impl<E: std::error::Error> From<E> for RefusalText {
    fn from(error: E) -> Self {
        Self(error.to_string())
    }
}

impl std::fmt::Display for RefusalText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a JWS's unverified parts said.
#[derive(Debug)]
pub struct JwsParts {
    /// The `alg` the header named.
    pub algorithm: String,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The payload's `iss`.
    pub issuer: String,
    /// The decoded payload.
    pub payload: Vec<u8>,
    /// How many leading bytes of the token the signature is checked over.
    pub signed_len: usize,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// The bearer token of `authorization` header values, as the Check reads them.
pub fn bearer(values: &[&[u8]]) -> Result<String, RefusalText> {
    crate::credential::bearer_token(values)
        .map(|token| token.expose().to_owned())
        .map_err(RefusalText::from)
}

/// A JWS compact token's header and issuer, read before any signature check.
pub fn jws(token: &str) -> Result<JwsParts, RefusalText> {
    UnverifiedJwt::parse(token)
        .map(|jwt| JwsParts {
            algorithm: format!("{:?}", jwt.algorithm),
            kid: jwt.kid,
            issuer: jwt.issuer,
            payload: jwt.payload,
            signed_len: jwt.signed_len,
            signature: jwt.signature,
        })
        .map_err(RefusalText::from)
}

/// What a `k8s-aws-v1.` token's presigned URL was accepted as.
#[derive(Debug)]
pub struct PresignedUrl {
    /// The URL STS would be called with.
    pub url: String,
    /// When STS stops honouring it (Unix seconds).
    pub window_end: u64,
    /// The partition of its host.
    pub partition: Option<&'static str>,
}

/// An AWS IAM token checked with the default `aws_iam` settings at `now`.
pub fn iam_token(token: &str, now: u64) -> Result<PresignedUrl, RefusalText> {
    presigned::parse(token, &presigned::StsEndpoints::default(), now)
        .map(|request| PresignedUrl {
            url: request.url,
            window_end: request.window_end,
            partition: request.partition,
        })
        .map_err(RefusalText::from)
}

/// A canonical IAM principal.
#[derive(Debug, PartialEq, Eq)]
pub struct Principal {
    /// The ARN the identity is.
    pub canonical_arn: String,
    /// Its partition.
    pub partition: String,
    /// Its account.
    pub account: String,
    /// Its role's name, for a role.
    pub role_name: Option<String>,
}

/// An STS reply body: whether it is a throttling error document, and the caller it names.
pub fn sts_reply(body: &[u8]) -> (bool, Result<(String, String, String), RefusalText>) {
    let identity = sts::read_answer(body)
        .map(|id| (id.account, id.arn, id.user_id))
        .map_err(RefusalText::from);
    (sts::is_throttling(body), identity)
}

/// An STS caller ARN made canonical; `Err(true)` for a principal never served.
pub fn canonical_arn(text: &str) -> Result<Principal, bool> {
    arn::canonical(text)
        .map(|p| Principal {
            canonical_arn: p.canonical_arn,
            partition: p.partition,
            account: p.account,
            role_name: p.role_name,
        })
        .map_err(|e| matches!(e, arn::NotAPrincipal::NotServed(_)))
}

/// Whether STS's `UserId` fits the principal `arn` names (false when it names none).
pub fn user_id_fits(user_id: &str, arn_text: &str) -> bool {
    arn::canonical(arn_text).is_ok_and(|p| arn::user_id_fits(user_id, &p))
}

/// An `/exchange` body, form or JSON: the grant type asked for, or the OAuth error and status.
pub fn exchange_body(body: &[u8], json: bool) -> Result<&'static str, (u16, &'static str)> {
    use crate::exchange::request::Grant;
    let grant = if json {
        Grant::from_json(body)
    } else {
        Grant::from_form(body)
    };
    grant
        .map(|grant| grant.grant_type())
        .map_err(|e| (e.status, e.error))
}

/// An AWS ALB `x-amzn-mtls-clientcert` value: the DER of the one certificate it carries.
pub fn alb_certificate(value: &[u8]) -> Result<Vec<u8>, RefusalText> {
    let extractor = Extractor::from_config(&ClientCertsConfig {
        enabled: true,
        from: vec![CertSourceKind::Alb],
        ..ClientCertsConfig::default()
    });
    let request = InboundRequest {
        alb_certificate: vec![value],
        ..InboundRequest::default()
    };
    match extractor.extract(&request) {
        Ok(crate::credential::Credential::Certificate(cert)) => Ok(cert.der),
        Ok(_) => Err(RefusalText("not a certificate".to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// An LDAP search filter from `template` with `{name}` filled by `values`, escaped.
pub fn ldap_filter(template: &str, values: &[(&str, &str)]) -> String {
    crate::grants::ldap::filter::fill_filter(template, values)
}

/// A rules glob: `None` when the pattern is refused, else what its stars took from `value`
/// (`Some(None)`: no match).
pub fn glob(pattern: &str, value: &str) -> Option<Option<Vec<String>>> {
    let pattern = crate::grants::rules::pattern::Pattern::parse(pattern).ok()?;
    Some(pattern.captures(value).map(|captures| {
        (1..=pattern.stars())
            .map(|n| captures.get(n).unwrap_or_default().to_owned())
            .collect()
    }))
}

/// A glob with no stars, as rules build them from exact values.
pub fn glob_exact_matches(exact: &str, value: &str) -> bool {
    crate::grants::rules::pattern::Pattern::exact(exact)
        .captures(value)
        .is_some()
}

/// One subject's grants, in plain types.
pub type PlainGrants = (Vec<String>, BTreeMap<String, Vec<String>>);

/// A grants file's text as the file source reads it.
pub fn grants_file(text: &str) -> Result<HashMap<String, PlainGrants>, RefusalText> {
    crate::grants::file::parse_grants(text, true, "grants.yaml".to_owned())
        .map(|subjects| {
            subjects
                .into_iter()
                .map(|(subject, g)| (subject, (g.global.clone(), g.databases.clone())))
                .collect()
        })
        .map_err(RefusalText::from)
}

/// The grants as a grants file would write them, for a round trip.
pub fn render_grants_file(subjects: &HashMap<String, PlainGrants>) -> String {
    let subjects: BTreeMap<&String, crate::grants::Grants> = subjects
        .iter()
        .map(|(subject, (global, databases))| {
            let mut grants = crate::grants::Grants::default();
            grants.global = global.clone();
            grants.databases = databases.clone();
            (subject, grants)
        })
        .collect();
    serde_norway::to_string(&BTreeMap::from([("subjects", subjects)])).expect("grants render")
}

/// A config file's text, as `serve` and `check-config` read it (files relative to a folder
/// that does not exist, so every file it names is missing).
pub fn config(text: &str) -> Result<(), Vec<String>> {
    crate::config::Config::from_yaml(text, std::path::Path::new("/nonexistent-evs-fuzz"))
        .map(|_| ())
        .map_err(|e| e.problems.iter().map(|p| p.to_string()).collect())
}
