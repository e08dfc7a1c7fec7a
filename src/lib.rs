//! evs-token-vending: an Envoy ext_authz sidecar that swaps each request's inbound credential
//! for a freshly minted EvidentSource JWT.
//!
//! The modules follow one Check request: `credential` (extract) → `identity`
//! (authenticate) → `grants` (look up) → `mint` (sign) → `authz` (answer Envoy).
//! `pipeline` runs the first four; `http` is the side port; `server` wires it all up.
//! Each stage owns its section of the config; `config` reads the file and hands them out.
//!
//! The public surface is what the binary, the tests and the benchmarks use: the config, start-up,
//! the key type, and the pipeline's value types.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod algorithms;
mod authz;
mod aws;
mod background;
mod bind;
mod clock;
mod config;
mod config_check;
mod credential;
mod decision;
mod decision_log;
pub mod demo;
mod digest_map;
mod exchange;
mod explain;
mod file_stamp;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod grants;
mod handshake;
mod hot_reload;
mod http;
mod identity;
mod listen;
mod mint;
mod outbound;
mod pipeline;
mod preflight;
mod server;
mod server_tls;
mod side_port;
mod stage_times;
mod start_error;
mod telemetry;
mod urls;

pub use clock::unix_now;
pub use config::{Config, ConfigError, ConfigProblem};
pub use credential::InboundRequest;
pub use explain::{ExplainSubject, explain};
pub use grants::Grants;
#[doc(hidden)]
pub use handshake::prefaced_tcp;
pub use identity::aws_iam::{IamTokenError, iam_token};
pub use identity::{AwsClaims, CertificateClaims, Identity};
pub use mint::{KeyError, KeyRing, MintedToken, Minter, OwnToken, SigningAlgorithm, SigningKey};
pub use pipeline::{Passage, SwapError, Swapped, TokenVending};
pub use preflight::check_files;
pub use preflight::probe_remote_stores;
pub use server::{AuthzAddress, RunningSidecar, StartError, start};
pub use telemetry::{
    Metrics, OtlpConfig, Outcome, TraceExportError, Traces, init_logging, init_logging_and_traces,
};
