//! What both benchmarks share: a description of the machine, and a sidecar with a demo IdP.
#![allow(dead_code)]

use std::time::Duration;

use evs_token_vending::demo::{DemoIdp, SAMPLE_GRANTS};
use evs_token_vending::{Config, RunningSidecar};

/// One line naming the machine the numbers come from.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {:.0} GiB, Linux {}",
        memory_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// Writes the sample grants into `dir` and returns the YAML of a sidecar trusting `idp` with
/// ext_authz on `authz`; `extra_token` is spliced into `token:` (e.g. `, cache: { enabled: false }`).
pub fn config_yaml(idp: &DemoIdp, dir: &std::path::Path, authz: &str, extra_token: &str) -> String {
    std::fs::create_dir_all(dir).expect("bench dir");
    std::fs::write(dir.join("grants.yaml"), SAMPLE_GRANTS).expect("grants file");
    format!(
        "listen: {{ authz: '{authz}', http: 127.0.0.1:0 }}
token: {{ issuer: https://token-vending.example.com, audience: [evidentsource], lifetime: 1h {extra_token} }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{}' }} ]
grants: {{ file: grants.yaml }}
",
        idp.issuer()
    )
}

/// The same, parsed.
pub fn config(idp: &DemoIdp, dir: &std::path::Path, authz: &str, extra_token: &str) -> Config {
    Config::from_yaml(&config_yaml(idp, dir, authz, extra_token), dir).expect("bench config")
}

/// A demo IdP and a sidecar in this process.
pub async fn sidecar(extra_token: &str) -> (DemoIdp, RunningSidecar) {
    let idp = DemoIdp::start().await.expect("IdP");
    let dir = std::env::temp_dir().join(format!("evs-tv-bench-{}", std::process::id()));
    let sidecar = evs_token_vending::start(config(&idp, &dir, "127.0.0.1:0", extra_token))
        .await
        .expect("sidecar");
    (idp, sidecar)
}

/// `n` distinct IdP tokens for one user (distinct `jti`), valid for an hour, signed on every
/// core.
pub fn tokens(idp: &DemoIdp, n: usize) -> Vec<String> {
    let now = evs_token_vending::unix_now();
    let exp = now + Duration::from_secs(3600).as_secs();
    let sign = |i: usize| {
        idp.sign(&serde_json::json!({
            "iss": idp.issuer(), "sub": "user@example.com", "email": "user@example.com",
            "iat": now, "exp": exp, "jti": format!("bench-{i}"),
        }))
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                scope.spawn(move || {
                    (start..(start + chunk).min(n))
                        .map(sign)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    })
}
