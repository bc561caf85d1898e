//! Keeps the code base honest: every Rust source file opens with a `//!` paragraph on its role, and every
//! code name ARCHITECTURE.md quotes in backticks still exists in the sources.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support sits one level below the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | ".venv" | ".tmp" | "node_modules"
            ) {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_says_what_it_is_for() {
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    assert!(files.len() > 20);
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a //! paragraph: {missing:?}"
    );
}

#[test]
fn architecture_md_names_things_that_exist() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    // The JS client's code names count too.
    files.push(root().join("client/fanout.js"));
    let sources: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let mut stale = Vec::new();
    for quoted in doc.split('`').skip(1).step_by(2) {
        if quoted.contains(' ')
            || quoted.contains('{')
            || quoted.starts_with("./")
            || quoted.contains('"')
        {
            continue; // a command, a URL or a JSON example, not a name
        }
        if quoted.contains('/') {
            // A path whose first folder is one of the repository's top-level folders must exist; anything
            // else with a slash (an HTTP path such as /v1/tokens, a URL) is not a file name.
            let first = quoted.split('/').next().unwrap();
            if !first.is_empty() && root().join(first).is_dir() && !root().join(quoted).exists() {
                stale.push(quoted.to_owned());
            }
            continue;
        }
        let name = quoted.rsplit("::").next().unwrap();
        let is_code = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.chars().any(|c| c.is_ascii_alphabetic());
        if is_code && !sources.contains(name) {
            stale.push(quoted.to_owned());
        }
    }
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md names things the code no longer has: {stale:?}"
    );
}

/// Every workspace member is a top-level folder that ARCHITECTURE.md describes under its own heading.
#[test]
fn architecture_md_maps_every_crate() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("Cargo.toml lists the workspace members");
    let members: Vec<&str> = members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.len() >= 8, "members: {members:?}");
    for member in members {
        assert!(
            !member.contains('/') && root().join(member).join("Cargo.toml").exists(),
            "workspace member {member} is not a top-level crate folder"
        );
        assert!(
            doc.contains(&format!("### `{member}/`")),
            "ARCHITECTURE.md has no section for the crate {member}/"
        );
    }
}
