//! A stand-in for EvidentSource: a gRPC service that verifies the bearer token it receives
//! against the sidecar's JWKS and echoes what it saw. Used by the tests behind a real Envoy
//! and by the README walk-through (`cargo run --example echo-backend`).

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::echo_proto::echo_server::{Echo, EchoServer};
use crate::echo_proto::{WhoAmIReply, WhoAmIRequest};
use crate::verify_against_jwks;

/// The echo service; fetches the JWKS at `jwks_uri` for every call (tests rotate keys, and a
/// stand-in need not be fast).
pub struct EchoBackend {
    /// Empty: echo only, never verify (the latency benchmark's backend).
    jwks_uri: String,
    client: reqwest::Client,
}

impl EchoBackend {
    /// A backend that trusts the JWKS at `jwks_uri`.
    pub fn new(jwks_uri: String) -> Self {
        Self {
            jwks_uri,
            client: reqwest::Client::new(),
        }
    }

    /// A backend that echoes what it receives without verifying it: it costs the same whatever
    /// the request carries, so latencies through Envoy compare the filters alone.
    pub fn echo_only() -> Self {
        Self::new(String::new())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(self))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    }

    /// Binds `addr` and serves there in a background task; returns the bound address.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(self.serve(listener));
        Ok(bound)
    }

    async fn verify(&self, token: &str) -> Result<(String, String), String> {
        let jwks: serde_json::Value = self
            .client
            .get(&self.jwks_uri)
            .send()
            .await
            .map_err(|e| format!("JWKS fetch failed: {e}"))?
            .json()
            .await
            .map_err(|e| format!("JWKS unreadable: {e}"))?;
        verify_against_jwks(token, &jwks)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
            .map_err(|e| e.to_string())?
            .claims;
        Ok((header.kid.unwrap_or_default(), claims.to_string()))
    }
}

#[tonic::async_trait]
impl Echo for EchoBackend {
    async fn who_am_i(
        &self,
        request: tonic::Request<WhoAmIRequest>,
    ) -> Result<tonic::Response<WhoAmIReply>, tonic::Status> {
        let authorization: Vec<String> = request
            .metadata()
            .get_all("authorization")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let mut reply = WhoAmIReply {
            authorization: authorization.clone(),
            ..Default::default()
        };
        match authorization.as_slice() {
            _ if self.jwks_uri.is_empty() => reply.error = "not verified (echo only)".into(),
            [one] => match one.strip_prefix("Bearer ") {
                Some(token) => match self.verify(token).await {
                    Ok((kid, claims)) => {
                        reply.verified = true;
                        reply.kid = kid;
                        reply.claims_json = claims;
                    }
                    Err(e) => reply.error = e,
                },
                None => reply.error = "not a bearer token".into(),
            },
            [] => reply.error = "no authorization header".into(),
            _ => reply.error = "more than one authorization header".into(),
        }
        Ok(tonic::Response::new(reply))
    }
}
