//! `evs-token-vending iam-token`: makes the token an AWS IAM caller sends, for callers without
//! the AWS CLI (distroless images, scripts). The same token `aws eks get-token` prints: a
//! GetCallerIdentity presigned with aws-sigv4 from the standard credential chain, with
//! `x-k8s-aws-id` signed, base64url-encoded behind `k8s-aws-v1.`.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4::SigningParams;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::presigned::TOKEN_PREFIX;

/// How long the presigned request says it is valid (what `aws eks get-token` uses).
const PRESIGNED_EXPIRY: Duration = Duration::from_secs(60);
/// SigV4's query encoding: everything but unreserved characters.
const SIGV4_QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why no IAM token could be made.
#[derive(Debug, thiserror::Error)]
pub enum IamTokenError {
    /// No region configured anywhere.
    #[error("no AWS region: pass --region or set AWS_REGION")]
    NoRegion,
    /// The standard chain found no credentials.
    #[error("no AWS credentials: {0}")]
    NoCredentials(String),
    /// SigV4 presigning failed.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// A `k8s-aws-v1.` token for `server_id`, signed with the credentials of the standard chain.
/// The STS endpoint is `AWS_ENDPOINT_URL_STS` (or `AWS_ENDPOINT_URL`) when set, else the
/// region's own.
pub async fn iam_token(server_id: &str, region: Option<&str>) -> Result<String, IamTokenError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    let sdk = loader.load().await;
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .ok_or(IamTokenError::NoRegion)?;
    let credentials = sdk
        .credentials_provider()
        .ok_or(IamTokenError::NoCredentials(
            "no credentials provider".to_owned(),
        ))?
        .provide_credentials()
        .await
        .map_err(|e| IamTokenError::NoCredentials(e.to_string()))?;
    let endpoint = std::env::var("AWS_ENDPOINT_URL_STS")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|_| format!("https://sts.{region}.amazonaws.com"));
    let url = format!(
        "{}/?Action=GetCallerIdentity&Version=2011-06-15",
        endpoint.trim_end_matches('/')
    );

    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGNED_EXPIRY);
    let identity = credentials.into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("sts")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| IamTokenError::Sign(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        [("x-k8s-aws-id", server_id)].into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| IamTokenError::Sign(e.to_string()))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| IamTokenError::Sign(e.to_string()))?
        .into_parts();
    let mut presigned = url;
    for (name, value) in instructions.params() {
        presigned.push('&');
        presigned.push_str(name);
        presigned.push('=');
        presigned.extend(utf8_percent_encode(value, SIGV4_QUERY));
    }
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(presigned)
    ))
}
