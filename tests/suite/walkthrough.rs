//! The README's Envoy walk-through, run as written: the shell block under its marker is
//! executed with `cargo run …` replaced by the binaries this build made and the fixed ports by
//! free ones, on copies of `envoy.yaml` and `examples/`. The caller's reply must show a verified
//! minted token with the example grants.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{TempDir, free_port, repo};

const MARKER: &str =
    "<!-- walk-through: tests/suite/walkthrough.rs runs this block as a script -->";

/// The `sh` block right after the marker.
fn walkthrough_script() -> String {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let after = &readme[readme
        .find(MARKER)
        .expect("the walk-through marker in README.md")..];
    let start = after.find("```sh\n").expect("a sh block after the marker") + 6;
    let end = start + after[start..].find("```").expect("the block's end");
    after[start..end].to_owned()
}

/// An example's binary, built if this build has not made it yet.
fn example(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target"));
    let path = target.join("debug/examples").join(name);
    if !path.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "--example", name])
            .current_dir(repo(""))
            .status()
            .expect("cargo build --example");
        assert!(built.success(), "cargo build --example {name}");
    }
    path
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let mut script = walkthrough_script();
    assert!(
        script.contains("cargo run --release --example who-am-i"),
        "{script}"
    );
    let dir = TempDir::new("walkthrough");
    std::fs::create_dir_all(dir.path().join("examples")).unwrap();
    let mut files: Vec<(String, String)> =
        ["envoy.yaml", "examples/config.yaml", "examples/grants.yaml"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read_to_string(repo(f)).unwrap()))
            .collect();
    // Fixed ports of the walk-through → free ones, in the script and the files alike.
    for port in [9400, 9001, 9002, 9100, 10000, 9901] {
        let free = free_port();
        for text in std::iter::once(&mut script).chain(files.iter_mut().map(|(_, text)| text)) {
            *text = text
                .replace(&format!(":{port}"), &format!(":{free}"))
                .replace(
                    &format!("port_value: {port}"),
                    &format!("port_value: {free}"),
                )
                .replace(&format!("--port {port}"), &format!("--port {free}"));
        }
    }
    for (name, text) in &files {
        dir.write(name, text);
    }
    // The examples first: `cargo run --release --` is a prefix of their commands.
    let script = script
        .replace(
            "cargo run --release --example echo-backend --",
            &example("echo-backend").display().to_string(),
        )
        .replace(
            "cargo run --release --example who-am-i --",
            &example("who-am-i").display().to_string(),
        )
        .replace(
            "cargo run --release --",
            env!("CARGO_BIN_EXE_evs-token-vending"),
        )
        .replace(
            "envoy -c",
            &format!(
                "{} --use-dynamic-base-id -l warning -c",
                crate::support::envoy::envoy_binary().display()
            ),
        );
    let script_file = dir.write("walkthrough.sh", &format!("set -e\n{script}"));

    // Output to files: the background servers keep a pipe open after the script ends.
    let stdout = std::fs::File::create(dir.path().join("stdout.txt")).unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
    let mut child = Command::new("bash")
        .arg(&script_file)
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(120) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The background servers belong to the script's process group.
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", child.id())])
        .status();
    let printed = std::fs::read_to_string(dir.path().join("stdout.txt")).unwrap();
    let errors = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
    let status = status.unwrap_or_else(|| {
        panic!("the walk-through did not finish in 120 s:\n{printed}\n{errors}")
    });
    assert!(
        status.success(),
        "the walk-through failed:\n{printed}\n{errors}"
    );
    let idp_token = std::fs::read_to_string(dir.path().join("token.txt")).unwrap();
    // dev-idp prints the IdP token too; the caller's reply is what follows `WhoAmIReply`.
    let reply = &printed[printed
        .find("WhoAmIReply")
        .unwrap_or_else(|| panic!("no reply in:\n{printed}"))..];
    assert!(reply.contains("verified: true"), "{printed}");
    assert!(
        reply.contains("database_creator"),
        "the example grants: {reply}"
    );
    assert!(reply.contains("Bearer ey"), "{reply}");
    assert!(
        !reply.contains(idp_token.trim()),
        "the backend saw the IdP token: {reply}"
    );
}
