//! The minted-token cache through the real Check: what a caller repeating its credential gets.

use std::time::{Duration, Instant};

use crate::support::{Harness, Options, TempDir, denied, get_json, minted, now, segment};
use evs_token_vending::SigningKey;
use serde_json::json;

/// (token, its claims) for a Check with `idp_token`.
async fn swap(h: &Harness, idp_token: &str) -> (String, serde_json::Value) {
    let token = minted(&h.check_bearer(idp_token).await);
    let claims = segment(&token, 1);
    (token, claims)
}

#[tokio::test]
async fn a_repeated_credential_gets_the_same_token_until_the_refresh_point_then_a_fresh_one() {
    let h = Harness::start_with(Options {
        token_extra: "lifetime: 10s".into(),
        ..Options::default()
    })
    .await;
    let idp_token = h.user_token();
    let (first, claims) = swap(&h, &idp_token).await;
    let iat = claims["iat"].as_u64().unwrap();

    let mut seen = vec![first.clone()];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(7) {
        let (token, claims) = swap(&h, &idp_token).await;
        let (issued, expires) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        // Served only while more than half the lifetime is left (1 s of clock granularity).
        assert!(
            expires.saturating_sub(now()) * 100 >= (expires - issued) * 40,
            "served too late"
        );
        if now() < iat + 3 {
            assert_eq!(token, first, "a fresh token was replaced early");
        }
        if seen.last() != Some(&token) {
            seen.push(token);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 7 s of a 10 s lifetime: at least one background refresh happened, and never a new token
    // per request.
    assert!(
        (2..=4).contains(&seen.len()),
        "{} distinct tokens",
        seen.len()
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("evs_tv_token_cache_total{event=\"refresh\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("evs_tv_token_cache_total{event=\"refresh\"} 0\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn new_grants_give_a_new_token_at_once() {
    let h = Harness::start().await;
    let idp_token = h.user_token();
    let (first, claims) = swap(&h, &idp_token).await;
    assert_eq!(claims["evs:grants"]["global"], json!(["database_creator"]));
    assert_eq!(swap(&h, &idp_token).await.0, first);

    h.dir.write(
        "grants.yaml",
        "subjects:\n  user@example.com:\n    global: [auditor]\n",
    );
    crate::support::eventually("new grants minted", Duration::from_secs(10), async || {
        swap(&h, &idp_token).await.1["evs:grants"]["global"] == json!(["auditor"])
    })
    .await;
    // And never the old token again.
    for _ in 0..10 {
        assert_ne!(swap(&h, &idp_token).await.0, first);
    }
}

#[tokio::test]
async fn no_token_signed_by_a_removed_key_is_ever_served() {
    let dir = TempDir::new("token-cache");
    let keys = dir.path().join("keys");
    let old = SigningKey::generate_rsa(2048).unwrap();
    let old_file = old.write_into(&keys).unwrap();
    let h = Harness::start_with(Options {
        signing: format!(
            "{{ keys_dir: '{}', reload_interval: 100ms }}",
            keys.display()
        ),
        ..Options::default()
    })
    .await;
    let idp_token = h.user_token();
    let (cached, _) = swap(&h, &idp_token).await;
    assert_eq!(segment(&cached, 0)["kid"], old.kid());

    let next = SigningKey::generate_rsa(2048).unwrap();
    let next_file = next.write_into(&keys).unwrap();
    std::fs::write(
        keys.join("active"),
        next_file.file_name().unwrap().to_str().unwrap(),
    )
    .unwrap();
    std::fs::remove_file(&old_file).unwrap();
    crate::support::eventually(
        "old key gone from the JWKS",
        Duration::from_secs(5),
        async || get_json(&h.http_url("/readyz")).await["published_kids"] == json!([next.kid()]),
    )
    .await;
    for _ in 0..20 {
        let (token, _) = swap(&h, &idp_token).await;
        assert_eq!(
            segment(&token, 0)["kid"],
            next.kid(),
            "a token of the removed key was served"
        );
    }
}

#[tokio::test]
async fn a_credential_about_to_expire_bounds_the_cached_token_and_then_is_refused() {
    let h = Harness::start().await;
    let exp = now() + 3;
    let idp_token = h.idp.sign(&h.claims(json!({"exp": exp})));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut served = 0;
    loop {
        let answer = h.check_bearer(&idp_token).await;
        if now() >= exp {
            // The credential is dead: no cached token outlives it.
            if evs_testkit::minted_token(&answer).is_none() {
                assert!(denied(&answer).description().contains("expired"));
                break;
            }
        } else {
            let claims = segment(&minted(&answer), 1);
            assert_eq!(
                claims["exp"], exp,
                "minted exp must follow the credential's"
            );
            served += 1;
        }
        assert!(
            Instant::now() < deadline,
            "an expired credential was still swapped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served > 10);
}

#[tokio::test]
async fn with_the_cache_off_every_check_signs() {
    let h = Harness::start_with(Options {
        token_extra: "cache: { enabled: false }".into(),
        ..Options::default()
    })
    .await;
    let idp_token = h.user_token();
    let (a, _) = swap(&h, &idp_token).await;
    let (b, _) = swap(&h, &idp_token).await;
    assert_ne!(a, b);
}
