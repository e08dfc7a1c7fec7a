//! Grants from an LDAP directory (`grants.source: ldap`): find the caller's entry, read their
//! groups, map the groups to grants.
//!
//! One look-up is a user search (`user_filter` with `{sub}` / `{email}`), then either the entry's
//! `memberOf` values or a group search (`(member={dn})`). Every value put into a filter is escaped
//! per RFC 4515 (and bytes outside printable ASCII as well), so an identity such as `*)(uid=*` is
//! searched for literally and finds nothing; an identity with control characters is not searched
//! for at all (OpenLDAP ends a value at an escaped NUL). A filter matching more than one entry,
//! more groups than `max_groups`, an unreachable or slow directory: each is a logged 503, never a
//! guess. The directory sits behind the grants cache (keyed by subject and e-mail), whose
//! stale-if-error answers while it is down. Connections are kept (`pool_size`, operations
//! multiplexed on each) and re-opened when closed; the bind password file is read again when it
//! changes, by the next connection.

mod config;
mod credentials;
mod error;
pub(crate) mod filter;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};

pub use self::config::{GroupSearch, LdapConfig};
use self::credentials::tls_trusting;
pub use self::error::LdapError;
use self::filter::fill_filter;
use super::cache::CachedGrants;
use super::rules::RuleSet;
use super::{ExplainFuture, GrantSource, Grants, GrantsCacheConfig, GrantsError, LookupFuture};
use crate::background::Background;
use crate::file_stamp::SecretFile;
use crate::identity::Identity;
use crate::telemetry::Metrics;

/// The LDAP source: the directory behind the grants cache.
pub struct LdapGrants {
    cached: CachedGrants<LdapDirectory>,
}

impl LdapGrants {
    /// Prepares the connections (none is opened yet); an error when the CA file is unusable.
    pub fn new(
        config: &LdapConfig,
        cache: &GrantsCacheConfig,
        metrics: Arc<Metrics>,
        background: Background,
    ) -> Result<Self, LdapError> {
        Ok(Self {
            cached: CachedGrants::new(LdapDirectory::new(config, background)?, cache, metrics),
        })
    }
}

/// The files `grants.ldap` names, read as the source would read them (for `check-config`).
pub(crate) fn check_files(config: &LdapConfig) -> Result<(), LdapError> {
    if let Some(ca_file) = &config.ca_file {
        tls_trusting(ca_file)?;
    }
    if let Some(path) = &config.bind_password_file {
        let password =
            SecretFile::new(path.clone())
                .current()
                .map_err(|kind| LdapError::PasswordFile {
                    path: path.display().to_string(),
                    kind,
                })?;
        if password.is_empty() {
            return Err(LdapError::EmptyPassword {
                path: path.display().to_string(),
            });
        }
    }
    Ok(())
}

/// The cache key of an identity: its subject and e-mail address, unambiguously joined.
fn cache_key(subject: &str, email: Option<&str>) -> String {
    format!("{}:{subject}{}", subject.len(), email.unwrap_or(""))
}

fn split_cache_key(key: &str) -> Option<(&str, Option<&str>)> {
    let (length, rest) = key.split_once(':')?;
    let (subject, email) = rest.split_at_checked(length.parse().ok()?)?;
    Some((subject, (!email.is_empty()).then_some(email)))
}

impl GrantSource for LdapGrants {
    fn lookup<'a>(&'a self, key: &'a str, deadline: Instant) -> LookupFuture<'a> {
        self.cached.lookup(key, deadline)
    }

    fn lookup_identity<'a>(
        &'a self,
        identity: &'a Identity,
        deadline: Instant,
    ) -> LookupFuture<'a> {
        Box::pin(async move {
            let key = cache_key(&identity.subject, identity.email.as_deref());
            self.cached.lookup(&key, deadline).await
        })
    }

    fn label(&self) -> String {
        self.cached.label()
    }

    fn explain<'a>(&'a self, identity: &'a Identity, deadline: Instant) -> ExplainFuture<'a> {
        let directory = self.cached.store();
        Box::pin(directory.explain_user(&identity.subject, identity.email.as_deref(), deadline))
    }

    fn cached_entries(&self) -> Option<u64> {
        self.cached.cached_entries()
    }
}

/// What the directory holds about one user.
struct UserEntry {
    dn: String,
    /// Group DNs, in lower case.
    groups: Vec<String>,
    /// Grants JSON on the entry (`grants_attribute`).
    from_entry: Option<Grants>,
}

/// The directory itself: connections, searches, group mapping.
pub struct LdapDirectory {
    config: LdapConfig,
    mappings: RuleSet,
    tls: Option<Arc<rustls::ClientConfig>>,
    password: Option<SecretFile>,
    connections: Vec<tokio::sync::Mutex<Option<Ldap>>>,
    next: AtomicUsize,
    /// Owns the connections' drivers.
    background: Background,
}

impl LdapDirectory {
    /// The directory `config` describes (no connection is opened yet).
    pub(crate) fn new(config: &LdapConfig, background: Background) -> Result<Self, LdapError> {
        let mappings =
            RuleSet::for_values(&config.groups, &config.group_patterns, "grants.ldap")
                .map_err(|problems| LdapError::Mappings(super::rules::describe(&problems)))?;
        let tls = config.ca_file.as_deref().map(tls_trusting).transpose()?;
        Ok(Self {
            config: config.clone(),
            mappings,
            tls,
            password: config.bind_password_file.clone().map(SecretFile::new),
            connections: (0..config.pool_size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            background,
        })
    }

    /// How long the next operation may take: the configured timeout, cut by the deadline.
    fn budget(&self, deadline: Instant) -> Result<Duration, GrantsError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(GrantsError::Unavailable);
        }
        Ok(left.min(self.config.timeout))
    }

    /// An open, bound connection from the pool, opened (and bound) when needed.
    async fn connection(&self, deadline: Instant) -> Result<Ldap, GrantsError> {
        let slot =
            &self.connections[self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len()];
        let mut held = tokio::time::timeout_at(deadline.into(), slot.lock())
            .await
            .map_err(|_| GrantsError::Unavailable)?;
        if let Some(ldap) = held.as_mut()
            && !ldap.is_closed()
        {
            return Ok(ldap.clone());
        }
        *held = None;
        let ldap = self.open(deadline).await.map_err(|reason| {
            tracing::warn!(%reason, "LDAP connection failed");
            GrantsError::Unavailable
        })?;
        *held = Some(ldap.clone());
        Ok(ldap)
    }

    /// A new connection, bound; the error says which step failed and why.
    async fn open(&self, deadline: Instant) -> Result<Ldap, LdapError> {
        let budget = || self.budget(deadline).map_err(|_| LdapError::OutOfTime);
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(budget()?)
            .set_starttls(self.config.starttls && self.config.url.starts_with("ldap://"));
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (connection, mut ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|source| LdapError::Connect {
                url: self.config.url.clone(),
                source: Box::new(source),
            })?;
        self.background.spawn_until_stopped(async move {
            if let Err(e) = connection.drive().await {
                tracing::debug!(error = %e, "LDAP connection closed");
            }
        });
        if let (Some(dn), Some(password)) = (&self.config.bind_dn, &self.password) {
            let secret = password.current().map_err(|kind| LdapError::PasswordFile {
                path: password.path.display().to_string(),
                kind,
            })?;
            ldap.with_timeout(budget()?)
                .simple_bind(dn, &secret)
                .await
                .and_then(|result| result.success())
                .map_err(|source| LdapError::Bind {
                    dn: dn.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(ldap)
    }

    /// Connects, binds and reads `base_dn` (for `check-config --probe`).
    pub(crate) async fn probe(&self) -> Result<String, LdapError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut ldap = self.open(deadline).await?;
        let budget = self.budget(deadline).map_err(|_| LdapError::OutOfTime)?;
        ldap.with_timeout(budget)
            .search(
                &self.config.base_dn,
                Scope::Base,
                "(objectClass=*)",
                vec!["1.1"],
            )
            .await
            .and_then(|result| result.success())
            .map_err(|source| LdapError::BaseDn {
                dn: self.config.base_dn.clone(),
                source: Box::new(source),
            })?;
        let _ = ldap.unbind().await;
        Ok(format!(
            "{} answers{}, base_dn {} exists",
            self.config.url,
            self.config
                .bind_dn
                .as_ref()
                .map_or(String::new(), |dn| format!(" to a bind as {dn}")),
            self.config.base_dn
        ))
    }

    /// The grants of the entry `user_filter` finds for `subject` / `email`.
    async fn grants_of(
        &self,
        subject: &str,
        email: Option<&str>,
        deadline: Instant,
    ) -> Result<Option<Arc<Grants>>, GrantsError> {
        let Some(user) = self.find_user(subject, email, deadline).await? else {
            return Ok(None);
        };
        let from_groups = self.mappings.grants_for_values(&user.groups);
        Ok(match (from_groups, user.from_entry) {
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => Some(Arc::new(one)),
            (Some(a), Some(b)) => Some(Arc::new(Grants::union(&[Arc::new(a), Arc::new(b)]))),
        })
    }

    /// How the directory answers for `subject` / `email`, line by line (for `explain`).
    async fn explain_user(
        &self,
        subject: &str,
        email: Option<&str>,
        deadline: Instant,
    ) -> Vec<String> {
        match self.find_user(subject, email, deadline).await {
            Err(e) => vec![format!("the directory cannot answer: {e}")],
            Ok(None) => vec!["no entry, or no entry the user filter picks".to_owned()],
            Ok(Some(user)) => {
                let mut lines = vec![format!(
                    "entry {} in {} group(s)",
                    user.dn,
                    user.groups.len()
                )];
                for found in self.mappings.explain_values(&user.groups) {
                    let grants = serde_json::to_string(&found.grants).unwrap_or_default();
                    lines.push(format!("{}: {} grants {grants}", found.rule, found.matched));
                }
                if let Some(grants) = &user.from_entry {
                    let grants = serde_json::to_string(grants).unwrap_or_default();
                    lines.push(format!("grants on the entry: {grants}"));
                }
                lines
            }
        }
    }

    /// The entry `user_filter` finds, with its groups (in lower case) and the grants it holds.
    async fn find_user(
        &self,
        subject: &str,
        email: Option<&str>,
        deadline: Instant,
    ) -> Result<Option<UserEntry>, GrantsError> {
        // OpenLDAP reads an escaped NUL as the end of the value (`alice\00` finds `alice`):
        // no entry is the one of an identity with control characters.
        let controlled = |value: &str| value.chars().any(char::is_control);
        if controlled(subject) || email.is_some_and(controlled) {
            tracing::debug!("an identity with control characters is not looked up in LDAP");
            return Ok(None);
        }
        let mut ldap = self.connection(deadline).await?;
        let filter = fill_filter(
            &self.config.user_filter,
            &[("sub", subject), ("email", email.unwrap_or(""))],
        );
        let mut wanted: Vec<&str> = Vec::new();
        if self.config.group_search.is_none() {
            wanted.push(&self.config.member_of_attribute);
        }
        wanted.extend(self.config.grants_attribute.as_deref());
        if wanted.is_empty() {
            wanted.push("1.1");
        }
        let (entries, _) = ldap
            .with_timeout(self.budget(deadline)?)
            .search(&self.config.base_dn, Scope::Subtree, &filter, wanted)
            .await
            .and_then(|result| result.success())
            .map_err(|e| failed("user search", &e))?;
        let entry = match <[_; 1]>::try_from(entries) {
            Ok([entry]) => SearchEntry::construct(entry),
            Err(entries) if entries.is_empty() => return Ok(None),
            Err(entries) => {
                tracing::warn!(
                    entries = entries.len(),
                    "the LDAP user filter matched more than one entry; refusing to choose"
                );
                return Err(GrantsError::Unavailable);
            }
        };
        let groups = match &self.config.group_search {
            None => values_of(&entry, &self.config.member_of_attribute),
            Some(search) => {
                self.groups_of(&mut ldap, search, &entry.dn, deadline)
                    .await?
            }
        };
        if groups.len() > self.config.max_groups {
            tracing::warn!(
                groups = groups.len(),
                max_groups = self.config.max_groups,
                "the LDAP entry has more groups than grants.ldap.max_groups"
            );
            return Err(GrantsError::Unavailable);
        }
        let from_entry = match &self.config.grants_attribute {
            Some(attribute) => grants_in_attribute(&entry, attribute)?,
            None => None,
        };
        Ok(Some(UserEntry {
            groups: groups.iter().map(|g| g.to_ascii_lowercase()).collect(),
            dn: entry.dn,
            from_entry,
        }))
    }

    /// The DNs of the groups `search` finds for the user `dn`, at most `max_groups`.
    async fn groups_of(
        &self,
        ldap: &mut Ldap,
        search: &GroupSearch,
        dn: &str,
        deadline: Instant,
    ) -> Result<Vec<String>, GrantsError> {
        let filter = fill_filter(&search.filter, &[("dn", dn)]);
        let limit = i32::try_from(self.config.max_groups + 1).unwrap_or(i32::MAX);
        let (entries, _) = ldap
            .with_search_options(SearchOptions::new().sizelimit(limit))
            .with_timeout(self.budget(deadline)?)
            .search(&search.base_dn, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .and_then(|result| result.success())
            .map_err(|e| failed("group search", &e))?;
        Ok(entries
            .into_iter()
            .map(|entry| SearchEntry::construct(entry).dn)
            .collect())
    }
}

impl GrantSource for LdapDirectory {
    fn lookup<'a>(&'a self, key: &'a str, deadline: Instant) -> LookupFuture<'a> {
        Box::pin(async move {
            let (subject, email) = split_cache_key(key).unwrap_or((key, None));
            self.grants_of(subject, email, deadline).await
        })
    }

    fn label(&self) -> String {
        format!("ldap {}", self.config.url)
    }
}

/// Logs a failed directory operation; the Check gets a 503 (or the cache's stale answer).
fn failed(operation: &str, error: &ldap3::LdapError) -> GrantsError {
    tracing::warn!(%error, "LDAP {operation} failed");
    GrantsError::Unavailable
}

/// The values of `attribute` (named in any case) on `entry`.
fn values_of(entry: &SearchEntry, attribute: &str) -> Vec<String> {
    entry
        .attrs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attribute))
        .map(|(_, values)| values.clone())
        .unwrap_or_default()
}

/// Grants JSON in a user attribute; several values are combined.
fn grants_in_attribute(
    entry: &SearchEntry,
    attribute: &str,
) -> Result<Option<Grants>, GrantsError> {
    let mut found = Vec::new();
    for value in values_of(entry, attribute) {
        let grants: Grants = serde_json::from_str(&value).map_err(|e| {
            tracing::warn!(attribute, reason = %e, "the LDAP grants attribute is not grants JSON");
            GrantsError::Malformed
        })?;
        found.push(Arc::new(grants));
    }
    Ok((!found.is_empty()).then(|| Grants::union(&found)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_keeps_subject_and_email_apart() {
        for (subject, email) in [
            ("a", Some("b")),
            ("a:b", None),
            ("", Some("x")),
            ("5:ab", Some("c")),
        ] {
            assert_eq!(
                split_cache_key(&cache_key(subject, email)),
                Some((subject, email))
            );
        }
        assert_ne!(cache_key("ab", Some("c")), cache_key("a", Some("bc")));
    }
}
