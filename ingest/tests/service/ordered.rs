//! Ordered and coalescing channels at publish: a post to one goes into the channel's backlog in
//! publish order, with one drain job on the queue however many are published before a worker drains it;
//! other channels keep one job per message and no backlog. A coalescing channel refuses payloads that
//! are not JSON objects (its batches are JSON arrays); a full backlog is refused with 429; and a publish
//! whose drain job the queue refuses is answered 503 and taken back out of the backlog.

use crate::support::{Ingest, payload};
use common::job::{Action, Job, Target};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::RedisServer;

const FLAGS: &[&str] = &["--ordered-channel=room-*", "--coalesced-channel=live"];

async fn publish(ingest: &Ingest, channel: &str, body: Value) -> (StatusCode, Value) {
    let r = ingest
        .api(Method::POST, &format!("/v1/channels/{channel}/publish"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

/// The jobs in `channel`'s backlog, oldest first.
async fn backlog(ingest: &Ingest, channel: &str) -> Vec<Job> {
    let keys = common::keys::Keyspace::default();
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(keys.ordered_backlog(channel))
        .arg(0)
        .arg(-1)
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap();
    entries.iter().map(|e| Job::decode(e).unwrap()).collect()
}

async fn scheduled(ingest: &Ingest, channel: &str) -> bool {
    let keys = common::keys::Keyspace::default();
    redis::cmd("EXISTS")
        .arg(keys.ordered_scheduled(channel))
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn posts_to_an_ordered_channel_wait_in_its_backlog_behind_one_drain_job() {
    let ingest = Ingest::start(FLAGS).await;
    ingest.join("r1", "alice", "room-1").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = publish(&ingest, "room-1", json!({ "n": n })).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["job_id"].as_str().unwrap().to_owned());
    }
    let waiting = backlog(&ingest, "room-1").await;
    assert_eq!(
        waiting.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        ids,
        "the backlog holds the messages in publish order, under the ids the publishes answered"
    );
    assert_eq!(
        waiting.iter().map(payload).collect::<Vec<_>>(),
        [json!({"n": 0}), json!({"n": 1}), json!({"n": 2})]
    );
    let jobs = ingest.jobs().await;
    assert_eq!(jobs.len(), 1, "one drain job for the three: {jobs:?}");
    assert_eq!(
        jobs[0].target,
        Target::Channel {
            channel: "room-1".into()
        }
    );
    assert!(matches!(jobs[0].action, Action::Drain { coalesce: false }));
    assert!(scheduled(&ingest, "room-1").await);
    // An unordered channel: one job per message, no backlog.
    for n in 0..2 {
        let (status, _) = publish(&ingest, "general", json!({ "n": n })).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let jobs = ingest.jobs().await;
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| matches!(j.action, Action::Post { .. })));
    assert!(backlog(&ingest, "general").await.is_empty());
    assert!(!scheduled(&ingest, "general").await);
}

#[tokio::test]
async fn a_coalescing_channel_drains_with_coalescing_and_takes_only_json_objects() {
    let ingest = Ingest::start(FLAGS).await;
    let (status, _) = publish(&ingest, "live", json!({"n": 1})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let jobs = ingest.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert!(matches!(jobs[0].action, Action::Drain { coalesce: true }));
    for refused in [json!([1, 2]), json!("text"), json!(3)] {
        let (status, body) = publish(&ingest, "live", refused.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        assert_eq!(body["error"]["code"], "bad_request");
        assert_eq!(
            body["error"]["message"],
            "a payload published to a coalescing channel must be a JSON object"
        );
    }
    assert_eq!(
        backlog(&ingest, "live").await.len(),
        1,
        "nothing refused was kept"
    );
    // An ordered channel that does not coalesce takes any JSON.
    let (status, _) = publish(&ingest, "room-2", json!([1, 2])).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_full_backlog_is_refused_with_429_and_keeps_what_it_has() {
    let ingest = Ingest::start(FLAGS).await;
    let keys = common::keys::Keyspace::default();
    let mut pipe = redis::pipe();
    for _ in 0..common::ordered::BACKLOG_LIMIT {
        pipe.cmd("RPUSH")
            .arg(keys.ordered_backlog("room-9"))
            .arg("{}")
            .ignore();
    }
    pipe.query_async::<()>(&mut ingest.redis().await)
        .await
        .unwrap();
    let (status, body) = publish(&ingest, "room-9", json!({"n": 1})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "channel_backlog_full");
    let len: u64 = redis::cmd("LLEN")
        .arg(keys.ordered_backlog("room-9"))
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap();
    assert_eq!(len, common::ordered::BACKLOG_LIMIT);
    assert!(ingest.jobs().await.is_empty());
}

#[tokio::test]
async fn a_drain_job_the_queue_refuses_takes_the_publish_back() {
    let mut queue_redis = RedisServer::start();
    let ingest = Ingest::start_on(
        RedisServer::start(),
        Some(format!("{}?queue=jobs", queue_redis.url())),
        FLAGS,
    )
    .await;
    queue_redis.stop();
    let (status, body) = publish(&ingest, "room-1", json!({"n": 1})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "queue_unavailable");
    assert!(backlog(&ingest, "room-1").await.is_empty());
    assert!(
        !scheduled(&ingest, "room-1").await,
        "the next publish schedules a drain"
    );
}
