//! Where used assertions are remembered, so that each `jti` is redeemed once (RFC 7523 §3).
//!
//! `exchange.replay_store: memory` (the default) remembers them in this process: right for one
//! replica, wrong for several behind one Service — each would accept the assertion once.
//! `replay_store: { dynamodb: { table, region?, endpoint_url? } }` records each use in a table
//! keyed by `jti` (S) with a conditional write (`attribute_not_exists(jti)`), so exactly one
//! replica wins however many race, and an `expires_at` (N) attribute at the assertion's `exp`
//! for the table's TTL. A store that does not answer within the exchange's deadline refuses the
//! exchange (503): a token is never minted on an unrecorded use.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Deserialize;

use crate::config_check::ConfigCheck;

/// `exchange.replay_store`: `memory`, or `{ dynamodb: { … } }`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "WrittenReplayStore")]
pub enum ReplayStoreConfig {
    /// In this process (one replica).
    #[default]
    Memory,
    /// A DynamoDB table shared by every replica (`{ dynamodb: { … } }`).
    Dynamodb(DynamoReplayConfig),
}

/// How `replay_store` is written in YAML (a name, or a map with one key), which serde's
/// externally tagged enums would want as a YAML tag.
#[derive(Deserialize)]
#[serde(untagged)]
enum WrittenReplayStore {
    Name(String),
    Table(DynamoReplayWrapper),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DynamoReplayWrapper {
    dynamodb: DynamoReplayConfig,
}

impl TryFrom<WrittenReplayStore> for ReplayStoreConfig {
    type Error = UnknownReplayStore;

    fn try_from(written: WrittenReplayStore) -> Result<Self, UnknownReplayStore> {
        match written {
            WrittenReplayStore::Name(name) if name == "memory" => Ok(Self::Memory),
            WrittenReplayStore::Name(name) => Err(UnknownReplayStore(name)),
            WrittenReplayStore::Table(table) => Ok(Self::Dynamodb(table.dynamodb)),
        }
    }
}

/// A `replay_store` name other than `memory`.
#[derive(Debug, thiserror::Error)]
#[error("unknown replay store `{0}`: memory, or {{ dynamodb: {{ table, region, endpoint_url }} }}")]
pub struct UnknownReplayStore(String);

/// The replay table is not keyed as the store needs (`check-config --probe`).
#[derive(Debug, thiserror::Error)]
#[error(
    "exchange.replay_store.dynamodb.table {table}: must be keyed by `{KEY}` (S) alone: {source}"
)]
pub(crate) struct ReplayTableError {
    table: String,
    source: crate::aws::TableShapeError,
}

/// `exchange.replay_store.dynamodb`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DynamoReplayConfig {
    /// The table, keyed by `jti` (S).
    pub table: String,
    /// Default: the standard chain's region.
    #[serde(default)]
    pub region: Option<String>,
    /// Default: the standard chain's (`AWS_ENDPOINT_URL_DYNAMODB`), else AWS's.
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

/// The key attribute, the TTL attribute.
pub(crate) const KEY: &str = "jti";
const EXPIRES: &str = "expires_at";

impl ReplayStoreConfig {
    pub(crate) fn check(&self, path: &str, check: &mut ConfigCheck) {
        if let Self::Dynamodb(table) = self {
            if table.table.is_empty() {
                check.problem(format!("{path}.dynamodb.table"), "must name a table");
            }
            if let Some(url) = &table.endpoint_url {
                check.check(
                    format!("{path}.dynamodb.endpoint_url"),
                    crate::urls::check_fetch_url(url),
                );
            }
        }
    }
}

/// Why a use could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReplayError {
    /// Used before, within its lifetime.
    #[error("the assertion was already used (jti replayed)")]
    Replayed,
    /// The shared store did not answer in time, or failed.
    #[error("the replay store is unavailable")]
    Unavailable,
}

/// The running store.
pub(crate) enum ReplayStore {
    Memory(moka::sync::Cache<(String, String), u64>),
    Dynamodb {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
}

impl ReplayStore {
    /// The store `config` names; `timeout` bounds each DynamoDB call.
    pub(crate) async fn connect(config: &ReplayStoreConfig, timeout: Duration) -> Self {
        match config {
            ReplayStoreConfig::Memory => Self::Memory(
                moka::sync::Cache::builder()
                    .max_capacity(1_000_000)
                    .expire_after(crate::clock::UntilItExpires)
                    .build(),
            ),
            ReplayStoreConfig::Dynamodb(table) => Self::Dynamodb {
                client: dynamo_client(table, timeout).await,
                table: table.table.clone(),
            },
        }
    }

    /// Records the use of (`issuer`, `jti`), valid until `exp`: `Ok` on its first use only.
    pub(crate) async fn first_use(
        &self,
        issuer: &str,
        jti: &str,
        exp: u64,
        deadline: Instant,
    ) -> Result<(), ReplayError> {
        match self {
            Self::Memory(used) => used
                .entry((issuer.to_owned(), jti.to_owned()))
                .or_insert(exp)
                .is_fresh()
                .then_some(())
                .ok_or(ReplayError::Replayed),
            Self::Dynamodb { client, table } => {
                // One item per (issuer, jti): issuers are URLs, so a space cannot occur in one.
                let put = client
                    .put_item()
                    .table_name(table)
                    .item(KEY, AttributeValue::S(format!("{issuer} {jti}")))
                    .item(EXPIRES, AttributeValue::N(exp.to_string()))
                    .condition_expression("attribute_not_exists(#k)")
                    .expression_attribute_names("#k", KEY)
                    .send();
                match tokio::time::timeout_at(deadline.into(), put).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) if e.code() == Some("ConditionalCheckFailedException") => {
                        Err(ReplayError::Replayed)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %DisplayErrorContext(&e), "the replay store refused a write");
                        Err(ReplayError::Unavailable)
                    }
                    Err(_) => {
                        tracing::warn!("the replay store did not answer in time");
                        Err(ReplayError::Unavailable)
                    }
                }
            }
        }
    }
}

/// `check-config --probe`: the table exists and is keyed by `jti` (S).
pub(crate) async fn probe(config: &DynamoReplayConfig) -> Result<String, ReplayTableError> {
    let client = dynamo_client(config, Duration::from_secs(5)).await;
    let table = &config.table;
    crate::aws::check_keyed_by(&client, table, KEY, "used assertions")
        .await
        .map_err(|source| ReplayTableError {
            table: table.clone(),
            source,
        })?;
    Ok(format!(
        "replay store: DynamoDB table {table} (keyed by {KEY})"
    ))
}

/// A DynamoDB client for `config`, each call bounded by `timeout`, never retried (the
/// exchange's deadline leaves no room for a retry).
async fn dynamo_client(config: &DynamoReplayConfig, timeout: Duration) -> aws_sdk_dynamodb::Client {
    let sdk = crate::aws::sdk_config(
        config.region.as_deref(),
        config.endpoint_url.as_deref(),
        timeout,
        1,
    )
    .await;
    aws_sdk_dynamodb::Client::new(&sdk)
}
