//! The shared AWS SDK set-up: credentials, region and endpoint from the standard chain
//! (environment, profile, IRSA / Pod Identity, instance metadata), with config overrides, an
//! upper bound per call and bounded retries.

use std::time::Duration;

/// Loads an SDK config; `region` and `endpoint_url` override the chain when set.
pub(crate) async fn sdk_config(
    region: Option<&str>,
    endpoint_url: Option<&str>,
    call_timeout: Duration,
    max_attempts: u32,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(call_timeout)
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts));
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// That DynamoDB `table` exists and is keyed by the string attribute `key` alone (for
/// `check-config --probe`); `purpose` names what needs it in the message.
pub(crate) async fn check_keyed_by(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
    purpose: &str,
) -> Result<(), TableShapeError> {
    use aws_sdk_dynamodb::error::DisplayErrorContext;
    use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType};
    let description = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| TableShapeError::Describe {
            table: table.to_owned(),
            reason: DisplayErrorContext(&e).to_string(),
        })?
        .table
        .ok_or_else(|| TableShapeError::Describe {
            table: table.to_owned(),
            reason: "no table description".to_owned(),
        })?;
    let hash_key = description
        .key_schema()
        .iter()
        .find(|k| k.key_type() == &KeyType::Hash)
        .map(|k| k.attribute_name());
    let has_range_key = description
        .key_schema()
        .iter()
        .any(|k| k.key_type() == &KeyType::Range);
    let key_is_string = description
        .attribute_definitions()
        .iter()
        .any(|a| a.attribute_name() == key && a.attribute_type() == &ScalarAttributeType::S);
    let (table, key) = (table.to_owned(), key.to_owned());
    match hash_key {
        Some(hash) if hash == key && key_is_string && !has_range_key => Ok(()),
        Some(hash) if hash == key && has_range_key => Err(TableShapeError::SortKey {
            table,
            key,
            purpose: purpose.to_owned(),
        }),
        Some(hash) if hash == key => Err(TableShapeError::KeyNotString { table, key }),
        other => Err(TableShapeError::OtherKey {
            table,
            key,
            found: other.unwrap_or("nothing").to_owned(),
        }),
    }
}

/// Why a DynamoDB table is not the one a feature needs (`check-config --probe`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TableShapeError {
    /// DescribeTable failed.
    #[error("DescribeTable {table}: {reason}")]
    Describe { table: String, reason: String },
    /// The table has a sort key as well.
    #[error("table {table} has a sort key; {purpose} need a table keyed by `{key}` alone")]
    SortKey {
        table: String,
        key: String,
        purpose: String,
    },
    /// The key is not a string attribute.
    #[error("table {table}: `{key}` must be a string (S)")]
    KeyNotString { table: String, key: String },
    /// The table is keyed by another attribute.
    #[error("table {table} is keyed by {found:?}, not by the string attribute `{key}`")]
    OtherKey {
        table: String,
        key: String,
        found: String,
    },
}
