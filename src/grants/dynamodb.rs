//! Grants from a DynamoDB table (`grants.source: dynamodb`).
//!
//! The table is keyed by the string attribute `subject`; an item's `grants` attribute is a map
//! with `global` (a list of strings, or a string set) and `databases` (a map of the same).
//! Credentials, region and endpoint come from the standard AWS chain, so
//! `AWS_ENDPOINT_URL_DYNAMODB` points it at a local DynamoDB-API server with no flag.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoDbConfig;
use super::{GrantSource, Grants, GrantsError, LookupFuture};

/// The table's partition key.
pub const KEY_ATTRIBUTE: &str = "subject";
/// The attribute holding the grants map.
pub const GRANTS_ATTRIBUTE: &str = "grants";

/// A DynamoDB grants table.
pub struct DynamoGrants {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoGrants {
    /// A client for the configured table (no call is made yet).
    pub async fn connect(config: &DynamoDbConfig) -> Self {
        let sdk_config = crate::aws::sdk_config(
            config.region.as_deref(),
            config.endpoint_url.as_deref(),
            config.timeout,
            config.max_attempts,
        )
        .await;
        Self {
            client: aws_sdk_dynamodb::Client::new(&sdk_config),
            table: config.table.clone(),
        }
    }

    /// Checks that the table exists and is keyed by `subject` (string): `check-config --probe`.
    pub(crate) async fn probe(&self) -> Result<(), crate::aws::TableShapeError> {
        crate::aws::check_keyed_by(&self.client, &self.table, KEY_ATTRIBUTE, "grants").await
    }

    async fn get(&self, subject: &str) -> Result<Option<Arc<Grants>>, GrantsError> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, AttributeValue::S(subject.to_owned()))
            .projection_expression("#g")
            .expression_attribute_names("#g", GRANTS_ATTRIBUTE)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(table = %self.table, error = %DisplayErrorContext(&e), "DynamoDB GetItem failed");
                GrantsError::Unavailable
            })?;
        let Some(item) = answer.item else {
            return Ok(None);
        };
        grants_from_item(&item)
            .map(|g| Some(Arc::new(g)))
            .map_err(|reason| {
                tracing::error!(table = %self.table, subject, reason, "malformed grants item");
                GrantsError::Malformed
            })
    }
}

impl GrantSource for DynamoGrants {
    fn lookup<'a>(&'a self, key: &'a str, _deadline: Instant) -> LookupFuture<'a> {
        // The cache in front bounds the call by the Check's deadline.
        Box::pin(self.get(key))
    }

    fn label(&self) -> String {
        format!("dynamodb table {}", self.table)
    }
}

/// Reads the `grants` map of an item; the reason names what is wrong, never a value.
pub fn grants_from_item(item: &HashMap<String, AttributeValue>) -> Result<Grants, &'static str> {
    let map = match item.get(GRANTS_ATTRIBUTE) {
        Some(AttributeValue::M(map)) => map,
        Some(_) => return Err("`grants` is not a map"),
        None => return Err("the item has no `grants` attribute"),
    };
    let global = match map.get("global") {
        None | Some(AttributeValue::Null(_)) => Vec::new(),
        Some(value) => strings(value).ok_or("`grants.global` is not a list or set of strings")?,
    };
    let databases = match map.get("databases") {
        None | Some(AttributeValue::Null(_)) => BTreeMap::new(),
        Some(AttributeValue::M(databases)) => databases
            .iter()
            .map(|(db, roles)| {
                strings(roles)
                    .map(|roles| (db.clone(), roles))
                    .ok_or("a database in `grants.databases` is not a list or set of strings")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`grants.databases` is not a map"),
    };
    if map.keys().any(|k| k != "global" && k != "databases") {
        return Err("`grants` has a key other than `global` and `databases`");
    }
    Ok(Grants::new(global, databases))
}

/// A list of strings (`L` of `S`) or a string set (`SS`, sorted for a stable token).
fn strings(value: &AttributeValue) -> Option<Vec<String>> {
    match value {
        AttributeValue::L(items) => items.iter().map(|v| v.as_s().ok().cloned()).collect(),
        AttributeValue::Ss(set) => {
            let mut set = set.clone();
            set.sort();
            Some(set)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.into())
    }

    #[test]
    fn lists_and_string_sets_both_read_as_roles() {
        let grants = AttributeValue::M(HashMap::from([
            (
                "global".into(),
                AttributeValue::L(vec![s("database_creator")]),
            ),
            (
                "databases".into(),
                AttributeValue::M(HashMap::from([
                    (
                        "production".into(),
                        AttributeValue::Ss(vec!["writer".into(), "reader".into()]),
                    ),
                    ("staging".into(), AttributeValue::L(vec![s("reader")])),
                ])),
            ),
        ]));
        let item = HashMap::from([("subject".into(), s("alice")), ("grants".into(), grants)]);
        let parsed = grants_from_item(&item).unwrap();
        assert_eq!(parsed.global, vec!["database_creator"]);
        assert_eq!(parsed.databases["production"], vec!["reader", "writer"]);
        assert_eq!(parsed.databases["staging"], vec!["reader"]);
    }

    #[test]
    fn malformed_items_say_what_is_wrong() {
        let item = |grants| HashMap::from([("grants".to_owned(), grants)]);
        assert_eq!(
            grants_from_item(&HashMap::new()),
            Err("the item has no `grants` attribute")
        );
        assert!(grants_from_item(&item(s("admin"))).is_err());
        let bad_global = AttributeValue::M(HashMap::from([(
            "global".into(),
            AttributeValue::L(vec![AttributeValue::N("1".into())]),
        )]));
        assert!(
            grants_from_item(&item(bad_global))
                .unwrap_err()
                .contains("global")
        );
        let bad_db = AttributeValue::M(HashMap::from([("databases".into(), s("all"))]));
        assert!(
            grants_from_item(&item(bad_db))
                .unwrap_err()
                .contains("databases")
        );
    }
}
