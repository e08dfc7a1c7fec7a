//! Memory per cached credential: `cargo bench --bench cache_memory`.
//!
//! Swaps `EVS_BENCH_CREDENTIALS` (default 100,000) distinct IdP tokens through an in-process
//! sidecar, so each leaves one remembered verification and one cached minted token, and
//! reports the growth of the process's resident set divided by the number of credentials.
//! The tokens are signed and held before the first measurement, so their own text is not
//! counted. RSS includes the allocator's slack: it is what a pod's memory limit sees.

mod common;

use std::time::{Duration, Instant};

use evs_token_vending::InboundRequest;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn main() {
    let credentials: usize = std::env::var("EVS_BENCH_CREDENTIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    println!("machine: {}", common::machine());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (idp, sidecar) = runtime.block_on(common::sidecar(
        &std::env::var("EVS_BENCH_EXTRA").unwrap_or(", cache: { max_entries: 1000000 }".into()),
    ));
    let bearers = common::bearers(&idp, credentials + 1);
    let bearers = std::sync::Arc::new(bearers);
    async fn swap(vending: std::sync::Arc<evs_token_vending::TokenVending>, bearer: &str) {
        let request = InboundRequest {
            authorization: vec![bearer.as_bytes()],
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        vending.swap(&request, deadline).await.expect("swap");
    }
    // Warm up everything that is not per credential (grants, keys, pools).
    runtime.block_on(swap(sidecar.vending.clone(), &bearers[credentials]));
    let before = rss_bytes();
    let started = Instant::now();
    runtime.block_on(async {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) * 4;
        let tasks: Vec<_> = (0..workers)
            .map(|worker| {
                let (bearers, vending) = (bearers.clone(), sidecar.vending.clone());
                tokio::spawn(async move {
                    for bearer in bearers[..credentials].iter().skip(worker).step_by(workers) {
                        swap(vending.clone(), bearer).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("swap task");
        }
    });
    let after = rss_bytes();
    let grown = after.saturating_sub(before);
    println!(
        "{credentials} distinct credentials swapped in {:.1} s; RSS {:.1} MiB → {:.1} MiB; {:.0} bytes per cached credential",
        started.elapsed().as_secs_f64(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        grown as f64 / credentials as f64,
    );
}
