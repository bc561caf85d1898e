//! The Dockerfile and docker-compose.yml against the workspace: the image builds with the workspace's Rust
//! version and the same `cargo build` packages and flags as `./dev`, the runtime is distroless and its
//! health probe (`deploy/docker/healthcheck.rs`, compiled and run here against real sockets) tells 200 from
//! anything else, each image's health check probes a port it exposes, and compose builds real Dockerfile
//! targets, sets only settings the binaries read, bakes in no secret and publishes ports on loopback only.

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
            .any(|i| i.starts_with("ARG BUILDER_IMAGE=rust:${RUST_VERSION}-"))
    );
}

#[test]
fn the_runtime_is_distroless_and_its_base_images_can_be_pinned_by_digest() {
    let runtime = instructions()
        .into_iter()
        .find_map(|i| i.strip_prefix("ARG RUNTIME_IMAGE=").map(str::to_owned))
        .expect("the runtime base image is a build argument");
    assert!(
        runtime.starts_with("gcr.io/distroless/cc-debian12:"),
        "no shell, no package manager: {runtime}"
    );
    for stage in [
        "FROM ${BUILDER_IMAGE} AS chef",
        "FROM ${RUNTIME_IMAGE} AS runtime",
    ] {
        assert!(instructions().iter().any(|i| i == stage), "{stage}");
    }
    // Nothing in the runtime stages runs a shell command (there is none).
    let mut in_runtime = false;
    for i in instructions() {
        if i.starts_with("FROM ") {
            in_runtime =
                !i.contains(" AS chef") && !i.contains(" AS planner") && !i.contains(" AS builder");
        } else if in_runtime {
            assert!(!i.starts_with("RUN "), "a RUN in a runtime stage: {i}");
        }
    }
}

/// Compiles the health probe as the Dockerfile does.
fn healthcheck_binary() -> std::path::PathBuf {
    let out = std::env::temp_dir().join(format!("fanout-healthcheck-{}", std::process::id()));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let status = std::process::Command::new(rustc)
        .args(["--edition", "2021", "-O", "-o"])
        .arg(&out)
        .arg(repo::root().join("deploy/docker/healthcheck.rs"))
        .status()
        .expect("run rustc");
    assert!(
        status.success(),
        "deploy/docker/healthcheck.rs does not compile"
    );
    out
}

/// A one-shot HTTP server on a free port answering `status_line`; returns its port and the request it read.
fn answer_once(status_line: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request = String::new();
        reader.read_line(&mut request).unwrap();
        let mut stream = stream;
        write!(stream, "{status_line}\r\ncontent-length: 2\r\n\r\nok").unwrap();
        request
    });
    (port, server)
}

#[test]
fn the_health_probe_passes_on_200_only() {
    let probe = healthcheck_binary();
    let run = |port: u16, path: &str| {
        std::process::Command::new(&probe)
            .args([port.to_string().as_str(), path])
            .output()
            .unwrap()
    };
    let (port, server) = answer_once("HTTP/1.1 200 OK");
    let out = run(port, "/healthz");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(server.join().unwrap(), "GET /healthz HTTP/1.0\r\n");

    let (port, server) = answer_once("HTTP/1.1 503 Service Unavailable");
    let out = run(port, "/healthz");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"));
    server.join().unwrap();

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(
        run(closed, "/healthz").status.code(),
        Some(1),
        "nothing listening"
    );
    let usage = std::process::Command::new(&probe).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let _ = std::fs::remove_file(&probe);
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
        repo::read(".dockerignore").contains("!deploy/docker/healthcheck.rs"),
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

#[test]
fn compose_bakes_in_no_secret_serves_no_demo_and_binds_loopback() {
    let compose = repo::yaml("deploy/docker-compose.yml");
    let services = get(&compose, "services")
        .and_then(Value::as_mapping)
        .unwrap();
    let mut secrets = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        for (key, value) in get(service, "environment")
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default()
        {
            let key = key.as_str().unwrap();
            let value = value.as_str().unwrap_or_default();
            assert_ne!(
                key, "FANOUT_DEMO_WS_URL",
                "{name}: the demo lets anyone mint tokens"
            );
            if key.contains("SECRET") || key.contains("API_KEY") {
                assert!(
                    value.starts_with("${") && value.contains(":?") && value.ends_with('}'),
                    "{name}: {key} must come from the environment, required, never a default: {value}"
                );
                secrets += 1;
            }
        }
        for port in get(service, "ports")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
        {
            let port = port.as_str().unwrap();
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond the operator's machine"
            );
        }
    }
    assert_eq!(secrets, 3, "ingest's two and the emulator's gateway secret");
}
