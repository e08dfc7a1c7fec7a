//! The Grafana dashboard and the Prometheus alert rules that ship in `deploy/` work as shipped:
//! the rules have the PrometheusRule shape the Prometheus Operator loads, the dashboard is
//! Grafana JSON with a query in every panel, and every metric either of them names is one a
//! running sidecar exports on `/metrics` (a renamed metric breaks this test, not a 3 a.m. page).

use std::collections::BTreeSet;

use crate::support::Harness;
use crate::support::kustomize::{find, render};
use serde_json::Value;

/// Every `evs_tv_…` and `process_…` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = ["evs_tv_", "process_"]
        .iter()
        .filter_map(|prefix| rest.find(prefix))
        .min()
    {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names a sidecar serves, read from its `/metrics`.
async fn exported_names() -> BTreeSet<String> {
    let h = Harness::start().await;
    // One Check, so the per-Check series hold a sample.
    crate::support::minted(&h.check_bearer(&h.user_token()).await);
    h.metrics()
        .await
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn assert_balanced(expr: &str) {
    let mut depth = 0i32;
    for c in expr.chars() {
        depth += match c {
            '(' | '{' | '[' => 1,
            ')' | '}' | ']' => -1,
            _ => 0,
        };
        assert!(depth >= 0, "unbalanced: {expr}");
    }
    assert_eq!(depth, 0, "unbalanced: {expr}");
}

/// Each alert rule: its expression, after checking the rule's shape.
fn rule_expressions(docs: &[Value]) -> Vec<String> {
    let rule = find(docs, "PrometheusRule", "evs-token-vending");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    assert!(!groups.is_empty());
    let mut alerts = BTreeSet::new();
    let mut expressions = Vec::new();
    for group in groups {
        assert!(group["name"].is_string(), "{group}");
        for rule in group["rules"].as_array().expect("rules") {
            let alert = rule["alert"].as_str().expect("alert name");
            assert!(alerts.insert(alert.to_owned()), "{alert} twice");
            let expr = rule["expr"].as_str().expect("expr").trim().to_owned();
            assert_balanced(&expr);
            let duration = rule["for"].as_str().expect("for");
            assert!(
                humantime::parse_duration(duration).is_ok(),
                "{alert}: for {duration}"
            );
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{alert}"
            );
            assert!(rule["annotations"]["summary"].is_string(), "{alert}");
            expressions.push(expr);
        }
    }
    // What the operator pages on: denials, 503s, stale issuer keys, refused key changes and an
    // old signing key.
    for wanted in [
        "EvsTokenVendingDenialSpike",
        "EvsTokenVendingUnavailable",
        "EvsTokenVendingIssuerKeysStale",
        "EvsTokenVendingKeyRingNotReloading",
        "EvsTokenVendingSigningKeyOld",
    ] {
        assert!(alerts.contains(wanted), "no alert {wanted}: {alerts:?}");
    }
    expressions
}

/// Each dashboard query, after checking the dashboard's shape.
fn dashboard_expressions(docs: &[Value]) -> Vec<String> {
    let map = find(docs, "ConfigMap", "evs-token-vending-dashboard");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = map["data"]["grafana-dashboard.json"]
        .as_str()
        .expect("the dashboard file");
    let dashboard: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "evs-token-vending");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut expressions = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{panel}"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr").to_owned();
            assert_balanced(&expr);
            expressions.push(expr);
        }
    }
    let titles: String = panels.iter().map(|p| p["title"].to_string()).collect();
    for wanted in [
        "outcome",
        "Stage latency",
        "cache hit",
        "store",
        "Issuer keys",
        "key age",
    ] {
        assert!(titles.contains(wanted), "no panel on {wanted}: {titles}");
    }
    expressions
}

#[tokio::test]
async fn the_dashboard_and_the_alert_rules_name_only_metrics_the_sidecar_exports() {
    let docs = render("overlays/example");
    let exported = exported_names().await;
    let shipped = [
        ("alert rules", rule_expressions(&docs)),
        ("dashboard", dashboard_expressions(&docs)),
    ];
    for (what, expressions) in shipped {
        for expr in expressions {
            let names = metric_names(&expr);
            assert!(
                !names.is_empty(),
                "{what}: `{expr}` names no metric of ours"
            );
            for name in names {
                assert!(
                    exported.contains(&name),
                    "{what}: `{expr}` reads {name}, which /metrics does not serve; it serves {exported:#?}"
                );
            }
        }
    }
}

#[test]
fn metric_names_are_read_whole_from_promql() {
    assert_eq!(
        metric_names(r#"sum(rate(evs_tv_checks_total{outcome="ok"}[5m])) / process_open_fds > 0"#),
        ["evs_tv_checks_total", "process_open_fds"]
    );
}
