//! The image's build stages replayed as a builder runs them, without a Docker daemon (none runs
//! here or in CI): each stage starts from its parent's files, `COPY` brings exactly what it
//! names (minus `.dockerignore`), `COPY --from` takes another stage's files, and each `RUN`
//! runs in `sh` in the stage's `WORKDIR`. Compiling the sidecar in release mode would take most
//! of CI's budget, so `cargo` on the stages' `PATH` is a stand-in that does what decides
//! whether the build can start: `build` and `chef prepare` plan the release build of the copied
//! tree (every manifest, target and locked dependency; where 0.10.0's image failed) without
//! compiling it, `chef prepare` writes the recipe the next stage copies, `chef cook` needs that
//! recipe, and `cargo install` and `strip` do nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One stage: its name and its instructions, continuation lines joined.
struct Stage {
    name: String,
    parent: String,
    lines: Vec<String>,
}

fn stages(dockerfile: &str) -> Vec<Stage> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut stages: Vec<Stage> = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(from) = line.strip_prefix("FROM ") {
            let mut words = from.split_whitespace();
            let parent = words.next().unwrap_or("").to_owned();
            let name = match (words.next(), words.next()) {
                (Some(as_), Some(name)) if as_.eq_ignore_ascii_case("as") => name.to_owned(),
                _ => format!("stage{}", stages.len()),
            };
            stages.push(Stage {
                name,
                parent,
                lines: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.lines.push(line.to_owned());
        }
    }
    stages
}

/// `.dockerignore`'s patterns, as prefixes and `*.ext` suffixes (the forms this repository uses).
fn ignored(relative: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        let p = p.trim_end_matches('/');
        if let Some(ext) = p.strip_prefix("**/*") {
            relative.ends_with(ext)
        } else {
            relative == p || relative.starts_with(&format!("{p}/"))
        }
    })
}

fn copy_tree(from: &Path, to: &Path, root: &Path, patterns: &[String]) {
    let relative = from
        .strip_prefix(root)
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !relative.is_empty() && ignored(&relative, patterns) {
        return;
    }
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()), root, patterns);
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// The `cargo` and `strip` stand-ins, in a folder to put first on `PATH`.
fn stand_ins(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // `--unit-graph` plans the whole build (every manifest, target and locked dependency)
    // without compiling; it is unstable, hence RUSTC_BOOTSTRAP for this one planning call.
    let cargo = format!(
        "#!/bin/sh\n\
         plan() {{ RUSTC_BOOTSTRAP=1 '{real}' build --release --locked --offline \\\n\
           --unit-graph -Z unstable-options > /dev/null; }}\n\
         case \"$1 $2\" in\n\
           install*) exit 0 ;;\n\
           'chef prepare') plan && echo '{{}}' > recipe.json ;;\n\
           'chef cook') test -f recipe.json ;;\n\
           build*) plan ;;\n\
           *) echo \"unexpected cargo $*\" >&2; exit 1 ;;\n\
         esac\n",
        real = env!("CARGO")
    );
    std::fs::write(bin.join("cargo"), cargo).unwrap();
    std::fs::write(bin.join("strip"), "#!/bin/sh\nexit 0\n").unwrap();
    for tool in ["cargo", "strip"] {
        Command::new("chmod")
            .arg("+x")
            .arg(bin.join(tool))
            .status()
            .unwrap();
    }
    bin
}

/// Replays every stage that builds (all but those starting from a runtime base without a
/// shell) of `dockerfile` with `context` as the build context; `Err` names the failing step.
pub fn replay(dockerfile: &Path, context: &Path, scratch: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dockerfile).unwrap();
    let patterns: Vec<String> = std::fs::read_to_string(context.join(".dockerignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let bin = stand_ins(scratch);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut roots: HashMap<String, (PathBuf, String)> = HashMap::new();
    for stage in stages(&text) {
        if stage.parent.contains("distroless") {
            continue;
        }
        let root = scratch.join(&stage.name);
        let mut workdir = "/".to_owned();
        if let Some((parent_root, parent_workdir)) = roots.get(&stage.parent) {
            copy_tree(parent_root, &root, parent_root, &[]);
            workdir = parent_workdir.clone();
        }
        std::fs::create_dir_all(&root).unwrap();
        for line in &stage.lines {
            let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
            let here = root.join(workdir.trim_start_matches('/'));
            match instruction.to_ascii_uppercase().as_str() {
                "WORKDIR" => {
                    workdir = rest.trim().to_owned();
                    std::fs::create_dir_all(root.join(workdir.trim_start_matches('/'))).unwrap();
                }
                "COPY" => {
                    let mut words: Vec<&str> = rest.split_whitespace().collect();
                    let destination = words.pop().unwrap_or(".");
                    let (source_root, sources): (PathBuf, Vec<&str>) =
                        match words.first().and_then(|w| w.strip_prefix("--from=")) {
                            Some(from) => {
                                let (other, _) = roots
                                    .get(from)
                                    .ok_or(format!("COPY --from={from}: no such stage"))?;
                                (other.clone(), words[1..].to_vec())
                            }
                            None => (context.to_owned(), words),
                        };
                    for source in sources {
                        let from = source_root.join(source.trim_start_matches('/'));
                        if source == "." {
                            copy_tree(&from, &here.join(destination), &from, &patterns);
                        } else if from.exists() {
                            let target = match Path::new(source).file_name() {
                                Some(name) if destination.ends_with('/') || destination == "." => {
                                    here.join(destination).join(name)
                                }
                                _ => here.join(destination),
                            };
                            copy_tree(&from, &target, &source_root, &patterns);
                        } else {
                            return Err(format!(
                                "{}: COPY {source}: not in the context",
                                stage.name
                            ));
                        }
                    }
                }
                "RUN" => {
                    let output = Command::new("sh")
                        .arg("-c")
                        .arg(rest)
                        .current_dir(&here)
                        .env("PATH", &path)
                        .output()
                        .unwrap();
                    if !output.status.success() {
                        return Err(format!(
                            "{}: RUN {rest}: {}",
                            stage.name,
                            String::from_utf8_lossy(&output.stderr)
                        ));
                    }
                }
                _ => {}
            }
        }
        roots.insert(stage.name.clone(), (root, workdir));
    }
    Ok(())
}
