//! Micro-benchmarks of the swap's parts: `cargo bench --bench pipeline`.
//!
//! rsa2048_sign is the physical limit of the uncached path; mint_rs256 adds the claims; verify
//! is the inbound check a new token pays; swap_cache_hit and swap_uncached are the whole
//! in-process pipeline (extract → verify → grants → mint) with and without the caches;
//! own_token_test_idp_token is the `accept_own` test every Check makes first;
//! check_cache_hit is what a Check runs in process (the own-token test, then the cached swap);
//! swap_cache_hit_50_rules is the cached swap with grants from rules evaluated per Check.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use evs_token_vending::Grants;
use evs_token_vending::Identity;
use evs_token_vending::InboundRequest;
use evs_token_vending::SigningKey;
use evs_token_vending::{KeyRing, Minter};

fn benchmarks(c: &mut Criterion) {
    println!("machine: {}", common::machine());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = || Instant::now() + Duration::from_secs(5);

    let key = SigningKey::generate_rsa(2048).expect("key");
    let payload = br#"{"iss":"https://token-vending.example.com","sub":"user@example.com","exp":1,"evs:grants":{"global":[]}}"#;
    c.bench_function("rsa2048_sign", |b| {
        b.iter(|| key.sign_jws(black_box(payload)))
    });

    let (idp, cached) = runtime.block_on(common::sidecar(""));

    let config = common::config(
        &idp,
        &std::env::temp_dir().join("evs-tv-bench-mint"),
        "127.0.0.1:0",
        "",
    );
    let minter = Minter::new(
        &config.token,
        KeyRing::new(0, vec![SigningKey::generate_rsa(2048).expect("key")]),
        Default::default(),
    );
    let identity = Identity {
        subject: "user@example.com".into(),
        issuer: idp.issuer().into(),
        email: Some("user@example.com".into()),
        name: Some("Demo User".into()),
        expires_at: u64::MAX / 2,
        certificate: None,
        aws: None,
        claims: None,
        kubernetes: None,
    };
    let grants: Grants = serde_norway::from_str(
        "global: [database_creator]\ndatabases: { production: [reader, writer], staging: [reader] }",
    )
    .expect("grants");
    c.bench_function("mint_rs256", |b| {
        b.iter(|| {
            minter
                .mint(black_box(&identity), &grants, 1_800_000_000)
                .expect("mint")
        })
    });
    let token = common::tokens(&idp, 1).remove(0);
    // The test every Check makes first with `token.accept_own` (the default): is this token
    // one of ours? For an IdP's token, the answer is no.
    c.bench_function("own_token_test_idp_token", |b| {
        b.iter(|| assert!(minter.verify_own(black_box(&token)).is_none()))
    });
    // The signature check a new token pays (what remembered verifications save): the RSA
    // arithmetic with a key parsed when the JWKS was fetched, as the verifier does …
    let jwk = idp.key().public_jwk();
    let parsed = common::parsed_rs256_key(jwk);
    let (signed, signature) = common::signed_and_signature(&token);
    c.bench_function("verify_rs256_parsed_key", |b| {
        b.iter(|| {
            parsed
                .verify_sig(black_box(signed.as_bytes()), &signature)
                .expect("valid")
        })
    });
    // … against jsonwebtoken's decode (the key rebuilt from its components on every call, the
    // claims parsed twice), which the verifier used up to 0.15.0 …
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("jwk");
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    c.bench_function("verify_rs256_idp_token", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &decoding, &validation)
                .expect("valid")
        })
    });
    // … and the same token again, as the verifier answers it the second time.
    let oidc = cached.vending.authenticator().oidc();
    c.bench_function("verify_idp_token_remembered", |b| {
        b.to_async(&runtime).iter(|| async {
            oidc.verify(black_box(&token), deadline())
                .await
                .expect("valid")
        })
    });

    let bearer = format!("Bearer {token}");
    let request = InboundRequest {
        authorization: vec![bearer.as_bytes()],
        ..Default::default()
    };
    c.bench_function("swap_cache_hit", |b| {
        b.to_async(&runtime).iter(|| async {
            cached
                .vending
                .swap(&request, deadline())
                .await
                .expect("swap")
        })
    });

    // What a Check runs on the same request: the own-token test first, then the cached swap.
    c.bench_function("check_cache_hit", |b| {
        b.to_async(&runtime).iter(|| async {
            cached
                .vending
                .check(&request, deadline(), &mut Default::default())
                .await
                .expect("check")
        })
    });

    // The same cached swap with grants from 50 rules over a token's 30 groups (20 match):
    // the rules are evaluated on every Check, the grants file's answer joined to theirs.
    let (rules_idp, with_rules) = runtime.block_on(sidecar_with_rules());
    let now = evs_token_vending::unix_now();
    let groups: Vec<String> = (0..20)
        .map(|i| format!("team-{i}-orders{i}"))
        .chain((0..10).map(|i| format!("staff-{i}")))
        .collect();
    let grouped = rules_idp.sign(&serde_json::json!({
        "iss": rules_idp.issuer(), "sub": "user@example.com", "email": "user@example.com",
        "iat": now, "exp": now + 3600, "groups": groups,
    }));
    let grouped_bearer = format!("Bearer {grouped}");
    let grouped_request = InboundRequest {
        authorization: vec![grouped_bearer.as_bytes()],
        ..Default::default()
    };
    c.bench_function("swap_cache_hit_50_rules", |b| {
        b.to_async(&runtime).iter(|| async {
            with_rules
                .vending
                .swap(&grouped_request, deadline())
                .await
                .expect("swap")
        })
    });

    let (_idp2, uncached) = runtime.block_on(common::sidecar(", cache: { enabled: false }"));
    let token2 = common::tokens(&_idp2, 1).remove(0);
    let bearer2 = format!("Bearer {token2}");
    let request2 = InboundRequest {
        authorization: vec![bearer2.as_bytes()],
        ..Default::default()
    };
    c.bench_function("swap_uncached", |b| {
        b.to_async(&runtime).iter(|| async {
            uncached
                .vending
                .swap(&request2, deadline())
                .await
                .expect("swap")
        })
    });
}

/// A sidecar whose grants are the grants file united with 50 rules over the `groups` claim.
async fn sidecar_with_rules() -> (
    evs_token_vending::demo::DemoIdp,
    evs_token_vending::RunningSidecar,
) {
    let idp = evs_token_vending::demo::DemoIdp::start()
        .await
        .expect("IdP");
    let dir = std::env::temp_dir().join(format!("evs-tv-bench-rules-{}", std::process::id()));
    let rules: String = (0..50)
        .map(|i| {
            format!(
                "\n    - {{ claim: groups, match: 'team-{i}-*', grant: {{ databases: {{ '{{1}}': [reader] }} }} }}"
            )
        })
        .collect();
    let yaml = common::config_yaml(&idp, &dir, "127.0.0.1:0", "").replace(
        "grants: { file: grants.yaml }",
        &format!("grants:\n  sources: [file, rules]\n  merge: union\n  file: grants.yaml\n  rules:{rules}"),
    );
    let config = evs_token_vending::Config::from_yaml(&yaml, &dir).expect("bench config");
    let sidecar = evs_token_vending::start(config).await.expect("sidecar");
    (idp, sidecar)
}

criterion_group!(benches, benchmarks);
criterion_main!(benches);
