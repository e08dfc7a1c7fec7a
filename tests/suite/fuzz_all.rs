//! A smoke run of every fuzz target in `fuzz/` (`fuzz/run-all --seconds 3 --scratch --dev`), so a
//! parser change that panics or breaks one of the targets' properties on any committed seed or
//! corpus input — or within seconds of fuzzing — fails CI. The long campaigns are run by hand; their table is in
//! docs/security.md. cargo-fuzz is installed into `target/test-deps/cargo` on first use; libFuzzer
//! runs with `--sanitizer none`, which works on the stable toolchain this project builds with.
//! The targets are built without optimization (`--dev`): from nothing that build takes a fraction
//! of the optimized one, and seconds of fuzzing need no speed.

use std::path::Path;
use std::process::Command;

/// The cargo-fuzz release this was written against.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// How long each target runs, in seconds.
const SECONDS_PER_TARGET: u32 = 3;

fn cargo_fuzz(manifest: &Path) -> std::path::PathBuf {
    let root = manifest.join("target/test-deps/cargo");
    std::fs::create_dir_all(&root).expect("target/test-deps/cargo");
    let binary = root.join("bin/cargo-fuzz");
    let lock = std::fs::File::create(root.join(".install.lock")).expect("lock");
    lock.lock().expect("take lock");
    if !binary.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["install", "--quiet", "--locked", "--root"])
            .arg(&root)
            .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"))
            .status()
            .expect("run cargo install");
        assert!(
            status.success(),
            "cargo install cargo-fuzz failed; the fuzz test needs it"
        );
    }
    binary
}

/// The `[[bin]]` names of fuzz/Cargo.toml: every target there is.
fn declared_targets(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest.join("fuzz/Cargo.toml")).unwrap();
    text.split("[[bin]]")
        .skip(1)
        .filter_map(|bin| {
            let line = bin.lines().find(|l| l.trim_start().starts_with("name"))?;
            Some(line.split('"').nth(1)?.to_owned())
        })
        .collect()
}

#[test]
fn every_parser_survives_a_smoke_run_of_its_fuzz_target() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = cargo_fuzz(manifest);
    let targets = declared_targets(manifest);
    assert!(targets.len() >= 10, "{targets:?}");
    for target in &targets {
        let seeds = manifest.join("fuzz/seeds").join(target);
        assert!(
            std::fs::read_dir(&seeds).is_ok_and(|mut d| d.next().is_some()),
            "{target} has no seed corpus in fuzz/seeds/"
        );
    }
    let output = Command::new(manifest.join("fuzz/run-all"))
        .current_dir(manifest)
        // New inputs go to a temporary folder: a test run leaves the committed corpus as it is.
        .args([
            "--seconds",
            &SECONDS_PER_TARGET.to_string(),
            "--scratch",
            "--dev",
        ])
        .env("CARGO_FUZZ", &binary)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run fuzz/run-all");
    let table = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    assert!(
        output.status.success(),
        "a fuzz target failed (its input is in fuzz/artifacts/<target>/):\n{table}\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    for target in &targets {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {target} |")))
            .unwrap_or_else(|| panic!("{target} did not run:\n{table}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let executions: u64 = cells[2].parse().unwrap_or(0);
        assert!(executions > 0, "{target} executed nothing: {row}");
        assert_eq!(cells[5], "0", "{target}: {row}");
    }
}
