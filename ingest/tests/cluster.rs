//! Ingest on a three-node Redis Cluster: connect, messages, publishing and disconnect work when the
//! state store and the Redis Streams queue are a cluster, so no operation spans slots where it must not.

mod support;

use common::keys::Keyspace;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{Ingest, payload};

#[tokio::test]
async fn the_whole_callback_flow_works_on_redis_cluster() {
    let ingest = Ingest::start_on_cluster(&["--chat-channel=*"]).await;
    assert!(ingest.state.redis.is_cluster());
    ingest.join("cl1", "alice", "general").await;
    ingest.join("cl2", "bob", "general").await;
    let (status, _) = ingest
        .message(
            "cl1",
            json!({"action": "change_channel", "channel": "support"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ingest
            .smembers(&Keyspace::default().channel("support"))
            .await,
        ["cl1"]
    );
    assert_eq!(
        ingest
            .smembers(&Keyspace::default().channel("general"))
            .await,
        ["cl2"]
    );
    let (status, _) = ingest
        .message("cl2", json!({"action": "chat_message", "message": "hi"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = ingest
        .message("cl2", json!({"action": "fetch_history"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let r = ingest
        .api(Method::POST, "/v1/broadcast")
        .json(&json!({"type": "system"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = ingest
        .api(Method::GET, "/v1/channels/general")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["connections"],
        1
    );
    let kinds: Vec<String> = ingest
        .jobs()
        .await
        .iter()
        .map(|j| payload(j)["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["channel_changed", "chat_message", "history", "system"]
    );
    assert_eq!(
        ingest
            .callback("disconnect", "cl1")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(
        ingest
            .smembers(&Keyspace::default().channel("support"))
            .await
            .is_empty()
    );
    assert!(
        ingest
            .smembers(&Keyspace::default().subject("alice"))
            .await
            .is_empty()
    );
    let text = ingest
        .http
        .get(format!("{}/metrics", ingest.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("fanout_live_connections 1"), "{text}");
}
