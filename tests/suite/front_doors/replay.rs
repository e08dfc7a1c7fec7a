//! One truth for every replica: two real `serve` processes sharing a replay store in
//! DynamoDB (moto's wire API) accept an assertion once between them — sequentially and when
//! twenty uses race — refuse with 503 while the store is down, and mint again once it is back.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::aws_iam::aws;
use crate::support::moto::Moto;
use crate::support::process::ServeProcess;
use crate::support::{now, runtime};

const TABLE: &str = "evs-replay";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The replay table, keyed by `jti` (S), made with the real AWS CLI.
fn create_table(moto: &Moto) {
    create_table_keyed(moto, TABLE, "jti");
}

fn create_table_keyed(moto: &Moto, table: &str, key: &str) {
    aws(
        &moto.endpoint,
        &[
            "dynamodb",
            "create-table",
            "--table-name",
            table,
            "--attribute-definitions",
            &format!("AttributeName={key},AttributeType=S"),
            "--key-schema",
            &format!("AttributeName={key},KeyType=HASH"),
            "--billing-mode",
            "PAY_PER_REQUEST",
        ],
    );
}

/// A replica trusting `issuer` for assertions, its replay store in moto's DynamoDB.
fn replica(name: &str, issuer: &str, moto: &Moto) -> ServeProcess {
    let rest = format!(
        "token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{issuer}', assertion: true }} ]
grants: {{ file: grants.yaml }}
exchange: {{ max_concurrent: 32, replay_store: {{ dynamodb: {{ table: {TABLE}, region: us-east-1 }} }} }}
"
    );
    let endpoint = moto.endpoint.clone();
    ServeProcess::spawn(name, &rest, move |command, dir| {
        dir.write("grants.yaml", evs_token_vending::demo::SAMPLE_GRANTS);
        command
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint);
    })
}

/// Sends `jwt` to a replica's `/exchange`, as a JWT-bearer grant or as a token exchange.
async fn redeem(replica: &ServeProcess, jwt: &str, as_bearer_grant: bool) -> (u16, Value) {
    let form = if as_bearer_grant {
        vec![("grant_type", JWT_BEARER), ("assertion", jwt)]
    } else {
        vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", jwt),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ]
    };
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/exchange", replica.http))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("POST /exchange");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[test]
fn two_replicas_sharing_a_dynamodb_replay_store_accept_an_assertion_once() {
    let mut moto = Moto::start();
    // No other thread exists yet (moto is a child process); `check-config --probe`
    // runs as a child of this process and needs the test credentials.
    evs_testkit::process::use_test_aws_credentials(&[]);
    create_table(&moto);
    runtime().block_on(async {
        let idp = evs_token_vending::demo::DemoIdp::start().await.unwrap();
        let serial = std::sync::atomic::AtomicU64::new(0);
        let assertion = || {
            let n = serial.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            idp.sign(&json!({
                "iss": idp.issuer(), "sub": "batch@example.com",
                "aud": "https://tv.example.com/exchange", "exp": now() + 300,
                "jti": format!("replica-test-{}-{n}", now()),
            }))
        };
        let (a, b) = (
            replica("replica-a", idp.issuer(), &moto),
            replica("replica-b", idp.issuer(), &moto),
        );
        a.wait_listening().await;
        b.wait_listening().await;

        let once = assertion();
        assert_eq!(redeem(&a, &once, true).await.0, 200);
        for (replica, path) in [(&b, true), (&b, false), (&a, false)] {
            let (status, body) = redeem(replica, &once, path).await;
            assert_eq!(status, 400, "{body}");
            assert!(
                body["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("already used")
            );
        }

        let raced = assertion();
        let uses = (0..20).map(|i| {
            let replica = if i % 2 == 0 { &a } else { &b };
            redeem(replica, &raced, i % 3 != 0)
        });
        let statuses: Vec<u16> = futures_util::future::join_all(uses)
            .await
            .into_iter()
            .map(|(status, _)| status)
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 400),
            "{statuses:?}"
        );

        // `check-config --probe` checks the table's key schema.
        create_table_keyed(&moto, "evs-replay-by-id", "id");
        for (table, ok) in [(TABLE, true), ("evs-replay-by-id", false)] {
            let config = std::fs::read_to_string(a.config()).unwrap().replace(
                &format!("table: {TABLE}, region: us-east-1"),
                &format!(
                    "table: {table}, region: us-east-1, endpoint_url: '{}'",
                    moto.endpoint
                ),
            );
            let path = a.dir.write(&format!("probe-{table}.yaml"), &config);
            let (passed, printed) = crate::support::run_cli(vec![
                "check-config".into(),
                "--probe".into(),
                "--config".into(),
                path.into(),
            ])
            .await;
            assert_eq!(passed, ok, "{table}: {printed}");
            let expected = if ok {
                "keyed by jti"
            } else {
                "must be keyed by `jti`"
            };
            assert!(printed.contains(expected), "{table}: {printed}");
        }

        // The store down: no token on an unrecorded use (fail closed).
        let port = moto.port();
        moto.kill();
        let (status, body) = redeem(&a, &assertion(), true).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");

        // Back (moto restarts empty: the table is made again), tokens again.
        let moto = Moto::start_on(port);
        create_table(&moto);
        let mut minted = false;
        for _ in 0..50 {
            if redeem(&b, &assertion(), true).await.0 == 200 {
                minted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(minted, "the replicas mint again once the store is back");
    });
}
