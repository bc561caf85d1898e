//! `GET /v1/broadcasts/{id}` over real HTTP: the delivery report the workers keep in Redis (written here
//! field by field, as a worker writes it), its states, and the refusals.

use crate::support::Ingest;
use common::keys::report_field as f;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn reports_are_read_back_with_their_state() {
    let ingest = Ingest::start(&[]).await;
    let id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let key = ingest.state.keys.report(id);
    let mut redis = ingest.redis().await;
    redis::cmd("HSET")
        .arg(&key)
        .arg(f::TARGET)
        .arg("channel")
        .arg(f::ENQUEUED_MS)
        .arg(1000)
        .arg(f::STARTED_MS)
        .arg(1010)
        .arg(f::SENT)
        .arg(2990)
        .arg(f::GONE)
        .arg(7)
        .arg(f::THROTTLED)
        .arg(42)
        .arg(f::FAILED)
        .arg(3)
        .arg(f::DUPLICATES)
        .arg(4)
        .arg(f::RETRIES)
        .arg(51)
        .arg(f::CHUNKS)
        .arg(6)
        .arg(f::OUTSTANDING)
        .arg(1)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let get = || async {
        let r = ingest
            .api(Method::GET, &format!("/v1/broadcasts/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()
    };
    let body = get().await;
    assert_eq!(
        body,
        json!({
            "id": id, "state": "running", "target": "channel",
            "sent": 2990, "duplicates": 4, "gone": 7, "throttled": 42, "retries": 51, "failed": 3,
            "chunks": 6, "outstanding": 1,
            "enqueued_at_ms": 1000, "started_at_ms": 1010, "finished_at_ms": null
        })
    );
    redis::cmd("HSET")
        .arg(&key)
        .arg(f::FINISHED_MS)
        .arg(2500)
        .arg(f::OUTSTANDING)
        .arg(0)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let body = get().await;
    assert_eq!(body["state"], "finished");
    assert_eq!(body["finished_at_ms"], 2500);
    assert_eq!(body["outstanding"], 0);
}

#[tokio::test]
async fn unknown_and_invalid_ids_are_refused() {
    let ingest = Ingest::start(&[]).await;
    let r = ingest
        .api(Method::GET, "/v1/broadcasts/no-such-broadcast")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unknown_broadcast"
    );
    let r = ingest
        .api(Method::GET, "/v1/broadcasts/bad%7Bid%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = ingest
        .http
        .get(format!("{}/v1/broadcasts/x", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
