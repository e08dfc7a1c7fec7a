//! The AWS IAM door: genuine callers of other accounts and partitions, principals never
//! served, STS answers no real STS gives, throttling, hanging STS, and the hosts a token may
//! make the sidecar call.
//!
//! Every token here is made by the real AWS CLI and verified by the STS front (SigV4 checked
//! as STS checks it) before moto or a queued answer says who signed it.

use std::time::Duration;

use serde_json::json;

use crate::support::aws_iam::{
    ACCOUNT, IamWorld, OTHER_ACCOUNT, ROLE, SERVER_ID, role_arn, token_of, url_of,
};
use crate::support::{self, Harness, denied, minted, segment};
use evs_testkit::process::use_test_aws_credentials;

/// Our role's tags.
const OUR_TAGS: &[&str] = &["Key=evs:db:orders,Value=reader+writer"];

/// The world, then the runtime (see `tests/suite/aws_iam.rs`).
fn setup() -> (IamWorld, tokio::runtime::Runtime) {
    let world = IamWorld::start(OUR_TAGS);
    // Moto, the front and the CLI are child processes; the runtime comes after.
    use_test_aws_credentials(&[("AWS_ENDPOINT_URL_STS", &world.moto.endpoint)]);
    (world, support::runtime())
}

/// A token of `orders-writer` in [`OTHER_ACCOUNT`], a role tagged with a global grant.
fn token_of_a_namesake(world: &IamWorld) -> String {
    let theirs = world.foreign_session(
        OTHER_ACCOUNT,
        &[ROLE],
        &["Key=evs:global-roles,Value=database_creator"],
    );
    world.eks_token_as(&theirs, SERVER_ID)
}

fn grants_of(token: &str) -> serde_json::Value {
    segment(token, 1)["evs:grants"].clone()
}

/// The move: create a role named like ours in one's own account, sign with it. Role names
/// are not unique across AWS; only the whole ARN is.
#[test]
fn a_role_named_like_ours_in_another_account_is_refused_and_gets_none_of_our_grants() {
    let (world, runtime) = setup();
    let foreign = token_of_a_namesake(&world);
    let ours = world.eks_token(SERVER_ID);
    runtime.block_on(async {
        let h = Harness::start_with(world.options("")).await;
        let answer = denied(&h.check_bearer(&foreign).await);
        answer.assert_refused(403, "account");
        answer.assert_does_not_echo(&foreign);
        let token = minted(&h.check_bearer(&ours).await);
        assert_eq!(segment(&token, 1)["sub"], role_arn());
        assert_eq!(
            grants_of(&token),
            json!({"global": [], "databases": {"orders": ["reader", "writer"]}})
        );
    });
}

/// Cross-account callers on purpose: the account is listed, and its roles' tags are read in
/// that account through the role named for it — never ours, never by bare name.
#[test]
fn a_listed_account_is_served_with_its_own_roles_tags_read_through_its_tags_role() {
    let (world, runtime) = setup();
    let theirs = world.foreign_session(
        OTHER_ACCOUNT,
        &[ROLE, "evs-tag-reader"],
        &["Key=evs:db:ledger,Value=reader"],
    );
    let foreign = world.eks_token_as(&theirs, SERVER_ID);
    let reader = format!("arn:aws:iam::{OTHER_ACCOUNT}:role/evs-tag-reader");
    runtime.block_on(async {
        let listed =
            format!(", accounts: [ {{ account: '{OTHER_ACCOUNT}', tags_role_arn: '{reader}' }} ]");
        let h = Harness::start_with(world.options_with("", &listed)).await;
        let token = minted(&h.check_bearer(&foreign).await);
        let claims = segment(&token, 1);
        assert_eq!(
            claims["sub"],
            format!("arn:aws:iam::{OTHER_ACCOUNT}:role/{ROLE}")
        );
        assert_eq!(claims["aws:account"], OTHER_ACCOUNT);
        assert_eq!(
            grants_of(&token),
            json!({"global": [], "databases": {"ledger": ["reader"]}}),
            "the grants of their role, not of ours"
        );
    });
}

#[test]
fn a_listed_account_without_a_tags_role_gets_no_grants_from_tags() {
    let (world, runtime) = setup();
    let foreign = token_of_a_namesake(&world);
    runtime.block_on(async {
        let listed = format!(", accounts: [ {{ account: '{OTHER_ACCOUNT}' }} ]");
        let h = Harness::start_with(world.options_with("unknown_subject: deny", &listed)).await;
        // The unknown-subject policy: no tag look-up gave it grants.
        denied(&h.check_bearer(&foreign).await).assert_refused(403, "no grants");
    });
}

fn identity_answer(arn: &str, account: &str, user_id: &str) -> serde_json::Value {
    json!({"GetCallerIdentityResponse": {"GetCallerIdentityResult": {
        "Arn": arn, "Account": account, "UserId": user_id}}})
}

/// What STS may answer that moto cannot be made to: each correctly signed token gets one
/// queued answer, and the sidecar's verdict is checked (see `sts_front.py`).
#[test]
fn each_sts_answer_gets_the_verdict_it_deserves() {
    let (world, runtime) = setup();
    let session = "AROA3XFRBF535PLBIFPI4:pod-7";
    let cases = [
        (
            400,
            json!({"Error": {"Code": "Throttling", "Message": "Rate exceeded", "Type": "Sender"}}),
            503,
            "throttling",
        ),
        (
            200,
            identity_answer(&format!("arn:aws:iam::{ACCOUNT}:root"), ACCOUNT, ACCOUNT),
            403,
            "root",
        ),
        // moto's federation tokens answer GetCallerIdentity as its default user, so the
        // federated-user answer real STS gives is queued.
        (
            200,
            identity_answer(
                &format!("arn:aws:sts::{ACCOUNT}:federated-user/bob"),
                ACCOUNT,
                &format!("{ACCOUNT}:bob"),
            ),
            403,
            "federated",
        ),
        (
            200,
            identity_answer(
                &format!("arn:aws-cn:sts::{ACCOUNT}:assumed-role/{ROLE}/pod-7"),
                ACCOUNT,
                session,
            ),
            403,
            "partition",
        ),
        (
            200,
            identity_answer(
                &format!("arn:evil:sts::{ACCOUNT}:assumed-role/{ROLE}/pod-7"),
                ACCOUNT,
                session,
            ),
            503,
            "unavailable",
        ),
        (
            200,
            identity_answer(
                &format!("arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/pod-7"),
                ACCOUNT,
                "",
            ),
            503,
            "unavailable",
        ),
        (
            200,
            identity_answer(
                &format!("arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/pod-7"),
                ACCOUNT,
                "AROA3XFRBF535PLBIFPI4:someone-else",
            ),
            503,
            "unavailable",
        ),
    ];
    // One token per case: a verified token is remembered, a refused one never is.
    let tokens: Vec<String> = cases.iter().map(|_| world.eks_token(SERVER_ID)).collect();
    runtime.block_on(async {
        let h = Harness::start_with(world.options("")).await;
        for ((status, document, expected, words), token) in cases.into_iter().zip(&tokens) {
            world.answer_next(status, document).await;
            denied(&h.check_bearer(token).await).assert_refused(expected, words);
        }
        let metrics = h.metrics().await;
        assert!(
            metrics.contains(r#"evs_tv_key_fetches_total{kind="sts",result="throttled"} 1"#),
            "{metrics}"
        );
    });
}

/// With `aws_iam.sts_endpoints`, a token naming any other host — even AWS's own — is 401
/// and nothing is called; padded base64 (`==`, which upstream's RawURL decoding refuses)
/// is refused before any call too.
#[test]
fn only_listed_sts_hosts_are_called_and_only_rawurl_tokens_are_read() {
    let (world, runtime) = setup();
    let good = world.eks_token(SERVER_ID);
    let query = url_of(&good).split_once('?').unwrap().1.to_owned();
    let at_aws = token_of(&format!("https://sts.us-east-1.amazonaws.com/?{query}"));
    let padded = format!("{good}==");
    runtime.block_on(async {
        let mut options = world.options("");
        options.extra_config = format!(
            "aws_iam: {{ enabled: true, server_id: {SERVER_ID}, sts_endpoints: ['{}'] }}",
            world.sts_endpoint
        );
        let h = Harness::start_with(options).await;
        for (token, reason) in [
            (&at_aws, "not one of aws_iam.sts_endpoints"),
            (&padded, "not base64url without padding"),
        ] {
            denied(&h.check_bearer(token).await).assert_refused(401, reason);
        }
        assert_eq!(world.sts_calls().await, 0, "no refused token reached STS");
        minted(&h.check_bearer(&good).await);
        assert_eq!(world.sts_calls().await, 1);
    });
}

/// An STS that accepts and never answers, with Envoy's usual 1 s deadline and the CPU
/// busy with many such Checks at once: each gets a 503 of ours, never the gRPC
/// DEADLINE_EXCEEDED that Envoy would turn into its own error.
#[test]
fn a_hanging_sts_is_always_503_before_the_grpc_deadline() {
    let (world, runtime) = setup();
    let good = world.eks_token(SERVER_ID);
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hanging.local_addr().unwrap());
    let query = url_of(&good).split_once('?').unwrap().1.to_owned();
    let token = token_of(&format!("{endpoint}/?{query}"));
    runtime.block_on(async {
        let mut options = world.options("");
        options.extra_config = format!(
            "aws_iam: {{ enabled: true, server_id: {SERVER_ID}, sts_endpoint: '{endpoint}', sts_timeout: 30s }}"
        );
        let h = Harness::start_with(options).await;
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..24 {
            let mut client = h.client.clone();
            let token = token.clone();
            calls.spawn(async move {
                let mut request = tonic::Request::new(evs_testkit::check_request(&[(
                    "authorization",
                    &format!("Bearer {token}"),
                )]));
                request.set_timeout(Duration::from_secs(1));
                client.check(request).await
            });
        }
        while let Some(answer) = calls.join_next().await {
            let answer = answer
                .unwrap()
                .expect("an answer of ours, not DEADLINE_EXCEEDED")
                .into_inner();
            assert_eq!(denied(&answer).http_status, 503);
        }
    });
    drop(hanging);
}

/// aws-iam-authenticator's token verifier cases (`pkg/token`), asked of the real sidecar:
/// the ones refused before STS cost no STS call; the STS replies it refuses are 503 here
/// (STS, not the caller, is at fault).
#[test]
fn aws_iam_authenticators_verifier_cases_are_refused_here_too() {
    let (world, runtime) = setup();
    let good = url_of(&world.eks_token(SERVER_ID));
    let query = good.split_once('?').unwrap().1.to_owned();
    let aws = |rest: &str| token_of(&format!("https://sts.amazonaws.com{rest}"));
    let before_sts = [
        ("k8s-aws-v2.asdfasdfa".to_owned(), "malformed token"),
        ("k8s-aws-v1.decodingerror".to_owned(), "base64url"),
        (token_of(":ab:cd.af:/asda"), "not a URL"),
        (token_of("http://"), "not a URL"),
        (token_of("https://google.com"), "not an AWS STS endpoint"),
        (
            token_of("https://sts.cn-north-1.amazonaws.com.cn/abc"),
            "partition",
        ),
        (aws("/abc"), "path is not /"),
        (aws("/?NoInWhiteList=abc"), "does not take"),
        (aws("/?action=get&action=post"), "appears twice"),
        (aws("/?action=NotGetCallerIdenity"), "lacks"),
        (
            aws(&format!(
                "/?{}",
                query.replace("x-k8s-aws-id", "x-k8s-aws-i")
            )),
            "x-k8s-aws-id is not",
        ),
        (
            aws(&format!(
                "/?{}",
                query.replace("X-Amz-Expires=60", "X-Amz-Expires=60%gh")
            )),
            "X-Amz-Expires",
        ),
        (
            aws(&format!("/?{query}&x-amz-credential=eve")),
            "appears twice",
        ),
    ];
    let replies = [
        json!("xxxx"),
        identity_answer("arn", "1000", "userid"),
        identity_answer(
            &format!("arn:aws:iam::{ACCOUNT}:role/Alice"),
            ACCOUNT,
            "not:vailid:userid",
        ),
    ];
    let tokens: Vec<String> = replies.iter().map(|_| world.eks_token(SERVER_ID)).collect();
    runtime.block_on(async {
        let h = Harness::start_with(world.options("")).await;
        for (token, reason) in &before_sts {
            denied(&h.check_bearer(token).await).assert_refused(401, reason);
        }
        assert_eq!(world.sts_calls().await, 0, "no refused token reached STS");
        for (reply, token) in replies.into_iter().zip(&tokens) {
            world.answer_next(200, reply).await;
            denied(&h.check_bearer(token).await).assert_refused(503, "unavailable");
        }
    });
}
