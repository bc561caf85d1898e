//! Start-up as an operator meets it: the real `ingest` binary refused by a bad setting prints one actionable
//! line and exits with status 2 (no backtrace, no log noise); it is secure by default (no gateway secret,
//! no start, unless `--insecure-dev`, which then says so loudly); and `./dev start` notices at once when a
//! process it started dies, shows that process's last log lines and stops everything else it started.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const INGEST: &str = env!("CARGO_BIN_EXE_ingest");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command to completion, failing the test if it takes longer than `limit`.
fn run_within(mut command: Command, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ingest_with(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(INGEST);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_BACKTRACE", "1")
        .env("FANOUT_API_GATEWAYS", "abc/prod")
        .env(
            "FANOUT_GATEWAY_SECRETS",
            "gateway-secret-0123456789-abcdefghij",
        )
        .env("FANOUT_LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

#[test]
fn a_bad_setting_is_one_line_and_status_2() {
    let cases = [
        ("FANOUT_API_KEYS", "too-short", "FANOUT_API_KEYS"),
        ("FANOUT_API_GATEWAYS", "no-stage", "FANOUT_API_GATEWAYS"),
        ("FANOUT_KEY_PREFIX", "{tag}", "FANOUT_KEY_PREFIX"),
    ];
    for (var, value, named) in cases {
        let mut env = vec![("FANOUT_API_KEYS", "k".repeat(40))];
        env.retain(|(k, _)| *k != var);
        env.push((var, value.to_owned()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (output, _) = run_within(ingest_with(&env), Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{var}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}: one line expected, got {stderr:?}");
        assert!(
            lines[0].starts_with("ingest: configuration error: ") && lines[0].contains(named),
            "{var}: {stderr}"
        );
        assert!(!stderr.contains("backtrace") && !stderr.contains("panicked"));
        assert!(output.stdout.is_empty(), "{var}: nothing on stdout");
    }
}

/// `./dev start` with an API key that ingest refuses: it must fail within seconds (not wait for a port that
/// never opens), name the process, show its log, and leave nothing running.
#[test]
fn dev_start_fails_fast_when_a_process_dies() {
    let state = std::env::temp_dir().join(format!("fanout-dev-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let bin = Path::new(INGEST).parent().unwrap();
    let mut dev = Command::new(repo_root().join("dev"));
    dev.arg("start")
        .env("FANOUT_DEV_NO_BUILD", "1")
        .env("FANOUT_DEV_BIN", bin)
        .env("FANOUT_DEV_STATE", &state)
        .env("FANOUT_API_KEYS", "too-short")
        .env_remove("FANOUT_REDIS_URL")
        .env_remove("FANOUT_QUEUE_URL");
    let (output, took) = run_within(dev, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} to notice: {stderr}"
    );
    assert!(
        stderr.contains("error: ingest exited (status 2)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ingest: configuration error: FANOUT_API_KEYS"),
        "the process's last log lines are shown: {stderr}"
    );
    // The redis-server it started (with its data folder under the state folder) is gone.
    let still = Command::new("pgrep")
        .arg("-f")
        .arg(state.join("redis").to_string_lossy().as_ref())
        .output()
        .unwrap();
    assert!(
        still.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&still.stdout)
    );
    // The generated secrets are kept for the next start, readable by the owner only.
    let secrets = state.join("secrets.env");
    let text = std::fs::read_to_string(&secrets).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("FANOUT_API_KEYS=local-") && l.len() > 40)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o077,
        0,
        "secrets.env must not be readable by others"
    );
    let _ = std::fs::remove_dir_all(&state);
}

const API_KEY: &str = "api-key-0123456789-abcdefghijklmnop";

fn ingest() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingest"));
    // Nothing from the caller's environment may change what is tested.
    for (name, _) in std::env::vars() {
        if name.starts_with("FANOUT_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("RUST_BACKTRACE", "1");
    cmd
}

#[test]
fn refuses_to_start_without_a_gateway_secret() {
    let out = ingest()
        .args(["--api-gateway=abc/prod", &format!("--api-key={API_KEY}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("ingest: configuration error: FANOUT_GATEWAY_SECRETS"));
    assert!(lines[0].contains("--insecure-dev"), "{stderr}");
    assert!(!stderr.contains("backtrace") && !stderr.contains("Error:"));
}

#[test]
fn every_configuration_error_is_one_line_and_status_2() {
    let out = ingest()
        .args([
            "--api-gateway=abc/prod",
            &format!("--api-key={API_KEY}"),
            "--gateway-secret=gateway-secret-0123456789-abcdefghij",
            "--allowed-origin=not an origin",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("FANOUT_ALLOWED_ORIGINS"), "{stderr}");
}

#[tokio::test]
async fn insecure_dev_starts_without_a_secret_and_says_so() {
    let redis = test_support::RedisServer::start();
    let port = test_support::free_port();
    let mut child = ingest()
        .args([
            "--insecure-dev",
            &format!("--listen=127.0.0.1:{port}"),
            &format!("--redis-url={}", redis.url()),
            &format!("--queue-url={}?queue=jobs", redis.url()),
            "--api-gateway=local=http://127.0.0.1:9/local",
            &format!("--api-key={API_KEY}"),
            "--public-channel=lobby",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The warning is logged at start (and every minute after).
    let stdout = child.stdout.take().unwrap();
    let warned = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("INSECURE DEV MODE"))
    });
    let warned = tokio::time::timeout(Duration::from_secs(30), warned).await;
    let http = reqwest::Client::new();
    let mut status = None;
    for _ in 0..100 {
        match http
            .post(format!("http://127.0.0.1:{port}/ws/connect?channel=lobby"))
            .header("connectionId", "dev1")
            .header("X-Amzn-Apigateway-Api-Id", "local")
            .send()
            .await
        {
            Ok(r) => {
                status = Some(r.status());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(matches!(warned, Ok(Ok(true))), "no insecure-mode warning");
    assert_eq!(status, Some(reqwest::StatusCode::OK));
}
