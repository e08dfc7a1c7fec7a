//! Rules against identities built in place: what matches, what is granted, what is refused.

use serde_json::json;

use super::*;
use crate::identity::{AwsClaims, CertificateClaims, OtherClaims};

fn rules(yaml: &str) -> RuleSet {
    let specs: Vec<RuleSpec> = serde_norway::from_str(yaml).unwrap();
    RuleSet::compile(&specs, "grants.rules").unwrap()
}

fn problems(yaml: &str) -> Vec<RuleProblem> {
    let specs: Vec<RuleSpec> = serde_norway::from_str(yaml).unwrap();
    RuleSet::compile(&specs, "grants.rules").unwrap_err()
}

fn person(claims: serde_json::Value) -> Identity {
    let claims = claims.as_object().unwrap().clone().into_iter().collect();
    Identity {
        subject: "alice".into(),
        issuer: "https://idp.example.com".into(),
        email: Some("alice@example.com".into()),
        name: None,
        expires_at: u64::MAX,
        certificate: None,
        aws: None,
        claims: Some(Box::new(OtherClaims(claims))),
        kubernetes: None,
    }
}

fn json_of(grants: &Grants) -> serde_json::Value {
    serde_json::to_value(grants).unwrap()
}

const GROUP_RULES: &str = r#"
- { claim: groups, match: "evs-db-*-writer", grant: { databases: { "{1}": [reader, writer] } } }
- { claim: groups, match: "evs-db-*-reader", grant: { databases: { "{1}": [reader] } } }
- { claim: groups, match: platform-admins, issuer: "https://idp.example.com", grant: { global: [database_creator] } }
"#;

#[test]
fn group_claims_become_grants_with_captured_database_names_in_canonical_form() {
    let set = rules(GROUP_RULES);
    let alice = person(json!({
        "groups": ["evs-db-orders-writer", "evs-db-orders-reader", "evs-db-billing-reader", "platform-admins", "staff"]
    }));
    let grants = set.grants_for(&alice).unwrap();
    assert_eq!(
        json_of(&grants),
        json!({"global": ["database_creator"], "databases": {"billing": ["reader"], "orders": ["reader", "writer"]}})
    );
    // One group given as a plain string works as a one-element list.
    let bob = person(json!({"groups": "evs-db-orders-reader"}));
    assert_eq!(
        json_of(&set.grants_for(&bob).unwrap()),
        json!({"global": [], "databases": {"orders": ["reader"]}})
    );
}

#[test]
fn no_matching_rule_means_the_source_does_not_know_the_identity() {
    let set = rules(GROUP_RULES);
    assert!(
        set.grants_for(&person(json!({"groups": ["staff"]})))
            .is_none()
    );
    assert!(set.grants_for(&person(json!({}))).is_none());
    let mut elsewhere = person(json!({"groups": ["platform-admins"]}));
    elsewhere.issuer = "https://other-idp.example.com".into();
    assert!(
        set.grants_for(&elsewhere).is_none(),
        "a rule pinned to an issuer ignores the same claim from another issuer"
    );
}

#[test]
fn a_claim_of_the_wrong_type_skips_the_rule_and_never_widens_the_grant() {
    let set = rules(GROUP_RULES);
    for odd in [
        json!(42),
        json!(["evs-db-orders-writer", 7]),
        json!({"a": 1}),
        json!(null),
        json!(true),
    ] {
        assert!(
            set.grants_for(&person(json!({ "groups": odd.clone() })))
                .is_none(),
            "{odd}"
        );
    }
}

#[test]
fn a_capture_that_would_make_an_impossible_database_name_grants_nothing_for_it() {
    let set = rules(GROUP_RULES);
    let long = format!("evs-db-{}-writer", "x".repeat(1024));
    for group in [
        "evs-db--writer",
        long.as_str(),
        "evs-db-a/b-writer",
        "evs-db-*)(x-writer",
    ] {
        let answer = set.grants_for(&person(json!({ "groups": [group] })));
        // The pattern matched, but a refused name grants nothing: the identity stays unknown
        // (so `unknown_subject: deny` still refuses it).
        assert_eq!(answer, None, "{group}");
    }
}

#[test]
fn certificate_and_iam_attributes_can_be_matched() {
    let set = rules(
        r#"
- { attribute: cert_ou, match: payments, grant: { databases: { payments: [writer] } } }
- { attribute: spiffe_id, match: "spiffe://example.org/ns/*/sa/*", grant: { databases: { "{1}": ["{2}"] } } }
- { attribute: aws_role, match: "evs-*-reader", grant: { databases: { "{1}": [reader] } } }
- { attribute: aws_account, match: "123456789012", grant: { global: [auditor] } }
"#,
    );
    let mut service = person(json!({}));
    service.certificate = Some(Box::new(CertificateClaims {
        cn: Some("orders".into()),
        org: None,
        ou: Some("payments".into()),
        spiffe_id: Some("spiffe://example.org/ns/shop/sa/orders".into()),
        thumbprint_s256: String::new(),
    }));
    assert_eq!(
        json_of(&set.grants_for(&service).unwrap()),
        json!({"global": [], "databases": {"payments": ["writer"], "shop": ["{2}"]}}),
        "captures fill database names only; roles are taken as written"
    );
    let mut role = person(json!({}));
    role.aws = Some(Box::new(AwsClaims {
        partition: "aws".into(),
        account: "123456789012".into(),
        user_id: "AROA:x".into(),
        session: None,
        role_name: Some("evs-ledger-reader".into()),
    }));
    assert_eq!(
        json_of(&set.grants_for(&role).unwrap()),
        json!({"global": ["auditor"], "databases": {"ledger": ["reader"]}})
    );
}

#[test]
fn bad_rules_are_refused_with_their_key_paths() {
    let found = problems(
        r#"
- { claim: groups, match: "a**b", grant: { global: [x] } }
- { match: x, grant: { global: [x] } }
- { claim: groups, attribute: subject, match: x, grant: { global: [x] } }
- { claim: groups, match: "db-*", grant: { databases: { "{2}": [reader] } } }
"#,
    );
    let paths: Vec<&str> = found.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "grants.rules[0].match",
            "grants.rules[1]",
            "grants.rules[2]",
            "grants.rules[3].grant.databases.{2}"
        ],
        "{found:?}"
    );
}

#[test]
fn explain_names_each_rule_that_matched_and_what_it_granted() {
    let set = rules(GROUP_RULES);
    let found = set.explain(&person(
        json!({"groups": ["evs-db-orders-writer", "staff"]}),
    ));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule, "grants.rules[0]");
    assert_eq!(found[0].matched, r#"claim groups = "evs-db-orders-writer""#);
    assert_eq!(
        json_of(&found[0].grants),
        json!({"global": [], "databases": {"orders": ["reader", "writer"]}})
    );
}
