//! evs-token-vending: an Envoy ext_authz sidecar that swaps each request's inbound credential
//! for a freshly minted EvidentSource JWT.
//!
//! The modules follow one Check request: [`credential`] (extract) → [`identity`]
//! (authenticate) → [`grants`] (look up) → [`mint`] (sign) → [`authz`] (answer Envoy).
//! [`pipeline`] runs the first four; [`http`] is the side port; [`server`] wires it all up.

pub mod authz;
pub mod aws;
pub mod config;
pub mod credential;
pub mod demo;
pub mod echo_backend;
pub mod file_stamp;
pub mod grants;
pub mod http;
pub mod identity;
pub mod mint;
pub mod pipeline;
pub mod server;
pub mod telemetry;

/// Generated code of `proto/evs/echo/v1/echo.proto` (the stand-in backend).
pub mod echo_proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("evs.echo.v1");
}

pub use config::Config;
pub use server::{RunningSidecar, start};
