//! Ingest when its dependencies fail: Redis going away (callbacks and API answer 503, readiness fails,
//! and everything recovers when Redis returns) and the queue going away (a publish is never answered
//! 202 for a job that was not queued). Also: arbitrary input never crashes it.

use crate::support::Ingest;
use rand::{RngExt, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::RedisServer;

#[tokio::test]
async fn redis_outage_is_503_and_recovers() {
    // The queue lives on its own Redis, so only the state store goes away.
    let queue_redis = RedisServer::start();
    let mut ingest = Ingest::start_on(
        RedisServer::start(),
        Some(format!("{}?queue=jobs", queue_redis.url())),
        &[],
    )
    .await;
    ingest.join("r1", "alice", "general").await;
    ingest.stop_redis();

    let token_request = ingest
        .api(Method::POST, "/v1/tokens")
        .json(&json!({"subject": "alice"}));
    let r = token_request.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "redis_unavailable");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no internals in {body}"
    );
    assert_eq!(
        ingest.connect("r2", "channel=general&ws_token=x").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, _) = ingest
        .message("r1", json!({"action": "fetch_history"}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let r = ingest
        .http
        .get(format!("{}/readyz", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"redis": "unavailable", "queue": "ok"})
    );

    ingest.restart_redis();
    // The connection manager reconnects on its own; readiness tells when.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = ingest
            .http
            .get(format!("{}/readyz", ingest.url))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ingest did not recover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ingest.join("r3", "alice", "general").await;
    ingest.stop().await;
}

#[tokio::test]
async fn queue_outage_is_never_reported_as_accepted() {
    let mut queue_redis = RedisServer::start();
    let ingest = Ingest::start_on(
        RedisServer::start(),
        Some(format!("{}?queue=jobs", queue_redis.url())),
        &[],
    )
    .await;
    ingest.join("q1", "alice", "general").await;
    queue_redis.stop();
    let r = ingest
        .api(Method::POST, "/v1/channels/general/publish?history=true")
        .json(&json!({"m": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "queue_unavailable"
    );
    // The history entry written before the failed enqueue was taken back.
    let mut redis = ingest.redis().await;
    let len: u64 = redis::cmd("LLEN")
        .arg(common::keys::Keyspace::default().history("general"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(len, 0);
    let r = ingest
        .api(Method::DELETE, "/v1/connections/q1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(common::keys::Keyspace::default().channel("general"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        members,
        ["q1"],
        "a kick that could not be queued changes nothing"
    );
    let r = ingest
        .http
        .get(format!("{}/readyz", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"redis": "ok", "queue": "unavailable"})
    );
}

#[tokio::test]
async fn arbitrary_input_never_crashes_or_500s() {
    let ingest = Ingest::start(&[
        "--connect-limit-per-minute=100000",
        "--token-issue-limit-per-minute=100000",
        "--public-channel=*",
        "--chat-channel=*",
    ])
    .await;
    ingest.join("f1", "alice", "general").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let pieces = [
        "{",
        "}",
        "[",
        "]",
        "\"action\"",
        "\"handler\"",
        ":",
        ",",
        "\"chat_message\"",
        "\"change_channel\"",
        "\"fetch_history\"",
        "\"channel\"",
        "\"message\"",
        "null",
        "1e999",
        "\"\\u0000\"",
        "\u{1F600}",
        "\"x\"",
        "true",
    ];
    for i in 0..300 {
        let body: String = (0..rng.random_range(0..12))
            .map(|_| pieces[rng.random_range(0..pieces.len())])
            .collect();
        let route = ["default", "connect", "disconnect", "custom-route"][i % 4];
        let id = if i % 7 == 0 {
            "bad id".to_owned()
        } else {
            "f1".to_owned()
        };
        let query = format!(
            "channel={}&ws_token={}",
            ["general", "%00", "a%20b", ""][i % 4],
            ["", "x", "%FF"][i % 3]
        );
        let r = ingest
            .callback(&format!("{route}?{query}"), &id)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status().is_client_error(),
            "{route} {body:?} -> {}",
            r.status()
        );
        if route == "disconnect" {
            ingest.join("f1", "alice", "general").await;
        }
    }
    let r = ingest
        .http
        .get(format!("{}/healthz", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
