//! Kubernetes workloads as callers: service-account tokens shaped exactly as Kubernetes ≥ 1.29
//! projects them (audience-bound, with the nested `kubernetes.io` object), from an issuer with
//! `kind: kubernetes` — the demo IdP stands in for the cluster's service-account issuer,
//! serving discovery and JWKS as the API server does — and TokenReview against a shim.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Harness, Options, TempDir, denied, minted, now, run_cli, segment};

const AUDIENCE: &str = "evidentsource";

/// A projected token for `namespace`/`name` as the kubelet mounts it, with `changes` merged
/// (null removes a claim).
fn projected(h: &Harness, namespace: &str, name: &str, changes: Value) -> String {
    let mut claims = json!({
        "aud": [AUDIENCE],
        "exp": now() + 3600,
        "iat": now(),
        "nbf": now(),
        "iss": h.idp.issuer(),
        "jti": format!("{}-{namespace}-{name}", now()),
        "kubernetes.io": {
            "namespace": namespace,
            "node": { "name": "ip-10-0-1-23.ec2.internal", "uid": "5c1b8e2e-3a53-4f7e-9c3e-2f0b8a2d1c11" },
            "pod": { "name": format!("{name}-7f9c6d5b8-x2k4q"), "uid": "0e5b1d7f-8c6a-4e0b-b7a3-4d2f9e1c6a55" },
            "serviceaccount": { "name": name, "uid": "a3f1c2d4-6b7e-4f80-9a1b-2c3d4e5f6a7b" },
        },
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
    });
    for (key, value) in changes.as_object().unwrap() {
        match value {
            Value::Null => drop(claims.as_object_mut().unwrap().remove(key)),
            _ => claims[key] = value.clone(),
        }
    }
    h.idp.sign(&claims)
}

async fn cluster(grants: &str, trust_more: &str) -> Harness {
    Harness::start_with(Options {
        trust_extra: format!("kind: kubernetes\n    audiences: [{AUDIENCE}]\n    {trust_more}"),
        grants_source: "[rules]".into(),
        grants_extra: grants.into(),
        ..Default::default()
    })
    .await
}

const BY_NAMESPACE: &str = "rules: [ { attribute: k8s_namespace, match: 'shop', grant: { databases: { orders: [writer] } } }, \
     { attribute: k8s_service_account, match: '*-reader', grant: { databases: { '{1}': [reader] } } } ]";

#[tokio::test]
async fn a_projected_service_account_token_is_an_identity_with_grants_by_namespace() {
    let h = cluster(BY_NAMESPACE, "").await;
    let token = minted(
        &h.check_bearer(&projected(&h, "shop", "orders", json!({})))
            .await,
    );
    let claims = segment(&token, 1);
    assert_eq!(claims["sub"], "system:serviceaccount:shop:orders");
    assert_eq!(
        claims["evs:grants"],
        json!({"global": [], "databases": {"orders": ["writer"]}})
    );
    let reader = minted(
        &h.check_bearer(&projected(&h, "ops", "ledger-reader", json!({})))
            .await,
    );
    assert_eq!(
        segment(&reader, 1)["evs:grants"],
        json!({"global": [], "databases": {"ledger": ["reader"]}})
    );
}

#[tokio::test]
async fn tokens_that_are_not_what_the_cluster_issues_are_refused_with_the_reason() {
    let h = cluster(BY_NAMESPACE, "").await;
    let legacy = h.idp.sign(&json!({
        "iss": h.idp.issuer(),
        "kubernetes.io/serviceaccount/namespace": "shop",
        "kubernetes.io/serviceaccount/secret.name": "orders-token-abcde",
        "kubernetes.io/serviceaccount/service-account.name": "orders",
        "kubernetes.io/serviceaccount/service-account.uid": "a3f1c2d4",
        "sub": "system:serviceaccount:shop:orders",
    }));
    let cases = [
        (legacy, "legacy"),
        (
            projected(
                &h,
                "shop",
                "orders",
                json!({"aud": ["https://kubernetes.default.svc"]}),
            ),
            "audience",
        ),
        (
            projected(
                &h,
                "shop",
                "orders",
                json!({"sub": "system:serviceaccount:shop:admin"}),
            ),
            "does not agree",
        ),
        (
            projected(&h, "shop", "orders", json!({"sub": "orders"})),
            "system:serviceaccount",
        ),
        (
            projected(&h, "shop", "orders", json!({"kubernetes.io": null})),
            "kubernetes.io claim is missing",
        ),
        (
            projected(
                &h,
                "shop",
                "orders",
                json!({"exp": now() - 120, "iat": now() - 4000, "nbf": now() - 4000}),
            ),
            "expired",
        ),
        (projected(&h, "shop", "orders", json!({"exp": null})), "exp"),
    ];
    for (token, reason) in cases {
        let answer = denied(&h.check_bearer(&token).await);
        answer.assert_refused(401, reason);
        answer.assert_does_not_echo(&token);
    }
}

#[tokio::test]
async fn check_config_refuses_the_api_servers_audience_and_legacy_issuers() {
    let dir = TempDir::new("k8s-config");
    dir.write("grants.yaml", evs_token_vending::demo::SAMPLE_GRANTS);
    let config = dir.write(
        "config.yaml",
        "token: { issuer: https://tv.example.com }
signing: { dev_generate: true }
trust:
  - { issuer: 'https://oidc.eks.eu-west-1.amazonaws.com/id/ABC', kind: kubernetes, audiences: ['https://kubernetes.default.svc'] }
  - { issuer: 'https://oidc.eks.eu-west-1.amazonaws.com/id/DEF', kind: kubernetes }
  - { issuer: 'kubernetes/serviceaccount', kind: kubernetes, audiences: [evidentsource] }
grants: { file: grants.yaml }
",
    );
    let (passed, printed) = run_cli(vec![
        "check-config".into(),
        "--config".into(),
        config.into(),
    ])
    .await;
    assert!(!passed, "{printed}");
    for expected in [
        "trust[0].audiences[0]",
        "API server's audience",
        "trust[1].audiences",
        "trust[2].issuer",
        "legacy",
    ] {
        assert!(printed.contains(expected), "{expected}: {printed}");
    }
}

/// The TokenReview API as the Kubernetes documentation describes it, and no more: it knows
/// the tokens it was told are live, answers `authenticated: false` for others, and can be
/// taken down. No API server runs on this machine; this is the smallest honest stand-in.
#[derive(Clone, Default)]
struct ApiServer {
    live: Arc<Mutex<HashSet<String>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    reviews: Arc<std::sync::atomic::AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// What one review carried: the caller's `authorization` and `spec.audiences`.
type Seen = (Option<String>, Value);

impl ApiServer {
    async fn start(&self) -> String {
        use axum::routing::post;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let api = self.clone();
        let app = axum::Router::new().route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(
                move |headers: axum::http::HeaderMap, axum::Json(review): axum::Json<Value>| {
                    let api = api.clone();
                    async move {
                        if api.down.load(std::sync::atomic::Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        api.reviews.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let bearer = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        api.seen.lock().unwrap().push((bearer, review["spec"]["audiences"].clone()));
                        let token = review["spec"]["token"].as_str().unwrap_or("").to_owned();
                        let status = if api.live.lock().unwrap().contains(&token) {
                            let sub = segment(&token, 1)["sub"].clone();
                            json!({ "authenticated": true, "audiences": [AUDIENCE],
                                    "user": { "username": sub, "groups": ["system:serviceaccounts"] } })
                        } else {
                            json!({ "authenticated": false, "error": "token has been invalidated" })
                        };
                        (
                            axum::http::StatusCode::CREATED,
                            axum::Json(json!({
                                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                "spec": review["spec"], "status": status,
                            })),
                        )
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}

#[tokio::test]
async fn token_review_confirms_tokens_and_a_deleted_pods_token_stops_working() {
    let api = ApiServer::default();
    let url = api.start().await;
    let dir = TempDir::new("k8s-review");
    let own = dir.write("token", "the-sidecars-own-token\n");
    let review = format!(
        "token_review: {{ api_server: '{url}', token_file: '{}', cache_for: 1s }}",
        own.display()
    );
    let h = cluster(BY_NAMESPACE, &review).await;
    let (live, deleted, unconfirmed) = (
        projected(&h, "shop", "orders", json!({})),
        projected(&h, "shop", "billing", json!({})),
        projected(&h, "shop", "payments", json!({})),
    );
    api.live
        .lock()
        .unwrap()
        .extend([live.clone(), deleted.clone()]);

    minted(&h.check_bearer(&live).await);
    minted(&h.check_bearer(&deleted).await);
    assert_eq!(api.reviews.load(std::sync::atomic::Ordering::SeqCst), 2);
    minted(&h.check_bearer(&live).await);
    assert_eq!(
        api.reviews.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a confirmation is remembered for cache_for"
    );
    let (bearer, audiences) = api.seen.lock().unwrap()[0].clone();
    assert_eq!(bearer.as_deref(), Some("Bearer the-sidecars-own-token"));
    assert_eq!(audiences, json!([AUDIENCE]));

    // The pod is deleted: once the confirmation is older than cache_for, the token is refused.
    api.live.lock().unwrap().remove(&deleted);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    denied(&h.check_bearer(&deleted).await).assert_refused(401, "TokenReview");
    minted(&h.check_bearer(&live).await);

    // The API server stops answering: a token never confirmed is 503, never a token.
    api.down.store(true, std::sync::atomic::Ordering::SeqCst);
    api.live.lock().unwrap().insert(unconfirmed.clone());
    let answer = denied(&h.check_bearer(&unconfirmed).await);
    assert_eq!(answer.http_status, 503, "{}", answer.description());
}

#[tokio::test]
async fn explain_shows_the_service_account_and_the_rule_that_matched_its_namespace() {
    let dir = TempDir::new("k8s-explain");
    let config = dir.write(
        "config.yaml",
        &format!(
            "token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: 'https://kubernetes.default.svc', kind: kubernetes, audiences: [{AUDIENCE}] }} ]
grants: {{ sources: [rules], {BY_NAMESPACE} }}
"
        ),
    );
    let identity = json!({
        "sub": "system:serviceaccount:shop:orders", "iss": "https://kubernetes.default.svc",
        "k8s:namespace": "shop", "k8s:service_account": "orders", "k8s:pod": "orders-7f9c6d5b8-x2k4q",
    });
    let (passed, printed) = run_cli(vec![
        "explain".into(),
        "--config".into(),
        config.into(),
        "--identity".into(),
        identity.to_string().into(),
    ])
    .await;
    assert!(passed, "{printed}");
    for expected in [
        "k8s_namespace        shop",
        "k8s_service_account  orders",
        "k8s_pod              orders-7f9c6d5b8-x2k4q",
        r#"evs:grants {"global":[],"databases":{"orders":["writer"]}}"#,
    ] {
        assert!(printed.contains(expected), "{expected}: {printed}");
    }
}
