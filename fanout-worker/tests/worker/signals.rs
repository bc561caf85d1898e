//! The real `fanout-worker` binary under signals, on Redis Streams: SIGTERM drains the jobs in hand and
//! exits 0, leaving nothing half-done; a worker killed with SIGKILL half-way through a broadcast loses no
//! recipient once a second worker takes over its jobs.

use crate::support::{Env, eventually, sigterm, spawn_binary};
use common::job::Target;
use common::keys::report_field as rf;
use serde_json::json;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

/// Waits for a child to exit, at most `limit`.
async fn exit_status(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pending(env: &Env) -> u64 {
    let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(env.keys.queue("jobs").stream)
        .arg("workers")
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    reply.count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_jobs_in_hand_and_exits_0() {
    let env = Env::start().await;
    let ids = env.register("d", 600, "drain", "ivy").await;
    env.gateway.delay(Duration::from_millis(10));
    let flags = [
        "--chunk-size=50",
        "--max-in-flight=8",
        "--max-jobs-in-hand=2",
    ];
    let mut child = spawn_binary(&env, &flags);
    let job = env
        .publish(
            Target::Channel {
                channel: "drain".into(),
            },
            json!({"bye": 1}),
        )
        .await;
    eventually(LONG, "deliveries started", || async {
        env.gateway.delivered().len() >= 60
    })
    .await;
    sigterm(&child);
    let status = exit_status(&mut child, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    // Nothing was left half-done: no job is held, and no recipient got the payload twice.
    assert_eq!(
        pending(&env).await,
        0,
        "jobs still held by the stopped worker"
    );
    let before = env.gateway.delivered();
    assert!(before.values().all(|b| b.len() == 1));
    assert!(
        before.len() < ids.len(),
        "the worker stopped before the end"
    );
    // A new worker delivers the rest, exactly once each.
    let worker = env.worker(&flags).await;
    env.finished(&job.id, LONG).await;
    let after = env.gateway.delivered();
    assert_eq!(after.len(), ids.len());
    assert!(
        after.values().all(|b| b.len() == 1),
        "a recipient got two copies"
    );
    assert_eq!(env.report(&job.id).await[rf::SENT], "600");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_half_way_loses_no_recipient() {
    let env = Env::start().await;
    let ids = env.register("x", 400, "crash", "jack").await;
    env.gateway.delay(Duration::from_millis(20));
    let flags = [
        "--chunk-size=50",
        "--max-in-flight=4",
        "--visibility-timeout-secs=2",
    ];
    let mut first = spawn_binary(&env, &flags);
    let job = env
        .publish(
            Target::Channel {
                channel: "crash".into(),
            },
            json!({"crash": true}),
        )
        .await;
    eventually(LONG, "half the broadcast delivered", || async {
        env.gateway.delivered().len() >= 150
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = env.gateway.delivered().len();
    assert!(at_kill < ids.len(), "killed too late: {at_kill}");
    let mut second = spawn_binary(&env, &flags);
    eventually(LONG, "every connection received the payload", || async {
        env.gateway.delivered().len() == ids.len()
    })
    .await;
    env.finished(&job.id, LONG).await;
    let delivered = env.gateway.delivered();
    for id in &ids {
        assert!(!delivered[id].is_empty(), "{id} lost");
    }
    sigterm(&second);
    assert_eq!(
        exit_status(&mut second, Duration::from_secs(20))
            .await
            .code(),
        Some(0)
    );
}
