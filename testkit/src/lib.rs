//! Test helpers of evs-token-vending, kept out of the product crate: CheckRequests as Envoy
//! sends them, tokens signed with any key, a backend's JWKS verification, the answers' parts,
//! the echo backend that stands in for EvidentSource behind a real Envoy, and the `unsafe` the
//! suite needs (the environment, an allocation counter) behind safe functions.

pub mod echo_backend;
pub mod process;

/// Generated code of `proto/evs/echo/v1/echo.proto` (the stand-in backend).
pub mod echo_proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("evs.echo.v1");
}

use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context, check_response,
};
use evs_token_vending::SigningKey;

pub use echo_backend::EchoBackend;

/// A gRPC channel to ext_authz wherever it listens: TCP (no Nagle delay) or a Unix socket.
pub async fn authz_channel(
    addr: &evs_token_vending::AuthzAddress,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    match addr {
        evs_token_vending::AuthzAddress::Tcp(addr) => {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await
        }
        evs_token_vending::AuthzAddress::Unix(path) => {
            let path = path.clone();
            // The URI is required by the API and unused: the connector dials the socket.
            tonic::transport::Endpoint::from_static("http://uds.invalid")
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let socket = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(socket))
                    }
                }))
                .await
        }
    }
}

/// Whether something accepts connections at `addr` now.
pub fn accepting(addr: &evs_token_vending::AuthzAddress) -> bool {
    match addr {
        evs_token_vending::AuthzAddress::Tcp(addr) => std::net::TcpStream::connect(addr).is_ok(),
        evs_token_vending::AuthzAddress::Unix(path) => {
            std::os::unix::net::UnixStream::connect(path).is_ok()
        }
    }
}

/// A CheckRequest as Envoy sends it for a request carrying `headers`.
pub fn check_request(headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "POST".into(),
                    path: "/evidentsource.v1.EvidentSource/Query".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Signs arbitrary claims with `key` (its own algorithm, `kid` set).
pub fn sign_with(key: &SigningKey, claims: &serde_json::Value) -> String {
    key.sign_jws(claims.to_string().as_bytes())
        .expect("signing test claims")
}

/// The minted token of an OK answer.
pub fn minted_token(answer: &CheckResponse) -> Option<String> {
    match answer.http_response.as_ref()? {
        check_response::HttpResponse::OkResponse(ok) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == "authorization")
            .and_then(|h| h.value.strip_prefix("Bearer "))
            .map(str::to_owned),
        _ => None,
    }
}

/// `HTTP 401: {"error":…}` for a denial, `not denied` otherwise (for assertion messages).
pub fn denial_summary(answer: &CheckResponse) -> String {
    match answer.http_response.as_ref() {
        Some(check_response::HttpResponse::DeniedResponse(denied)) => format!(
            "HTTP {}: {}",
            denied.status.as_ref().map(|s| s.code).unwrap_or(0),
            denied.body
        ),
        _ => "not denied".to_owned(),
    }
}

/// Verifies a token against a JWKS document as a backend would: the published key's own
/// `alg` decides, and a token claiming another is refused.
pub fn verify_against_jwks(token: &str, jwks: &serde_json::Value) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or("kid not in the JWKS")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    if jwk.common.key_algorithm != Some(header.alg.into()) {
        return Err("alg differs from the published key's alg".into());
    }
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
