//! Connections still connecting: API Gateway answers 410 to a connection until its `$connect` integration
//! has returned, so a message published in that window (the connection's own presence join, a busy
//! channel's traffic) meets a 410 from a connection that is about to open. Within the connect grace the
//! worker retries it, and neither loses the message nor forgets the connection; after the grace a 410 is
//! final, as for any connection.

use crate::support::{Env, metric};
use common::job::Target;
use common::keys::{conn_field as f, report_field as rf};
use serde_json::json;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// Stamps the records of `ids` as connected `ago` before now.
async fn connected_ago(env: &Env, ids: &[String], ago: Duration) {
    let at = common::job::now_ms() - u64::try_from(ago.as_millis()).unwrap();
    for id in ids {
        redis::cmd("HSET")
            .arg(env.keys.connection(id))
            .arg(f::CONNECTED_AT_MS)
            .arg(at)
            .query_async::<()>(&mut env.redis.clone())
            .await
            .unwrap();
    }
}

fn calls_to(env: &Env, id: &str) -> usize {
    env.gateway
        .calls()
        .iter()
        .filter(|c| c.connection_id == id)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_while_connecting_is_retried_and_the_connection_kept() {
    let env = Env::start().await;
    let ids = env.register("c", 3, "room", "erin").await;
    let (opening, old, steady) = (&ids[0], &ids[1], &ids[2]);
    connected_ago(&env, std::slice::from_ref(opening), Duration::ZERO).await;
    connected_ago(&env, std::slice::from_ref(old), Duration::from_secs(60)).await;
    // More 410s than the retry schedule has retries (4): the grace, not the schedule, bounds them.
    env.gateway.script(opening, &[410; 6]);
    env.gateway.always(old, 410);
    let worker = env.worker(&[]).await;
    let job = env
        .publish(
            Target::Channel {
                channel: "room".into(),
            },
            json!({"type": "presence", "event": "join"}),
        )
        .await;
    env.finished(&job.id, LONG).await;

    let delivered = env.gateway.delivered();
    assert_eq!(delivered[opening].len(), 1, "delivered once it opened");
    assert_eq!(calls_to(&env, opening), 7, "six 410s, then 200");
    assert!(env.is_member(&env.keys.channel("room"), opening).await);
    assert!(env.exists(&env.keys.connection(opening)).await);
    assert_eq!(delivered[steady].len(), 1);

    assert_eq!(calls_to(&env, old), 1, "an old connection's 410 is final");
    assert!(!env.is_member(&env.keys.channel("room"), old).await);
    assert!(!env.exists(&env.keys.connection(old)).await);

    let report = env.report(&job.id).await;
    assert_eq!(report[rf::SENT], "2");
    assert_eq!(report[rf::GONE], "1");
    assert_eq!(report[rf::RETRIES], "6");
    assert_eq!(
        metric(
            &worker,
            "fanout_delivery_retries_total",
            &[("reason", "connecting")]
        ),
        6.0
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gone_while_connecting_is_forgotten_when_the_grace_ends() {
    let env = Env::start().await;
    let ids = env.register("v", 1, "room-v", "frank").await;
    let vanished = &ids[0];
    env.gateway.always(vanished, 410);
    let worker = env
        .worker(&["--connect-grace-ms=1000", "--retry-max-delay-ms=20"])
        .await;
    let connected = std::time::Instant::now(); // no later than the record's time
    connected_ago(&env, &ids, Duration::ZERO).await;
    let job = env
        .publish(
            Target::Channel {
                channel: "room-v".into(),
            },
            json!({"n": 1}),
        )
        .await;
    env.finished(&job.id, LONG).await;

    let calls = calls_to(&env, vanished);
    assert!(calls >= 2, "retried while connecting: {calls} calls");
    assert!(
        connected.elapsed() >= Duration::from_secs(1),
        "taken as gone only once the grace was over"
    );
    assert!(!env.exists(&env.keys.connection(vanished)).await);
    assert!(!env.is_member(&env.keys.channel("room-v"), vanished).await);
    let report = env.report(&job.id).await;
    assert_eq!(report[rf::GONE], "1");
    assert_eq!(report[rf::SENT], "0");

    // With the grace off, a 410 is final at once even for a new connection.
    let ids = env.register("w", 1, "room-w", "frank").await;
    connected_ago(&env, &ids, Duration::ZERO).await;
    env.gateway.always(&ids[0], 410);
    let worker_without = env.worker(&["--connect-grace-ms=0"]).await;
    worker.shutdown().await;
    let job = env
        .publish(
            Target::Channel {
                channel: "room-w".into(),
            },
            json!({"n": 2}),
        )
        .await;
    env.finished(&job.id, LONG).await;
    assert_eq!(calls_to(&env, &ids[0]), 1);
    assert!(!env.exists(&env.keys.connection(&ids[0])).await);
    worker_without.shutdown().await;
}
