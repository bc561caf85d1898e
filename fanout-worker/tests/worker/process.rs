//! One job's handling ([`process::handle`]) on its own, with the worker's parts over a private
//! redis-server, the Redis Streams queue and the Management API test server: a message received too
//! often is dead-lettered unread, a job's receipt is counted by target kind, an acknowledged job's
//! latency from its first enqueue is measured, a broadcast delivered without chunks finishes its report,
//! and a job with leftovers is counted as requeued.

use crate::support::{Env, receive_one, test_deliver};
use common::job::{Job, Target, payload_of};
use common::keys::report_field as rf;
use common::metrics::WorkerMetrics;
use fanout_worker::config::Settings;
use fanout_worker::dispatch::Dispatcher;
use fanout_worker::governor::Governor;
use fanout_worker::lease::Hold;
use fanout_worker::process::{self, Ctx};
use fanout_worker::progress::Owed;
use fanout_worker::recipients::Routes;
use fanout_worker::report::Reports;
use fanout_worker::retry::RetryPolicy;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The job context a worker builds, for `settings`.
async fn ctx(env: &Env, settings: Settings) -> Ctx {
    let metrics = WorkerMetrics::new();
    let bulk: common::queue::SharedQueue = Arc::new(
        common::queue::streams::StreamQueue::new(
            env.redis.clone(),
            "jobs-bulk",
            common::queue::QueueOptions::default(),
        )
        .await
        .unwrap(),
    );
    Ctx {
        routes: Routes::new(settings.gateways.clone(), &settings.aws_region),
        dispatcher: Dispatcher {
            deliver: Arc::new(test_deliver(&settings)),
            governor: Arc::new(Governor::new(
                env.redis.clone(),
                &env.keys,
                &settings.rate_bucket,
                settings.rate_per_sec,
                settings.burst,
                metrics.clone(),
            )),
            in_flight: fanout_worker::lanes::Shares::new(settings.max_in_flight, 0),
            gate: Arc::new(fanout_worker::lanes::TokenGate::new()),
            retry: RetryPolicy {
                retries: settings.retries,
                min_delay: settings.retry_min_delay,
                max_delay: settings.retry_max_delay,
            },
            connect_grace: settings.connect_grace,
            metrics: metrics.clone(),
        },
        reports: Reports {
            redis: env.redis.clone(),
            keys: env.keys.clone(),
            ttl: settings.report_ttl,
        },
        redis: env.redis.clone(),
        keys: env.keys.clone(),
        lanes: common::queue::lanes::Lanes {
            interactive: env.queue.clone(),
            bulk,
        },
        metrics,
        owed: Owed::default(),
        hard_stop: CancellationToken::new(),
        settings: Arc::new(settings),
    }
}

/// Receives the next message and handles it as a poller does (counted, in its span).
async fn handle_next(ctx: &Ctx, env: &Env, receive_count: Option<u32>) {
    let mut message = receive_one(env).await;
    if let Some(n) = receive_count {
        message.receive_count = n;
    }
    let _span = process::span(ctx, common::job::Lane::Interactive, &message).entered();
    let hold = Hold::new(&ctx.hard_stop);
    process::handle(ctx, common::job::Lane::Interactive, &message, &hold)
        .await
        .unwrap();
}

fn counter(ctx: &Ctx, name: &str, label: (&str, &str)) -> f64 {
    family(ctx, name, label)
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// Samples and their sum of a histogram, for one label value.
fn histogram(ctx: &Ctx, name: &str, label: (&str, &str)) -> (u64, f64) {
    family(ctx, name, label)
        .map(|m| {
            let h = m.get_histogram();
            (h.get_sample_count(), h.get_sample_sum())
        })
        .fold((0, 0.0), |(n, s), (n2, s2)| (n + n2, s + s2))
}

fn family(
    ctx: &Ctx,
    name: &str,
    (key, value): (&str, &str),
) -> impl Iterator<Item = prometheus::proto::Metric> {
    let name = name.to_owned();
    let (key, value) = (key.to_owned(), value.to_owned());
    ctx.metrics
        .registry
        .gather()
        .into_iter()
        .filter(move |f| f.name() == name)
        .flat_map(|f| f.get_metric().to_vec())
        .filter(move |m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == key && l.value() == value)
        })
}

/// A message received more than `--max-receives` times is dead-lettered without a call; at the limit it
/// still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_received_too_often_is_dead_lettered_unread() {
    let env = Env::start().await;
    let ids = env.register("r", 2, "room", "sam").await;
    let ctx = ctx(&env, env.settings(&["--max-receives=3"])).await;
    let target = Target::Connections { ids: ids.clone() };
    let job = env
        .publish(target.clone(), serde_json::json!({"n": 1}))
        .await;
    handle_next(&ctx, &env, Some(4)).await;
    assert!(env.gateway.calls().is_empty());
    let reason = ("reason", "too_many_receives");
    assert_eq!(
        counter(&ctx, "fanout_jobs_dead_lettered_total", reason),
        1.0
    );
    let dead = env.queue.peek_dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].body.contains(&job.id));

    env.publish(target, serde_json::json!({"n": 2})).await;
    handle_next(&ctx, &env, Some(3)).await;
    assert_eq!(env.gateway.calls().len(), 2);
    assert_eq!(
        counter(&ctx, "fanout_jobs_dead_lettered_total", reason),
        1.0
    );
}

/// A connections job is counted on receipt by its kind, acknowledged, and its latency measured from its
/// first enqueue; one with leftovers is requeued, and its latency waits for the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_measured_from_its_first_enqueue_and_one_with_leftovers_is_requeued() {
    let env = Env::start().await;
    let ids = env.register("m", 3, "room", "sam").await;
    let ctx = ctx(&env, env.settings(&["--retries=1"])).await;
    let started = Instant::now();
    let mut job = Job::post(
        Target::Connections {
            ids: ids[..2].to_vec(),
        },
        payload_of(&serde_json::json!({"n": 1})),
    );
    job.enqueued_at_ms -= 5_000;
    env.queue
        .send_batch(std::slice::from_ref(&job))
        .await
        .unwrap();
    handle_next(&ctx, &env, None).await;
    assert_eq!(env.gateway.calls().len(), 2);
    assert_eq!(
        counter(
            &ctx,
            "fanout_jobs_received_total",
            ("target", "connections")
        ),
        1.0
    );
    assert_eq!(
        counter(&ctx, "fanout_jobs_completed_total", ("outcome", "acked")),
        1.0
    );
    let (samples, seconds) = histogram(&ctx, "fanout_end_to_end_seconds", ("target", "job"));
    assert_eq!(samples, 1);
    // Both ends are whole milliseconds: up to one more than measured here.
    let bound = 5.0 + started.elapsed().as_secs_f64() + 0.001;
    assert!(
        (5.0..=bound).contains(&seconds),
        "{seconds} s, at most {bound}"
    );

    // One connection keeps failing: the job is handed on, and nothing is measured yet.
    env.gateway.always(&ids[2], 500);
    env.publish(
        Target::Connections {
            ids: ids[1..].to_vec(),
        },
        serde_json::json!({"n": 2}),
    )
    .await;
    handle_next(&ctx, &env, None).await;
    assert_eq!(
        counter(&ctx, "fanout_jobs_completed_total", ("outcome", "requeued")),
        1.0
    );
    assert_eq!(
        counter(&ctx, "fanout_jobs_completed_total", ("outcome", "acked")),
        1.0
    );
    assert_eq!(
        histogram(&ctx, "fanout_end_to_end_seconds", ("target", "job")).0,
        1
    );
}

/// Each job is counted on receipt by its lane, and how long it waited for a worker is measured once: at
/// its first receipt (not when received again, nor for a retry job of leftovers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_wait_is_measured_at_a_jobs_first_receipt_only() {
    let env = Env::start().await;
    let ids = env.register("w", 1, "room", "sam").await;
    let ctx = ctx(&env, env.settings(&[])).await;
    let target = Target::Connections { ids };
    let wait = ("lane", "interactive");
    let send = |attempt: u32| {
        let mut job = Job::post(
            target.clone(),
            payload_of(&serde_json::json!({"a": attempt})),
        );
        job.enqueued_at_ms -= 5_000;
        job.attempt = attempt;
        job
    };
    env.queue.send_batch(&[send(0)]).await.unwrap();
    handle_next(&ctx, &env, None).await;
    let (samples, seconds) = histogram(&ctx, "fanout_lane_queue_wait_seconds", wait);
    assert_eq!(samples, 1);
    assert!(seconds >= 5.0, "{seconds}");
    // Received a second time, or a retry job: counted, not measured again.
    env.queue.send_batch(&[send(0)]).await.unwrap();
    handle_next(&ctx, &env, Some(2)).await;
    env.queue.send_batch(&[send(1)]).await.unwrap();
    handle_next(&ctx, &env, None).await;
    assert_eq!(histogram(&ctx, "fanout_lane_queue_wait_seconds", wait).0, 1);
    assert_eq!(counter(&ctx, "fanout_lane_jobs_received_total", wait), 3.0);
    assert_eq!(env.gateway.calls().len(), 3);
}

/// A channel small enough for one job is delivered by it: the connection that answers 410 and the id
/// without a record are taken out of the channel and counted as gone, and the report finishes, measured
/// as a broadcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_delivered_without_chunks_forgets_the_gone_and_finishes_its_report() {
    let env = Env::start().await;
    let ids = env.register("d", 3, "room", "sam").await;
    let channel = env.keys.channel("room");
    let _: () = redis::cmd("SADD")
        .arg(&channel)
        .arg("ghost")
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    env.gateway.always(&ids[1], 410);
    let ctx = ctx(&env, env.settings(&[])).await;
    let job = env
        .publish(
            Target::Channel {
                channel: "room".into(),
            },
            serde_json::json!({"n": 1}),
        )
        .await;
    handle_next(&ctx, &env, None).await;
    assert_eq!(
        env.gateway.calls().len(),
        3,
        "no call to the id without a record"
    );
    assert!(env.is_member(&channel, &ids[0]).await);
    assert!(!env.is_member(&channel, &ids[1]).await, "gone");
    assert!(!env.is_member(&channel, "ghost").await, "stale");
    let report = env.report(&job.id).await;
    assert!(report.contains_key(rf::FINISHED_MS), "{report:?}");
    assert_eq!(
        (report[rf::SENT].as_str(), report[rf::GONE].as_str()),
        ("2", "2")
    );
    assert_eq!(
        counter(&ctx, "fanout_jobs_received_total", ("target", "channel")),
        1.0
    );
    let (samples, _) = histogram(&ctx, "fanout_end_to_end_seconds", ("target", "broadcast"));
    assert_eq!(samples, 1);
    assert_eq!(
        counter(&ctx, "fanout_jobs_completed_total", ("outcome", "acked")),
        1.0
    );
}
