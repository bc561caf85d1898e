//! What the worker's benchmarks share: `n` connections registered on the channel `big` of the `bench` API,
//! and a fleet of real `fanout-worker` processes against one Redis (state and Redis Streams queue) and one
//! Management API endpoint, started and awaited until each answers on `/healthz`.

use common::keys::{Keyspace, conn_field as f};
use common::store::Redis;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use test_support::free_port;

/// Registers `n` connections (ids `{prefix}0000000AbCdE=`, ...) on the channel `big` of API `bench`, stage
/// `prod`, in pipelines of 5,000; with `everyone`, also in the everyone buckets.
pub async fn register_channel(redis: &Redis, prefix: &str, n: usize, everyone: bool) {
    let keys = Keyspace::default();
    for batch in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let mut pipe = redis::pipe();
        for i in batch {
            let id = format!("{prefix}{i:07}AbCdE=");
            pipe.cmd("HSET")
                .arg(keys.connection(&id))
                .arg(f::CHANNEL)
                .arg("big")
                .arg(f::API_ID)
                .arg("bench")
                .arg(f::STAGE)
                .arg("prod")
                .ignore();
            pipe.cmd("SADD").arg(keys.channel("big")).arg(&id).ignore();
            if everyone {
                pipe.cmd("SADD")
                    .arg(keys.all_bucket_of(&id))
                    .arg(&id)
                    .ignore();
            }
        }
        pipe.query_async::<()>(&mut redis.clone()).await.unwrap();
    }
}

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
