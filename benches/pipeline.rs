//! Micro-benchmarks of the swap's parts: `cargo bench --bench pipeline`.
//!
//! rsa2048_sign is the physical limit of the uncached path; verify is the inbound check every
//! request pays; swap_cache_hit and swap_uncached are the whole in-process pipeline (extract →
//! verify → grants → mint) with and without the minted-token cache.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use evs_token_vending::credential::InboundRequest;
use evs_token_vending::mint::keys::SigningKey;

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
    let token = common::tokens(&idp, 1).remove(0);
    let oidc = cached.vending.authenticator().oidc();
    c.bench_function("verify_idp_token_rs256", |b| {
        b.to_async(&runtime).iter(|| async {
            oidc.verify(black_box(&token), deadline())
                .await
                .expect("valid")
        })
    });

    let bearer = format!("Bearer {token}");
    let request = InboundRequest {
        authorization: vec![bearer.as_bytes()],
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

    let (_idp2, uncached) = runtime.block_on(common::sidecar(", cache: { enabled: false }"));
    let token2 = common::tokens(&_idp2, 1).remove(0);
    let bearer2 = format!("Bearer {token2}");
    let request2 = InboundRequest {
        authorization: vec![bearer2.as_bytes()],
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

criterion_group!(benches, benchmarks);
criterion_main!(benches);
