//! The command line as an operator meets it: `check-config`, `keygen`, and start-up errors of
//! `serve` that name the key path at fault.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::TempDir;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evs-token-vending"));
    command.env_remove("EVS_TV_CONFIG").env("RUST_LOG", "warn");
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

/// A config that starts, with `signing` and `grants` as given.
fn config(dir: &TempDir, signing: &str, grants_file: &str) -> std::path::PathBuf {
    dir.write(
        "config.yaml",
        &format!(
            "listen: {{ authz: 127.0.0.1:0, http: 127.0.0.1:0 }}
token: {{ issuer: https://tv.example.com }}
signing: {signing}
trust: [ {{ issuer: https://idp.example.com, jwks_uri: 'http://127.0.0.1:9/jwks' }} ]
grants: {{ file: '{grants_file}' }}
"
        ),
    )
}

/// `<dir>/keys` with one key made by `keygen` and an `active` file naming `gone.pem`.
fn keys_naming_a_missing_active(dir: &TempDir) -> std::path::PathBuf {
    let keys = dir.path().join("keys");
    let keygen = binary().args(["keygen", "--out"]).arg(&keys).status();
    assert!(keygen.unwrap().success());
    std::fs::write(keys.join("active"), "gone.pem\n").unwrap();
    keys
}

/// Runs `serve` and returns what it printed if it exits within 10 s (start-up errors do).
fn serve_until_exit(config: &Path) -> Output {
    let mut child = binary()
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    for _ in 0..100 {
        if child.try_wait().expect("poll serve").is_some() {
            return child.wait_with_output().expect("serve output");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("serve did not stop on a bad config");
}

#[test]
fn check_config_lists_every_problem_with_its_key_path_and_exits_1() {
    let dir = TempDir::new("cli");
    let path = dir.write(
        "bad.yaml",
        "token: { issuer: https://tv.example.com, lifetime: 1h }
signing: { dev_generate: true, key_file: k.pem }
trust:
  - { issuer: 'http://idp.example.com', algorithms: [none] }
grants: { source: dynamodb }
response: { remove_headers: [authorization] }
",
    );
    let output = binary()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let printed = text(&output);
    for path in [
        "signing:",
        "trust[0].issuer:",
        "trust[0].algorithms:",
        "grants.dynamodb:",
        "response.remove_headers[0]:",
    ] {
        assert!(printed.contains(path), "missing {path} in:\n{printed}");
    }
}

#[test]
fn check_config_names_a_misspelt_key_and_accepts_a_good_file_from_the_environment() {
    let dir = TempDir::new("cli");
    let bad = dir.write(
        "typo.yaml",
        "token: { issuer: https://tv.example.com, lifetme: 1h }\n",
    );
    let output = binary()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("token.lifetme"), "{}", text(&output));

    dir.write("grants.yaml", "subjects:\n  someone@example.com: {}\n");
    let good = config(&dir, "{ dev_generate: true }", "grants.yaml");
    let output = binary()
        .arg("check-config")
        .env("EVS_TV_CONFIG", &good)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn keygen_writes_a_private_key_readable_only_by_its_owner_and_named_by_kid() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cli");
    let keys = dir.path().join("keys");
    let output = binary()
        .args(["keygen", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let files: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = evs_token_vending::SigningKey::from_pem_file(&files[0]).unwrap();
    assert_eq!(files[0].file_stem().unwrap().to_str().unwrap(), key.kid());
    assert!(text(&output).contains(key.kid()));
    assert!(
        !keys.join("active").exists(),
        "keygen must not touch `active`"
    );
    assert!(
        !text(&output).contains("PRIVATE KEY"),
        "key material printed"
    );

    let refused = binary()
        .args(["keygen", "--bits", "1024", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn serve_refuses_keys_that_are_short_unsupported_garbage_or_missing_naming_the_path() {
    let dir = TempDir::new("cli");
    dir.write("grants.yaml", "subjects:\n  someone@example.com: {}\n");
    let garbage = dir.write(
        "garbage.pem",
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    let cases = [
        (data("rsa-1024-too-short.pem"), "shorter than 2048 bits"),
        (data("ec-p384-unsupported.pem"), "unsupported key type"),
        (garbage.display().to_string(), "no PEM private key"),
        (
            dir.path().join("absent.pem").display().to_string(),
            "cannot read key",
        ),
    ];
    for (key_file, reason) in cases {
        let path = config(
            &dir,
            &format!("{{ key_file: '{key_file}' }}"),
            "grants.yaml",
        );
        let output = serve_until_exit(&path);
        assert!(!output.status.success());
        let printed = text(&output);
        assert!(
            printed.contains("signing:") && printed.contains(&key_file),
            "{printed}"
        );
        assert!(printed.contains(reason), "{reason}: {printed}");
        assert!(
            !printed.contains("BEGIN") && !printed.contains("not a key"),
            "{printed}"
        );
    }
}

#[test]
fn serve_refuses_a_keys_folder_whose_active_file_names_a_missing_key() {
    let dir = TempDir::new("cli");
    dir.write("grants.yaml", "subjects:\n  someone@example.com: {}\n");
    let keys = keys_naming_a_missing_active(&dir);
    let path = config(
        &dir,
        &format!("{{ keys_dir: '{}' }}", keys.display()),
        "grants.yaml",
    );
    let printed = text(&serve_until_exit(&path));
    assert!(printed.contains("`active` names gone.pem"), "{printed}");
}

#[test]
fn serve_refuses_a_missing_or_broken_grants_file() {
    let dir = TempDir::new("cli");
    let path = config(&dir, "{ dev_generate: true }", "nowhere.yaml");
    let printed = text(&serve_until_exit(&path));
    assert!(
        printed.contains("grants.file") && printed.contains("nowhere.yaml"),
        "{printed}"
    );

    dir.write("grants.yaml", "subjects:\n  alice: { global: reader }\n");
    let path = config(&dir, "{ dev_generate: true }", "grants.yaml");
    let printed = text(&serve_until_exit(&path));
    assert!(printed.contains("subjects.alice.global"), "{printed}");
}

#[test]
fn demo_shows_a_real_swap_a_verified_token_and_a_refused_forgery() {
    let output = binary().arg("demo").output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("minted token claims"), "{printed}");
    assert!(printed.contains("\"evs:grants\""), "{printed}");
    assert!(
        printed.contains("verifies it with the sidecar's JWKS: signature OK"),
        "{printed}"
    );
    assert!(printed.contains("HTTP 401"), "{printed}");
}

#[test]
fn every_config_serve_refuses_is_refused_by_check_config_too_naming_the_same_key() {
    let dir = TempDir::new("cli-gate");
    dir.write("grants.yaml", "subjects:\n  someone@example.com: {}\n");
    dir.write(
        "broken-grants.yaml",
        "subjects:\n  alice: { global: reader }\n",
    );
    dir.write("empty-grants.yaml", "");
    let garbage = dir.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    );
    let keys = keys_naming_a_missing_active(&dir);
    let garbage = garbage.display().to_string();
    let short_key = data("rsa-1024-too-short.pem");
    // (signing, grants file, more config, what both must name)
    let cases = [
        (
            format!("{{ key_file: '{short_key}' }}"),
            "grants.yaml",
            String::new(),
            "shorter than 2048 bits",
        ),
        (
            format!("{{ key_file: '{garbage}' }}"),
            "grants.yaml",
            String::new(),
            "signing:",
        ),
        (
            "{ key_file: absent.pem }".to_owned(),
            "grants.yaml",
            String::new(),
            "absent.pem",
        ),
        (
            "{ keys_dir: no-such-dir }".to_owned(),
            "grants.yaml",
            String::new(),
            "no-such-dir",
        ),
        (
            format!("{{ keys_dir: '{}' }}", keys.display()),
            "grants.yaml",
            String::new(),
            "`active` names gone.pem",
        ),
        (
            "{ dev_generate: true }".to_owned(),
            "nowhere.yaml",
            String::new(),
            "nowhere.yaml",
        ),
        (
            "{ dev_generate: true }".to_owned(),
            "broken-grants.yaml",
            String::new(),
            "subjects.alice.global",
        ),
        (
            "{ dev_generate: true }".to_owned(),
            "empty-grants.yaml",
            String::new(),
            "grants.file",
        ),
        (
            "{ dev_generate: true }".to_owned(),
            "grants.yaml",
            format!("client_certs: {{ enabled: true, from: [peer], ca_file: '{garbage}' }}\n"),
            "client_certs.ca_file",
        ),
        (
            "{ dev_generate: true }".to_owned(),
            "grants.yaml",
            format!(
                "listen: {{ authz: 127.0.0.1:0, http: 127.0.0.1:0, http_tls: {{ cert_file: '{garbage}', key_file: '{garbage}' }} }}\n"
            ),
            "http_tls",
        ),
    ];
    for (signing, grants, more, named) in cases {
        let mut yaml = std::fs::read_to_string(config(&dir, &signing, grants)).unwrap();
        if more.starts_with("listen:") {
            yaml = yaml.lines().skip(1).map(|l| format!("{l}\n")).collect();
        }
        let path = dir.write("config.yaml", &format!("{yaml}{more}"));
        let served = serve_until_exit(&path);
        assert!(
            !served.status.success(),
            "serve accepted {signing} {grants} {more}"
        );
        assert!(
            text(&served).contains(named),
            "serve: {named}: {}",
            text(&served)
        );
        let checked = binary()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            checked.status.code(),
            Some(1),
            "check-config accepted what serve refused: {}",
            text(&served)
        );
        assert!(
            text(&checked).contains(named),
            "check-config: {named}: {}",
            text(&checked)
        );
        assert!(
            !text(&checked).contains("BEGIN"),
            "file content printed: {}",
            text(&checked)
        );
    }
}

#[test]
fn version_matches_the_changelog_and_the_image_builds_from_pinned_bases() {
    let output = binary().arg("--version").output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let changelog = &readme[readme.find("## Changelog").expect("a changelog")..];
    let latest = changelog
        .lines()
        .find_map(|l| {
            l.strip_prefix("- ")
                .and_then(|l| l.split_whitespace().next())
        })
        .expect("a changelog entry");
    assert_eq!(printed.trim(), format!("evs-token-vending {latest}"));

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    // Every base image is pinned; `FROM <earlier stage>` names no image.
    let mut stages = Vec::new();
    for base in dockerfile.lines().filter_map(|l| l.strip_prefix("FROM ")) {
        let mut words = base.split_whitespace();
        let image = words.next().unwrap();
        if !stages.contains(&image) {
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(!tag.is_empty() && tag != "latest", "{image} is not pinned");
        }
        if let (Some(_as), Some(stage)) = (words.next(), words.next()) {
            stages.push(stage);
        }
    }
    assert!(dockerfile.contains(&format!("evs-token-vending:{latest}")));
    let ignored = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for private in ["target/", "examples/keys/", "*.pem"] {
        assert!(ignored.contains(private), ".dockerignore lacks {private}");
    }
}

#[test]
fn check_config_refuses_unsafe_or_unreadable_ldap_settings_and_bad_rules_with_key_paths() {
    let dir = TempDir::new("cli-ldap");
    let run = |grants: &str| {
        let path = dir.write(
            "config.yaml",
            &format!(
                "token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: https://idp.example.com }} ]
grants:
{grants}
"
            ),
        );
        text(
            &binary()
                .args(["check-config", "--config"])
                .arg(path)
                .output()
                .unwrap(),
        )
    };
    let found = run("  sources: [ldap, rules]
  ldap:
    url: ldap://ldap.example.com
    starttls: false
    bind_dn: cn=evs,dc=example,dc=com
    base_dn: dc=example,dc=com
    user_filter: (uid=alice)
    groups: { 'cn=x': { global: [x] } }
  rules:
    - { claim: groups, match: 'db-**', grant: { global: [x] } }
    - { claim: groups, match: 'db-*', grant: { databases: { '{2}': [x] } } }");
    for expected in [
        "grants.ldap.starttls: ldap:// without StartTLS is allowed only to a loopback host",
        "grants.ldap.bind_password_file: bind_dn and bind_password_file go together",
        "grants.ldap.user_filter: names no placeholder",
        "grants.rules[0].match: `**` is ambiguous",
        "grants.rules[1].grant.databases.{2}: `{2}` names a capture the pattern does not have",
    ] {
        assert!(
            found.contains(expected),
            "missing {expected:?} in:\n{found}"
        );
    }
    // Structure right, files wrong: found by reading them, as the source would.
    let found = run("  source: ldap
  ldap:
    url: ldaps://ldap.example.com
    ca_file: missing-ca.pem
    bind_dn: cn=evs,dc=example,dc=com
    bind_password_file: missing-password
    base_dn: dc=example,dc=com
    groups: { 'cn=x': { global: [x] } }");
    assert!(found.contains("grants.ldap.ca_file"), "{found}");
    assert!(!found.contains(": OK"), "{found}");
}

/// A bad duration, an unknown key and missing files of several sections: all of them in one
/// run, each line naming the config file, a missing file said as "no such file".
#[test]
fn check_config_reports_every_problem_in_one_run() {
    let dir = TempDir::new("every-problem");
    let config = dir.write(
        "config.yaml",
        "token: { issuer: https://tv.example.com, lifetime: ten minutes }
signing: { keys_dir: keys-that-are-not-here }
trust: [ { issuer: 'https://idp.example.com' } ]
grants: { file: grants.yaml }
telemetry: { decision_logg: {} }
client_certs: { enabled: true, from: [xfcc], ca_file: no-such-ca.pem }
",
    );
    let output = binary()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let printed = text(&output);
    let shown = config.display().to_string();
    for expected in [
        "token.lifetime: invalid value",
        "telemetry.decision_logg: unknown field",
        "no-such-ca.pem: no such file",
        "keys-that-are-not-here: no such file",
        "grants.yaml: no such file",
    ] {
        let line = printed
            .lines()
            .find(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("{expected}: {printed}"));
        assert!(line.starts_with(&format!("{shown}: ")), "{line}");
    }
    assert!(!printed.contains("entity not found"), "{printed}");
}

/// Peer certificates come from `source.certificate`, which whoever calls ext_authz writes: on a
/// network address that could be anyone, so `from: [peer]` there is refused; on loopback or a
/// Unix socket (the pod's own Envoy) it is accepted.
#[test]
fn peer_certificates_are_refused_when_ext_authz_listens_beyond_loopback() {
    let dir = TempDir::new("peer-beyond-loopback");
    dir.write("grants.yaml", evs_token_vending::demo::SAMPLE_GRANTS);
    let ca = crate::support::certs::TestCa::new("gateway CA");
    let (cert, key) = ca.issue_with_key("sidecar", &["localhost"]);
    let tls = format!(
        ", authz_tls: {{ cert_file: '{}', key_file: '{}', client_ca_file: '{}' }}",
        dir.write("server.pem", &cert).display(),
        dir.write("server-key.pem", &key).display(),
        dir.write("ca.pem", &ca.pem).display()
    );
    let check = |authz: &str, tls: &str| {
        let config = dir.write(
            "config.yaml",
            &format!(
                "listen: {{ authz: '{authz}', http: 127.0.0.1:0 {tls} }}
token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: 'https://idp.example.com' }} ]
grants: {{ file: grants.yaml }}
client_certs: {{ enabled: true, from: [peer] }}
"
            ),
        );
        let output = binary()
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (output.status.success(), text(&output))
    };
    let (passed, printed) = check("0.0.0.0:9001", "");
    assert!(!passed, "{printed}");
    assert!(
        printed.contains("listen.authz: client_certs.from names peer"),
        "{printed}"
    );
    for private in ["127.0.0.1:9001", "unix:/tmp/evs-peer-test.sock"] {
        let (passed, printed) = check(private, "");
        assert!(passed, "{private}: {printed}");
    }
    // mTLS proves the caller is the gateway: then a network address may trust its reports.
    let (passed, printed) = check("0.0.0.0:9001", &tls);
    assert!(passed, "{printed}");
    // TLS on a Unix socket is a mistake, said so; missing files are named.
    let (passed, printed) = check("unix:/tmp/evs-peer-test.sock", &tls);
    assert!(
        !passed && printed.contains("listen.authz_tls: TLS is for ext_authz on a network address"),
        "{printed}"
    );
    let (passed, printed) = check(
        "0.0.0.0:9001",
        ", authz_tls: { cert_file: nope.pem, key_file: nope.key, client_ca_file: nope-ca.pem }",
    );
    assert!(!passed, "{printed}");
    for key in ["cert_file", "key_file", "client_ca_file"] {
        assert!(
            printed.contains(&format!("listen.authz_tls.{key}: cannot read")),
            "{key}: {printed}"
        );
    }
}
