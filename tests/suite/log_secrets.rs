//! No secret reaches the log at any level: the real binary at `RUST_LOG=trace`, signing with a
//! key from Secrets Manager and reading grants from DynamoDB (both moto), swaps a token; its
//! whole stderr must hold none of the AWS credentials, the signing key, or either token. And
//! the log line of a Check carries Envoy's request id, as Envoy sends it (`header_map`).

use std::time::Duration;

use crate::support::moto::Moto;
use crate::support::process::ServeProcess;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use evs_testkit::process::use_test_aws_credentials;
use evs_token_vending::SigningKey;
use evs_token_vending::demo::DemoIdp;

const SECRET_ACCESS_KEY: &str = "logScanSecretAccessKey0123456789abcdefXYZ";
const SESSION_TOKEN: &str = "logScanSessionToken/FwoGZXIvYXdzEXAMPLE+session0123456789";

#[test]
fn at_trace_level_the_log_holds_no_credential_key_or_token() {
    // First thing: no other thread exists yet.
    use_test_aws_credentials(&[]);
    let moto = Moto::start();
    let runtime = crate::support::runtime();
    runtime.block_on(async {
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&moto.endpoint)
            .load()
            .await;
        let key = SigningKey::generate_rsa(2048).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        aws_sdk_secretsmanager::Client::new(&aws)
            .create_secret()
            .name("evs-signing-keys")
            .secret_string(serde_json::json!({"active": "k1", "keys": {"k1": pem}}).to_string())
            .send()
            .await
            .expect("CreateSecret");
        let db = aws_sdk_dynamodb::Client::new(&aws);
        db.create_table()
            .table_name("evs-grants")
            .key_schema(KeySchemaElement::builder().attribute_name("subject").key_type(KeyType::Hash).build().unwrap())
            .attribute_definitions(AttributeDefinition::builder().attribute_name("subject").attribute_type(ScalarAttributeType::S).build().unwrap())
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .expect("CreateTable");
        db.put_item()
            .table_name("evs-grants")
            .item("subject", AttributeValue::S("user@example.com".into()))
            .item("grants", AttributeValue::M([("global".to_owned(), AttributeValue::L(vec![AttributeValue::S("reader".into())]))].into()))
            .send()
            .await
            .expect("PutItem");

        let idp = DemoIdp::start().await.unwrap();
        let serve = ServeProcess::spawn(
            "log-secrets",
            &format!(
                "token: {{ issuer: https://tv.example.com }}
signing: {{ secrets_manager: {{ secret_id: evs-signing-keys, endpoint_url: '{moto}', region: us-east-1 }} }}
trust: [ {{ issuer: '{issuer}' }} ]
grants: {{ source: dynamodb, dynamodb: {{ table: evs-grants, endpoint_url: '{moto}', region: us-east-1 }} }}
",
                moto = moto.endpoint,
                issuer = idp.issuer()
            ),
            |command, dir| {
                let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
                command
                    .env("RUST_LOG", "trace")
                    .env("AWS_ACCESS_KEY_ID", "AKIALOGSCANEXAMPLE01")
                    .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
                    .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
                    .stderr(log);
            },
        );
        serve.wait_listening().await;
        let authz = serve.authz;
        let idp_token = idp.token_for("user@example.com", None, Duration::from_secs(600));
        let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{authz}")).await.unwrap();
        let answer = client
            .check(evs_testkit::check_request(&[("authorization", &format!("Bearer {idp_token}"))]))
            .await
            .unwrap()
            .into_inner();
        let minted = evs_testkit::minted_token(&answer).expect("a token was minted");
        assert_eq!(crate::support::segment(&minted, 1)["evs:grants"]["global"], serde_json::json!(["reader"]));
        let mut serve = serve;
        let _ = serve.child.kill();
        let _ = serve.child.wait();
        let log = std::fs::read_to_string(serve.dir.path().join("stderr.log")).unwrap();
        assert!(log.contains("TRACE") || log.contains("DEBUG"), "the log ran at trace level");
        let key_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let secrets = [
            ("the AWS secret access key", SECRET_ACCESS_KEY.to_owned()),
            ("the AWS session token", SESSION_TOKEN.to_owned()),
            ("the signing key", key_body[40..80].to_owned()),
            ("the IdP token's signature", idp_token.rsplit('.').next().unwrap().to_owned()),
            ("the minted token's signature", minted.rsplit('.').next().unwrap().to_owned()),
        ];
        for (what, secret) in secrets {
            assert!(!log.contains(&secret), "{what} appears in the trace log");
        }
    });
}

/// A CheckRequest as Envoy sends it with `encode_raw_headers: true`: headers in `header_map`
/// as raw bytes, `headers` empty.
fn raw_check_request(
    headers: &[(&str, &[u8])],
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let mut request = evs_testkit::check_request(&[]);
    let http = request
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.header_map = Some(HeaderMap {
        headers: headers
            .iter()
            .map(|(key, value)| HeaderValue {
                key: (*key).to_owned(),
                raw_value: value.to_vec(),
                ..Default::default()
            })
            .collect(),
    });
    request
}

#[test]
fn a_denial_is_logged_with_the_request_id_envoy_sent_in_header_map() {
    crate::support::runtime().block_on(async {
        let idp = DemoIdp::start().await.unwrap();
        let serve = ServeProcess::trusting("request-id", idp.issuer(), "", |command, dir| {
            let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
            command.env("RUST_LOG", "info").stderr(log);
        });
        serve.wait_listening().await;
        let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{}", serve.authz))
            .await
            .unwrap();
        for (id, token) in [
            (
                b"6f1c2c0e-envoy-request-id".as_slice(),
                b"Bearer not-a-jwt".as_slice(),
            ),
            (
                b"forged\nrequest_id=admin".as_slice(),
                b"Bearer also-not-a-jwt".as_slice(),
            ),
        ] {
            let answer = client
                .check(raw_check_request(&[
                    ("authorization", token),
                    ("x-request-id", id),
                    (
                        "traceparent",
                        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    ),
                ]))
                .await
                .unwrap()
                .into_inner();
            assert_ne!(answer.status.unwrap().code, 0);
        }
        let mut serve = serve;
        let _ = serve.child.kill();
        let _ = serve.child.wait();
        let log = std::fs::read_to_string(serve.dir.path().join("stderr.log")).unwrap();
        let denials: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("request denied"))
            .collect();
        assert_eq!(denials.len(), 2, "{log}");
        assert!(
            denials[0].contains("request_id=6f1c2c0e-envoy-request-id")
                && denials[0].contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
            "the request and trace ids: {log}"
        );
        assert!(
            denials[1].contains("request_id=-"),
            "a forged id is not logged: {log}"
        );
    });
}
