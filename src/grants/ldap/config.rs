//! `grants.ldap`: where the directory is, how to bind, how to find a user and their groups,
//! and how groups map to grants.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config_check::ConfigCheck;
use crate::grants::Grants;
use crate::grants::rules::{RuleSet, ValuePattern};

/// `grants.ldap`, as written and typed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://host:636` or `ldap://host:389` (StartTLS unless `starttls: false`).
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (default). Off is allowed only for a
    /// loopback host, so that the bind password never crosses a network in the clear.
    #[serde(default = "LdapConfig::default_starttls")]
    pub starttls: bool,
    /// PEM CAs that sign the server's certificate (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The DN to bind as (anonymous when absent).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// A file holding the bind password; read again when it changes.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched (subtree).
    pub base_dn: String,
    /// The user search; `{sub}` and `{email}` become the identity's, escaped per RFC 4515.
    #[serde(default = "LdapConfig::default_user_filter")]
    pub user_filter: String,
    /// The user attribute listing group DNs (used when `group_search` is absent).
    #[serde(default = "LdapConfig::default_member_of")]
    pub member_of_attribute: String,
    /// Find groups by searching for them instead (`(member={dn})`).
    #[serde(default)]
    pub group_search: Option<GroupSearch>,
    /// A user attribute holding grants JSON, added to the groups' grants.
    #[serde(default)]
    pub grants_attribute: Option<String>,
    /// Group DN → grants (compared ignoring ASCII case).
    #[serde(default)]
    pub groups: BTreeMap<String, Grants>,
    /// Group DN patterns → grants; `{N}` in a database name is the N-th `*`'s text.
    #[serde(default)]
    pub group_patterns: Vec<ValuePattern>,
    /// Upper bound of each directory operation (the Check's deadline bounds it too).
    #[serde(default = "LdapConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Connections kept open (operations are multiplexed on each).
    #[serde(default = "LdapConfig::default_pool_size")]
    pub pool_size: usize,
    /// More groups than this is an error (503), not a partial answer.
    #[serde(default = "LdapConfig::default_max_groups")]
    pub max_groups: usize,
}

/// `grants.ldap.group_search`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSearch {
    /// Where groups are searched (subtree).
    pub base_dn: String,
    /// `{dn}` becomes the user's DN, escaped per RFC 4515.
    #[serde(default = "GroupSearch::default_filter")]
    pub filter: String,
}

impl GroupSearch {
    fn default_filter() -> String {
        "(member={dn})".to_owned()
    }
}

impl LdapConfig {
    fn default_starttls() -> bool {
        true
    }

    fn default_user_filter() -> String {
        "(|(uid={sub})(mail={email}))".to_owned()
    }

    fn default_member_of() -> String {
        "memberOf".to_owned()
    }

    fn default_timeout() -> Duration {
        Duration::from_millis(500)
    }

    fn default_pool_size() -> usize {
        2
    }

    fn default_max_groups() -> usize {
        5_000
    }

    /// Whether the server is reached over TLS (`ldaps://`, or StartTLS).
    pub fn uses_tls(&self) -> bool {
        self.url.starts_with("ldaps://") || self.starttls
    }

    /// Records every problem under `path` (`grants.ldap`).
    pub(crate) fn check(&mut self, path: &str, check: &mut ConfigCheck) {
        match url::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "ldap" | "ldaps") && url.host().is_some() => {
                let loopback = url.host_str().is_some_and(crate::urls::is_loopback_host);
                if url.scheme() == "ldaps" {
                    self.starttls = false;
                } else if !self.starttls && !loopback {
                    check.problem(
                        format!("{path}.starttls"),
                        "ldap:// without StartTLS is allowed only to a loopback host: use \
                         ldaps:// or StartTLS",
                    );
                }
            }
            _ => check.problem(
                format!("{path}.url"),
                "must be ldap://host[:port] or ldaps://host[:port]",
            ),
        }
        if self.bind_dn.is_some() != self.bind_password_file.is_some() {
            check.problem(
                format!("{path}.bind_password_file"),
                "bind_dn and bind_password_file go together",
            );
        }
        for file in [&mut self.ca_file, &mut self.bind_password_file]
            .into_iter()
            .flatten()
        {
            check.resolve(file);
        }
        if self.base_dn.is_empty() {
            check.problem(format!("{path}.base_dn"), "must not be empty");
        }
        check_filter(
            &self.user_filter,
            &["sub", "email"],
            &format!("{path}.user_filter"),
            check,
        );
        if let Some(search) = &self.group_search {
            check_filter(
                &search.filter,
                &["dn"],
                &format!("{path}.group_search.filter"),
                check,
            );
        }
        if self.groups.is_empty()
            && self.group_patterns.is_empty()
            && self.grants_attribute.is_none()
        {
            check.problem(
                format!("{path}.groups"),
                "map at least one group (groups, group_patterns) or set grants_attribute",
            );
        }
        if let Err(problems) = RuleSet::for_values(&self.groups, &self.group_patterns, path) {
            for (key, reason) in problems {
                check.problem(key, reason);
            }
        }
        if !(1..=10).contains(&self.pool_size) {
            check.problem(format!("{path}.pool_size"), "must be 1 to 10");
        }
        if self.max_groups == 0 {
            check.problem(format!("{path}.max_groups"), "must be at least 1");
        }
    }
}

/// A filter template must be one parenthesized filter using only the `allowed` placeholders.
fn check_filter(filter: &str, allowed: &[&str], path: &str, check: &mut ConfigCheck) {
    let mut depth = 0i32;
    for c in filter.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth < 0 {
            break;
        }
    }
    if !filter.starts_with('(') || !filter.ends_with(')') || depth != 0 {
        check.problem(path, "must be one LDAP filter in balanced parentheses");
    }
    let mut rest = filter;
    let mut used = false;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        if !allowed.contains(&name) {
            check.problem(
                path,
                format!("unknown placeholder {{{name}}}: use {allowed:?}"),
            );
        }
        used = true;
        rest = &rest[open + close..];
    }
    if !used {
        check.problem(
            path,
            format!(
                "names no placeholder of {allowed:?}: it would find the same entry for everyone"
            ),
        );
    }
}
