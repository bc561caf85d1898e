//! Limits on every input: the per-connection message rate, JSON nesting on every JSON route, history
//! replies bounded in count and bytes, and the webhook's redirects, reply size and failures. Real ingest
//! on a private redis-server; the webhook is a small local HTTP server (the application's boundary).

use crate::support::{Ingest, payload};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn deep(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

#[tokio::test]
async fn a_connection_over_its_message_rate_is_refused_and_told_once() {
    let ingest = Ingest::start(&[
        "--chat-channel=general",
        "--message-burst=3",
        "--message-rate-per-sec=1",
    ])
    .await;
    ingest.join("c1", "alice", "general").await;
    ingest.join("c2", "bob", "general").await;
    ingest.jobs().await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let (status, body) = ingest
            .message(
                "c1",
                json!({"action": "chat_message", "message": format!("m{i}")}),
            )
            .await;
        statuses.push((status, body["error"]["code"].as_str().map(str::to_owned)));
    }
    assert_eq!(statuses[..3], vec![(StatusCode::OK, None); 3][..]);
    for s in &statuses[3..] {
        assert_eq!(
            s,
            &(
                StatusCode::TOO_MANY_REQUESTS,
                Some("message_rate_limited".to_owned())
            )
        );
    }
    let jobs = ingest.jobs().await;
    let chats = jobs
        .iter()
        .filter(|j| payload(j)["type"] == "chat_message")
        .count();
    let errors: Vec<Value> = jobs
        .iter()
        .map(payload)
        .filter(|p| p["type"] == "error")
        .collect();
    assert_eq!(chats, 3, "over-limit messages are not fanned out");
    assert_eq!(errors.len(), 1, "the client is told once: {errors:?}");
    assert_eq!(errors[0]["error"], "Too many messages; slow down.");
    // Another connection has its own bucket.
    let (status, _) = ingest
        .message("c2", json!({"action": "chat_message", "message": "hi"}))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn deep_json_is_refused_on_every_json_route() {
    let ingest = Ingest::start(&["--chat-channel=general"]).await;
    ingest.join("c1", "alice", "general").await;
    ingest.jobs().await;
    let deep_object = format!(
        r#"{{"action":"chat_message","message":"x","n":{}}}"#,
        deep(64)
    );
    let r = ingest
        .callback("default", "c1")
        .body(deep_object)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_request_format"
    );
    for (path, body) in [
        ("/v1/channels/general/publish?history=true", deep(60_000)),
        ("/v1/broadcast", deep(65)),
        (
            "/v1/tokens",
            format!(r#"{{"subject":"a","x":{}}}"#, deep(100)),
        ),
        ("/v1/kick", format!(r#"{{"user":{}}}"#, deep(100))),
    ] {
        let r = ingest
            .api(Method::POST, path)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "bad_request"
        );
    }
    assert!(ingest.jobs().await.is_empty());
    let kept: i64 = redis::cmd("LLEN")
        .arg(common::keys::Keyspace::default().history("general"))
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap();
    assert_eq!(kept, 0, "nothing deep was stored in history");
    // 64 deep is fine.
    let r = ingest
        .api(Method::POST, "/v1/broadcast")
        .body(deep(64))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn history_replies_stop_at_one_message_of_128_kib() {
    let ingest = Ingest::start(&["--history-size=1000"]).await;
    ingest.join("c1", "alice", "general").await;
    // 40 messages of ~10 KB: only the newest dozen fit in one reply.
    for i in 0..40 {
        let text = format!("{i:03}{}", "x".repeat(10_000));
        let r = ingest
            .api(Method::POST, "/v1/channels/general/publish?history=true")
            .json(&json!({ "n": i, "text": text }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    ingest.jobs().await;
    let (status, _) = ingest
        .message("c1", json!({"action": "fetch_history"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let jobs = ingest.jobs().await;
    let reply = payload(&jobs[0]);
    let text = serde_json::to_string(&reply).unwrap();
    assert!(
        text.len() <= common::names::MAX_PAYLOAD_BYTES,
        "{}",
        text.len()
    );
    let numbers: Vec<i64> = reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["n"].as_i64().unwrap())
        .collect();
    // The newest, contiguous, oldest first.
    assert_eq!(numbers.last(), Some(&39));
    assert!(numbers.len() >= 10 && numbers.len() < 14, "{numbers:?}");
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
}

#[tokio::test]
async fn the_webhook_is_not_followed_through_redirects_and_its_reply_is_capped() {
    // The application's webhook is the boundary: a local server that redirects, answers too much, or
    // answers properly, and counts what reaches the redirect's target.
    let followed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = followed.clone();
    let hook = axum::Router::new()
        .route(
            "/redirect",
            axum::routing::post(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [("location", "/elsewhere")],
                    "",
                )
            }),
        )
        .route(
            "/elsewhere",
            axum::routing::post(move || {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { r#"{"type":"redirected"}"# }
            }),
        )
        .route(
            "/huge",
            axum::routing::post(|| async {
                format!(r#"{{"type":"huge","x":"{}"}}"#, "x".repeat(100 * 1024))
            }),
        )
        .route(
            "/ok",
            axum::routing::post(|| async { r#"{"type":"fine"}"# }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });

    for (path, expected) in [
        ("redirect", StatusCode::BAD_GATEWAY),
        ("huge", StatusCode::BAD_GATEWAY),
        ("ok", StatusCode::OK),
    ] {
        let ingest = Ingest::start(&[&format!("--webhook-url={base}/{path}")]).await;
        ingest.join("w1", "alice", "general").await;
        ingest.jobs().await;
        let (status, _) = ingest.message("w1", json!({"action": "custom"})).await;
        assert_eq!(status, expected, "{path}");
        let payloads: Vec<Value> = ingest.jobs().await.iter().map(payload).collect();
        if expected == StatusCode::OK {
            assert_eq!(payloads, [json!({"type": "fine"})]);
        } else {
            assert_eq!(payloads.len(), 1, "{path}: {payloads:?}");
            assert_eq!(payloads[0]["type"], "error", "{path}");
        }
        let metrics = ingest.metrics_text().await;
        let outcome = if expected == StatusCode::OK {
            "ok"
        } else {
            "failed"
        };
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("fanout_webhook_calls_total{")
                    && l.contains(&format!("\"{outcome}\""))
                    && l.ends_with(" 1")),
            "{path}: {metrics}"
        );
        ingest.stop().await;
    }
    assert_eq!(followed.load(std::sync::atomic::Ordering::SeqCst), 0);
}
