//! What the worker's benchmarks share: a fleet of real `fanout-worker` processes against one Redis
//! (state and Redis Streams queue) and one Management API endpoint, started and awaited until each answers
//! on `/healthz`.

use std::process::{Child, Command};
use std::time::{Duration, Instant};
use test_support::free_port;

/// Starts `workers` worker processes with the given Redis, queue, Management API base URL (the `bench`
/// API's endpoint) and extra flags, and waits (up to 30 s) until every one serves `/healthz`, so their
/// pollers run. Returns the children and their metrics ports.
pub async fn start_workers(
    redis_url: &str,
    queue_url: &str,
    base: &str,
    workers: usize,
    extra: &[String],
) -> (Vec<Child>, Vec<u16>) {
    let ports: Vec<u16> = (0..workers).map(|_| free_port()).collect();
    let children: Vec<Child> = ports
        .iter()
        .map(|port| {
            Command::new(env!("CARGO_BIN_EXE_fanout-worker"))
                .arg(format!("--redis-url={redis_url}"))
                .arg(format!("--queue-url={queue_url}"))
                .arg(format!("--api-gateway=bench={base}/prod"))
                .arg(format!("--metrics-listen=127.0.0.1:{port}"))
                .arg("--receive-wait-secs=1")
                .arg("--chunk-size=500")
                .args(extra)
                .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
                .env("AWS_SECRET_ACCESS_KEY", "secret")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("RUST_LOG", "warn")
                .spawn()
                .unwrap()
        })
        .collect();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in &ports {
        while http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the workers did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (children, ports)
}
