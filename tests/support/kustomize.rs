//! The shipped Kubernetes manifests, rendered as `kubectl kustomize` renders them.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::repo;

/// `kubectl kustomize` of a folder under `deploy/kubernetes`, as YAML documents.
pub fn render(folder: &str) -> Vec<Value> {
    render_path(&repo(&format!("deploy/kubernetes/{folder}")), folder)
}

/// `kubectl kustomize` of any folder (`label` names it in failures).
pub fn render_path(folder: &std::path::Path, label: &str) -> Vec<Value> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(folder)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl (1.27 or newer, for kustomize v5: the Kubernetes project's apt repository) is needed to render the manifests: {e}")
        });
    assert!(
        output.status.success(),
        "kubectl kustomize {label}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .collect()
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name))
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}
