//! Who an STS answer names: the caller's ARN made canonical, and the parts of it minted.

/// An IAM principal as STS reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// `arn:<p>:iam::<acct>:role/<role>` for assumed roles; users and roles unchanged.
    pub canonical_arn: String,
    /// The 12-digit account.
    pub account: String,
    /// The role's name (without path) when the caller is a role.
    pub role_name: Option<String>,
    /// The session name of an assumed role.
    pub session: Option<String>,
}

/// Makes an STS caller ARN canonical: an assumed-role session ARN
/// `arn:<p>:sts::<acct>:assumed-role/<role>/<session>` becomes the role's
/// `arn:<p>:iam::<acct>:role/<role>`; IAM user and role ARNs stay as they are. `None` for
/// anything that is not an IAM principal ARN.
pub(crate) fn canonical(arn: &str) -> Option<Principal> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let valid_partition = !partition.is_empty()
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-');
    if !valid_partition || account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (kind, rest) = resource.split_once('/')?;
    match (service, kind) {
        ("sts", "assumed-role") => {
            let (role, session) = rest.split_once('/')?;
            if role.is_empty() || session.is_empty() || session.contains('/') {
                return None;
            }
            Some(Principal {
                canonical_arn: format!("arn:{partition}:iam::{account}:role/{role}"),
                account: account.to_owned(),
                role_name: Some(role.to_owned()),
                session: Some(session.to_owned()),
            })
        }
        ("iam", "role") | ("iam", "user") if !rest.is_empty() && !rest.ends_with('/') => {
            Some(Principal {
                canonical_arn: arn.to_owned(),
                account: account.to_owned(),
                role_name: (kind == "role").then(|| role_name(rest).to_owned()),
                session: None,
            })
        }
        _ => None,
    }
}

/// The name of a role from the part of its ARN after `role/` (paths end at the last `/`).
pub(crate) fn role_name(path_and_name: &str) -> &str {
    path_and_name.rsplit('/').next().unwrap_or(path_and_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assumed_role_session_maps_to_its_role() {
        let p = canonical("arn:aws:sts::123456789012:assumed-role/orders-writer/pod-7f9c").unwrap();
        assert_eq!(
            p.canonical_arn,
            "arn:aws:iam::123456789012:role/orders-writer"
        );
        assert_eq!(p.account, "123456789012");
        assert_eq!(p.role_name.as_deref(), Some("orders-writer"));
        assert_eq!(p.session.as_deref(), Some("pod-7f9c"));
        let cn = canonical("arn:aws-cn:sts::123456789012:assumed-role/r/s").unwrap();
        assert_eq!(cn.canonical_arn, "arn:aws-cn:iam::123456789012:role/r");
    }

    #[test]
    fn users_and_roles_stay_as_they_are() {
        let user = canonical("arn:aws:iam::123456789012:user/ci/deployer").unwrap();
        assert_eq!(
            user.canonical_arn,
            "arn:aws:iam::123456789012:user/ci/deployer"
        );
        assert_eq!(user.role_name, None);
        let role = canonical("arn:aws:iam::123456789012:role/service/orders").unwrap();
        assert_eq!(role.role_name.as_deref(), Some("orders"));
    }

    #[test]
    fn anything_else_is_not_a_principal() {
        for arn in [
            "",
            "arn:aws:sts::123456789012:assumed-role/r",
            "arn:aws:sts::123456789012:assumed-role/r/s/extra",
            "arn:aws:iam::12345:role/r",
            "arn:aws:iam:us-east-1:123456789012:role/r",
            "arn:aws:s3:::bucket/key",
            "arn:aws:iam::123456789012:group/admins",
            "arn:aws:iam::123456789012:role/",
            "arn:AWS:iam::123456789012:role/r",
        ] {
            assert_eq!(canonical(arn), None, "{arn}");
        }
    }
}
