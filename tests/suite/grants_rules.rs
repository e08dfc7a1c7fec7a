//! Grant rules through the real Check: an IdP's `groups` claim, a client certificate's OU,
//! `union` with the grants file, and rules reloaded from their file and from the config file.

use std::time::Duration;

use crate::support::certs::{LeafSpec, TestCa, url_encode};
use crate::support::{Harness, Options, denied, eventually, get_json, minted, segment};
use serde_json::{Value, json};

const GROUP_RULES: &str = r#"
  rules:
    - { claim: groups, match: "evs-db-*-writer", grant: { databases: { "{1}": [reader, writer] } } }
    - { claim: groups, match: platform-admins, grant: { global: [database_creator] } }"#;

fn grants_of(answer: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> Value {
    segment(&minted(answer), 1)["evs:grants"].clone()
}

#[tokio::test]
async fn an_idp_groups_claim_becomes_grants_united_with_the_grants_file() {
    let h = Harness::start_with(Options {
        grants_source: "[file, rules]".into(),
        grants_extra: format!("merge: union\n  unknown_subject: deny{GROUP_RULES}"),
        ..Options::default()
    })
    .await;
    // Listed in the grants file, and a member of two IdP groups.
    let listed = h.idp.sign(&h.claims(json!({
        "groups": ["evs-db-orders-writer", "staff", "evs-db-production-writer"]
    })));
    assert_eq!(
        grants_of(&h.check_bearer(&listed).await),
        json!({
            "global": ["database_creator"],
            "databases": {
                "orders": ["reader", "writer"],
                "production": ["reader", "writer"],
                "staging": ["deployer", "reader", "writer"]
            }
        })
    );
    // Not in the file: the groups alone grant.
    let member = h
        .idp
        .sign(&h.claims(json!({"sub": "dana", "groups": ["platform-admins"]})));
    assert_eq!(
        grants_of(&h.check_bearer(&member).await),
        json!({"global": ["database_creator"], "databases": {}})
    );
    // In no matching group and not in the file: unknown_subject: deny.
    let stranger = h
        .idp
        .sign(&h.claims(json!({"sub": "erin", "groups": ["staff"]})));
    assert_eq!(denied(&h.check_bearer(&stranger).await).http_status, 403);
    // A capture that would make an empty or 1 KiB database name grants nothing (logged).
    let long = format!("evs-db-{}-writer", "x".repeat(1024));
    for group in ["evs-db--writer", long.as_str()] {
        let odd = h
            .idp
            .sign(&h.claims(json!({"sub": "erin", "groups": [group]})));
        assert_eq!(
            denied(&h.check_bearer(&odd).await).http_status,
            403,
            "{group:.20}"
        );
    }
    // A claim of the wrong type is skipped, never read as a wider grant.
    let odd = h.idp.sign(&h.claims(json!({"sub": "erin", "groups": 42})));
    assert_eq!(denied(&h.check_bearer(&odd).await).http_status, 403);
}

#[tokio::test]
async fn a_client_certificate_ou_becomes_grants() {
    let ca = TestCa::new("Test CA");
    let ca_dir = crate::support::TempDir::new("rules-ca");
    let ca_file = ca_dir.write("ca.pem", &ca.pem);
    let h = Harness::start_with(Options {
        grants_source: "[file, rules]".into(),
        grants_extra: "rules:
    - { attribute: cert_ou, match: payments, grant: { databases: { payments: [writer] } } }"
            .into(),
        extra_config: format!(
            "client_certs:\n  enabled: true\n  from: [xfcc]\n  ca_file: '{}'",
            ca_file.display()
        ),
        ..Options::default()
    })
    .await;
    let xfcc = |spec: LeafSpec<'_>| {
        format!(
            r#"By=spiffe://mesh/gw;Hash=ab;Cert="{}""#,
            url_encode(&ca.issue(spec).pem)
        )
    };
    let payments = xfcc(LeafSpec {
        cn: Some("ledger"),
        ou: Some("payments"),
        ..LeafSpec::default()
    });
    assert_eq!(
        grants_of(&h.check(&[("x-forwarded-client-cert", &payments)]).await),
        json!({"global": [], "databases": {"payments": ["writer"]}})
    );
    let elsewhere = xfcc(LeafSpec {
        cn: Some("ledger"),
        ou: Some("marketing"),
        ..LeafSpec::default()
    });
    assert_eq!(
        grants_of(&h.check(&[("x-forwarded-client-cert", &elsewhere)]).await),
        json!({"global": [], "databases": {}}),
        "another OU: no rule matches (unknown_subject: empty)"
    );
}

/// Polls `/readyz` until a warning containing `text` shows (or not, with `present: false`).
async fn wait_for_warning(h: &Harness, text: &str, present: bool) {
    eventually(
        &format!("a /readyz warning with {text:?} present: {present}"),
        Duration::from_secs(10),
        async || {
            get_json(&h.http_url("/readyz")).await["warnings"]
                .to_string()
                .contains(text)
                == present
        },
    )
    .await;
}

#[tokio::test]
async fn a_rules_file_is_reloaded_and_a_broken_edit_keeps_the_last_good_rules() {
    let writer = r#"rules: [ { claim: groups, match: "evs-db-*-writer", grant: { databases: { "{1}": [writer] } } } ]"#;
    let reader = r#"rules: [ { claim: groups, match: "evs-db-*-writer", grant: { databases: { "{1}": [reader] } } } ]"#;
    let dir = crate::support::TempDir::new("rules-file");
    let rules = dir.write("rules.yaml", writer);
    let h = Harness::start_with(Options {
        grants_source: "rules".into(),
        grants_extra: format!("rules_file: '{}'", rules.display()),
        ..Options::default()
    })
    .await;
    let token = h
        .idp
        .sign(&h.claims(json!({"groups": ["evs-db-orders-writer"]})));
    assert_eq!(
        grants_of(&h.check_bearer(&token).await)["databases"],
        json!({"orders": ["writer"]})
    );
    std::fs::write(&rules, reader).unwrap();
    eventually(
        "the edited rules serve",
        Duration::from_secs(10),
        async || {
            grants_of(&h.check_bearer(&token).await)["databases"] == json!({"orders": ["reader"]})
        },
    )
    .await;
    std::fs::write(
        &rules,
        r#"rules: [ { claim: groups, match: "a**b", grant: {} } ]"#,
    )
    .unwrap();
    wait_for_warning(&h, "grant rules change refused", true).await;
    let warnings = get_json(&h.http_url("/readyz")).await["warnings"].to_string();
    assert!(warnings.contains("rules[0].match"), "{warnings}");
    assert_eq!(
        grants_of(&h.check_bearer(&token).await)["databases"],
        json!({"orders": ["reader"]}),
        "the last good rules keep serving"
    );
    std::fs::write(&rules, writer).unwrap();
    wait_for_warning(&h, "grant rules change refused", false).await;
}

#[tokio::test]
async fn rules_written_in_the_config_file_are_reloaded_through_the_loader_when_it_changes() {
    let idp = evs_token_vending::demo::DemoIdp::start().await.unwrap();
    let dir = crate::support::TempDir::new("rules-inline");
    let config = |role: &str| {
        format!(
            r#"listen: {{ authz: 127.0.0.1:0, http: 127.0.0.1:0 }}
token: {{ issuer: https://token-vending.example.com, audience: [evidentsource] }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{}' }} ]
grants:
  source: rules
  rules:
    - {{ claim: groups, match: "evs-db-*-writer", grant: {{ databases: {{ "{{1}}": [{role}] }} }} }}
"#,
            idp.issuer()
        )
    };
    let path = dir.write("config.yaml", &config("writer"));
    let sidecar = evs_token_vending::start(evs_token_vending::Config::load(&path).unwrap())
        .await
        .unwrap();
    let client =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            evs_testkit::authz_channel(&sidecar.authz_addr)
                .await
                .unwrap(),
        );
    let now = crate::support::now();
    let token = idp.sign(&json!({
        "iss": idp.issuer(), "sub": "alice", "exp": now + 600, "groups": ["evs-db-orders-writer"]
    }));
    let check = async || {
        let request = evs_testkit::check_request(&[("authorization", &format!("Bearer {token}"))]);
        grants_of(&client.clone().check(request).await.unwrap().into_inner())["databases"].clone()
    };
    assert_eq!(check().await, json!({"orders": ["writer"]}));
    std::fs::write(&path, config("reader")).unwrap();
    eventually(
        "the config file's new rules serve",
        Duration::from_secs(10),
        async || check().await == json!({"orders": ["reader"]}),
    )
    .await;
    // The config file is read again by the loader, with all its checks: an edit that breaks
    // another section is refused with that key named, and the last good rules keep serving.
    let broken = config("admin").replace(
        "audience: [evidentsource] }",
        "audience: [evidentsource], lifetime: 0s }",
    );
    std::fs::write(&path, broken).unwrap();
    let readyz = format!("http://{}/readyz", sidecar.http_addr);
    eventually(
        "the refused edit names token.lifetime on /readyz",
        Duration::from_secs(10),
        async || {
            get_json(&readyz).await["warnings"]
                .to_string()
                .contains("token.lifetime")
        },
    )
    .await;
    assert_eq!(check().await, json!({"orders": ["reader"]}));
    sidecar.shutdown().await;
}

/// Runs `explain` on `config` with `args`; the output, and whether it succeeded.
async fn explain(config: &std::path::Path, args: &[&str]) -> (String, bool) {
    let mut all = vec![
        "explain".into(),
        "--config".into(),
        config.as_os_str().to_owned(),
    ];
    all.extend(args.iter().map(|a| a.into()));
    let (ok, text) = crate::support::run_cli(all).await;
    (text, ok)
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_says_which_sources_and_rules_gave_which_grants() {
    let idp = evs_token_vending::demo::DemoIdp::start().await.unwrap();
    let dir = crate::support::TempDir::new("explain");
    dir.write("grants.yaml", evs_token_vending::demo::SAMPLE_GRANTS);
    let config = dir.write(
        "config.yaml",
        &format!(
            r#"token: {{ issuer: https://token-vending.example.com, audience: [evidentsource] }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{}' }} ]
grants:
  sources: [file, rules]
  merge: union
  file: grants.yaml
  rules:
    - {{ claim: groups, match: "evs-db-*-writer", grant: {{ databases: {{ "{{1}}": [writer] }} }} }}
    - {{ attribute: cert_ou, match: payments, grant: {{ databases: {{ payments: [writer] }} }} }}
"#,
            idp.issuer()
        ),
    );
    let identity = r#"{"sub": "user@example.com", "groups": ["evs-db-orders-writer", "staff"]}"#;
    let (text, ok) = explain(&config, &["--identity", identity]).await;
    assert!(ok, "{text}");
    for line in [
        "merge: union",
        "1. file",
        r#"knows the identity: {"global":["database_creator"]"#,
        "2. rules (2 in force): knows the identity",
        r#"grants.rules[0]: claim groups = "evs-db-orders-writer" grants {"global":[],"databases":{"orders":["writer"]}}"#,
        r#"evs:grants {"global":["database_creator"],"databases":{"orders":["writer"],"production":["reader","writer"],"staging":["deployer","reader","writer"]}}"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // A certificate identity: only the OU rule speaks.
    let (text, ok) = explain(
        &config,
        &[
            "--identity",
            r#"{"sub": "cert:ledger", "cert:ou": "payments"}"#,
        ],
    )
    .await;
    assert!(ok, "{text}");
    assert!(
        text.contains("1. file") && text.contains("does not know the identity"),
        "{text}"
    );
    assert!(
        text.contains(r#"grants.rules[1]: attribute cert_ou = "payments""#),
        "{text}"
    );

    // A token is verified as a Check would: its claims are what the rules read.
    let now = crate::support::now();
    let token = idp.sign(&json!({
        "iss": idp.issuer(), "sub": "dana", "exp": now + 600, "groups": ["evs-db-ledger-writer"]
    }));
    let (text, ok) = explain(&config, &["--token", &token]).await;
    assert!(ok, "{text}");
    assert!(
        text.contains(r#"evs:grants {"global":[],"databases":{"ledger":["writer"]}}"#),
        "{text}"
    );
    // A forged or expired token is refused with the Check's reason, and never printed.
    let expired = idp.sign(&json!({"iss": idp.issuer(), "sub": "dana", "exp": now - 10}));
    let (text, ok) = explain(&config, &["--token", &expired]).await;
    assert!(!ok && text.contains("refused"), "{text}");
    assert!(!text.contains(&expired[expired.len() - 20..]), "{text}");
    // Bad identity JSON says what is wrong.
    for (bad, says) in [
        ("{", "not JSON"),
        ("[]", "JSON object"),
        (r#"{"email": "a@b"}"#, "\"sub\""),
    ] {
        let (text, ok) = explain(&config, &["--identity", bad]).await;
        assert!(!ok && text.contains(says), "{bad}: {text}");
    }
}
