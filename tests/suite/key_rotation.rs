//! Signing-key rotation by changing files, as docs/deployment.md ("Keys") describes it: publish the
//! next key, activate it after the JWKS max-age, remove the old one after the token lifetime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Harness, Options, TempDir, get_json, minted, segment};
use evs_token_vending::{SigningAlgorithm, SigningKey};

const WITHIN: Duration = Duration::from_secs(5);

async fn eventually(what: &str, condition: impl AsyncFnMut() -> bool) {
    crate::support::eventually(what, WITHIN, condition).await
}

/// A keys folder with one key, named in `active`.
fn keys_dir_with(dir: &TempDir, algorithm: SigningAlgorithm) -> (PathBuf, SigningKey) {
    let keys = dir.path().join("keys");
    let key = SigningKey::generate(algorithm, 2048).unwrap();
    let file = key.write_into(&keys).unwrap();
    std::fs::write(keys.join("active"), file_name(&file)).unwrap();
    (keys, key)
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_owned()
}

/// A harness signing from `keys` with fast reloads.
async fn harness_with_keys(keys: &Path, extra_signing: &str, token_extra: &str) -> Harness {
    Harness::start_with(Options {
        signing: format!(
            "{{ keys_dir: '{}', reload_interval: 100ms {extra_signing} }}",
            keys.display()
        ),
        token_extra: token_extra.into(),
        ..Options::default()
    })
    .await
}

/// A backend's JWKS cache done by the book: refetch only when the copy is older than the
/// answer's `max-age`, never on an unknown kid.
struct CachingVerifier {
    url: String,
    cached: Option<(serde_json::Value, Instant, Duration)>,
}

impl CachingVerifier {
    async fn verify(&mut self, token: &str) -> Result<(), String> {
        let stale = self
            .cached
            .as_ref()
            .is_none_or(|(_, fetched, max_age)| fetched.elapsed() >= *max_age);
        if stale {
            let response = reqwest::get(&self.url).await.map_err(|e| e.to_string())?;
            let max_age = response.headers()["cache-control"]
                .to_str()
                .unwrap()
                .rsplit("max-age=")
                .next()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs)
                .expect("max-age");
            let jwks = response.json().await.map_err(|e| e.to_string())?;
            self.cached = Some((jwks, Instant::now(), max_age));
        }
        let (jwks, _, _) = self.cached.as_ref().unwrap();
        evs_testkit::verify_against_jwks(token, jwks)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_verification_and_switches_kid_at_activation() {
    let dir = TempDir::new("rotation");
    let (keys, old) = keys_dir_with(&dir, SigningAlgorithm::Rs256);
    let h = Arc::new(harness_with_keys(&keys, ", jwks_max_age: 1s", "lifetime: 2s").await);

    // Checks run continuously while the files change.
    let running = Arc::new(AtomicBool::new(true));
    let driver = {
        let (h, running) = (h.clone(), running.clone());
        tokio::spawn(async move {
            let mut verifier = CachingVerifier {
                url: h.http_url("/.well-known/jwks.json"),
                cached: None,
            };
            let token = h.user_token();
            let (mut kids, mut failures) = (Vec::new(), Vec::new());
            while running.load(Ordering::SeqCst) {
                let minted = minted(&h.check_bearer(&token).await);
                if let Err(e) = verifier.verify(&minted).await {
                    failures.push(e);
                }
                kids.push(segment(&minted, 0)["kid"].as_str().unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (kids, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. Add the next key: published, not signing. Wait the JWKS max-age (plus a reload).
    let next = SigningKey::generate_rsa(2048).unwrap();
    let next_file = next.write_into(&keys).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let published = get_json(&h.http_url("/.well-known/jwks.json")).await;
    assert_eq!(published["keys"].as_array().unwrap().len(), 2);

    // 2. Activate it.
    std::fs::write(keys.join("active"), file_name(&next_file)).unwrap();
    // 3. After the longest token lifetime, remove the old key.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    std::fs::remove_file(keys.join(format!("{}.pem", old.kid()))).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;

    running.store(false, Ordering::SeqCst);
    let (kids, failures) = driver.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} verifications failed: {:?}",
        failures.len(),
        kids.len(),
        &failures[..1]
    );
    assert!(kids.len() > 50, "only {} checks", kids.len());
    let switch = kids
        .iter()
        .position(|k| k == next.kid())
        .expect("the new key signed");
    assert!(switch > 0 && kids[..switch].iter().all(|k| k == old.kid()));
    assert!(
        kids[switch..].iter().all(|k| k == next.kid()),
        "the old key signed after activation"
    );
    let jwks = get_json(&h.http_url("/.well-known/jwks.json")).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], next.kid());
}

#[tokio::test]
async fn bad_key_changes_keep_the_last_good_ring_and_readyz_says_why() {
    let dir = TempDir::new("rotation");
    let (keys, key) = keys_dir_with(&dir, SigningAlgorithm::Rs256);
    let h = harness_with_keys(&keys, "", "").await;
    let jwks_before = reqwest::get(h.http_url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");

    let garbage = keys.join("garbage.pem");
    let short = keys.join("short.pem");
    let p384 = keys.join("p384.pem");
    type FileChange<'a> = Box<dyn Fn() + 'a>;
    let changes: Vec<(&str, FileChange, FileChange, &str)> = vec![
        (
            "unreadable key",
            Box::new(|| {
                std::fs::write(
                    &garbage,
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                )
                .unwrap()
            }),
            Box::new(|| std::fs::remove_file(&garbage).unwrap()),
            "invalid",
        ),
        (
            "active names a missing file",
            Box::new(|| std::fs::write(keys.join("active"), "missing.pem").unwrap()),
            Box::new(|| std::fs::write(keys.join("active"), format!("{}.pem", key.kid())).unwrap()),
            "`active` names missing.pem",
        ),
        (
            "short RSA key",
            Box::new(|| {
                std::fs::copy(data.join("rsa-1024-too-short.pem"), &short).unwrap();
            }),
            Box::new(|| std::fs::remove_file(&short).unwrap()),
            "shorter than 2048 bits",
        ),
        (
            "unsupported curve",
            Box::new(|| {
                std::fs::copy(data.join("ec-p384-unsupported.pem"), &p384).unwrap();
            }),
            Box::new(|| std::fs::remove_file(&p384).unwrap()),
            "unsupported key type",
        ),
    ];
    for (case, apply, undo, reason) in changes {
        apply();
        eventually(case, async || {
            let ready = get_json(&h.http_url("/readyz")).await;
            ready["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().contains(reason))
        })
        .await;
        let ready = reqwest::get(h.http_url("/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200, "{case}: the last good keys still sign");
        let jwks_now = reqwest::get(h.http_url("/.well-known/jwks.json"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(jwks_now, jwks_before, "{case}: published keys changed");
        let token = minted(&h.check_bearer(&h.user_token()).await);
        assert_eq!(segment(&token, 0)["kid"], key.kid(), "{case}");
        assert!(
            !ready.text().await.unwrap().contains("AAAA"),
            "{case}: key text in readyz"
        );

        undo();
        eventually("recovery", async || {
            get_json(&h.http_url("/readyz")).await["warnings"]
                .as_array()
                .unwrap()
                .is_empty()
        })
        .await;
    }
}

#[tokio::test]
async fn jwks_etag_answers_304_until_the_keys_change() {
    let dir = TempDir::new("rotation");
    let (keys, _) = keys_dir_with(&dir, SigningAlgorithm::Rs256);
    let h = harness_with_keys(&keys, ", jwks_max_age: 42s", "").await;
    let client = reqwest::Client::new();
    let url = h.http_url("/.well-known/jwks.json");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["cache-control"], "public, max-age=42");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'));

    let again = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.text().await.unwrap().is_empty());

    SigningKey::generate_rsa(2048)
        .unwrap()
        .write_into(&keys)
        .unwrap();
    eventually("new key published", async || {
        client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
}

#[tokio::test]
async fn every_key_type_mints_tokens_a_backend_verifies_with_the_jwks() {
    for algorithm in [
        SigningAlgorithm::Rs256,
        SigningAlgorithm::Ps256,
        SigningAlgorithm::Es256,
        SigningAlgorithm::EdDsa,
    ] {
        let dir = TempDir::new("rotation");
        let (keys, key) = keys_dir_with(&dir, algorithm);
        let h = harness_with_keys(&keys, "", "").await;
        let token = minted(&h.check_bearer(&h.user_token()).await);
        let header = segment(&token, 0);
        assert_eq!(header["alg"], algorithm.name());
        assert_eq!(header["kid"], key.kid());
        let jwks = get_json(&h.http_url("/.well-known/jwks.json")).await;
        evs_testkit::verify_against_jwks(&token, &jwks)
            .unwrap_or_else(|e| panic!("{}: {e}", algorithm.name()));
        let discovery = get_json(&h.http_url("/.well-known/openid-configuration")).await;
        assert_eq!(
            discovery["id_token_signing_alg_values_supported"],
            serde_json::json!([algorithm.name()])
        );
    }
}

#[test]
fn sighup_reloads_the_keys_at_once() {
    let dir = TempDir::new("sighup");
    let (keys, _) = keys_dir_with(&dir, SigningAlgorithm::Rs256);
    let grants = dir.write("grants.yaml", "subjects:\n  someone@example.com: {}\n");
    let http_port = crate::support::free_port();
    let config = dir.write(
        "config.yaml",
        &format!(
            "listen: {{ authz: 127.0.0.1:0, http: 127.0.0.1:{http_port} }}
token: {{ issuer: https://tv.example.com }}
signing: {{ keys_dir: '{}', reload_interval: 1h }}
trust: [ {{ issuer: 'http://127.0.0.1:9', jwks_uri: 'http://127.0.0.1:9/jwks' }} ]
grants: {{ file: '{}' }}
",
            keys.display(),
            grants.display()
        ),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_evs-token-vending"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let kill = KillOnDrop(&mut child);
    let readyz = format!("http://127.0.0.1:{http_port}/readyz");
    let signing_kid = || -> Option<String> {
        let body = blocking_get(&readyz)?;
        let ready: serde_json::Value = serde_json::from_str(&body).ok()?;
        ready["signing_kid"].as_str().map(str::to_owned)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while signing_kid().is_none() {
        assert!(Instant::now() < deadline, "serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }

    let next = SigningKey::generate_rsa(2048).unwrap();
    let file = next.write_into(&keys).unwrap();
    std::fs::write(keys.join("active"), file_name(&file)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_ne!(
        signing_kid().as_deref(),
        Some(next.kid()),
        "reloaded without SIGHUP"
    );

    let status = std::process::Command::new("kill")
        .args(["-HUP", &kill.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(2);
    while signing_kid().as_deref() != Some(next.kid()) {
        assert!(Instant::now() < deadline, "SIGHUP did not reload the keys");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tiny blocking HTTP GET (the test has no runtime of its own).
fn blocking_get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}
