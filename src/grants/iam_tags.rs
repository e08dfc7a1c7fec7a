//! Grants from an IAM role's tags (`grants.source: iam_role_tags`), for AWS IAM callers.
//!
//! The look-up key is a role ARN (the canonical subject of an IAM identity); other keys are
//! not this source's to answer. A role name means nothing outside its account, so tags are
//! read only for roles of the served accounts ([`ServedAccounts`]): in the sidecar's own
//! account with its own credentials, in a listed account only through the role configured to
//! read them there. Tags read, with `ListRoleTags` on the role's name:
//! - `evs:grants`: the grants JSON, or base64url of it;
//! - `evs:global-roles`: role names;
//! - `evs:db:<database>`: role names for one database.
//!
//! IAM tag values allow only letters, digits, spaces and `_ . : / = + - @`, so role names are
//! separated by spaces or `+` (commas are accepted too, for stores that allow them).

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{GrantSource, Grants, GrantsError, IamRoleTagsConfig, LookupFuture};
use crate::identity::aws_iam::{ServedAccounts, TagsAccess, arn};

/// The tag holding the whole grants document.
pub(crate) const GRANTS_TAG: &str = "evs:grants";
/// The tag holding global role names.
pub(crate) const GLOBAL_ROLES_TAG: &str = "evs:global-roles";
/// The prefix of per-database tags.
pub(crate) const DATABASE_TAG_PREFIX: &str = "evs:db:";

/// IAM, asked for role tags.
pub struct IamRoleTags {
    /// With the sidecar's own credentials, for its own account.
    own: aws_sdk_iam::Client,
    /// Per listed account, with the credentials of its `tags_role_arn` (assumed, refreshed by
    /// the SDK before they expire).
    assumed: Vec<(String, aws_sdk_iam::Client)>,
    accounts: Option<Arc<ServedAccounts>>,
}

impl IamRoleTags {
    /// Clients from the standard AWS chain, and one per listed account's tags role (no call
    /// is made yet).
    pub async fn connect(
        config: &IamRoleTagsConfig,
        accounts: Option<Arc<ServedAccounts>>,
    ) -> Self {
        let sdk_config = crate::aws::sdk_config(
            Some(config.region.as_deref().unwrap_or("us-east-1")),
            config.endpoint_url.as_deref(),
            config.timeout,
            config.max_attempts,
        )
        .await;
        let mut assumed = Vec::new();
        for role in accounts.iter().flat_map(|a| a.tags_roles()) {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name("evs-token-vending-tags")
                .configure(&sdk_config)
                .build()
                .await;
            let client_config = aws_sdk_iam::config::Builder::from(&sdk_config)
                .credentials_provider(provider)
                .build();
            assumed.push((role, aws_sdk_iam::Client::from_conf(client_config)));
        }
        Self {
            own: aws_sdk_iam::Client::new(&sdk_config),
            assumed,
            accounts,
        }
    }

    /// The client that may read `principal`'s tags, if any may.
    fn client_for(&self, principal: &arn::Principal) -> Option<&aws_sdk_iam::Client> {
        match self.accounts.as_ref()?.tags_access(principal) {
            TagsAccess::Own => Some(&self.own),
            TagsAccess::AssumeRole(role) => self
                .assumed
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, client)| client),
            TagsAccess::Refused => None,
        }
    }

    async fn tags_of(&self, role_arn: &str) -> Result<Option<Arc<Grants>>, GrantsError> {
        let Ok(principal) = arn::canonical(role_arn) else {
            return Ok(None);
        };
        if principal.session.is_some() {
            return Ok(None);
        }
        let Some(client) = self.client_for(&principal) else {
            return Ok(None);
        };
        let Some(role) = principal.role_name else {
            return Ok(None);
        };
        let mut tags = Vec::new();
        let mut marker = None;
        loop {
            let page = client
                .list_role_tags()
                .role_name(&role)
                .set_marker(marker)
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) if e.code() == Some("NoSuchEntity") => return Ok(None),
                Err(e) => {
                    tracing::warn!(error = %DisplayErrorContext(&e), "IAM ListRoleTags failed");
                    return Err(GrantsError::Unavailable);
                }
            };
            tags.extend(
                page.tags()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned())),
            );
            match page.marker {
                Some(next) if page.is_truncated => marker = Some(next),
                _ => break,
            }
        }
        grants_from_tags(&tags)
            .map(|found| found.map(Arc::new))
            .map_err(|reason| {
                tracing::error!(role = %role, reason, "malformed grants tags on the role");
                GrantsError::Malformed
            })
    }
}

impl GrantSource for IamRoleTags {
    fn lookup<'a>(&'a self, key: &'a str, _deadline: Instant) -> LookupFuture<'a> {
        // The cache in front bounds the call by the Check's deadline.
        Box::pin(self.tags_of(key))
    }

    fn label(&self) -> String {
        "iam_role_tags".to_owned()
    }
}

/// The grants a role's tags describe; `None` when it has no `evs:` grants tag at all.
pub(crate) fn grants_from_tags(tags: &[(String, String)]) -> Result<Option<Grants>, &'static str> {
    let mut grants = Grants::default();
    let mut found = false;
    for (key, value) in tags {
        if key == GRANTS_TAG {
            let document = value.trim();
            let json = if document.starts_with('{') {
                document.as_bytes().to_vec()
            } else {
                URL_SAFE_NO_PAD
                    .decode(document.trim_end_matches('='))
                    .map_err(|_| "evs:grants is neither JSON nor base64url of JSON")?
            };
            let whole: Grants =
                serde_json::from_slice(&json).map_err(|_| "evs:grants is not a grants document")?;
            merge(&mut grants, whole);
            found = true;
        } else if key == GLOBAL_ROLES_TAG {
            grants.global.extend(role_names(value)?);
            found = true;
        } else if let Some(database) = key.strip_prefix(DATABASE_TAG_PREFIX) {
            if database.is_empty() {
                return Err("an evs:db: tag names no database");
            }
            grants
                .databases
                .entry(database.to_owned())
                .or_default()
                .extend(role_names(value)?);
            found = true;
        }
    }
    if !found {
        return Ok(None);
    }
    grants.global.sort();
    grants.global.dedup();
    for roles in grants.databases.values_mut() {
        roles.sort();
        roles.dedup();
    }
    Ok(Some(grants))
}

fn merge(into: &mut Grants, from: Grants) {
    into.global.extend(from.global);
    for (database, roles) in from.databases {
        into.databases.entry(database).or_default().extend(roles);
    }
}

/// Role names separated by spaces, `+` or commas.
fn role_names(value: &str) -> Result<Vec<String>, &'static str> {
    let names: Vec<String> = value
        .split([' ', '+', ','])
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    if names.iter().any(|n| n.len() > 128) {
        return Err("a role name in a tag is longer than 128 characters");
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn databases(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(db, roles)| {
                (
                    (*db).to_owned(),
                    roles.iter().map(|r| (*r).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn role_lists_are_split_on_spaces_plus_and_commas() {
        let grants = grants_from_tags(&tags(&[
            ("evs:global-roles", "database_creator"),
            ("evs:db:orders", "reader+writer"),
            ("evs:db:staging", "reader writer,deployer"),
            ("team", "payments"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(grants.global, vec!["database_creator"]);
        assert_eq!(
            grants.databases,
            databases(&[
                ("orders", &["reader", "writer"]),
                ("staging", &["deployer", "reader", "writer"])
            ])
        );
    }

    #[test]
    fn the_grants_document_may_be_json_or_base64url_json() {
        let json = r#"{"databases":{"production":["reader"]}}"#;
        for value in [json.to_owned(), URL_SAFE_NO_PAD.encode(json)] {
            let grants = grants_from_tags(&tags(&[("evs:grants", &value)]))
                .unwrap()
                .unwrap();
            assert_eq!(grants.databases, databases(&[("production", &["reader"])]));
        }
    }

    #[test]
    fn no_evs_tags_means_the_source_does_not_know_the_role() {
        assert_eq!(grants_from_tags(&tags(&[("team", "payments")])), Ok(None));
    }

    #[test]
    fn malformed_tags_are_refused() {
        assert!(grants_from_tags(&tags(&[("evs:grants", "%%%")])).is_err());
        assert!(grants_from_tags(&tags(&[("evs:grants", r#"{"global": 3}"#)])).is_err());
        assert!(grants_from_tags(&tags(&[("evs:db:", "reader")])).is_err());
    }
}
