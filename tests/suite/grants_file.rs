//! A grants file that goes wrong while the sidecar runs — emptied, nulled, stripped of its
//! subjects, torn mid-write, deleted — never empties the grants: the last good ones keep
//! serving, `/readyz` says why, and the refusal is counted.

use std::time::Duration;

use crate::support::{Harness, Options, eventually, get_json, minted, segment};
use serde_json::json;

async fn damaged(
    content: Option<&'static str>,
) -> (Option<&'static str>, serde_json::Value, String) {
    let h = Harness::start().await;
    let token = h.user_token();
    let path = h.dir.path().join("grants.yaml");
    match content {
        Some(text) => std::fs::write(&path, text).unwrap(),
        None => std::fs::remove_file(&path).unwrap(),
    }
    eventually(
        "the change is refused",
        Duration::from_secs(10),
        async || {
            get_json(&h.http_url("/readyz")).await["warnings"]
                .to_string()
                .contains("grants file change refused")
        },
    )
    .await;
    let grants = segment(&minted(&h.check_bearer(&token).await), 1)["evs:grants"].clone();
    (content, grants, h.metrics().await)
}

#[tokio::test]
async fn an_emptied_nulled_torn_or_deleted_grants_file_keeps_the_last_good_grants() {
    let cases = vec![
        damaged(Some("")),
        damaged(Some("null\n")),
        damaged(Some("subjects: {}\n")),
        damaged(Some("subjects:\n  user@example.com:\n    global: [datab")),
        damaged(None),
    ];
    for (content, grants, metrics) in crate::support::join_all(cases).await {
        assert_eq!(grants["global"], json!(["database_creator"]), "{content:?}");
        assert!(
            metrics.contains("evs_tv_grants_file_reloads_refused_total 1"),
            "{content:?}: {metrics}"
        );
    }
}

#[tokio::test]
async fn an_empty_grants_file_is_taken_when_allowed() {
    let h = Harness::start_with(Options {
        grants_extra: "allow_empty: true".into(),
        ..Default::default()
    })
    .await;
    let token = h.user_token();
    h.dir.write("grants.yaml", "subjects: {}\n");
    eventually(
        "the empty file is taken",
        Duration::from_secs(10),
        async || {
            segment(&minted(&h.check_bearer(&token).await), 1)["evs:grants"]["global"] == json!([])
        },
    )
    .await;
}
