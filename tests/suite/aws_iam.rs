//! AWS IAM callers, end to end: a role created and assumed with the real AWS CLI against
//! moto, its token made by `aws eks get-token`, verified through a signature-checking STS
//! front (`support/sts_front.py`), grants from the role's tags — through the Check and
//! through a real Envoy.

use std::time::Duration;

use crate::support::aws_iam::{ACCOUNT, IamWorld, SERVER_ID, role_arn, token_of, url_of};
use crate::support::{Harness, denied, minted, segment};
use evs_testkit::process::use_test_aws_credentials;
use serde_json::json;

/// The tags the tests' role carries, as `aws iam tag-role --tags` takes them.
const TAGS: &[&str] = &[
    "Key=evs:global-roles,Value=database_creator",
    "Key=evs:db:orders,Value=reader+writer",
    "Key=evs:db:staging,Value=reader writer",
];

/// The world, then the runtime: environment changes happen before any thread exists. The
/// sidecar's own credentials are moto's default account's, and it asks moto's STS (as it
/// would ask AWS's) which account that is.
fn setup(tags: &[&str]) -> (IamWorld, tokio::runtime::Runtime) {
    let world = IamWorld::start(tags);
    // Moto, the front and the CLI are child processes; the runtime comes after.
    use_test_aws_credentials(&[("AWS_ENDPOINT_URL_STS", &world.moto.endpoint)]);
    let runtime = crate::support::runtime();
    (world, runtime)
}

fn expected_grants() -> serde_json::Value {
    json!({
        "global": ["database_creator"],
        "databases": { "orders": ["reader", "writer"], "staging": ["reader", "writer"] }
    })
}

#[test]
fn an_iam_role_reaches_the_backend_through_envoy_with_grants_from_its_tags() {
    let (world, runtime) = setup(TAGS);
    let token = world.eks_token(SERVER_ID);
    runtime.block_on(async {
        let stack = crate::support::envoy::Stack::start_with(world.options("")).await;
        let reply = stack
            .call(&[&format!("Bearer {token}")])
            .await
            .expect("the call goes through");
        assert!(
            reply.verified,
            "backend verified the token: {}",
            reply.error
        );
        let claims: serde_json::Value = serde_json::from_str(&reply.claims_json).unwrap();
        assert_eq!(claims["sub"], role_arn());
        assert_eq!(claims["aws:account"], ACCOUNT);
        assert_eq!(claims["aws:session"], "pod-7");
        assert!(claims["aws:user_id"].as_str().unwrap().ends_with(":pod-7"));
        assert_eq!(claims["evs:grants"], expected_grants());
        let signed_at = url_of(&token)
            .split("X-Amz-Date=")
            .nth(1)
            .map(|rest| rest[..16].to_owned())
            .unwrap();
        let window_end = crate::support::now() + 15 * 60;
        assert!(
            claims["exp"].as_u64().unwrap() <= window_end,
            "exp stays within the token's window (signed {signed_at})"
        );
        assert!(!reply.claims_json.contains(&world.session.access_key));
        assert_eq!(world.sts_calls().await, 1);
    });
}

#[test]
fn a_tampered_signature_or_a_token_for_another_server_is_refused_by_sts_with_401() {
    let (world, runtime) = setup(TAGS);
    let good = world.eks_token(SERVER_ID);
    let for_other = world.eks_token("another-service");
    runtime.block_on(async {
        let h = Harness::start_with(world.options("")).await;
        let url = url_of(&good);
        let last = url.chars().last().unwrap();
        let flipped = if last == '0' { '1' } else { '0' };
        let tampered = token_of(&format!("{}{flipped}", &url[..url.len() - 1]));
        for (token, what) in [(tampered, "tampered"), (for_other, "another server id")] {
            let before = world.sts_calls().await;
            let answer = denied(&h.check_bearer(&token).await);
            assert_eq!(answer.http_status, 401, "{what}");
            assert!(
                answer.description().contains("STS refused"),
                "{what}: {}",
                answer.description()
            );
            answer.assert_does_not_echo(&token);
            assert_eq!(
                world.sts_calls().await,
                before + 1,
                "{what}: asked STS once"
            );
        }
        let ok = minted(&h.check_bearer(&good).await);
        assert_eq!(segment(&ok, 1)["sub"], role_arn());
    });
}

#[test]
fn malformed_iam_tokens_get_401_and_cost_no_sts_call() {
    let (world, runtime) = setup(TAGS);
    let url = url_of(&world.eks_token(SERVER_ID));
    let front = world.sts_endpoint.clone();
    let query = url.split_once('?').unwrap().1.to_owned();
    let at = |host: &str| format!("{host}/?{query}");
    let credential = query
        .split('&')
        .find(|p| p.starts_with("X-Amz-Credential="))
        .unwrap()
        .to_owned();
    let date = query
        .split('&')
        .find(|p| p.starts_with("X-Amz-Date="))
        .unwrap()
        .to_owned();
    let old = chrono_like_minutes_ago(20);
    let cases: Vec<(String, &str)> = vec![
        ("k8s-aws-v1.!!!".into(), "not base64url"),
        (token_of("not a url"), "not a URL"),
        (token_of(&at("http://sts.amazonaws.com")), "not https"),
        (
            token_of(&at("https://sts.amazonaws.com.evil.test")),
            "not an AWS STS endpoint",
        ),
        (
            token_of(&format!("https://evil.test/sts.amazonaws.com?{query}")),
            "not an AWS STS endpoint",
        ),
        (
            token_of(&at("https://sts.amazonaws.com@evil.test")),
            "user information",
        ),
        (
            token_of(&at("https://sts.amazonaws.com:444")),
            "names a port",
        ),
        (token_of(&format!("{front}/x?{query}")), "path is not /"),
        (
            token_of(&url.replace("GetCallerIdentity", "AssumeRole")),
            "not GetCallerIdentity",
        ),
        (
            token_of(&format!(
                "{url}&{}",
                credential.replace("X-Amz-Credential", "x-amz-credential")
            )),
            "appears twice",
        ),
        (
            token_of(&format!("{url}&RoleSessionName=x")),
            "does not take",
        ),
        (
            token_of(&url.replace("host%3Bx-k8s-aws-id", "host")),
            "x-k8s-aws-id is not",
        ),
        (
            token_of(&url.replace(&date, &format!("X-Amz-Date={old}"))),
            "expired",
        ),
        (
            token_of(&url.replace(&date, "X-Amz-Date=yesterday")),
            "X-Amz-Date is malformed",
        ),
        (
            token_of(&url.replace("X-Amz-Expires=60", "X-Amz-Expires=9999")),
            "X-Amz-Expires",
        ),
        (
            format!("k8s-aws-v1.{}", "A".repeat(5000)),
            "larger than 4 KiB",
        ),
    ];
    runtime.block_on(async {
        let h = Harness::start_with(world.options("")).await;
        for (token, reason) in cases {
            denied(&h.check_bearer(&token).await).assert_refused(401, reason);
        }
        assert_eq!(world.sts_calls().await, 0, "no refused token reached STS");
    });
}

#[test]
fn thirty_two_concurrent_checks_with_one_token_cost_one_sts_call() {
    let (world, runtime) = setup(TAGS);
    let token = world.eks_token(SERVER_ID);
    runtime.block_on(async {
        let h = Harness::start_with(world.options("")).await;
        let answers =
            crate::support::join_all((0..32).map(|_| h.check_bearer(&token)).collect()).await;
        for answer in &answers {
            assert_eq!(segment(&minted(answer), 1)["evs:grants"], expected_grants());
        }
        minted(&h.check_bearer(&token).await);
        assert_eq!(world.sts_calls().await, 1);
    });
}

#[test]
fn a_role_tags_outage_serves_the_last_grants_then_503() {
    let (mut world, runtime) = setup(TAGS);
    let token = world.eks_token(SERVER_ID);
    runtime.block_on(async {
        let h = Harness::start_with(world.options("cache: { ttl: 1s, stale_for: 2s }")).await;
        assert_eq!(
            segment(&minted(&h.check_bearer(&token).await), 1)["evs:grants"],
            expected_grants()
        );
        world.moto.kill();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let stale = minted(&h.check_bearer(&token).await);
        assert_eq!(
            segment(&stale, 1)["evs:grants"],
            expected_grants(),
            "stale grants serve"
        );
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let answer = denied(&h.check_bearer(&token).await);
        assert_eq!(answer.http_status, 503, "{}", answer.description());
    });
}

#[test]
fn a_role_without_grants_tags_gets_the_unknown_subject_policy() {
    let (world, runtime) = setup(&["Key=team,Value=payments"]);
    let token = world.eks_token(SERVER_ID);
    runtime.block_on(async {
        let h = Harness::start_with(world.options("unknown_subject: deny")).await;
        assert_eq!(denied(&h.check_bearer(&token).await).http_status, 403);
    });
}

#[test]
fn the_iam_token_command_makes_a_token_the_sidecar_accepts() {
    let (world, runtime) = setup(TAGS);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_evs-token-vending"))
        .args([
            "iam-token",
            "--server-id",
            SERVER_ID,
            "--region",
            "us-east-1",
        ])
        .env("AWS_ACCESS_KEY_ID", &world.session.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &world.session.secret)
        .env("AWS_SESSION_TOKEN", &world.session.token)
        .env("AWS_ENDPOINT_URL_STS", &world.sts_endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("k8s-aws-v1."));
    runtime.block_on(async {
        let h = Harness::start_with(world.options("")).await;
        let ok = minted(&h.check_bearer(&token).await);
        assert_eq!(segment(&ok, 1)["sub"], role_arn());
        assert_eq!(world.sts_calls().await, 1);
    });
}

/// `YYYYMMDDTHHMMSSZ` of `minutes` ago.
fn chrono_like_minutes_ago(minutes: u64) -> String {
    let then = time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes as i64);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        then.year(),
        u8::from(then.month()),
        then.day(),
        then.hour(),
        then.minute(),
        then.second()
    )
}

#[test]
fn sts_answers_that_are_not_sts_answers_get_503() {
    // No real STS misbehaves on demand: a loopback endpoint answers each way in turn.
    let runtime = crate::support::runtime();
    runtime.block_on(async {
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let answers = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = answers.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    match n {
                        0 => (StatusCode::OK, "<xml>not json</xml>").into_response(),
                        1 => (StatusCode::OK, "x".repeat(5 * 1024 * 1024)).into_response(),
                        2 => (
                            StatusCode::FOUND,
                            [(header::LOCATION, "http://127.0.0.1:9/")],
                        )
                            .into_response(),
                        3 => (StatusCode::TOO_MANY_REQUESTS, "Throttling").into_response(),
                        _ => (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let h = Harness::start_with(crate::support::Options {
            extra_config: format!(
                "aws_iam: {{ enabled: true, server_id: {SERVER_ID}, sts_endpoint: '{endpoint}', accounts: [ {{ account: '{ACCOUNT}' }} ] }}"
            ),
            ..Default::default()
        })
        .await;
        for (i, what) in ["not JSON", "5 MiB", "a redirect", "throttled", "a 500"]
            .into_iter()
            .enumerate()
        {
            // Failures are never remembered, so every Check reaches the endpoint again.
            let token = token_of(&format!(
                "{endpoint}/?Action=GetCallerIdentity&Version=2011-06-15\
                 &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIATEST%2F{i}\
                 &X-Amz-Date={date}&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id\
                 &X-Amz-Signature=00",
                date = chrono_like_minutes_ago(0),
            ));
            let answer = denied(&h.check_bearer(&token).await);
            assert_eq!(answer.http_status, 503, "{what}: {}", answer.description());
        }
        assert_eq!(answers.load(std::sync::atomic::Ordering::SeqCst), 5);
    });
}
