//! The integration tests, as one binary (one link of the crate and its AWS SDKs instead of one
//! per file): each module is what a file under `tests/` used to be, and `support` is shared.
//! Run one area with a filter, e.g. `cargo nextest run -E 'test(/^front_doors::/)'`.

#[path = "../support/mod.rs"]
mod support;

mod authz_connections;
mod authz_tls;
mod aws_iam;
mod check_bearer;
mod check_cost;
mod cli;
mod client_certs;
mod dashboards;
mod decision_log;
mod deploy;
mod drain;
mod envoy_e2e;
mod exchange;
mod front_doors;
mod fuzz_all;
mod grants_dynamodb;
mod grants_file;
mod grants_ldap;
mod grants_rules;
mod key_rotation;
mod log_secrets;
mod metrics;
mod release;
mod secrets_manager_keys;
mod shutdown;
mod side_port;
mod token_cache;
mod traces;
mod unix_socket;
mod unknown_kid_outage;
mod walkthrough;
