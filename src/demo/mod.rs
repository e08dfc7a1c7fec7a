//! `evs-token-vending demo`: the whole swap on one machine with nothing configured.
//!
//! A built-in identity provider ([`DemoIdp`]: an RSA key, OIDC discovery and a JWKS on a
//! loopback port) issues a token; the real sidecar, started with embedded defaults, answers a
//! real ext_authz Check for it over gRPC; the minted token is then verified against the
//! sidecar's own JWKS. The tests reuse [`DemoIdp`] as their identity provider.

mod idp;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context, check_response,
};

pub use self::idp::DemoIdp;
use crate::algorithms::MIN_RSA_BITS;
use crate::clock::unix_now;
use crate::config::Config;
use crate::identity::oidc::{OidcVerifier, TrustedIssuerConfig};
use crate::mint::SigningKey;

/// The minted `iss` of the demo.
const DEMO_ISSUER: &str = "https://token-vending.example.com";

/// The sample grants the demo (and the README walk-through) use.
pub const SAMPLE_GRANTS: &str = "\
subjects:
  user@example.com:
    global: [database_creator]
    databases:
      production: [reader, writer]
      staging: [reader, writer, deployer]
  cert:orders-service:
    databases:
      orders: [reader, writer]
";

/// Runs the demo and prints what happens.
pub async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let idp = DemoIdp::start().await?;
    let dir = std::env::temp_dir().join(format!("evs-token-vending-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("grants.yaml"), SAMPLE_GRANTS)?;
    let config_text = format!(
        "listen: {{ authz: 127.0.0.1:0, http: 127.0.0.1:0 }}
token: {{ issuer: {DEMO_ISSUER}, audience: [evidentsource], lifetime: 1h }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{}', audiences: [demo-client] }} ]
grants: {{ source: file, file: grants.yaml }}
",
        idp.issuer()
    );
    let config = Config::from_yaml(&config_text, &dir)?;
    let sidecar = crate::start(config).await?;
    let result = show_swap(&idp, &sidecar).await;
    sidecar.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn show_swap(
    idp: &DemoIdp,
    sidecar: &crate::RunningSidecar,
) -> Result<(), Box<dyn std::error::Error>> {
    let rule = "─".repeat(72);
    println!("{rule}\nevs-token-vending demo: one real token swap on loopback\n{rule}");
    println!("demo identity provider   {}", idp.issuer());
    println!("ext_authz gRPC           {}", sidecar.authz_addr);
    println!(
        "JWKS                     http://{}/.well-known/jwks.json",
        sidecar.http_addr
    );

    let idp_token = idp.token_for(
        "user@example.com",
        Some("user@example.com"),
        Duration::from_secs(600),
    );
    println!(
        "\n1. The caller arrives with an IdP token (expires in 10 minutes):\n\n   {idp_token}\n"
    );
    print_claims("   IdP token", &idp_token);

    let mut client = AuthorizationClient::connect(format!("http://{}", sidecar.authz_addr)).await?;
    let bearer = format!("Bearer {idp_token}");
    let answer = client
        .check(check_request(&bearer, "demo-1"))
        .await?
        .into_inner();
    let minted = minted_token(&answer).ok_or("the sidecar did not answer OK")?;
    println!(
        "\n2. Envoy asks the sidecar (ext_authz Check); it answers OK and overwrites\n   `authorization` with a freshly minted token:\n\n   Bearer {minted}\n"
    );
    print_claims("   minted token", &minted);

    let verified = verify_as_backend(&minted, sidecar).await;
    println!(
        "\n3. The backend verifies it with the sidecar's JWKS: {}",
        match &verified {
            Ok(()) => "signature OK".to_owned(),
            Err(e) => format!("FAILED ({e})"),
        }
    );

    let forged = {
        let other = SigningKey::generate_rsa(MIN_RSA_BITS)?;
        let now = unix_now();
        let claims = serde_json::json!({"iss": idp.issuer(), "sub": "mallory", "exp": now + 600});
        other.sign_jws(claims.to_string().as_bytes())?
    };
    let denied = client
        .check(check_request(&format!("Bearer {forged}"), "demo-2"))
        .await?
        .into_inner();
    println!(
        "\n4. A token signed by a key the IdP never published is refused:\n   {}",
        denial_summary(&denied)
    );
    println!("{rule}");
    verified.map_err(Into::into)
}

/// The CheckRequest Envoy sends for a request with this `authorization` and `x-request-id`.
fn check_request(authorization: &str, request_id: &str) -> CheckRequest {
    let headers = [
        ("authorization", authorization),
        ("x-request-id", request_id),
    ];
    let http = attribute_context::HttpRequest {
        method: "POST".into(),
        path: "/evidentsource.v1.EvidentSource/Query".into(),
        headers: headers
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        ..Default::default()
    };
    let request = attribute_context::Request {
        http: Some(http),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(request),
            ..Default::default()
        }),
    }
}

/// The token an OK answer writes into `authorization`.
fn minted_token(answer: &CheckResponse) -> Option<String> {
    let Some(check_response::HttpResponse::OkResponse(ok)) = &answer.http_response else {
        return None;
    };
    let header = ok.headers.iter().filter_map(|h| h.header.as_ref());
    header
        .filter(|h| h.key == "authorization")
        .find_map(|h| h.value.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// `HTTP 401: {"error":…}` for a denial.
fn denial_summary(answer: &CheckResponse) -> String {
    let Some(check_response::HttpResponse::DeniedResponse(denied)) = &answer.http_response else {
        return "not denied".to_owned();
    };
    let status = denied.status.as_ref().map_or(0, |s| s.code);
    format!("HTTP {status}: {}", denied.body)
}

/// Verifies a minted token the way a backend does: the sidecar's JWKS fetched over HTTP,
/// through the same verifier that checks IdP tokens, with the sidecar as a trusted issuer.
async fn verify_as_backend(
    minted: &str,
    sidecar: &crate::RunningSidecar,
) -> Result<(), crate::identity::AuthError> {
    let ours = TrustedIssuerConfig {
        audiences: vec!["evidentsource".to_owned()],
        ..TrustedIssuerConfig::with_defaults(
            DEMO_ISSUER,
            Some(format!(
                "http://{}/.well-known/jwks.json",
                sidecar.http_addr
            )),
        )
    };
    let verifier = OidcVerifier::new(&[ours], reqwest::Client::new(), Default::default());
    let deadline = Instant::now() + Duration::from_secs(5);
    verifier.verify(minted, deadline).await.map(|_| ())
}

fn print_claims(label: &str, token: &str) {
    let decode = |segment: Option<&str>| -> String {
        segment
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| "<undecodable>".into())
            .replace('\n', "\n   ")
    };
    let mut parts = token.split('.');
    println!("{label} header:\n   {}", decode(parts.next()));
    println!("{label} claims:\n   {}", decode(parts.next()));
}
