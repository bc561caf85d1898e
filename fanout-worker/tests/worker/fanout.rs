//! The worker end to end in-process, against a real redis-server, the Redis Streams queue and the
//! Management API test server: broadcasts reach everyone exactly once, gone connections are forgotten,
//! 429s are retried, one slow client slows nobody else, bad jobs are dead-lettered, kicks close
//! connections, and two workers share one broadcast. Workers use the lean client (the default); the
//! 429/5xx classification test also runs with the AWS SDK client, the reference, and the governor test
//! runs a mixed fleet of one of each. The test server verifies every signature.

use crate::support::{Env, eventually, metric};
use common::job::{Action, Job, Target};
use common::keys::report_field as rf;
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_of_thousands_all_receive_exactly_the_payload() {
    let env = Env::start().await;
    let ids = env.register("c", 3000, "general", "alice").await;
    env.register("other", 50, "elsewhere", "bob").await;
    let worker = env.worker(&["--chunk-size=400"]).await;
    let payload = json!({"type": "system", "message": "hello \"everyone\" ✓"});
    let job = env
        .publish(
            Target::Channel {
                channel: "general".into(),
            },
            payload.clone(),
        )
        .await;
    env.finished(&job.id, LONG).await;
    let delivered = env.gateway.delivered();
    assert_eq!(delivered.len(), 3000, "only the channel's connections");
    let expected = serde_json::to_vec(&payload).unwrap();
    for id in &ids {
        let bodies = &delivered[id];
        assert_eq!(bodies.len(), 1, "{id} received {} copies", bodies.len());
        assert_eq!(bodies[0].as_ref(), expected.as_slice());
    }
    let report = env.report(&job.id).await;
    assert_eq!(report[rf::SENT], "3000");
    assert_eq!(report[rf::GONE], "0");
    assert_eq!(report[rf::FAILED], "0");
    assert_eq!(report[rf::OUTSTANDING], "0");
    let chunks: u32 = report[rf::CHUNKS].parse().unwrap();
    assert!(
        (8..=13).contains(&chunks),
        "3000 ids in chunks of 400: {chunks}"
    );
    assert_eq!(
        metric(&worker, "fanout_deliveries_total", &[("outcome", "sent")]),
        3000.0
    );
    assert_eq!(
        metric(&worker, "fanout_chunks_planned_total", &[]),
        f64::from(chunks)
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_connections_are_removed_from_every_set() {
    let env = Env::start().await;
    let ids = env.register("g", 40, "room", "carol").await;
    let gone: Vec<&String> = ids.iter().step_by(4).collect();
    for id in &gone {
        env.gateway.always(id, 410);
    }
    // A set member without a record (a half-finished registration): stale, dropped without a call.
    redis::cmd("SADD")
        .arg(env.keys.channel("room"))
        .arg("ghost")
        .query_async::<()>(&mut env.redis.clone())
        .await
        .unwrap();
    let worker = env.worker(&[]).await;
    let job = env
        .publish(
            Target::Channel {
                channel: "room".into(),
            },
            json!({"n": 1}),
        )
        .await;
    env.finished(&job.id, LONG).await;
    for id in &gone {
        assert!(!env.is_member(&env.keys.channel("room"), id).await, "{id}");
        assert!(!env.is_member(&env.keys.subject("carol"), id).await, "{id}");
        assert!(
            !env.is_member(&env.keys.all_bucket_of(id), id).await,
            "{id}"
        );
        assert!(!env.exists(&env.keys.connection(id)).await, "{id}");
        let calls = env
            .gateway
            .calls()
            .iter()
            .filter(|c| &c.connection_id == *id)
            .count();
        assert_eq!(calls, 1, "a gone connection is never retried");
    }
    assert!(!env.is_member(&env.keys.channel("room"), "ghost").await);
    assert!(
        env.gateway
            .calls()
            .iter()
            .all(|c| c.connection_id != "ghost")
    );
    let kept = &ids[1];
    assert!(env.is_member(&env.keys.channel("room"), kept).await);
    assert!(env.exists(&env.keys.connection(kept)).await);
    let report = env.report(&job.id).await;
    assert_eq!(report[rf::SENT], "30");
    assert_eq!(report[rf::GONE], "11", "10 gone and one stale");
    assert_eq!(
        metric(
            &worker,
            "fanout_connections_removed_total",
            &[("reason", "gone")]
        ),
        10.0
    );
    worker.shutdown().await;
}

/// A connection that answers 410 in a presence channel leaves the channel's presence and its location
/// entry too, and the channel's other members are told once, with the member as it was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_connection_leaves_presence_with_one_leave_event() {
    let env = Env::start().await;
    let ids = env.register("p", 3, "room", "dora").await;
    let gone = &ids[0];
    env.gateway.always(gone, 410);
    let entry = common::presence::stored_value(Some("dora"), Some(r#"{"name":"Dora"}"#));
    for id in &ids {
        redis::pipe()
            .cmd("HSET")
            .arg(env.keys.presence("room"))
            .arg(id)
            .arg(&entry)
            .cmd("HSET")
            .arg(env.keys.location_of(id))
            .arg(id)
            .arg("room\ndora")
            .query_async::<()>(&mut env.redis.clone())
            .await
            .unwrap();
    }
    let worker = env.worker(&[]).await;
    let job = env
        .publish(
            Target::Channel {
                channel: "room".into(),
            },
            json!({"n": 1}),
        )
        .await;
    env.finished(&job.id, LONG).await;
    let leave = json!({"type": "presence", "event": "leave", "channel": "room",
        "member": {"connection_id": gone, "user_id": "dora", "info": {"name": "Dora"}}});
    let leave = serde_json::to_vec(&leave).unwrap();
    let others = &ids[1..];
    eventually(LONG, "the others are told", || async {
        let delivered = env.gateway.delivered();
        others.iter().all(|id| {
            delivered
                .get(id)
                .is_some_and(|b| b.iter().any(|b| b.as_ref() == leave.as_slice()))
        })
    })
    .await;
    // A later publish finishes after the leave event was delivered: nothing more was queued for it.
    let after = env
        .publish(
            Target::Channel {
                channel: "room".into(),
            },
            json!({"n": 2}),
        )
        .await;
    eventually(LONG, "the second report says finished", || async {
        env.report(&after.id).await.contains_key(rf::FINISHED_MS)
    })
    .await;
    let delivered = env.gateway.delivered();
    for id in others {
        let leaves = delivered[id]
            .iter()
            .filter(|b| b.as_ref() == leave.as_slice())
            .count();
        assert_eq!(leaves, 1, "{id} was told once");
        assert_eq!(delivered[id].len(), 3, "{id}: n=1, the leave, n=2");
    }
    assert!(
        !delivered.contains_key(gone),
        "the gone connection gets nothing"
    );
    let members: Vec<String> = redis::cmd("HKEYS")
        .arg(env.keys.presence("room"))
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    let mut members = members;
    members.sort();
    assert_eq!(members, others.to_vec());
    let located: Option<String> = redis::cmd("HGET")
        .arg(env.keys.location_of(gone))
        .arg(gone)
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    assert_eq!(located, None, "its location entry is gone");
    assert!(!env.exists(&env.keys.connection(gone)).await);
    assert!(!env.is_member(&env.keys.channel("room"), gone).await);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_burst_is_retried_then_delivered() {
    a_429_burst(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_burst_is_retried_then_delivered_by_the_sdk_client() {
    a_429_burst(true).await;
}

async fn a_429_burst(sdk: bool) {
    let env = Env::start().await;
    let ids = env.register("t", 30, "busy", "dave").await;
    for id in &ids {
        env.gateway.script(id, &[429, 429, 503]);
    }
    let worker = if sdk {
        env.sdk_worker(&["--retries=5"]).await
    } else {
        env.worker(&["--retries=5"]).await
    };
    let job = env
        .publish(
            Target::Subject {
                subject: "dave".into(),
            },
            json!({"burst": true}),
        )
        .await;
    eventually(LONG, "every connection answered 200", || async {
        env.gateway.delivered().len() == 30
    })
    .await;
    env.finished(&job.id, LONG).await;
    assert_eq!(env.gateway.count(429), 60);
    assert_eq!(env.gateway.count(503), 30);
    let report = env.report(&job.id).await;
    assert_eq!(report[rf::SENT], "30");
    assert_eq!(report[rf::THROTTLED], "60");
    assert_eq!(report[rf::FAILED], "0");
    // 429s spread over many connections are the account's throttle.
    assert!(metric(&worker, "fanout_throttles_total", &[("kind", "account")]) > 0.0);
    assert_eq!(
        metric(
            &worker,
            "fanout_delivery_retries_total",
            &[("reason", "http_5xx")]
        ),
        30.0
    );
    assert!(env.queue.peek_dead_letters(10).await.unwrap().is_empty());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_keeps_answering_429_does_not_slow_the_others() {
    let env = Env::start().await;
    let ids = env.register("s", 200, "lobby", "erin").await;
    let slow = ids[7].clone();
    env.gateway.always(&slow, 429);
    // Generous retries: the slow client alone spends about 4 × 400 ms backing off per attempt.
    let worker = env
        .worker(&[
            "--retries=4",
            "--retry-min-delay-ms=200",
            "--retry-max-delay-ms=400",
            "--max-attempts=2",
        ])
        .await;
    let started = Instant::now();
    let job = env
        .publish(
            Target::Channel {
                channel: "lobby".into(),
            },
            json!({"m": "x"}),
        )
        .await;
    eventually(LONG, "the 199 others are delivered", || async {
        env.gateway.delivered().len() == 199
    })
    .await;
    let others_done = started.elapsed();
    eventually(
        LONG,
        "the slow client ends in the dead-letter queue",
        || async { !env.queue.peek_dead_letters(10).await.unwrap().is_empty() },
    )
    .await;
    let slow_done = started.elapsed();
    assert!(
        others_done < slow_done / 2,
        "the others took {others_done:?}, the slow client {slow_done:?}"
    );
    let letters = env.queue.peek_dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let dead = Job::decode(&letters[0].body).unwrap();
    assert_eq!(
        dead.target,
        Target::Connections {
            ids: vec![slow.clone()]
        }
    );
    assert!(letters[0].reason.contains("429"), "{}", letters[0].reason);
    // Only the slow client was called more than once, and it was seen as one slow connection.
    let calls = env.gateway.calls();
    for id in ids.iter().filter(|i| **i != slow) {
        assert_eq!(calls.iter().filter(|c| &c.connection_id == id).count(), 1);
    }
    assert_eq!(calls.iter().filter(|c| c.connection_id == slow).count(), 10);
    assert_eq!(
        metric(&worker, "fanout_throttles_total", &[("kind", "account")]),
        0.0
    );
    assert_eq!(
        metric(&worker, "fanout_throttles_total", &[("kind", "connection")]),
        10.0
    );
    eventually(
        LONG,
        "the report counts the slow client as failed",
        || async {
            env.report(&job.id)
                .await
                .get(rf::FAILED)
                .map(String::as_str)
                == Some("1")
        },
    )
    .await;
    let report = env.report(&job.id).await;
    assert!(report.contains_key(rf::FINISHED_MS));
    assert_eq!(report[rf::SENT], "199");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_jobs_and_unknown_versions_are_dead_lettered_with_their_reason() {
    let env = Env::start().await;
    let worker = env.worker(&[]).await;
    let stream = env.keys.queue("jobs").stream;
    for body in [
        "not json",
        r#"{"v":99,"id":"x","enqueued_at_ms":1,"target":{"kind":"all"},"action":"disconnect"}"#,
    ] {
        redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("job")
            .arg(body)
            .query_async::<()>(&mut env.redis.clone())
            .await
            .unwrap();
    }
    eventually(LONG, "both are dead-lettered", || async {
        env.queue.peek_dead_letters(10).await.unwrap().len() == 2
    })
    .await;
    // Both may be received in one batch and handled side by side: in either order.
    let mut letters = env.queue.peek_dead_letters(10).await.unwrap();
    letters.sort_by_key(|l| l.body != "not json");
    assert_eq!(letters[0].body, "not json");
    assert!(
        letters[0].reason.contains("not a job"),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[1].reason.contains("unsupported job version 99"),
        "{}",
        letters[1].reason
    );
    assert_eq!(
        metric(
            &worker,
            "fanout_jobs_dead_lettered_total",
            &[("reason", "malformed")]
        ),
        1.0
    );
    assert_eq!(env.queue.depth().await.unwrap(), 0);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_job_calls_delete_connection() {
    let env = Env::start().await;
    let ids = env.register("k", 3, "kick", "frank").await;
    let worker = env.worker(&[]).await;
    let job = Job::new(
        Target::Connections {
            ids: vec![ids[0].clone(), ids[2].clone()],
        },
        Action::Disconnect,
    );
    env.queue
        .send_batch(std::slice::from_ref(&job))
        .await
        .unwrap();
    eventually(LONG, "two DELETEs", || async {
        env.gateway.calls().len() == 2
    })
    .await;
    let calls = env.gateway.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.method == axum::http::Method::DELETE && c.status == 204)
    );
    let closed: HashSet<&str> = calls.iter().map(|c| c.connection_id.as_str()).collect();
    assert_eq!(closed, HashSet::from([ids[0].as_str(), ids[2].as_str()]));
    eventually(LONG, "the job is acknowledged", || async {
        metric(
            &worker,
            "fanout_jobs_completed_total",
            &[("outcome", "acked")],
        ) == 1.0
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_broadcast() {
    let env = Env::start().await;
    let ids = env.register("w", 2000, "shared", "gina").await;
    // Slow answers, so that one worker cannot finish the broadcast before the other takes chunks.
    env.gateway.delay(Duration::from_millis(5));
    let flags = [
        "--chunk-size=100",
        "--max-in-flight=16",
        "--max-jobs-in-hand=2",
    ];
    let a = env.worker(&flags).await;
    let b = env.worker(&flags).await;
    let job = env
        .publish(
            Target::Channel {
                channel: "shared".into(),
            },
            json!({"both": 1}),
        )
        .await;
    env.finished(&job.id, LONG).await;
    let delivered = env.gateway.delivered();
    assert_eq!(delivered.len(), ids.len());
    assert!(delivered.values().all(|b| b.len() == 1));
    let sent_a = metric(&a, "fanout_deliveries_total", &[("outcome", "sent")]);
    let sent_b = metric(&b, "fanout_deliveries_total", &[("outcome", "sent")]);
    assert_eq!(sent_a + sent_b, 2000.0);
    assert!(
        sent_a >= 300.0 && sent_b >= 300.0,
        "a sent {sent_a}, b sent {sent_b}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_governor_holds_the_fleet_to_the_configured_rate() {
    let env = Env::start().await;
    env.register("r", 300, "paced", "hank").await;
    let flags = [
        "--account-rate-per-sec=200",
        "--account-burst=20",
        "--rate-headroom-percent=0",
        "--chunk-size=10",
        // One job in hand each: while one worker paces through a chunk, the other takes the next, so both
        // take part whichever polls first.
        "--max-jobs-in-hand=1",
    ];
    // A mixed fleet: the lean client and the SDK share one budget.
    let a = env.worker(&flags).await;
    let b = env.sdk_worker(&flags).await;
    let started = Instant::now();
    let job = env
        .publish(
            Target::Channel {
                channel: "paced".into(),
            },
            json!({}),
        )
        .await;
    env.finished(&job.id, LONG).await;
    let took = started.elapsed();
    // (300 − 20 burst) / 200 per second = 1.4 s at least, shared by both workers.
    assert!(took >= Duration::from_millis(1300), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(env.gateway.delivered().len(), 300);
    assert!(metric(&a, "fanout_deliveries_total", &[("outcome", "sent")]) > 0.0);
    assert!(metric(&b, "fanout_deliveries_total", &[("outcome", "sent")]) > 0.0);
    assert_eq!(env.gateway.signature_refusals(), 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_nothing_is_dropped_and_the_failure_is_counted() {
    #[derive(Debug)]
    struct NoCredentials;
    impl aws_credential_types::provider::ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                aws_credential_types::provider::error::CredentialsError::not_loaded("no role"),
            ))
        }
    }
    let env = Env::start().await;
    let ids = env.register("k", 5, "dark", "ivan").await;
    let flags = ["--retries=1", "--max-attempts=2", "--requeue-delay-ms=0"];
    let source = mgmt_client::CredentialsSource::from_provider(
        aws_credential_types::provider::SharedCredentialsProvider::new(NoCredentials),
    );
    let settings = env.settings(&flags);
    let deliver = std::sync::Arc::new(
        fanout_worker::delivery::LeanDeliver::new(
            source,
            settings.call_timeout,
            settings.max_in_flight,
        )
        .unwrap(),
    );
    let worker = env.worker_with(&flags, deliver).await;
    let job = env
        .publish(
            Target::Channel {
                channel: "dark".into(),
            },
            json!({"lost": false}),
        )
        .await;
    eventually(
        LONG,
        "the leftovers reach the dead-letter queue",
        || async { !env.queue.peek_dead_letters(10).await.unwrap().is_empty() },
    )
    .await;
    // Two attempts of two calls for each of the five: every one failed, counted, and retried.
    assert_eq!(
        metric(&worker, "fanout_delivery_credentials_failures_total", &[]),
        20.0
    );
    assert_eq!(
        metric(
            &worker,
            "fanout_delivery_retries_total",
            &[("reason", "other")]
        ),
        10.0
    );
    assert!(env.gateway.calls().is_empty(), "nothing unsigned was sent");
    let letters = env.queue.peek_dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let dead = Job::decode(&letters[0].body).unwrap();
    let Target::Connections { ids: mut left } = dead.target else {
        panic!("leftovers are a connections job: {:?}", dead.target);
    };
    left.sort();
    assert_eq!(left, ids, "every recipient handed on, none dropped");
    assert_eq!(dead.broadcast.as_ref().unwrap().id, job.id);
    worker.shutdown().await;
}
