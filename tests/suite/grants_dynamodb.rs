//! Grants from DynamoDB through the Check, against a real DynamoDB wire API (moto) found
//! through `AWS_ENDPOINT_URL_DYNAMODB`, as a deployment next to a local DynamoDB would be.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::moto::Moto;
use crate::support::{Harness, Options, denied, get_json, minted, segment};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use evs_testkit::process::use_test_aws_credentials;
use serde_json::json;

const TABLE: &str = "evs-grants";

/// moto on its port, the SDK pointed at it the standard way, and a runtime.
fn setup() -> (Moto, tokio::runtime::Runtime) {
    let moto = Moto::start();
    // Moto is a child process; the runtime comes after.
    use_test_aws_credentials(&[("AWS_ENDPOINT_URL_DYNAMODB", &moto.endpoint)]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    (moto, runtime)
}

async fn client() -> Client {
    Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
}

/// Creates an on-demand table whose partition key is the string attribute `key`.
async fn create_table(db: &Client, name: &str, key: &str) {
    db.create_table()
        .table_name(name)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("CreateTable");
}

/// Creates the grants table and fills it with the test subjects.
async fn create_table_with_items(db: &Client) {
    create_table(db, TABLE, "subject").await;
    let list = |roles: &[&str]| {
        AttributeValue::L(
            roles
                .iter()
                .map(|r| AttributeValue::S((*r).into()))
                .collect(),
        )
    };
    let grants = |global: AttributeValue, databases: Vec<(&str, AttributeValue)>| {
        AttributeValue::M(HashMap::from([
            ("global".to_owned(), global),
            (
                "databases".to_owned(),
                AttributeValue::M(
                    databases
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                ),
            ),
        ]))
    };
    let items = [
        (
            "alice",
            grants(
                list(&["database_creator"]),
                vec![("production", list(&["reader", "writer"]))],
            ),
        ),
        (
            "user@example.com",
            grants(list(&[]), vec![("staging", list(&["reader"]))]),
        ),
        (
            "sets",
            grants(
                AttributeValue::Ss(vec!["b".into(), "a".into()]),
                vec![(
                    "orders",
                    AttributeValue::Ss(vec!["writer".into(), "reader".into()]),
                )],
            ),
        ),
        ("broken", AttributeValue::S("admin".into())),
    ];
    for (subject, grants) in items {
        db.put_item()
            .table_name(TABLE)
            .item("subject", AttributeValue::S(subject.into()))
            .item("grants", grants)
            .send()
            .await
            .expect("PutItem");
    }
}

fn dynamodb_options(grants_extra: &str) -> Options {
    Options {
        grants_extra: format!("dynamodb: {{ table: {TABLE}, timeout: 2s }}\n  {grants_extra}"),
        ..Options::default()
    }
    .with_grants_source("dynamodb")
}

#[test]
fn grants_come_from_items_with_the_email_fallback_and_the_policies() {
    let (_moto, runtime) = setup();
    runtime.block_on(async {
        create_table_with_items(&client().await).await;
        let h = Harness::start_with(dynamodb_options("")).await;
        let grants_of = async |claims: serde_json::Value| {
            let token = h.idp.sign(&h.claims(claims));
            segment(&minted(&h.check_bearer(&token).await), 1)["evs:grants"].clone()
        };
        assert_eq!(
            grants_of(json!({"sub": "alice"})).await,
            json!({"global": ["database_creator"], "databases": {"production": ["reader", "writer"]}})
        );
        assert_eq!(
            grants_of(json!({"sub": "00u1", "email": "user@example.com"})).await,
            json!({"global": [], "databases": {"staging": ["reader"]}})
        );
        assert_eq!(
            grants_of(json!({"sub": "sets"})).await,
            json!({"global": ["a", "b"], "databases": {"orders": ["reader", "writer"]}})
        );
        assert_eq!(grants_of(json!({"sub": "nobody"})).await, json!({"global": [], "databases": {}}));

        let broken = h.idp.sign(&h.claims(json!({"sub": "broken"})));
        let denial = denied(&h.check_bearer(&broken).await);
        assert_eq!(denial.http_status, 503);
        assert!(denial.description().contains("malformed"), "{}", denial.description());

        let strict = Harness::start_with(dynamodb_options("unknown_subject: deny\n  malformed_item: empty")).await;
        let nobody = strict.idp.sign(&strict.claims(json!({"sub": "nobody"})));
        assert_eq!(denied(&strict.check_bearer(&nobody).await).http_status, 403);
        let broken = strict.idp.sign(&strict.claims(json!({"sub": "broken"})));
        let claims = segment(&minted(&strict.check_bearer(&broken).await), 1);
        assert_eq!(claims["evs:grants"], json!({"global": [], "databases": {}}));
    });
}

#[test]
fn a_hundred_concurrent_checks_for_a_new_subject_cause_one_get_item() {
    let (_moto, runtime) = setup();
    runtime.block_on(async {
        create_table_with_items(&client().await).await;
        let h = Harness::start_with(dynamodb_options("")).await;
        let token = h.idp.sign(&h.claims(json!({"sub": "alice"})));
        let checks: Vec<_> = (0..100)
            .map(|_| {
                let (h, token) = (&h, &token);
                async move { minted(&h.check_bearer(token).await) }
            })
            .collect();
        let mut done = 0;
        for minted in crate::support::join_all(checks).await {
            assert_eq!(segment(&minted, 1)["sub"], "alice");
            done += 1;
        }
        assert_eq!(done, 100);
        let metrics = h.metrics().await;
        assert!(
            metrics.contains("evs_tv_grants_store_requests_total{result=\"found\"} 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("evs_tv_grants_cache_hits_total 99\n"),
            "{metrics}"
        );
    });
}

#[test]
fn a_store_outage_serves_cached_subjects_for_stale_for_then_503_and_recovers_without_restart() {
    let (mut moto, runtime) = setup();
    runtime.block_on(async {
        create_table_with_items(&client().await).await;
        let h = Harness::start_with(dynamodb_options(
            "cache: { ttl: 1s, negative_ttl: 1s, stale_for: 2s }",
        ))
        .await;
        let alice = h.idp.sign(&h.claims(json!({"sub": "alice"})));
        let bob = h.idp.sign(&h.claims(json!({"sub": "user@example.com"})));
        minted(&h.check_bearer(&alice).await);

        moto.kill();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // Past its ttl, alice's grants keep serving from the cache; bob was never cached.
        let claims = segment(&minted(&h.check_bearer(&alice).await), 1);
        assert_eq!(claims["evs:grants"]["global"], json!(["database_creator"]));
        let denial = denied(&h.check_bearer(&bob).await);
        assert_eq!(denial.http_status, 503);
        assert_eq!(denial.body["error"], "temporarily_unavailable");
        let metrics = h.metrics().await;
        assert!(
            metrics.contains("evs_tv_grants_stale_served_total 1\n"),
            "{metrics}"
        );

        // Beyond ttl + stale_for: 503, never empty grants.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(denied(&h.check_bearer(&alice).await).http_status, 503);

        // The store comes back (empty, as a restarted moto is): everyone recovers.
        let restarted = Moto::start_on(moto.port());
        create_table_with_items(&client().await).await;
        assert_eq!(
            segment(&minted(&h.check_bearer(&alice).await), 1)["sub"],
            "alice"
        );
        assert_eq!(
            segment(&minted(&h.check_bearer(&bob).await), 1)["sub"],
            "user@example.com"
        );
        drop(restarted);
    });
}

#[test]
fn check_config_probe_verifies_the_table_and_its_key() {
    let (moto, runtime) = setup();
    let dir = crate::support::TempDir::new("probe");
    // --probe also fetches each issuer's keys: a real (demo) IdP on loopback.
    let idp = runtime
        .block_on(evs_token_vending::demo::DemoIdp::start())
        .unwrap();
    let config_for = |table: &str| {
        dir.write(
            &format!("{table}.yaml"),
            &format!(
                "token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{}' }} ]
grants: {{ source: dynamodb, dynamodb: {{ table: {table} }} }}
",
                idp.issuer()
            ),
        )
    };
    runtime.block_on(async {
        let db = client().await;
        create_table_with_items(&db).await;
        create_table(&db, "keyed-by-id", "id").await;
    });
    let probe = |table: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_evs-token-vending"))
            .args(["check-config", "--probe", "--config"])
            .arg(config_for(table))
            .env("AWS_ENDPOINT_URL_DYNAMODB", &moto.endpoint)
            .output()
            .unwrap();
        (
            output.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    };
    let (code, out) = probe(TABLE);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("keyed by `subject`"), "{out}");
    assert!(out.contains("publishes 1 usable key(s)"), "{out}");
    let (code, out) = probe("keyed-by-id");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("grants.dynamodb.table") && out.contains("\"id\""),
        "{out}"
    );
    let (code, out) = probe("no-such-table");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ResourceNotFound"), "{out}");
    // Without --probe nothing is contacted.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_evs-token-vending"))
        .args(["check-config", "--config"])
        .arg(config_for("no-such-table"))
        .output()
        .unwrap();
    assert!(output.status.success());
    drop(runtime);
}

#[test]
fn readyz_and_metrics_stay_answerable_during_the_outage() {
    let (mut moto, runtime) = setup();
    runtime.block_on(async {
        create_table_with_items(&client().await).await;
        let h = Harness::start_with(dynamodb_options("")).await;
        moto.kill();
        let ready = get_json(&h.http_url("/readyz")).await;
        assert_eq!(ready["ready"], true);
        let nobody = h.idp.sign(&h.claims(json!({"sub": "carol"})));
        assert_eq!(denied(&h.check_bearer(&nobody).await).http_status, 503);
    });
}

#[test]
fn through_envoy_the_backend_sees_grants_from_the_table() {
    let (_moto, runtime) = setup();
    runtime.block_on(async {
        create_table_with_items(&client().await).await;
        let stack = crate::support::envoy::Stack::start_with(dynamodb_options("")).await;
        let token = stack
            .harness
            .idp
            .sign(&stack.harness.claims(json!({"sub": "alice"})));
        let reply = stack
            .call(&[&format!("Bearer {token}")])
            .await
            .expect("reaches the backend");
        assert!(reply.verified, "{}", reply.error);
        let claims: serde_json::Value = serde_json::from_str(&reply.claims_json).unwrap();
        assert_eq!(
            claims["evs:grants"]["databases"]["production"],
            json!(["reader", "writer"])
        );
    });
}

/// 32 concurrent Checks for one cached subject, from `ttl` on, for `for_how_long`: every
/// answer must be OK (stale grants); returns how many were.
async fn busy_subject(h: &Harness, token: &str, for_how_long: Duration) -> usize {
    let until = tokio::time::Instant::now() + for_how_long;
    let workers: Vec<_> = (0..32)
        .map(|_| async move {
            let mut ok = 0;
            while tokio::time::Instant::now() < until {
                let answer = h.check_bearer(token).await;
                let code = answer.status.as_ref().map_or(-1, |s| s.code);
                assert_eq!(
                    code, 0,
                    "a cached subject denied during the outage: {answer:?}"
                );
                ok += 1;
            }
            ok
        })
        .collect();
    crate::support::join_all(workers).await.into_iter().sum()
}

#[test]
fn a_busy_cached_subject_never_gets_503_while_the_store_hangs_or_is_gone() {
    let moto = Moto::start();
    let front_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let front_addr = front_listener.local_addr().unwrap();
    // Moto is a child process; the runtime comes after.
    use_test_aws_credentials(&[("AWS_ENDPOINT_URL_DYNAMODB", &format!("http://{front_addr}"))]);
    let runtime = crate::support::runtime();
    let mut moto = moto;
    runtime.block_on(async {
        let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", moto.port()).parse().unwrap();
        let front = crate::support::store_front::StoreFront::start(front_listener, upstream);
        create_table_with_items(&client().await).await;
        let h = Harness::start_with(Options {
            grants_extra: format!(
                "dynamodb: {{ table: {TABLE}, timeout: 250ms }}\n  cache: {{ ttl: 500ms, stale_for: 30s }}"
            ),
            ..Options::default()
        }
        .with_grants_source("dynamodb"))
        .await;
        let alice = h.idp.sign(&h.claims(json!({"sub": "alice"})));
        minted(&h.check_bearer(&alice).await);

        // The store accepts and never answers.
        front.hang();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let answered = busy_subject(&h, &alice, Duration::from_secs(3)).await;
        let calls = front.calls_while_hanging();
        // Backoff 200 ms, 400 ms, 800 ms, 1.6 s after each 250 ms timeout: a handful of calls in
        // 3 s, not one per waiting Check.
        assert!(
            (1..=8).contains(&calls),
            "{calls} store calls during 3 s of hanging for {answered} OK answers"
        );
        assert!(answered > 100, "{answered} answers in 3 s: the busy subject was slowed down");

        // The store is gone: connections are refused.
        moto.kill();
        front.forward();
        let gone = busy_subject(&h, &alice, Duration::from_secs(2)).await;
        assert!(gone > 100, "{gone} answers in 2 s with the store gone");
        // Every one of them was answered from the stale grants.
        let metrics = h.metrics().await;
        let stale: usize = metrics
            .lines()
            .find_map(|l| l.strip_prefix("evs_tv_grants_stale_served_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(stale >= answered + gone, "{stale} stale answers for {} Checks", answered + gone);
    });
}
