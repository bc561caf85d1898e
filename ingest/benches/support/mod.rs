//! What ingest's benchmarks share: an ingest served on a free loopback port against a given redis-server,
//! with the gateway secret and limits a benchmark needs.

use clap::Parser;
use std::time::Duration;

/// The API id the benchmarks' callbacks carry (configured in [`start_ingest`]).
pub const API_ID: &str = "benchapi";

/// The client address the benchmarks' callbacks carry.
pub const SOURCE_IP: &str = "203.0.113.9";

/// The gateway secret the benchmarks' callbacks carry.
pub const SECRET: &str = "bench-secret-0123456789-0123456789-abc";

/// Ingest on `redis` (its queue a stream on the same server) with `extra` flags, connect limits out of the
/// way; returns its state and its base URL.
pub async fn start_ingest(
    redis: &test_support::RedisServer,
    extra: &[String],
) -> (ingest::state::AppState, String) {
    let mut args = vec![
        "ingest".to_owned(),
        format!("--redis-url={}", redis.url()),
        format!("--queue-url={}?queue=jobs", redis.url()),
        "--api-gateway=benchapi=http://127.0.0.1:9/bench".into(),
        format!("--gateway-secret={SECRET}"),
        "--api-key=bench-api-key-0123456789-0123456789".into(),
        "--connect-limit-per-minute=100000000".into(),
    ];
    args.extend_from_slice(extra);
    let settings = ingest::config::Config::try_parse_from(args)
        .unwrap()
        .validate()
        .unwrap();
    let state = ingest::build_state(settings, Duration::from_secs(10))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ingest::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (state, base)
}

/// One `$connect` callback as API Gateway sends it, for connection `connection_id` with `ws_token` in
/// `channel`; whether ingest accepted it.
pub async fn connect(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    token: &str,
    connection_id: &str,
) -> bool {
    http.post(format!(
        "{base}/ws/connect?channel={channel}&ws_token={token}"
    ))
    .header("connectionId", connection_id)
    .header("X-Amzn-Apigateway-Api-Id", API_ID)
    .header("X-Ws-Gateway-Secret", SECRET)
    .header("X-Ws-Source-Ip", SOURCE_IP)
    .send()
    .await
    .is_ok_and(|r| r.status().is_success())
}
