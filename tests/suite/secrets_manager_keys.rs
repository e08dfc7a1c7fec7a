//! Signing keys from AWS Secrets Manager (`signing.secrets_manager`), against a real
//! Secrets Manager wire API served by moto on loopback.

use std::time::Duration;

use crate::support::moto::Moto;
use crate::support::{Harness, Options, get_json, minted, segment};
use aws_sdk_secretsmanager::Client;
use evs_testkit::process::use_test_aws_credentials;
use evs_token_vending::{SigningAlgorithm, SigningKey};
use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn client(endpoint: &str) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    Client::new(&config)
}

fn key_set(active: &str, keys: &[(&str, &SigningKey)]) -> String {
    let keys: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|(name, key)| ((*name).to_owned(), key.to_pkcs8_pem().unwrap().into()))
        .collect();
    json!({"active": active, "keys": keys}).to_string()
}

async fn put(client: &Client, value: String) {
    client
        .put_secret_value()
        .secret_id("evs-signing-keys")
        .secret_string(value)
        .send()
        .await
        .expect("PutSecretValue");
}

async fn eventually(what: &str, condition: impl AsyncFnMut() -> bool) {
    crate::support::eventually(what, Duration::from_secs(10), condition).await
}

#[test]
fn keys_rotate_through_the_secret_without_a_restart_and_bad_versions_are_refused() {
    // First thing: no other thread exists yet.
    use_test_aws_credentials(&[]);
    let mut moto = Moto::start();
    runtime().block_on(async {
        let sm = client(&moto.endpoint).await;
        let first = SigningKey::generate_rsa(2048).unwrap();
        let second = SigningKey::generate(SigningAlgorithm::Es256, 0).unwrap();
        sm.create_secret()
            .name("evs-signing-keys")
            .secret_string(key_set("first", &[("first", &first)]))
            .send()
            .await
            .expect("CreateSecret");

        let h = Harness::start_with(Options {
            signing: format!(
                "{{ secrets_manager: {{ secret_id: evs-signing-keys, endpoint_url: '{}', poll_interval: 1s }} }}",
                moto.endpoint
            ),
            ..Options::default()
        })
        .await;
        let token = h.user_token();
        let kid_now = async || segment(&minted(&h.check_bearer(&token).await), 0)["kid"].clone();
        let jwks_kids = async || {
            let jwks = get_json(&h.http_url("/.well-known/jwks.json")).await;
            jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].clone()).collect::<Vec<_>>()
        };
        let warnings = async || {
            let ready = get_json(&h.http_url("/readyz")).await;
            ready["warnings"].to_string()
        };
        assert_eq!(kid_now().await, first.kid());

        // Publish the next key, then activate it: both by new secret versions.
        put(&sm, key_set("first", &[("first", &first), ("second", &second)])).await;
        eventually("second key published", async || jwks_kids().await.len() == 2).await;
        assert_eq!(kid_now().await, first.kid());
        put(&sm, key_set("second", &[("first", &first), ("second", &second)])).await;
        eventually("second key signing", async || kid_now().await == second.kid()).await;
        assert_eq!(segment(&minted(&h.check_bearer(&token).await), 0)["alg"], "ES256");

        // A broken version keeps the last good keys and is reported.
        put(&sm, "{\"active\": \"second\", \"keys\": ".to_owned()).await;
        eventually("broken version reported", async || warnings().await.contains("not valid JSON")).await;
        assert_eq!(kid_now().await, second.kid());
        assert_eq!(jwks_kids().await.len(), 2);

        // Secrets Manager unreachable: still signing with the last good keys.
        moto.kill();
        eventually("outage reported", async || warnings().await.contains("GetSecretValue failed")).await;
        assert_eq!(kid_now().await, second.kid());
    });
}

#[test]
fn a_missing_secret_is_a_start_up_error_naming_it() {
    // First thing: no other thread exists yet.
    use_test_aws_credentials(&[]);
    let moto = Moto::start();
    runtime().block_on(async {
        let dir = crate::support::TempDir::new("sm");
        dir.write("grants.yaml", "subjects:\n  someone@example.com: {}\n");
        let yaml = format!(
            "token: {{ issuer: https://tv.example.com }}
signing: {{ secrets_manager: {{ secret_id: no-such-secret, endpoint_url: '{}' }} }}
trust: [ {{ issuer: 'http://127.0.0.1:9' }} ]
grants: {{ file: grants.yaml }}
listen: {{ authz: 127.0.0.1:0, http: 127.0.0.1:0 }}
",
            moto.endpoint
        );
        let config = evs_token_vending::Config::from_yaml(&yaml, dir.path()).unwrap();
        let error = evs_token_vending::start(config)
            .await
            .err()
            .expect("must not start")
            .to_string();
        assert!(
            error.starts_with("signing: secret no-such-secret: GetSecretValue failed"),
            "{error}"
        );
        assert!(error.contains("ResourceNotFound"), "{error}");
    });
}
