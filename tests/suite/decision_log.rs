//! The decision log: one JSON line per decision, with the fields an operator greps for, every
//! denial always and successes sampled, and never a piece of a token or key.

use std::time::Duration;

use crate::support::{Harness, Options, TempDir, denied, eventually, minted, segment};
use evs_token_vending::{Config, SigningKey};
use serde_json::{Value, json};

fn logging(sample_ok: &str) -> Options {
    Options {
        grants_extra: "unknown_subject: deny".into(),
        extra_config: format!(
            "telemetry: {{ decision_log: {{ enabled: true, sample_ok: {sample_ok}, path: decisions.jsonl }} }}"
        ),
        ..Options::default()
    }
}

fn lines(h: &Harness) -> Vec<String> {
    std::fs::read_to_string(h.dir.path().join("decisions.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn wait_for_lines(h: &Harness, count: usize) -> Vec<Value> {
    eventually(
        &format!("{count} decision lines"),
        Duration::from_secs(5),
        async || lines(h).len() >= count,
    )
    .await;
    lines(h)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Every 16-character window of `secret` (step 4): a line holding any of them holds a piece.
fn assert_holds_no_piece_of(lines: &[String], what: &str, secret: &str) {
    let chars: Vec<char> = secret.chars().collect();
    for start in (0..chars.len().saturating_sub(16)).step_by(4) {
        let piece: String = chars[start..start + 16].iter().collect();
        for line in lines {
            assert!(
                !line.contains(&piece),
                "a decision line holds a piece of {what}: {line}"
            );
        }
    }
}

#[tokio::test]
async fn every_check_leaves_one_line_with_its_outcome_and_no_piece_of_a_secret() {
    let h = Harness::start_with(logging("1")).await;
    let token = h.user_token();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let bearer = format!("Bearer {token}");
    let first = minted(
        &h.check(&[
            ("authorization", &bearer),
            ("x-request-id", "req-ok-1"),
            ("traceparent", parent),
        ])
        .await,
    );
    let second = minted(
        &h.check(&[("authorization", &bearer), ("x-request-id", "req-ok-2")])
            .await,
    );
    // The same token with its signature's first characters changed.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{signed}.{flipped}{}", &signature[1..]);
    let bad = h
        .check(&[
            ("authorization", &format!("Bearer {tampered}")),
            ("x-request-id", "req-bad-signature"),
        ])
        .await;
    assert_eq!(denied(&bad).http_status, 401);
    let none = h.check(&[("x-request-id", "req-no-credential")]).await;
    assert_eq!(denied(&none).http_status, 401);
    let stranger = h.idp.sign(&h.claims(json!({"sub": "nobody@example.com"})));
    let forbidden = h
        .check(&[
            ("authorization", &format!("Bearer {stranger}")),
            ("x-request-id", "req-stranger"),
        ])
        .await;
    assert_eq!(denied(&forbidden).http_status, 403);

    let decisions = wait_for_lines(&h, 5).await;
    assert_eq!(decisions.len(), 5, "one line per Check: {decisions:#?}");
    let by_id = |id: &str| {
        decisions
            .iter()
            .find(|d| d["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {decisions:#?}"))
    };
    let year = &format!("{}-", time::OffsetDateTime::now_utc().year());
    for decision in &decisions {
        assert_eq!(decision["front_door"], "ext_authz");
        let time = decision["time"].as_str().unwrap();
        assert!(time.starts_with(year) && time.ends_with('Z'), "{time}");
        assert!(decision["stages"]["extract_us"].is_u64(), "{decision}");
    }

    let ok = by_id("req-ok-1");
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["credential"], "bearer");
    assert_eq!(ok["issuer"], h.idp.issuer());
    assert_eq!(ok["subject"], "user@example.com");
    assert_eq!(ok["kid"], segment(&first, 0)["kid"]);
    assert_eq!(ok["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ok["cache_hit"], false);
    for stage in ["authenticate_us", "grants_us", "mint_us"] {
        assert!(ok["stages"][stage].is_u64(), "{stage} in {ok}");
    }
    let repeat = by_id("req-ok-2");
    assert_eq!(repeat["cache_hit"], true);
    assert!(repeat.get("trace_id").is_none());

    let bad = by_id("req-bad-signature");
    assert_eq!(
        (&bad["outcome"], &bad["status"]),
        (&json!("unauthenticated"), &json!(401))
    );
    assert!(
        bad["reason"].as_str().unwrap().contains("signature"),
        "{bad}"
    );
    assert!(bad.get("subject").is_none() && bad.get("mint_us").is_none());
    let none = by_id("req-no-credential");
    assert_eq!(none["status"], 401);
    assert!(none.get("credential").is_none(), "{none}");
    let stranger_line = by_id("req-stranger");
    assert_eq!(
        (&stranger_line["outcome"], &stranger_line["status"]),
        (&json!("forbidden"), &json!(403))
    );

    let raw = lines(&h);
    for (what, secret) in [
        ("the IdP token", &token),
        ("the tampered token", &tampered),
        ("the stranger's token", &stranger),
        ("the first minted token", &first),
        ("the second minted token", &second),
    ] {
        assert_holds_no_piece_of(&raw, what, secret);
    }
}

#[tokio::test]
async fn with_sample_ok_zero_only_denials_are_written() {
    let h = Harness::start_with(logging("0")).await;
    let token = h.user_token();
    for _ in 0..3 {
        minted(&h.check_bearer(&token).await);
    }
    // Denials after the successes: once they are written, any success line would be too.
    h.check(&[("x-request-id", "denied-1")]).await;
    h.check(&[("x-request-id", "denied-2")]).await;
    let decisions = wait_for_lines(&h, 2).await;
    let ids: Vec<&Value> = decisions.iter().map(|d| &d["request_id"]).collect();
    assert_eq!(ids, [&json!("denied-1"), &json!("denied-2")]);
}

#[test]
fn a_sample_share_outside_zero_to_one_is_a_config_error_with_its_key() {
    let dir = TempDir::new("decision-log-config");
    dir.write("grants.yaml", "subjects: {}\n");
    let key = SigningKey::generate_rsa(2048).unwrap();
    dir.write("key.pem", &key.to_pkcs8_pem().unwrap());
    let yaml = "token: { issuer: https://tv.example.com, audience: [evidentsource] }
signing: { key_file: key.pem }
trust: [{ issuer: 'https://idp.example.com' }]
grants: { source: file, file: grants.yaml, allow_empty: true }
telemetry: { decision_log: { enabled: true, sample_ok: 1.5 } }
";
    let error = Config::from_yaml(yaml, dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("telemetry.decision_log.sample_ok: must be between 0 and 1"),
        "{error}"
    );
}

/// `/exchange` decisions are logged like Checks, with `front_door: exchange`, the grant type as
/// the credential, the OAuth error as the outcome of a refusal, and the stages' times.
#[tokio::test]
async fn exchange_decisions_are_logged_with_their_grant_type_and_oauth_outcome() {
    let h = Harness::start_with(logging("1")).await;
    let token = h.user_token();
    let exchange = async |subject_token: &str, request_id: &str| {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            )
            .append_pair("subject_token", subject_token)
            .append_pair(
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            )
            .finish();
        let response = reqwest::Client::new()
            .post(h.http_url("/exchange"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-request-id", request_id)
            .body(body)
            .send()
            .await
            .expect("POST /exchange");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("JSON answer"))
    };
    let (status, issued) = exchange(&token, "ex-ok").await;
    assert_eq!(status, 200, "{issued}");
    let (status, refused) = exchange("not.a.jwt", "ex-bad").await;
    assert_eq!(status, 400, "{refused}");

    let decisions = wait_for_lines(&h, 2).await;
    let ok = decisions
        .iter()
        .find(|d| d["request_id"] == "ex-ok")
        .unwrap();
    assert_eq!(ok["front_door"], "exchange");
    assert_eq!(ok["credential"], "token_exchange");
    assert_eq!((&ok["outcome"], &ok["status"]), (&json!("ok"), &json!(200)));
    assert_eq!(ok["subject"], "user@example.com");
    assert_eq!(ok["issuer"], h.idp.issuer());
    let access_token = issued["access_token"].as_str().unwrap();
    assert_eq!(ok["kid"], segment(access_token, 0)["kid"]);
    assert_eq!(ok["cache_hit"], false);
    for stage in ["extract_us", "authenticate_us", "grants_us", "mint_us"] {
        assert!(ok["stages"][stage].is_u64(), "{stage} in {ok}");
    }
    let bad = decisions
        .iter()
        .find(|d| d["request_id"] == "ex-bad")
        .unwrap();
    assert_eq!(
        (&bad["outcome"], &bad["status"]),
        (&json!("invalid_grant"), &json!(400))
    );
    assert!(bad.get("subject").is_none(), "{bad}");
    assert!(bad["stages"]["authenticate_us"].is_u64(), "{bad}");
    assert!(bad["stages"].get("mint_us").is_none(), "{bad}");
    let raw = lines(&h);
    assert_holds_no_piece_of(&raw, "the IdP token", &token);
    assert_holds_no_piece_of(&raw, "the minted token", access_token);
}
