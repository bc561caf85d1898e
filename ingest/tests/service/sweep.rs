//! The stale-connection sweep against a real Redis (single node and a three-node cluster): a connection
//! whose record expired without a `$disconnect` leaves every set it was in and its channel's presence,
//! with one leave event and the metric counted; a connection already kicked is not announced again;
//! two replicas sweeping at once (with their leases, and without them) never announce a leave twice.

use crate::support::{Ingest, connection, payload};
use common::job::{Job, Target};
use common::keys::{ALL_BUCKETS, Keyspace};
use ingest::membership::Connection;
use ingest::state::AppState;
use ingest::sweep::{self, Swept};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const PRESENCE: &str = "--presence-channel=room-*";
const NO_LIMIT: &str = "--connect-limit-exempt=203.0.113.7";
/// No background sweep while a test runs: each test sweeps when it means to.
const NO_BACKGROUND: &str = "--sweep-interval-ms=3600000";

/// The leave events among `jobs`: connection id → how many, with the last event seen for each.
fn leaves(jobs: &[Job]) -> BTreeMap<String, (usize, Value)> {
    let mut seen = BTreeMap::new();
    for job in jobs.iter().filter(|j| j.payload().is_some()) {
        let p = payload(job);
        if p["type"] == "presence" && p["event"] == "leave" {
            assert!(matches!(job.target, Target::Channel { .. }), "{job:?}");
            let id = p["member"]["connection_id"].as_str().unwrap().to_owned();
            let entry = seen.entry(id).or_insert((0, Value::Null));
            entry.0 += 1;
            entry.1 = p;
        }
    }
    seen
}

/// A record expiring is its key disappearing: the same as a `DEL` of it, without waiting for the clock.
async fn expire_record(ingest: &Ingest, id: &str) {
    redis::cmd("DEL")
        .arg(Keyspace::default().connection(id))
        .query_async::<()>(&mut ingest.redis().await)
        .await
        .unwrap();
}

async fn hkeys(ingest: &Ingest, key: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("HKEYS")
        .arg(key)
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn located(ingest: &Ingest, id: &str) -> bool {
    redis::cmd("HEXISTS")
        .arg(Keyspace::default().location_of(id))
        .arg(id)
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap()
}

async fn in_bucket(ingest: &Ingest, id: &str) -> bool {
    redis::cmd("SISMEMBER")
        .arg(Keyspace::default().all_bucket_of(id))
        .arg(id)
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap()
}

/// Walks every bucket without taking leases.
async fn walk_all(state: &AppState) -> Swept {
    let mut total = Swept::default();
    for bucket in 0..ALL_BUCKETS {
        total += sweep::walk(state, bucket, None).await.unwrap();
    }
    total
}

fn member(id: &str, channel: &str, subject: &str) -> Connection {
    Connection {
        info: Some(format!(r#"{{"who":"{subject}"}}"#)),
        ..connection(id, channel, Some(subject))
    }
}

#[tokio::test]
async fn an_expired_connection_leaves_every_set_with_one_leave_event() {
    let ingest = Ingest::start(&[PRESENCE, NO_LIMIT, NO_BACKGROUND]).await;
    let keys = Keyspace::default();
    let r = ingest
        .api(Method::POST, "/v1/tokens")
        .json(&json!({"subject": "ada", "info": {"name": "Ada"}}))
        .send()
        .await
        .unwrap();
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        ingest
            .connect("a1", &format!("channel=room-1&ws_token={token}"))
            .await,
        StatusCode::OK
    );
    ingest.join("b1", "bob", "room-1").await;
    ingest.join("l1", "lou", "lobby").await; // no presence there
    ingest.jobs().await;

    // Nothing is stale yet: the sweep checks everyone and removes nobody.
    let swept = sweep::once(&ingest.state).await.unwrap();
    assert_eq!(
        swept,
        Swept {
            buckets: ALL_BUCKETS,
            checked: 3,
            removed: 0
        }
    );
    assert!(ingest.jobs().await.is_empty());

    // a1's and l1's records expire; API Gateway never sent $disconnect.
    expire_record(&ingest, "a1").await;
    expire_record(&ingest, "l1").await;
    let swept = walk_all(&ingest.state).await;
    assert_eq!((swept.checked, swept.removed), (3, 2));
    for id in ["a1", "l1"] {
        assert!(!located(&ingest, id).await, "{id}");
        assert!(!in_bucket(&ingest, id).await, "{id}");
    }
    assert_eq!(ingest.smembers(&keys.channel("room-1")).await, ["b1"]);
    assert!(ingest.smembers(&keys.channel("lobby")).await.is_empty());
    assert!(ingest.smembers(&keys.subject("ada")).await.is_empty());
    assert!(ingest.smembers(&keys.subject("lou")).await.is_empty());
    assert_eq!(hkeys(&ingest, &keys.presence("room-1")).await, ["b1"]);
    // b1 is untouched.
    assert!(located(&ingest, "b1").await && in_bucket(&ingest, "b1").await);
    assert_eq!(ingest.smembers(&keys.subject("bob")).await, ["b1"]);

    let jobs = ingest.jobs().await;
    let events = leaves(&jobs);
    assert_eq!(events.len(), 1, "only the presence channel hears of it");
    let (count, event) = &events["a1"];
    assert_eq!(*count, 1);
    assert_eq!(
        *event,
        json!({"type": "presence", "event": "leave", "channel": "room-1",
            "member": {"connection_id": "a1", "user_id": "ada", "info": {"name": "Ada"}}})
    );
    assert_eq!(
        jobs.iter()
            .find(|j| payload(j)["event"] == "leave")
            .unwrap()
            .target,
        Target::Channel {
            channel: "room-1".into()
        }
    );
    let text = ingest.metrics_text().await;
    assert!(text.contains("fanout_connections_swept_total 2"), "{text}");
    let body: Value = ingest
        .api(Method::GET, "/v1/channels/room-1/presence")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["count"], 1);

    // Sweeping again finds nothing more, and says nothing more.
    assert_eq!(walk_all(&ingest.state).await.removed, 0);
    assert!(ingest.jobs().await.is_empty());

    // A kicked connection left at the kick; when its record expires the sweep forgets its location
    // without a second leave event.
    let r = ingest
        .api(Method::POST, "/v1/kick")
        .json(&json!({"connection": "b1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(leaves(&ingest.jobs().await)["b1"].0, 1);
    expire_record(&ingest, "b1").await;
    assert_eq!(walk_all(&ingest.state).await.removed, 1);
    assert!(!located(&ingest, "b1").await);
    assert!(leaves(&ingest.jobs().await).is_empty());
    ingest.stop().await;
}

/// A second replica's state over the same Redis and queue, with its own metrics.
async fn replica(ingest: &Ingest) -> AppState {
    ingest::build_state(
        (*ingest.state.settings).clone(),
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn two_sweepers_at_once_never_announce_a_leave_twice() {
    let ingest = Ingest::start(&[PRESENCE, NO_BACKGROUND]).await;
    let other = replica(&ingest).await;
    for i in 0..60 {
        let conn = member(&format!("m{i}"), "room-1", &format!("user{i}"));
        ingest::membership::register(&ingest.state, &conn)
            .await
            .unwrap();
    }
    ingest.jobs().await;

    // With leases: each bucket is swept by one replica.
    for i in 0..30 {
        expire_record(&ingest, &format!("m{i}")).await;
    }
    let (a, b) = tokio::join!(sweep::once(&ingest.state), sweep::once(&other));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.buckets + b.buckets, ALL_BUCKETS, "{a:?} {b:?}");
    assert_eq!(a.removed + b.removed, 30, "{a:?} {b:?}");
    // The leases last an interval: a third pass in the meantime sweeps no bucket.
    assert_eq!(sweep::once(&other).await.unwrap().buckets, 0);

    // Without leases, both walk every bucket at once: the scripts still remove each connection once.
    for i in 30..50 {
        expire_record(&ingest, &format!("m{i}")).await;
    }
    let (a, b) = tokio::join!(walk_all(&ingest.state), walk_all(&other));
    assert_eq!(a.removed + b.removed, 20, "{a:?} {b:?}");

    let events = leaves(&ingest.jobs().await);
    assert_eq!(events.len(), 50);
    for (id, (count, event)) in &events {
        assert_eq!(*count, 1, "{id} announced {count} times");
        let i: usize = id.trim_start_matches('m').parse().unwrap();
        assert!(i < 50, "{id} is live");
        assert_eq!(event["member"]["user_id"], format!("user{i}"));
    }
    let swept_total = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("fanout_connections_swept_total "))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let mine = swept_total(&ingest.metrics_text().await);
    let theirs = other.metrics.connections_swept.get();
    assert_eq!(mine + theirs, 50, "{mine} + {theirs}");
    let (status, body) = {
        let r = ingest
            .api(Method::GET, "/v1/channels/room-1/presence?limit=0")
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["count"], 10);
    ingest.stop().await;
}

#[tokio::test]
async fn the_sweep_and_presence_work_on_redis_cluster() {
    let ingest = Ingest::start_on_cluster(&[PRESENCE, NO_LIMIT, NO_BACKGROUND]).await;
    assert!(ingest.state.redis.is_cluster());
    let keys = Keyspace::default();
    ingest.join("k1", "kim", "room-1").await;
    ingest.join("k2", "kai", "room-1").await;
    let joins = ingest
        .jobs()
        .await
        .iter()
        .filter(|j| payload(j)["event"] == "join")
        .count();
    assert_eq!(joins, 2);
    let r = ingest
        .api(Method::GET, "/v1/channels/room-1/presence")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["count"], 2);
    let (status, _) = ingest.message("k2", json!({"action": "presence"})).await;
    assert_eq!(status, StatusCode::OK);
    let reply = ingest.jobs().await;
    assert_eq!(payload(&reply[0])["members"].as_array().unwrap().len(), 2);

    expire_record(&ingest, "k1").await;
    let swept = sweep::once(&ingest.state).await.unwrap();
    assert_eq!(swept.buckets, ALL_BUCKETS);
    assert_eq!((swept.checked, swept.removed), (2, 1));
    assert!(!located(&ingest, "k1").await);
    assert!(!in_bucket(&ingest, "k1").await);
    assert_eq!(ingest.smembers(&keys.channel("room-1")).await, ["k2"]);
    assert!(ingest.smembers(&keys.subject("kim")).await.is_empty());
    assert_eq!(hkeys(&ingest, &keys.presence("room-1")).await, ["k2"]);
    let events = leaves(&ingest.jobs().await);
    assert_eq!(events.len(), 1);
    assert_eq!(events["k1"].0, 1);

    // $disconnect of the survivor on the cluster: one leave, presence empty.
    let r = ingest.callback("disconnect", "k2").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(leaves(&ingest.jobs().await)["k2"].0, 1);
    assert!(hkeys(&ingest, &keys.presence("room-1")).await.is_empty());
    assert!(!located(&ingest, "k2").await);
    ingest.stop().await;
}

/// The sweep runs by itself beside the listener: with a one-second interval, an expired connection is gone
/// from presence within a few intervals, announced once, and counted.
#[tokio::test]
async fn the_background_sweep_runs_every_interval() {
    let ingest = Ingest::start(&[PRESENCE, NO_LIMIT, "--sweep-interval-ms=1000"]).await;
    ingest.join("s1", "sam", "room-1").await;
    ingest.join("s2", "sue", "room-1").await;
    ingest.jobs().await;
    expire_record(&ingest, "s1").await;
    // The leave event is queued last, after the sets, the location and the metric: wait for it (each
    // drain waits 50 ms for jobs).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut jobs = Vec::new();
    while leaves(&jobs).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sweep within 10 intervals"
        );
        jobs.extend(ingest.jobs().await);
    }
    assert!(!located(&ingest, "s1").await);
    assert_eq!(
        hkeys(&ingest, &Keyspace::default().presence("room-1")).await,
        ["s2"]
    );
    let events = leaves(&jobs);
    assert_eq!(events.len(), 1);
    assert_eq!(events["s1"].0, 1);
    let text = ingest.metrics_text().await;
    assert!(text.contains("fanout_connections_swept_total 1"), "{text}");
    ingest.stop().await;
}
