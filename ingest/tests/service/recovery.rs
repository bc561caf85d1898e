//! Recovery from an offset against a real Redis (single node and cluster): kept messages are stamped
//! with a per-channel `offset` and `epoch` in the same script as the history write, and `recover`
//! answers with exactly the missed messages, or `recovered: false` with the reason.

use crate::support::{Ingest, payload};
use common::job::Target;
use common::keys::Keyspace;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn publish(ingest: &Ingest, channel: &str, body: Value) -> reqwest::Response {
    ingest
        .api(
            Method::POST,
            &format!("/v1/channels/{channel}/publish?history=true"),
        )
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Publishes `n` numbered messages and returns what recipients were sent.
async fn publish_numbered(ingest: &Ingest, range: std::ops::Range<u64>) -> Vec<Value> {
    for n in range {
        let r = publish(ingest, "general", json!({"n": n})).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    ingest.jobs().await.iter().map(payload).collect()
}

/// Sends `recover` as connection `id` and returns the one reply queued for it.
async fn recover(ingest: &Ingest, id: &str, body: Value) -> (StatusCode, Value) {
    let (status, _) = ingest.message(id, body).await;
    let jobs = ingest.jobs().await;
    assert_eq!(jobs.len(), 1, "one reply");
    assert_eq!(
        jobs[0].target,
        Target::Connections {
            ids: vec![id.to_owned()]
        }
    );
    (status, payload(&jobs[0]))
}

fn numbers(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn offsets_count_up_per_channel_and_recover_replays_exactly_the_missed_messages() {
    let ingest = Ingest::start(&["--history-size=10"]).await;
    ingest.join("r1", "alice", "general").await;
    let sent = publish_numbered(&ingest, 0..5).await;
    let offsets: Vec<u64> = sent.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    let epoch = sent[0]["epoch"].as_str().unwrap().to_owned();
    assert!(sent.iter().all(|m| m["epoch"] == epoch.as_str()));
    // Another channel counts on its own.
    assert_eq!(
        publish(&ingest, "other", json!({"n": 0})).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(payload(&ingest.jobs().await[0])["offset"], 1);

    let (status, answer) = recover(
        &ingest,
        "r1",
        json!({"action": "recover", "channel": "general", "offset": 2, "epoch": epoch}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["type"], "recover");
    assert_eq!(answer["recovered"], true);
    assert_eq!(
        (answer["epoch"].as_str(), answer["offset"].as_u64()),
        (Some(epoch.as_str()), Some(5))
    );
    assert_eq!(answer["messages"], json!(sent[2..5]));

    // Up to date: recovered, nothing to replay.
    let (_, answer) = recover(
        &ingest,
        "r1",
        json!({"action": "recover", "offset": 5, "epoch": epoch}),
    )
    .await;
    assert_eq!(
        (answer["recovered"].as_bool(), answer["messages"].clone()),
        (Some(true), json!([]))
    );
}

#[tokio::test]
async fn a_gap_beyond_history_and_a_changed_epoch_are_refused_with_the_reason() {
    let ingest = Ingest::start(&["--history-size=3"]).await;
    ingest.join("r2", "alice", "general").await;
    let sent = publish_numbered(&ingest, 0..6).await;
    let epoch = sent[0]["epoch"].as_str().unwrap().to_owned();
    // History keeps offsets 4..=6: from 3 is complete, from 2 is not.
    let (_, answer) = recover(
        &ingest,
        "r2",
        json!({"action": "recover", "offset": 3, "epoch": epoch}),
    )
    .await;
    assert_eq!(numbers(&answer["messages"]), [3, 4, 5]);
    let (_, answer) = recover(
        &ingest,
        "r2",
        json!({"action": "recover", "offset": 2, "epoch": epoch}),
    )
    .await;
    assert_eq!(answer["recovered"], false);
    assert_eq!(answer["reason"], "gap");
    assert_eq!(answer["offset"], 6);
    assert!(answer.get("messages").is_none());

    // History lost (as after a Redis restart without persistence of that key): a new epoch begins.
    let mut redis = ingest.redis().await;
    redis::cmd("DEL")
        .arg(Keyspace::default().history("general"))
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let after = publish_numbered(&ingest, 6..7).await;
    assert_eq!(after[0]["offset"], 1);
    let new_epoch = after[0]["epoch"].as_str().unwrap().to_owned();
    assert_ne!(new_epoch, epoch);
    let (_, answer) = recover(
        &ingest,
        "r2",
        json!({"action": "recover", "offset": 6, "epoch": epoch}),
    )
    .await;
    assert_eq!(answer["recovered"], false);
    assert_eq!(answer["reason"], "epoch_changed");
    assert_eq!(
        (answer["epoch"].as_str(), answer["offset"].as_u64()),
        (Some(new_epoch.as_str()), Some(1))
    );
}

#[tokio::test]
async fn bad_recover_requests_and_unstampable_payloads_are_refused_and_write_nothing() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("r3", "alice", "general").await;
    for body in [
        json!({"action": "recover", "offset": "1", "epoch": "e"}),
        json!({"action": "recover", "offset": 1}),
        json!({"action": "recover", "channel": "other", "offset": 1, "epoch": "e"}),
    ] {
        let (status, answer) = recover(&ingest, "r3", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["type"], "error", "{body}");
    }
    for body in [
        json!([1, 2]),
        json!("text"),
        json!({"offset": 9}),
        json!({"epoch": "x"}),
    ] {
        let r = publish(&ingest, "general", body.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "bad_request"
        );
    }
    assert!(ingest.jobs().await.is_empty());
    let mut redis = ingest.redis().await;
    let (len, position): (u64, u64) = redis::pipe()
        .cmd("LLEN")
        .arg(Keyspace::default().history("general"))
        .cmd("EXISTS")
        .arg(Keyspace::default().history_position("general"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!((len, position), (0, 0));
}

#[tokio::test]
async fn recovery_works_on_redis_cluster() {
    let ingest = Ingest::start_on_cluster(&["--chat-channel=*"]).await;
    ingest.join("rc1", "alice", "general").await;
    for text in ["one", "two", "three"] {
        let (status, _) = ingest
            .message("rc1", json!({"action": "chat_message", "message": text}))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let sent: Vec<Value> = ingest.jobs().await.iter().map(payload).collect();
    let epoch = sent[0]["epoch"].as_str().unwrap().to_owned();
    let (_, answer) = recover(
        &ingest,
        "rc1",
        json!({"action": "recover", "offset": 1, "epoch": epoch}),
    )
    .await;
    assert_eq!(answer["recovered"], true);
    let texts: Vec<&str> = answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["two", "three"]);
}

#[tokio::test]
async fn the_api_answers_a_channels_kept_messages_oldest_first_with_its_epoch_and_offset() {
    let ingest = Ingest::start(&["--history-size=5"]).await;
    let read = |query: &'static str| {
        let request = ingest.api(Method::GET, &format!("/v1/channels/general/history{query}"));
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, empty) = read("").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        empty,
        json!({"channel": "general", "epoch": null, "offset": 0, "messages": [], "truncated": false})
    );
    let sent = publish_numbered(&ingest, 1..8).await;
    let (status, kept) = read("").await;
    assert_eq!(status, StatusCode::OK);
    // The channel keeps 5: messages 3 to 7, exactly as members received them.
    assert_eq!(kept["messages"], json!(sent[2..7]));
    assert_eq!(kept["offset"], 7);
    assert_eq!(kept["epoch"], sent[6]["epoch"]);
    assert_eq!(kept["truncated"], false);
    let (_, newest) = read("?limit=2").await;
    assert_eq!(newest["messages"], json!(sent[5..7]));
    for bad in ["?limit=0", "?limit=1001", "?limit=x"] {
        assert_eq!(read(bad).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = ingest
        .api(Method::GET, "/v1/channels/a*/history")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    ingest.stop().await;
}

#[tokio::test]
async fn a_history_answer_stops_at_one_mebibyte_and_says_so() {
    let ingest = Ingest::start(&["--history-size=10"]).await;
    let big = "x".repeat(120 * 1024);
    for n in 0..10 {
        let r = publish(&ingest, "general", json!({"n": n, "big": big})).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let kept: Value = ingest
        .api(Method::GET, "/v1/channels/general/history")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages = kept["messages"].as_array().unwrap();
    // Eight of about 120 KiB fit in 1 MiB: the newest eight, oldest first.
    let numbers: Vec<_> = messages.iter().map(|m| m["n"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (2..10).collect::<Vec<_>>());
    assert_eq!(kept["truncated"], true);
    ingest.stop().await;
}
