//! Grants from a real OpenLDAP `slapd` through the Check: groups found by search or by
//! `memberOf`, grants on the entry itself, `union` with the grants file and rules, filter
//! injection, a stopped, silent or oversized directory, and a group DN with odd escaping.

use std::time::Duration;

use crate::support::certs::TestCa;
use crate::support::slapd::{ROOT_DN, ROOT_PASSWORD, SUFFIX, ServerTls, Slapd};
use crate::support::{Harness, Options, denied, minted, segment};
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use serde_json::{Value, json};

/// Users and groups of the directory, with dave in 10,000 groups.
fn directory() -> String {
    let mut ldif = people_and_groups();
    for i in 0..10_000 {
        ldif.push_str(&format!(
            "\ndn: cn=many-{i},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: many-{i}\nmember: uid=dave,ou=people,{SUFFIX}\n"
        ));
    }
    ldif
}

/// Users and groups of the directory.
fn people_and_groups() -> String {
    let person = |uid: &str, extra: &str| {
        format!(
            "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n{extra}\n"
        )
    };
    let group = |cn: &str, members: &[&str]| {
        let members: String = members
            .iter()
            .map(|uid| format!("member: uid={uid},ou=people,{SUFFIX}\n"))
            .collect();
        format!("dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n{members}\n")
    };
    [
        person("alice", "mail: alice@example.com"),
        person("bob", "mail: bob@example.com"),
        person("carol", ""),
        person("dave", ""),
        person(
            "user",
            &format!(
                "mail: user@example.com\nmemberOf: cn=db-prod-writers,ou=groups,{SUFFIX}\n\
                 description: {{\"databases\": {{\"audit\": [\"reader\"]}}}}"
            ),
        ),
        group("db-prod-writers", &["alice", "user"]),
        group("evs-db-orders-writers", &["alice"]),
        group("staff", &["alice", "bob"]),
        // A group whose name holds an escaped comma: its capture is no database name.
        r"dn: cn=evs-db-a\2Cb-writers,ou=groups,dc=example,dc=com
objectClass: groupOfNames
cn: evs-db-a,b-writers
member: uid=carol,ou=people,dc=example,dc=com
"
        .to_owned(),
    ]
    .join("\n")
}

/// `grants.ldap` for `slapd` over plain loopback LDAP, with `extra` keys.
fn ldap_config(slapd: &Slapd, extra: &str) -> String {
    ldap_config_at(slapd, &slapd.url, "starttls: false", extra)
}

/// `grants.ldap` for `slapd` at `url`, with `connection` keys (TLS) and `extra` keys.
fn ldap_config_at(slapd: &Slapd, url: &str, connection: &str, extra: &str) -> String {
    let password = slapd.write("bind-password", &format!("{ROOT_PASSWORD}\n"));
    format!(
        "ldap:
    url: {url}
    {connection}
    bind_dn: '{ROOT_DN}'
    bind_password_file: '{password}'
    base_dn: 'ou=people,{SUFFIX}'
    groups:
      'CN=db-prod-writers,ou=groups,{SUFFIX}': {{ databases: {{ production: [reader, writer] }} }}
    group_patterns:
      - {{ match: 'cn=evs-db-*-writers,ou=groups,{SUFFIX}', grant: {{ databases: {{ '{{1}}': [writer] }} }} }}
      - {{ match: 'cn=many-*,ou=groups,{SUFFIX}', grant: {{ global: [member] }} }}
    {extra}",
        password = password.display(),
    )
}

async fn harness(slapd: &Slapd, sources: &str, extra: &str) -> Harness {
    Harness::start_with(Options {
        grants_source: sources.into(),
        grants_extra: format!(
            "unknown_subject: deny\n  cache: {{ ttl: 300ms, negative_ttl: 300ms, stale_for: 2s }}\n  {}",
            ldap_config(slapd, extra)
        ),
        ..Options::default()
    })
    .await
}

/// LDAP as the only source, finding groups by `(member={dn})`.
async fn searching_groups(slapd: &Slapd) -> Harness {
    let search = format!("group_search: {{ base_dn: 'ou=groups,{SUFFIX}' }}");
    harness(slapd, "ldap", &search).await
}

fn grants_of(answer: &CheckResponse) -> Value {
    segment(&minted(answer), 1)["evs:grants"].clone()
}

async fn check_subject(h: &Harness, claims: Value) -> CheckResponse {
    h.check_bearer(&h.idp.sign(&h.claims(claims))).await
}

#[tokio::test]
async fn a_users_groups_become_grants_and_a_user_in_no_mapped_group_is_unknown() {
    let slapd = Slapd::start(&directory());
    let h = searching_groups(&slapd).await;
    let alice = json!({"sub": "alice", "email": "alice@example.com"});
    assert_eq!(
        grants_of(&check_subject(&h, alice).await),
        json!({"global": [], "databases": {"orders": ["writer"], "production": ["reader", "writer"]}})
    );
    // Found by e-mail when the subject is no uid.
    let by_mail = json!({"sub": "00u1a2b3c", "email": "alice@example.com"});
    assert_eq!(
        grants_of(&check_subject(&h, by_mail).await)["databases"]["orders"],
        json!(["writer"])
    );
    // In `staff` only, which maps to nothing: unknown_subject (deny) decides.
    let bob = json!({"sub": "bob", "email": "bob@example.com"});
    assert_eq!(denied(&check_subject(&h, bob).await).http_status, 403);
    // Not in the directory at all.
    let nobody = json!({"sub": "nobody", "email": "nobody@example.com"});
    assert_eq!(denied(&check_subject(&h, nobody).await).http_status, 403);
    // A group DN with an escaped comma: its capture is no database name, so nothing is granted.
    assert_eq!(
        denied(&check_subject(&h, json!({"sub": "carol"})).await).http_status,
        403
    );
}

#[tokio::test]
async fn filter_injection_in_subject_or_email_finds_nothing() {
    let slapd = Slapd::start(&directory());
    let h = searching_groups(&slapd).await;
    for (sub, email) in [
        ("*", "*"),
        ("*)(uid=*", "x"),
        ("alice)(|(uid=*", "*)(mail=*"),
        ("ali*", "alice@example.co*"),
        ("alice\u{0}", "alice@example.com\u{0}"),
        ("\\2a", "\\2a"),
        ("alicé", "ålice@example.com"),
    ] {
        let answer = check_subject(&h, json!({"sub": sub, "email": email})).await;
        // A widened search would find alice (OK) or several entries (503).
        assert_eq!(denied(&answer).http_status, 403, "{sub:?} / {email:?}");
    }
    // A subject that is not UTF-8 never reaches the directory: the token itself is refused.
    let claims = h.claims(json!({"sub": "alice"})).to_string();
    let mut payload = claims.replace("\"alice\"", "\"ali\u{1}ce\"").into_bytes();
    let at = payload.iter().position(|b| *b == 1).unwrap();
    payload[at] = 0xff;
    let token = h.idp.key().sign_jws(&payload).unwrap();
    assert_eq!(denied(&h.check_bearer(&token).await).http_status, 401);
}

#[tokio::test]
async fn member_of_and_grants_on_the_entry_unite_with_the_grants_file_and_rules() {
    let slapd = Slapd::start(&directory());
    let h = harness(
        &slapd,
        "[file, ldap, rules]",
        "grants_attribute: description
  merge: union
  rules:
    - { claim: groups, match: 'evs-*-readers', grant: { databases: { '{1}': [reader] } } }",
    )
    .await;
    // user@example.com: in the grants file, memberOf db-prod-writers, grants in `description`,
    // and an IdP group the rule maps.
    let token = h.idp.sign(&h.claims(json!({
        "email": "user@example.com", "groups": ["evs-ledger-readers"]
    })));
    assert_eq!(
        grants_of(&h.check_bearer(&token).await),
        json!({
            "global": ["database_creator"],
            "databases": {
                "audit": ["reader"],
                "ledger": ["reader"],
                "production": ["reader", "writer"],
                "staging": ["deployer", "reader", "writer"]
            }
        })
    );
}

#[tokio::test]
async fn a_stopped_directory_serves_cached_grants_for_stale_for_then_503() {
    let mut slapd = Slapd::start(&directory());
    let h = searching_groups(&slapd).await;
    let alice = json!({"sub": "alice", "email": "alice@example.com"});
    let before = grants_of(&check_subject(&h, alice.clone()).await);
    slapd.stop();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        grants_of(&check_subject(&h, alice.clone()).await),
        before,
        "stale-if-error: the last known grants serve"
    );
    // Never looked up before: nothing to serve.
    let bob = json!({"sub": "bob", "email": "bob@example.com"});
    assert_eq!(denied(&check_subject(&h, bob).await).http_status, 503);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert_eq!(
        denied(&check_subject(&h, alice).await).http_status,
        503,
        "past stale_for the directory's outage shows"
    );
}

#[tokio::test]
async fn a_directory_that_accepts_and_never_answers_is_503_within_the_checks_deadline() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ldap://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in silent.incoming().take(8) {
            open.push(stream);
        }
    });
    let h = Harness::start_with(Options {
        grants_source: "ldap".into(),
        grants_extra: format!(
            "ldap:
    url: {url}
    starttls: false
    base_dn: 'ou=people,{SUFFIX}'
    groups: {{ 'cn=x': {{ global: [x] }} }}
    timeout: 300ms"
        ),
        ..Options::default()
    })
    .await;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        check_subject(&h, json!({"sub": "alice"})),
    )
    .await
    .expect("the Check must answer, not hang");
    assert_eq!(denied(&answer).http_status, 503);
    drop(held);
}

#[tokio::test]
async fn ten_thousand_groups_are_a_503_past_max_groups_and_mapped_within_it() {
    let slapd = Slapd::start(&directory());
    let search = format!("group_search: {{ base_dn: 'ou=groups,{SUFFIX}' }}");
    let bounded = harness(&slapd, "ldap", &search).await;
    let dave = json!({"sub": "dave"});
    assert_eq!(
        denied(&check_subject(&bounded, dave.clone()).await).http_status,
        503,
        "more groups than max_groups (5,000) is an error, never a partial grant"
    );
    let roomy = harness(
        &slapd,
        "ldap",
        &format!(
            "{search}
    max_groups: 20000"
        ),
    )
    .await;
    assert_eq!(
        grants_of(&check_subject(&roomy, dave).await),
        json!({"global": ["member"], "databases": {}})
    );
}

#[tokio::test]
async fn starttls_and_ldaps_reach_a_directory_whose_certificate_the_ca_file_vouches_for() {
    let ca = TestCa::new("LDAP CA");
    let (certificate, key) = ca.issue_with_key("ldap.test", &["127.0.0.1"]);
    let slapd = Slapd::start_with(
        &people_and_groups(),
        Some(ServerTls {
            certificate: &certificate,
            key: &key,
        }),
    );
    let ca_file = slapd.write("ca.pem", &ca.pem);
    let stranger_file = slapd.write("other-ca.pem", &TestCa::new("Other CA").pem);
    let ldaps = slapd.ldaps_url.clone().expect("ldaps listener");
    let search = format!("group_search: {{ base_dn: 'ou=groups,{SUFFIX}' }}");
    let alice = json!({"sub": "alice", "email": "alice@example.com"});
    for (url, trusted) in [
        (&slapd.url, &ca_file),
        (&ldaps, &ca_file),
        (&slapd.url, &stranger_file),
        (&ldaps, &stranger_file),
    ] {
        let h = Harness::start_with(Options {
            grants_source: "ldap".into(),
            grants_extra: ldap_config_at(
                &slapd,
                url,
                &format!("ca_file: '{}'", trusted.display()),
                &search,
            ),
            ..Options::default()
        })
        .await;
        let answer = check_subject(&h, alice.clone()).await;
        if trusted == &ca_file {
            assert_eq!(
                grants_of(&answer)["databases"]["production"],
                json!(["reader", "writer"]),
                "{url}"
            );
        } else {
            assert_eq!(
                denied(&answer).http_status,
                503,
                "{url} with a CA that did not sign it"
            );
        }
    }
}

#[tokio::test]
async fn the_bind_password_file_is_read_again_when_it_changes() {
    let slapd = Slapd::start(&people_and_groups());
    let h = searching_groups(&slapd).await;
    let password = slapd.write("bind-password", "wrong\n");
    let alice = json!({"sub": "alice", "email": "alice@example.com"});
    // The harness's connection was never opened: the first bind reads the wrong password.
    assert_eq!(denied(&check_subject(&h, alice).await).http_status, 503);
    std::fs::write(&password, format!("{ROOT_PASSWORD}\n")).unwrap();
    let user_in_prod = json!({"sub": "user", "email": "user@example.com"});
    let answer = check_subject(&h, user_in_prod).await;
    assert_eq!(
        grants_of(&answer)["databases"]["production"],
        json!(["reader", "writer"]),
        "the rotated password is used without a restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_probe_binds_and_reads_the_base_dn_and_never_prints_the_password() {
    let slapd = Slapd::start(&people_and_groups());
    let idp = evs_token_vending::demo::DemoIdp::start().await.unwrap();
    let probe = async |password: &str, base_dn: &str| {
        let password_file = slapd.write("probe-password", password);
        let config = slapd.write(
            "probe.yaml",
            &serve_config(idp.issuer(), &slapd, &password_file, base_dn),
        );
        crate::support::run_cli(vec![
            "check-config".into(),
            "--probe".into(),
            "--config".into(),
            config.into_os_string(),
        ])
        .await
    };
    let people = format!("ou=people,{SUFFIX}");
    let (ok, text) = probe(ROOT_PASSWORD, &people).await;
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "grants.ldap: {} answers to a bind as {ROOT_DN}",
            slapd.url
        )),
        "{text}"
    );
    let (ok, text) = probe("wrong-password-value", &people).await;
    assert!(
        !ok && text.contains(&format!("grants.ldap: bind as {ROOT_DN}")),
        "{text}"
    );
    assert!(!text.contains("wrong-password-value"), "{text}");
    let (ok, text) = probe(ROOT_PASSWORD, &format!("ou=nowhere,{SUFFIX}")).await;
    assert!(
        !ok && text.contains("grants.ldap: base_dn ou=nowhere"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_trace_level_the_log_holds_no_bind_password() {
    let slapd = Slapd::start(&people_and_groups());
    let idp = evs_token_vending::demo::DemoIdp::start().await.unwrap();
    let password = slapd.write("trace-password", &format!("{ROOT_PASSWORD}\n"));
    let serve = crate::support::process::ServeProcess::spawn(
        "ldap-log-secrets",
        &serve_config(
            idp.issuer(),
            &slapd,
            &password,
            &format!("ou=people,{SUFFIX}"),
        ),
        |command, dir| {
            let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
            command.env("RUST_LOG", "trace").stderr(log);
        },
    );
    serve.wait_listening().await;
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://127.0.0.1:{}", serve.authz),
    )
    .await
    .unwrap();
    let token = idp.token_for("alice", Some("alice@example.com"), Duration::from_secs(600));
    let answer = client
        .check(evs_testkit::check_request(&[(
            "authorization",
            &format!("Bearer {token}"),
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        grants_of(&answer)["databases"]["production"],
        json!(["writer"])
    );
    let mut serve = serve;
    let _ = serve.child.kill();
    let _ = serve.child.wait();
    let log = std::fs::read_to_string(serve.dir.path().join("stderr.log")).unwrap();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log ran at trace level"
    );
    assert!(
        !log.contains(ROOT_PASSWORD),
        "the bind password appears in the trace log"
    );
}

/// A whole config: `issuer` trusted, grants from `slapd` bound as the administrator with the
/// password in `password_file`, users under `base_dn`, groups by search.
fn serve_config(
    issuer: &str,
    slapd: &Slapd,
    password_file: &std::path::Path,
    base_dn: &str,
) -> String {
    format!(
        "token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{issuer}' }} ]
grants:
  source: ldap
  ldap:
    url: {url}
    starttls: false
    bind_dn: '{ROOT_DN}'
    bind_password_file: '{password_file}'
    base_dn: '{base_dn}'
    group_search: {{ base_dn: 'ou=groups,{SUFFIX}' }}
    groups: {{ 'cn=db-prod-writers,ou=groups,{SUFFIX}': {{ databases: {{ production: [writer] }} }} }}
",
        url = slapd.url,
        password_file = password_file.display(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_names_the_entry_and_the_groups_that_granted() {
    let slapd = Slapd::start(&people_and_groups());
    let password = slapd.write("explain-password", ROOT_PASSWORD);
    let config = slapd.write(
        "explain.yaml",
        &serve_config(
            "https://idp.example.com",
            &slapd,
            &password,
            &format!("ou=people,{SUFFIX}"),
        ),
    );
    let (ok, text) = crate::support::run_cli(vec![
        "explain".into(),
        "--config".into(),
        config.into_os_string(),
        "--identity".into(),
        r#"{"sub": "alice", "email": "alice@example.com"}"#.into(),
    ])
    .await;
    assert!(ok, "{text}");
    let group = format!("cn=db-prod-writers,ou=groups,{SUFFIX}");
    for line in [
        format!("1. ldap {} (cached): knows the identity", slapd.url),
        format!("entry uid=alice,ou=people,{SUFFIX} in 3 group(s)"),
        format!(
            r#"grants.ldap.groups.{group}: group = "{group}" grants {{"global":[],"databases":{{"production":["writer"]}}}}"#
        ),
        r#"evs:grants {"global":[],"databases":{"production":["writer"]}}"#.to_owned(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains(ROOT_PASSWORD), "{text}");
}
