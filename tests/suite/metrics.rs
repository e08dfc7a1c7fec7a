//! `/metrics` read the way Prometheus reads it: after a known mix of Checks, the official
//! parsers (`prometheus_client` from PyPI, OpenMetrics and classic) accept the exposition, and
//! its counters and histogram counts equal what was sent.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::{Harness, Options, denied, minted};
use serde_json::{Value, json};

/// The venv's Python with `prometheus_client` installed.
fn python_with_prometheus_client() -> std::path::PathBuf {
    crate::support::python::python_with("prometheus_client==0.26.0", "prometheus_client")
}

/// The samples of `text` as the official parsers read them: (name, labels) → value.
fn parse(text: &str) -> (BTreeMap<String, String>, BTreeMap<(String, String), Value>) {
    let dir = crate::support::TempDir::new("metrics");
    let file = dir.write("metrics.txt", text);
    let output = Command::new(python_with_prometheus_client())
        .arg(crate::support::repo("tests/support/parse_metrics.py"))
        .arg(&file)
        .output()
        .expect("run the parser");
    assert!(
        output.status.success(),
        "the Prometheus parsers refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).expect("parser output");
    let types = parsed["types"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, kind)| (name.clone(), kind.as_str().unwrap().to_owned()))
        .collect();
    let samples = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sample| {
            let labels: BTreeMap<&str, &str> = sample[1]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
                .collect();
            let labels = labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            (
                (sample[0].as_str().unwrap().to_owned(), labels),
                sample[2].clone(),
            )
        })
        .collect();
    (types, samples)
}

#[tokio::test]
async fn metrics_parse_with_the_official_parsers_and_count_exactly_what_was_sent() {
    let dead_port = crate::support::free_port();
    let h = Harness::start_with(Options {
        grants_extra: "unknown_subject: deny".into(),
        more_trust: format!("  - {{ issuer: 'http://127.0.0.1:{dead_port}' }}"),
        ..Options::default()
    })
    .await;
    let token = h.user_token();
    for _ in 0..3 {
        minted(&h.check_bearer(&token).await);
    }
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{signed}.{flipped}{}", &signature[1..]);
    assert_eq!(denied(&h.check_bearer(&tampered).await).http_status, 401);
    assert_eq!(denied(&h.check(&[]).await).http_status, 401);
    let stranger = h.idp.sign(&h.claims(json!({"sub": "nobody@example.com"})));
    assert_eq!(denied(&h.check_bearer(&stranger).await).http_status, 403);
    let unreachable = h
        .idp
        .sign(&h.claims(json!({"iss": format!("http://127.0.0.1:{dead_port}")})));
    assert_eq!(denied(&h.check_bearer(&unreachable).await).http_status, 503);

    let (types, samples) = parse(&h.metrics().await);
    let value = |name: &str, labels: &str| -> f64 {
        let found = samples.get(&(name.to_owned(), labels.to_owned()));
        found
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("no sample {name}{{{labels}}}: {samples:#?}"))
    };
    for (outcome, sent) in [
        ("ok", 3.0),
        ("unauthenticated", 2.0),
        ("forbidden", 1.0),
        ("unavailable", 1.0),
    ] {
        let label = format!("outcome={outcome}");
        assert_eq!(value("evs_tv_checks_total", &label), sent, "{outcome}");
        assert_eq!(
            value("evs_tv_check_duration_seconds_count", &label),
            sent,
            "{outcome}"
        );
        // The last bucket holds every observation.
        let inf = format!("le=+Inf,{label}");
        assert_eq!(value("evs_tv_check_duration_seconds_bucket", &inf), sent);
    }
    // Each stage counts the Checks that reached it: all 7 were extracted; 6 had a credential
    // to verify; 4 verified and looked up grants; 3 had grants and were minted.
    for (stage, reached) in [
        ("extract", 7.0),
        ("authenticate", 6.0),
        ("grants", 4.0),
        ("mint", 3.0),
    ] {
        let label = format!("stage={stage}");
        assert_eq!(
            value("evs_tv_stage_duration_seconds_count", &label),
            reached,
            "{stage}"
        );
    }
    assert_eq!(value("evs_tv_token_cache_total", "event=miss"), 1.0);
    assert_eq!(value("evs_tv_token_cache_total", "event=hit"), 2.0);
    assert_eq!(value("evs_tv_token_cache_entries", ""), 1.0);
    assert_eq!(value("evs_tv_published_keys", ""), 1.0);
    assert_eq!(
        value(
            "evs_tv_build_info",
            &format!("version={}", env!("CARGO_PKG_VERSION"))
        ),
        1.0
    );
    // The IdP's keys were fetched; the dead issuer's never were.
    let fetched = value(
        "evs_tv_issuer_keys_age_seconds",
        &format!("issuer={}", h.idp.issuer()),
    );
    assert!((0.0..60.0).contains(&fetched), "{fetched}");
    let never = format!("issuer=http://127.0.0.1:{dead_port}");
    assert_eq!(
        samples[&("evs_tv_issuer_keys_age_seconds".to_owned(), never)],
        json!("+Inf")
    );
    assert!(value("evs_tv_key_fetches_total", "kind=jwks,result=ok") >= 1.0);
    assert!(value("process_resident_memory_bytes", "") > 1e6);
    assert!(value("process_open_fds", "") > 0.0);
    for (family, kind) in [
        ("evs_tv_checks", "counter"),
        ("evs_tv_check_duration_seconds", "histogram"),
        ("evs_tv_stage_duration_seconds", "histogram"),
        ("process_cpu_seconds", "counter"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    // No label carries a subject or a token.
    for (name, labels) in samples.keys() {
        assert!(
            !labels.contains("@example.com") && !labels.contains("eyJ"),
            "{name}{{{labels}}}"
        );
    }
}
