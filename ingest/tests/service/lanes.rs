//! Lanes at publish: every job goes on the queue of its lane, read back from each lane's own queue.
//! Connections and users are interactive whatever their size, everyone is bulk, and a channel is bulk
//! from `FANOUT_BULK_THRESHOLD` members on (one below stays interactive); replies to a connection are
//! interactive; the per-lane counter says the same. A channel whose size cannot be read (the state
//! store is down) is published on the bulk lane rather than refused.

use crate::support::{Ingest, payload};
use common::job::{Lane, Target};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Publishes `{"n": n}` at `path` and returns the job id.
async fn publish(ingest: &Ingest, path: &str, n: u32) -> String {
    let r = ingest
        .api(Method::POST, path)
        .json(&json!({ "n": n }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{path}");
    r.json::<serde_json::Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Publishes at `path` and checks that the job, and nothing else, is on `lane`'s queue.
async fn check(ingest: &Ingest, path: &str, lane: Lane, target: Target) {
    let id = publish(ingest, path, 1).await;
    let other = match lane {
        Lane::Interactive => Lane::Bulk,
        Lane::Bulk => Lane::Interactive,
    };
    let on_lane = ingest.lane_jobs(lane).await;
    assert_eq!(on_lane.len(), 1, "{path}: one job on {lane:?}");
    assert_eq!(
        (&on_lane[0].id, &on_lane[0].target, on_lane[0].lane),
        (&id, &target, lane),
        "{path}"
    );
    assert_eq!(payload(&on_lane[0]), json!({"n": 1}));
    assert!(
        ingest.lane_jobs(other).await.is_empty(),
        "{path}: nothing on {other:?}"
    );
}

#[tokio::test]
async fn each_target_kind_goes_on_its_lane_and_a_channel_turns_bulk_at_the_threshold() {
    let ingest = Ingest::start(&["--bulk-threshold=3"]).await;
    // "small" has 2 members (below the threshold), "edge" exactly 3; alice has 3 connections.
    for (id, subject, channel) in [
        ("s1", "alice", "small"),
        ("s2", "alice", "small"),
        ("e1", "alice", "edge"),
        ("e2", "bob", "edge"),
        ("e3", "bob", "edge"),
    ] {
        ingest.join(id, subject, channel).await;
    }
    let channel = |name: &str| Target::Channel {
        channel: name.into(),
    };
    check(
        &ingest,
        "/v1/channels/small/publish",
        Lane::Interactive,
        channel("small"),
    )
    .await;
    check(
        &ingest,
        "/v1/channels/edge/publish",
        Lane::Bulk,
        channel("edge"),
    )
    .await;
    // A channel nobody is in is interactive (nothing to deliver).
    check(
        &ingest,
        "/v1/channels/empty/publish",
        Lane::Interactive,
        channel("empty"),
    )
    .await;
    check(
        &ingest,
        "/v1/users/alice/publish",
        Lane::Interactive,
        Target::Subject {
            subject: "alice".into(),
        },
    )
    .await;
    check(
        &ingest,
        "/v1/connections/e1/publish",
        Lane::Interactive,
        Target::Connections {
            ids: vec!["e1".into()],
        },
    )
    .await;
    check(&ingest, "/v1/broadcast", Lane::Bulk, Target::All).await;
    // The channel grows to the threshold: its next publish is bulk.
    ingest.join("s3", "carol", "small").await;
    check(
        &ingest,
        "/v1/channels/small/publish",
        Lane::Bulk,
        channel("small"),
    )
    .await;
    // A reply to a connection's own action is interactive.
    ingest
        .message("e2", json!({"action": "no_such_action"}))
        .await;
    let replies = ingest.lane_jobs(Lane::Interactive).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].target,
        Target::Connections {
            ids: vec!["e2".into()]
        }
    );
    let text = ingest.metrics_text().await;
    for line in [
        "fanout_lane_jobs_enqueued_total{lane=\"bulk\"} 3",
        "fanout_lane_jobs_enqueued_total{lane=\"interactive\"} 5",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn a_channel_publish_while_the_state_store_is_down_goes_on_the_bulk_lane() {
    // The queues live on their own Redis; the channel's size cannot be read.
    let queue_redis = test_support::RedisServer::start();
    let mut ingest = Ingest::start_on(
        test_support::RedisServer::start(),
        Some(format!("{}?queue=jobs", queue_redis.url())),
        &[],
    )
    .await;
    ingest.stop_redis();
    let id = publish(&ingest, "/v1/channels/general/publish", 7).await;
    let bulk = ingest.lane_jobs(Lane::Bulk).await;
    assert_eq!(bulk.len(), 1);
    assert_eq!((&bulk[0].id, bulk[0].lane), (&id, Lane::Bulk));
    assert!(ingest.lane_jobs(Lane::Interactive).await.is_empty());
    assert!(
        ingest
            .metrics_text()
            .await
            .contains("fanout_redis_errors_total 1")
    );
}
