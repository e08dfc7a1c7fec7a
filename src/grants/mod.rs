//! Stage 3, look up: find the grants of an [`Identity`].
//!
//! A [`GrantSource`] answers for one key (subject, e-mail address …); [`GrantsLookup`] applies
//! the order of SPEC §4 — subject, then e-mail — and the `unknown_subject` policy.

pub mod cache;
pub mod dynamodb;
pub mod file;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{MalformedItemPolicy, UnknownSubjectPolicy};
use crate::identity::Identity;

/// What a subject may do: `{"global": [...], "databases": {"<db>": [...]}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Roles that apply everywhere.
    #[serde(default)]
    pub global: Vec<String>,
    /// Roles per database.
    #[serde(default)]
    pub databases: BTreeMap<String, Vec<String>>,
}

/// A boxed future, so sources can be chosen at run time.
pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Arc<Grants>>, GrantsError>> + Send + 'a>>;

/// A store of grants keyed by subject.
pub trait GrantSource: Send + Sync {
    /// The grants stored under `key`, or `None` when the store has no entry for it; remote
    /// stores give up at `deadline`.
    fn lookup<'a>(&'a self, key: &'a str, deadline: Instant) -> LookupFuture<'a>;
}

/// Why no grants were produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantsError {
    /// The subject has no grants and `unknown_subject: deny` is set.
    #[error("no grants: the subject is not known")]
    UnknownSubject,
    /// The store could not answer, and nothing cached could serve.
    #[error("grants store unavailable")]
    Unavailable,
    /// The store's entry for the subject is not valid grants (and `malformed_item: unavailable`).
    #[error("grants of this subject are malformed in the store")]
    Malformed,
}

/// Grants look-up with the fallback order and the unknown-subject policy.
pub struct GrantsLookup {
    source: Arc<dyn GrantSource>,
    unknown_subject: UnknownSubjectPolicy,
    malformed_item: MalformedItemPolicy,
    empty: Arc<Grants>,
}

impl GrantsLookup {
    /// Wraps a source with the policies.
    pub fn new(
        source: Arc<dyn GrantSource>,
        unknown_subject: UnknownSubjectPolicy,
        malformed_item: MalformedItemPolicy,
    ) -> Self {
        Self {
            source,
            unknown_subject,
            malformed_item,
            empty: Arc::new(Grants::default()),
        }
    }

    /// The grants of `identity`: the first key with an entry wins.
    pub async fn grants_for(
        &self,
        identity: &Identity,
        deadline: Instant,
    ) -> Result<Arc<Grants>, GrantsError> {
        for key in identity.grant_keys() {
            match self.source.lookup(key, deadline).await {
                Ok(Some(grants)) => return Ok(grants),
                Ok(None) => {}
                Err(GrantsError::Malformed)
                    if self.malformed_item == MalformedItemPolicy::Empty =>
                {
                    return Ok(self.empty.clone());
                }
                Err(e) => return Err(e),
            }
        }
        match self.unknown_subject {
            UnknownSubjectPolicy::Empty => Ok(self.empty.clone()),
            UnknownSubjectPolicy::Deny => Err(GrantsError::UnknownSubject),
        }
    }
}
