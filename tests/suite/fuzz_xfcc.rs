//! Runs the XFCC parser's fuzz target (`fuzz/`) for a bounded time, so CI fuzzes it on every
//! run. cargo-fuzz is installed into `target/test-deps/cargo` on first use; libFuzzer runs with
//! `--sanitizer none`, which works on the stable toolchain this project builds with.

use std::path::Path;
use std::process::Command;

/// The cargo-fuzz release this was written against.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// How long the fuzzer runs, in seconds.
const FUZZ_SECONDS: u32 = 20;

#[test]
fn the_xfcc_parser_survives_bounded_fuzzing() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("target/test-deps/cargo");
    std::fs::create_dir_all(&root).expect("target/test-deps/cargo");
    let binary = root.join("bin/cargo-fuzz");
    if !binary.is_file() {
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
    }
    let output = Command::new(&binary)
        .current_dir(manifest)
        .args(["run", "xfcc", "--sanitizer", "none", "--"])
        .arg(format!("-max_total_time={FUZZ_SECONDS}"))
        .arg("-rss_limit_mb=2048")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo fuzz");
    let log = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = log.lines().rev().take(25).collect();
    assert!(
        output.status.success(),
        "the fuzzer found a failing input (see fuzz/artifacts/xfcc/):\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(log.contains("Done "), "the fuzzer did not run:\n{log}");
}
