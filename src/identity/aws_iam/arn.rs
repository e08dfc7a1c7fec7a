//! Who an STS answer names: the caller's ARN made canonical, and the parts of it minted.
//!
//! Every part an attacker could vary is kept: the partition and the account are part of the
//! canonical ARN, so a role of the same name in another account (or partition) is another
//! principal. Principals this sidecar never serves (the account root, federated users) are
//! told apart from answers that are not principals at all.

/// The AWS partitions whose ARNs are understood (ISO partitions have no public STS host).
pub(crate) const KNOWN_PARTITIONS: &[&str] = &["aws", "aws-cn", "aws-us-gov"];

/// An IAM principal as STS reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// `arn:<p>:iam::<acct>:role/<role>` for assumed roles; users and roles unchanged.
    pub canonical_arn: String,
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    /// The 12-digit account.
    pub account: String,
    /// The role's name (without path) when the caller is a role.
    pub role_name: Option<String>,
    /// The session name of an assumed role.
    pub session: Option<String>,
}

/// Why an ARN is not a principal this sidecar serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotAPrincipal {
    /// A well-formed caller this sidecar never serves (the account root, a federated user).
    NotServed(&'static str),
    /// Not an IAM principal ARN of a known partition at all.
    Malformed,
}

/// Twelve ASCII digits.
pub(crate) fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Makes an STS caller ARN canonical: an assumed-role session ARN
/// `arn:<p>:sts::<acct>:assumed-role/<role>/<session>` becomes the role's
/// `arn:<p>:iam::<acct>:role/<role>`; IAM user and role ARNs stay as they are. Root and
/// federated-user ARNs are [`NotAPrincipal::NotServed`]; anything else is malformed.
pub(crate) fn canonical(arn: &str) -> Result<Principal, NotAPrincipal> {
    use NotAPrincipal::{Malformed, NotServed};
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Malformed);
    };
    if !KNOWN_PARTITIONS.contains(&partition) || !is_account_id(account) {
        return Err(Malformed);
    }
    if (service, resource) == ("iam", "root") {
        return Err(NotServed("the AWS account root user is never served"));
    }
    let (kind, rest) = resource.split_once('/').ok_or(Malformed)?;
    let principal = |canonical_arn: String, role_name: Option<&str>, session: Option<&str>| {
        Ok(Principal {
            canonical_arn,
            partition: partition.to_owned(),
            account: account.to_owned(),
            role_name: role_name.map(str::to_owned),
            session: session.map(str::to_owned),
        })
    };
    match (service, kind) {
        ("sts", "assumed-role") => {
            let (role, session) = rest.split_once('/').ok_or(Malformed)?;
            if role.is_empty() || session.is_empty() || session.contains('/') {
                return Err(Malformed);
            }
            principal(
                format!("arn:{partition}:iam::{account}:role/{role}"),
                Some(role),
                Some(session),
            )
        }
        ("sts", "federated-user") if !rest.is_empty() && !rest.contains('/') => Err(NotServed(
            "federated users (GetFederationToken) are not served; use a role",
        )),
        ("iam", "role") | ("iam", "user") if !rest.is_empty() && !rest.ends_with('/') => {
            let role_name = (kind == "role").then(|| role_name(rest));
            principal(arn.to_owned(), role_name, None)
        }
        _ => Err(Malformed),
    }
}

/// Whether STS's `UserId` has the shape STS gives `principal`'s kind: `AROA…:<session>` for
/// an assumed role, `AIDA…` for a user (`AROA…` for a role itself).
pub(crate) fn user_id_fits(user_id: &str, principal: &Principal) -> bool {
    let unique_id = |id: &str, prefix: &str| {
        id.len() >= 16
            && id.len() <= 128
            && id.starts_with(prefix)
            && id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    match (&principal.session, &principal.role_name) {
        (Some(session), _) => user_id
            .split_once(':')
            .is_some_and(|(id, s)| unique_id(id, "AROA") && s == session),
        (None, Some(_)) => unique_id(user_id, "AROA"),
        (None, None) => unique_id(user_id, "AIDA"),
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
            "arn:evil:iam::123456789012:role/r",
            "arn:aws-iso:iam::123456789012:role/r",
            "arn:aws:iam::123456789012:rooted",
        ] {
            assert_eq!(canonical(arn), Err(NotAPrincipal::Malformed), "{arn}");
        }
    }

    #[test]
    fn root_and_federated_users_are_principals_never_served() {
        for arn in [
            "arn:aws:iam::123456789012:root",
            "arn:aws:sts::123456789012:federated-user/Bob",
        ] {
            assert!(
                matches!(canonical(arn), Err(NotAPrincipal::NotServed(_))),
                "{arn}"
            );
        }
    }

    #[test]
    fn partition_and_account_are_part_of_the_identity() {
        let ours = canonical("arn:aws:sts::123456789012:assumed-role/orders/s").unwrap();
        let theirs = canonical("arn:aws:sts::999999999999:assumed-role/orders/s").unwrap();
        let china = canonical("arn:aws-cn:sts::123456789012:assumed-role/orders/s").unwrap();
        assert_ne!(ours.canonical_arn, theirs.canonical_arn);
        assert_ne!(ours.canonical_arn, china.canonical_arn);
        assert_eq!(china.partition, "aws-cn");
        assert_eq!(theirs.account, "999999999999");
    }

    #[test]
    fn user_ids_must_have_the_shape_sts_gives_each_kind() {
        let session = canonical("arn:aws:sts::123456789012:assumed-role/r/pod-7").unwrap();
        assert!(user_id_fits("AROA3XFRBF535PLBIFPI4:pod-7", &session));
        for bad in [
            "",
            "AROA3XFRBF535PLBIFPI4",
            "AROA3XFRBF535PLBIFPI4:pod-8",
            "AIDA3XFRBF535PLBIFPI4:pod-7",
            "AROA:pod-7",
            "aroa3xfrbf535plbifpi4:pod-7",
        ] {
            assert!(!user_id_fits(bad, &session), "{bad:?}");
        }
        let user = canonical("arn:aws:iam::123456789012:user/ci").unwrap();
        assert!(user_id_fits("AIDAJQABLZS4A3QDU576Q", &user));
        assert!(!user_id_fits("123456789012", &user));
    }
}
