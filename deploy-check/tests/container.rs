//! The Dockerfile and docker-compose.yml against the workspace: the image builds with the workspace's Rust
//! version and the same `cargo build` packages and flags as `./dev`, each image's health check probes a
//! port it exposes, and compose builds real Dockerfile targets and sets only settings the binaries read.

use deploy_check::repo::{self, get, get_str};
use serde_yaml::Value;
use std::collections::BTreeSet;

fn dockerfile() -> String {
    repo::read("Dockerfile")
}

/// The Dockerfile's instructions with line continuations joined.
fn instructions() -> Vec<String> {
    dockerfile()
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// `-p NAME` arguments of a command line.
fn packages(command: &str) -> BTreeSet<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1].to_owned())
        .collect()
}

#[test]
fn the_image_builds_with_the_workspace_rust_version() {
    let manifest = repo::read("Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("workspace rust-version");
    assert!(
        instructions().contains(&format!("ARG RUST_VERSION={version}")),
        "Dockerfile's RUST_VERSION must be {version}"
    );
    assert!(
        instructions()
            .iter()
            .any(|i| i.starts_with("FROM rust:${RUST_VERSION}-"))
    );
}

#[test]
fn the_image_builds_what_dev_builds() {
    let build = instructions()
        .into_iter()
        .find(|i| i.starts_with("RUN cargo build "))
        .expect("a cargo build step");
    let build = build
        .split("&&")
        .next()
        .unwrap()
        .trim()
        .trim_start_matches("RUN ")
        .to_owned();
    let dev = repo::read("dev");
    let dev_build = dev
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo build "))
        .expect("./dev start builds with cargo build");
    assert_eq!(
        packages(&build),
        packages(dev_build),
        "the image and ./dev build the same binaries"
    );
    for flag in dev_build.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(
            build.split_whitespace().any(|w| w == flag),
            "the image's build lacks ./dev's {flag}"
        );
    }
    assert!(build.contains("--release"), "images carry release builds");
    // Every built binary ends up in its own stage, whose name is the package name.
    for package in packages(&build) {
        assert!(
            instructions()
                .iter()
                .any(|i| i.ends_with(&format!(" AS {package}"))),
            "no runtime stage for {package}"
        );
        assert!(
            instructions().contains(&format!("ENTRYPOINT [\"/usr/local/bin/{package}\"]")),
            "{package}'s stage does not run it"
        );
    }
    assert!(
        dockerfile().contains("cargo chef cook --release"),
        "dependencies are cached in their own layer"
    );
}

#[test]
fn every_health_check_probes_an_exposed_port_and_the_user_is_not_root() {
    let mut stage_port: Option<String> = None;
    let mut checks = 0;
    for i in instructions() {
        if i.starts_with("FROM ") {
            stage_port = None;
        } else if let Some(ports) = i.strip_prefix("EXPOSE ") {
            stage_port = Some(ports.to_owned());
        } else if i.starts_with("HEALTHCHECK ") {
            let port = i
                .split("\"/usr/local/bin/healthcheck\", \"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let exposed = stage_port.clone().expect("EXPOSE before HEALTHCHECK");
            assert!(
                exposed.split_whitespace().any(|p| p == port),
                "health check on {port}, exposed {exposed}"
            );
            checks += 1;
        }
    }
    assert_eq!(checks, 3);
    let user = instructions()
        .into_iter()
        .find(|i| i.starts_with("USER "))
        .expect("a USER");
    assert!(
        !user.contains("root") && !user.ends_with(" 0") && !user.contains(" 0:"),
        "{user}"
    );
    assert!(
        repo::read(".dockerignore").contains("!deploy/docker/healthcheck"),
        "the probe script is in the context"
    );
}

#[test]
fn compose_builds_dockerfile_targets_and_sets_only_known_settings() {
    let compose = repo::yaml("deploy/docker-compose.yml");
    let services = get(&compose, "services")
        .and_then(Value::as_mapping)
        .unwrap();
    let mut known = repo::env_settings("ingest/src/config.rs");
    known.extend(repo::env_settings("fanout-worker/src/config.rs"));
    known.extend(repo::env_settings("local-gateway/src/config.rs"));
    let mut built = BTreeSet::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let Some(build) = get(service, "build") else {
            continue;
        };
        let target = get_str(build, "target");
        assert!(
            instructions()
                .iter()
                .any(|i| i.ends_with(&format!(" AS {target}"))),
            "{name}: no stage {target}"
        );
        built.insert(target.to_owned());
        for key in get(service, "environment")
            .and_then(Value::as_mapping)
            .unwrap()
            .keys()
        {
            let key = key.as_str().unwrap();
            assert!(
                known.iter().any(|k| k == key),
                "{name} sets {key}, which no binary reads"
            );
        }
    }
    assert_eq!(
        built,
        BTreeSet::from([
            "ingest".into(),
            "fanout-worker".into(),
            "local-gateway".into()
        ])
    );
}
