//! The `ingest` binary at start-up: secure by default. Without a gateway secret it refuses to start with
//! one actionable line and exit status 2; `--insecure-dev` starts it anyway, loudly, and then callbacks
//! without a secret are accepted. Runs the real binary against a private redis-server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

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
    assert!(lines[0].starts_with("ingest: configuration: FANOUT_GATEWAY_SECRETS"));
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
