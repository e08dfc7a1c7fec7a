//! `evs-token-vending explain`: why does this caller have these grants?
//!
//! Takes an identity — written as JSON claims, or a bearer token verified exactly as a Check
//! verifies it — asks every configured grants source for it, and prints each source's answer
//! (with the rules that matched), the merge policy, and the grants a Check would mint with.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::credential::{BearerToken, Credential};
use crate::grants::{Explanation, Grants, GrantsLookup};
use crate::identity::aws_iam::{AwsIamVerifier, ServedAccounts};
use crate::identity::oidc::OidcVerifier;
use crate::identity::{Authenticator, AwsClaims, CertificateClaims, Identity, OtherClaims};
use crate::telemetry::Metrics;

/// How long the sources and issuers get.
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Who to explain.
pub enum ExplainSubject<'a> {
    /// Claims as JSON: `sub`, `iss`, `email`, `name`, `cert:cn`, `cert:org`, `cert:ou`,
    /// `cert:spiffe`, `aws:account`, `aws:role`, `k8s:namespace`, `k8s:service_account`,
    /// `k8s:pod`, and any IdP claim (`groups` …).
    Identity(&'a str),
    /// A bearer token, verified against `trust:` (or `aws_iam`) as in a Check.
    Token(&'a str),
}

/// Why there is no explanation.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// `--identity` is not a JSON object of string claims with a `sub` (the text follows the
    /// option's name).
    #[error("--identity{0}")]
    Identity(String),
    /// The token is refused, as a Check would refuse it.
    #[error("the token is refused, as a Check would refuse it: {0}")]
    Refused(#[from] crate::identity::AuthError),
    /// A source, an issuer client or the IAM verifier could not be set up.
    #[error("{0}")]
    Setup(#[from] crate::server::StartError),
}

impl From<crate::grants::GrantsStartError> for ExplainError {
    fn from(e: crate::grants::GrantsStartError) -> Self {
        Self::Setup(e.into())
    }
}

impl From<crate::identity::aws_iam::AwsSetupError> for ExplainError {
    fn from(e: crate::identity::aws_iam::AwsSetupError) -> Self {
        Self::Setup(e.into())
    }
}

/// The explanation as printed, or why there is none (a bad identity, a refused token, a
/// source that cannot be set up).
pub async fn explain(config: &Config, subject: ExplainSubject<'_>) -> Result<String, ExplainError> {
    let deadline = Instant::now() + EXPLAIN_TIMEOUT;
    let identity = match subject {
        ExplainSubject::Identity(json) => identity_from_json(json)?,
        ExplainSubject::Token(token) => verified(config, token, deadline).await?,
    };
    let metrics = Arc::new(Metrics::default());
    let accounts = served_accounts(config).await?;
    // Reloads and LDAP drivers end with this one question.
    let background = crate::background::Background::default();
    let grants = GrantsLookup::connect(&config.grants, &metrics, accounts, &background).await?;
    let explanation = grants.explain(&identity, deadline).await;
    background.stop(std::time::Duration::ZERO).await;
    Ok(render(&identity, &explanation))
}

/// The AWS accounts served, as `serve` resolves them, when IAM callers are enabled.
async fn served_accounts(config: &Config) -> Result<Option<Arc<ServedAccounts>>, ExplainError> {
    if !config.aws_iam.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(
        ServedAccounts::resolve(&config.aws_iam).await?,
    )))
}

async fn verified(
    config: &Config,
    token: &str,
    deadline: Instant,
) -> Result<Identity, ExplainError> {
    let client = crate::start_error::issuer_client(&config.trust)?;
    let oidc =
        OidcVerifier::new(&config.trust, client, Default::default()).keeping_other_claims(true);
    let aws_iam = match served_accounts(config).await? {
        Some(accounts) => Some(AwsIamVerifier::new(
            &config.aws_iam,
            accounts,
            Default::default(),
        )?),
        None => None,
    };
    let authenticator = Authenticator::new(oidc, None, aws_iam);
    let credential = Credential::Bearer(BearerToken::new(token));
    let identity = authenticator
        .authenticate(&credential, &credential.fingerprint(), deadline)
        .await?;
    Ok(identity.as_ref().clone())
}

/// An identity from claims written as JSON.
fn identity_from_json(json: &str) -> Result<Identity, ExplainError> {
    let serde_json::Value::Object(mut claims) = serde_json::from_str(json)
        .map_err(|e| ExplainError::Identity(format!(" is not JSON: {e}")))?
    else {
        return Err(ExplainError::Identity(
            " must be a JSON object of claims".into(),
        ));
    };
    let mut text = |name: &str| -> Result<Option<String>, ExplainError> {
        match claims.remove(name) {
            None => Ok(None),
            Some(serde_json::Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(ExplainError::Identity(format!(": {name} must be a string"))),
        }
    };
    let subject = text("sub")?.ok_or_else(|| ExplainError::Identity(" needs a \"sub\"".into()))?;
    let issuer = text("iss")?.unwrap_or_default();
    let email = text("email")?;
    let name = text("name")?;
    let certificate = match (
        text("cert:cn")?,
        text("cert:org")?,
        text("cert:ou")?,
        text("cert:spiffe")?,
    ) {
        (None, None, None, None) => None,
        (cn, org, ou, spiffe_id) => Some(Box::new(CertificateClaims {
            cn,
            org,
            ou,
            spiffe_id,
            thumbprint_s256: String::new(),
        })),
    };
    let aws = match (text("aws:account")?, text("aws:role")?) {
        (None, None) => None,
        (account, role_name) => Some(Box::new(AwsClaims {
            partition: "aws".to_owned(),
            account: account.unwrap_or_default(),
            user_id: String::new(),
            session: None,
            role_name,
        })),
    };
    let kubernetes = match (
        text("k8s:namespace")?,
        text("k8s:service_account")?,
        text("k8s:pod")?,
    ) {
        (None, None, None) => None,
        (namespace, service_account, pod) => Some(Box::new(crate::identity::KubernetesClaims {
            namespace: namespace.unwrap_or_default(),
            service_account: service_account.unwrap_or_default(),
            pod,
        })),
    };
    let other: Vec<_> = claims.into_iter().filter(|(_, v)| !v.is_object()).collect();
    Ok(Identity {
        subject,
        issuer,
        email,
        name,
        expires_at: u64::MAX,
        certificate,
        aws,
        claims: (!other.is_empty()).then(|| Box::new(OtherClaims(other))),
        kubernetes,
    })
}

fn render(identity: &Identity, explanation: &Explanation) -> String {
    let json = |grants: &Grants| serde_json::to_string(grants).unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "identity");
    let _ = writeln!(out, "  subject  {}", identity.subject);
    let _ = writeln!(out, "  issuer   {}", identity.issuer);
    if let Some(email) = &identity.email {
        let _ = writeln!(out, "  email    {email}");
    }
    if let Some(k8s) = &identity.kubernetes {
        let _ = writeln!(out, "  k8s_namespace        {}", k8s.namespace);
        let _ = writeln!(out, "  k8s_service_account  {}", k8s.service_account);
        if let Some(pod) = &k8s.pod {
            let _ = writeln!(out, "  k8s_pod              {pod}");
        }
    }
    let _ = writeln!(out, "sources (merge: {})", explanation.merge.name());
    for (i, source) in explanation.sources.iter().enumerate() {
        let answer = match &source.answer {
            Ok(Some(grants)) => format!("knows the identity: {}", json(grants)),
            Ok(None) => "does not know the identity".to_owned(),
            Err(e) => format!("cannot answer: {e}"),
        };
        let _ = writeln!(out, "  {}. {}: {answer}", i + 1, source.source);
        for detail in &source.details {
            let _ = writeln!(out, "       {detail}");
        }
    }
    let _ = writeln!(out, "a Check would mint");
    let _ = match &explanation.result {
        Ok(grants) => writeln!(out, "  evs:grants {}", json(grants)),
        Err(e) => writeln!(out, "  nothing: {e}"),
    };
    out
}
