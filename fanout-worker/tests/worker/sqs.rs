//! The worker on SQS (moto's server, started by `./dev test`; kept small, moto is slow): a 403 ends in
//! the dead-letter queue with its reason while the connection stays registered, and a worker killed with
//! SIGKILL half-way loses no recipient once another takes over its unacknowledged jobs; `fanout-worker
//! dlq` lists, shows and redrives the dead-letter queue; a Redis outage longer than several visibility
//! timeouts holds the job rather than raising its receive count towards the dead-letter queue. Both
//! lanes work on SQS (a broadcast's chunks on the bulk lane's queue, a direct message on the
//! interactive one), and a bulk lane's queue that does not exist stops the worker at start with what to
//! set.

use crate::support::{Env, eventually, metric, sigterm, spawn_binary};
use common::job::{Job, Lane, Target, payload_of};
use common::keys::report_field as rf;
use common::queue::QueueOptions;
use common::store::Redis;
use serde_json::json;
use std::time::Duration;
use test_support::{RedisServer, create_sqs_queue};

const LONG: Duration = Duration::from_secs(60);

pub(crate) async fn sqs_env(visibility: Duration) -> (Env, String) {
    let sqs = create_sqs_queue("worker", visibility, true).await;
    let dlq = sqs.dead_letter_url.clone().unwrap();
    let queue = common::queue::open(
        &sqs.queue_url,
        QueueOptions {
            dead_letter_url: Some(dlq.clone()),
            ..QueueOptions::default()
        },
    )
    .await
    .unwrap();
    let redis_server = RedisServer::start();
    let redis = Redis::connect(&redis_server.url()).await.unwrap();
    (
        Env::with_queue(redis_server, redis, queue, sqs.queue_url).await,
        dlq,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_ends_in_the_dead_letter_queue_and_the_connection_is_kept() {
    let (env, dlq) = sqs_env(Duration::from_secs(10)).await;
    let ids = env.register("f", 5, "secure", "kim").await;
    env.gateway.always(&ids[3], 403);
    let dlq_flag = format!("--dead-letter-queue-url={dlq}");
    let worker = env
        .worker(&["--max-attempts=2", "--requeue-delay-ms=0", &dlq_flag])
        .await;
    let job = env
        .publish(
            Target::Channel {
                channel: "secure".into(),
            },
            json!({"s": 1}),
        )
        .await;
    eventually(LONG, "a dead letter", || async {
        !env.queue.peek_dead_letters(5).await.unwrap().is_empty()
    })
    .await;
    let letters = env.queue.peek_dead_letters(5).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("403 ForbiddenException"),
        "{}",
        letters[0].reason
    );
    let dead = Job::decode(&letters[0].body).unwrap();
    assert_eq!(
        dead.target,
        Target::Connections {
            ids: vec![ids[3].clone()]
        }
    );
    assert_eq!(dead.broadcast.as_ref().unwrap().id, job.id);
    // Tried once per attempt, and kept: a 403 is configuration, not connection state.
    let calls = env.gateway.calls();
    assert_eq!(
        calls.iter().filter(|c| c.connection_id == ids[3]).count(),
        2
    );
    assert!(env.exists(&env.keys.connection(&ids[3])).await);
    assert!(env.is_member(&env.keys.channel("secure"), &ids[3]).await);
    assert_eq!(env.gateway.delivered().len(), 4);
    eventually(LONG, "the report is finished", || async {
        env.report(&job.id).await.contains_key(rf::FINISHED_MS)
    })
    .await;
    let report = env.report(&job.id).await;
    assert_eq!(
        (report[rf::SENT].as_str(), report[rf::FAILED].as_str()),
        ("4", "1")
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_on_sqs() {
    let (env, dlq) = sqs_env(Duration::from_secs(2)).await;
    let ids = env.register("q", 60, "sqs", "lee").await;
    env.gateway.delay(Duration::from_millis(50));
    let dlq_flag = format!("--dead-letter-queue-url={dlq}");
    let flags = [
        "--chunk-size=10",
        "--max-in-flight=2",
        "--visibility-timeout-secs=2",
        dlq_flag.as_str(),
    ];
    let mut first = spawn_binary(&env, &flags);
    env.publish(
        Target::Channel {
            channel: "sqs".into(),
        },
        json!({"q": 1}),
    )
    .await;
    eventually(LONG, "a third delivered", || async {
        env.gateway.delivered().len() >= 20
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(env.gateway.delivered().len() < ids.len());
    let mut second = spawn_binary(&env, &flags);
    eventually(LONG, "every connection received the payload", || async {
        env.gateway.delivered().len() == ids.len()
    })
    .await;
    sigterm(&second);
    let status = second.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(env.queue.peek_dead_letters(5).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven_on_sqs() {
    let (env, dlq) = sqs_env(Duration::from_secs(10)).await;
    let dlq_flag = format!("--dead-letter-queue-url={dlq}");
    crate::support::dlq_round_trip(&env, &[&dlq_flag]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_holds_the_job_without_raising_its_receive_count() {
    let (mut env, dlq) = sqs_env(Duration::from_secs(3)).await;
    let dlq_flag = format!("--dead-letter-queue-url={dlq}");
    // Two receives at most: on a lapse-and-redeliver policy, an outage of a few visibility timeouts
    // would dead-letter the job. (3 s: the heartbeat extends every second, with room for a busy machine.)
    let worker = env
        .worker(&["--visibility-timeout-secs=3", "--max-receives=2", &dlq_flag])
        .await;
    env.redis_server.stop();
    let job = Job::post(
        Target::Connections {
            ids: vec!["o-0".into()],
        },
        payload_of(&json!({"o": 1})),
    );
    env.queue
        .send_batch(std::slice::from_ref(&job))
        .await
        .unwrap();
    eventually(
        LONG,
        "the worker holds the job through the outage",
        || async { metric(&worker, "fanout_redis_errors_total", &[]) >= 1.0 },
    )
    .await;
    // The outage lasts three visibility timeouts.
    tokio::time::sleep(Duration::from_secs(9)).await;
    env.redis_server.restart();
    // The restarted Redis has no data: register the recipient again.
    env.register("o", 1, "outage", "olga").await;
    eventually(LONG, "the held job is delivered", || async {
        env.gateway.delivered().len() == 1
    })
    .await;
    assert_eq!(
        metric(
            &worker,
            "fanout_jobs_received_total",
            &[("target", "connections")]
        ),
        1.0,
        "received once, held throughout"
    );
    assert!(env.queue.peek_dead_letters(5).await.unwrap().is_empty());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_lanes_deliver_on_sqs() {
    let (env, _dlq) = sqs_env(Duration::from_secs(10)).await;
    let ids = env.register("l", 30, "room", "lou").await;
    let worker = env.worker(&["--chunk-size=10"]).await;
    let broadcast = env
        .publish_on(Lane::Bulk, Target::All, json!({"b": 1}))
        .await;
    env.publish_on(
        Lane::Interactive,
        Target::Connections {
            ids: vec![ids[0].clone()],
        },
        json!({"d": 1}),
    )
    .await;
    env.finished(&broadcast.id, LONG).await;
    eventually(LONG, "the direct message delivered", || async {
        env.gateway.delivered().get(&ids[0]).map_or(0, Vec::len) == 2
    })
    .await;
    let delivered = env.gateway.delivered();
    for id in &ids {
        assert!(
            delivered[id].iter().any(|b| b.as_ref() == br#"{"b":1}"#),
            "{id}"
        );
    }
    // The everyone job and its chunks (three or more: a checkpoint may cut one) came off the bulk
    // lane's queue.
    let received = |lane: &str| {
        metric(
            &worker,
            "fanout_lane_jobs_received_total",
            &[("lane", lane)],
        )
    };
    let chunks = metric(&worker, "fanout_chunks_planned_total", &[]);
    assert!(chunks >= 3.0, "{chunks} chunks");
    assert_eq!(received("bulk"), 1.0 + chunks);
    assert_eq!(received("interactive"), 1.0);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bulk_queue_stops_the_worker_at_start_naming_the_setting() {
    let (env, _dlq) = sqs_env(Duration::from_secs(10)).await;
    let missing = format!("--bulk-queue-url={}-nope", env.queue_url);
    let settings = env.settings(&[&missing]);
    let deliver = crate::support::test_deliver(&settings);
    let started = tokio::time::timeout(
        Duration::from_secs(20),
        fanout_worker::Worker::start(settings, std::sync::Arc::new(deliver)),
    )
    .await
    .expect("refused at once, not retried");
    let error = started
        .expect_err("the bulk lane's queue does not exist")
        .to_string();
    assert!(
        error.contains("the bulk lane's queue") && error.contains("FANOUT_BULK_QUEUE_URL"),
        "{error}"
    );
}
