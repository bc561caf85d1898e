//! Ordered channels against real servers: four workers share one channel's drain while the gateway
//! answers some calls 429 (the account bucket and a connection's own throttle), and every member still
//! receives the 1,000 messages once each, in publish order, read from what the gateway received; a
//! coalescing channel gets the same with far fewer posts; and an unordered channel still posts several
//! messages to one connection at once where an ordered one never does. A kill -9 of the worker process
//! draining a channel loses nothing and breaks no order; a drain retrying in place whose channel a later
//! receipt took over stops; a coalesced batch's size is recorded while it is sent.

use crate::support::{Env, eventually, metric};
use serde_json::{Value, json};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);
const MESSAGES: u64 = 1000;

/// The message numbers each connection received, with a coalesced batch (a JSON array) unpacked, and
/// the number of posts it took.
fn received(env: &Env, ids: &[String]) -> Vec<(Vec<u64>, usize)> {
    let delivered = env.gateway.delivered();
    ids.iter()
        .map(|id| {
            let posts = delivered.get(id).cloned().unwrap_or_default();
            let mut numbers = Vec::new();
            for body in &posts {
                let value: Value = serde_json::from_slice(body).unwrap();
                let messages = match value {
                    Value::Array(all) => all,
                    one => vec![one],
                };
                numbers.extend(messages.iter().map(|m| m["n"].as_u64().unwrap()));
            }
            (numbers, posts.len())
        })
        .collect()
}

/// Four workers, 5 members, some 429s; returns each member's numbers and posts once every member has
/// had the last message.
async fn deliver_in_order(
    coalesce: bool,
) -> (Env, Vec<(Vec<u64>, usize)>, Vec<fanout_worker::Worker>) {
    deliver_in_order_on(Env::start().await, MESSAGES, 4, coalesce).await
}

/// `messages` to 5 members with `workers` workers on `env`'s queue, as above.
async fn deliver_in_order_on(
    env: Env,
    messages: u64,
    workers: usize,
    coalesce: bool,
) -> (Env, Vec<(Vec<u64>, usize)>, Vec<fanout_worker::Worker>) {
    let ids = env.register("o", 5, "room", "ola").await;
    // A connection of its own throttled now and then, and the account bucket below what four workers
    // would send unpaced.
    for (n, id) in ids.iter().enumerate() {
        let script: Vec<u16> = (0..400)
            .map(|i| if (i + n) % 9 == 0 { 429 } else { 200 })
            .collect();
        env.gateway.script(id, &script);
    }
    env.gateway.throttle(2000.0, 50.0);
    // Half published before the workers start (a backlog to coalesce), half while they deliver.
    for n in 0..messages / 2 {
        env.publish_ordered("room", json!({ "n": n }), coalesce)
            .await;
    }
    let mut running = Vec::new();
    for _ in 0..workers {
        running.push(
            env.worker(&["--account-rate-per-sec=5000", "--max-in-flight=64"])
                .await,
        );
    }
    for n in messages / 2..messages {
        env.publish_ordered("room", json!({ "n": n }), coalesce)
            .await;
    }
    eventually(LONG, "every member has the last message", || async {
        received(&env, &ids)
            .iter()
            .all(|(numbers, _)| numbers.last() == Some(&(messages - 1)))
    })
    .await;
    // The backlog is empty and its mark cleared once the last drain has finished.
    eventually(LONG, "the drain finished", || async {
        !env.exists(&env.keys.ordered_scheduled("room")).await
    })
    .await;
    assert!(!env.exists(&env.keys.ordered_backlog("room")).await);
    assert!(!env.exists(&env.keys.ordered_lock("room")).await);
    let got = received(&env, &ids);
    (env, got, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ordered_channel_reaches_every_member_in_publish_order_across_four_workers_and_429s() {
    let (env, got, workers) = deliver_in_order(false).await;
    let expected: Vec<u64> = (0..MESSAGES).collect();
    for (numbers, posts) in &got {
        assert_eq!(numbers, &expected, "every message once, in publish order");
        assert_eq!(*posts as u64, MESSAGES, "one post per message");
    }
    assert!(env.gateway.count(429) > 0, "429s were answered and retried");
    // The channel was handed from drain job to drain job (a drain lasts half a second).
    let drains: f64 = workers
        .iter()
        .map(|w| metric(w, "fanout_jobs_completed_total", &[("outcome", "acked")]))
        .sum();
    assert!(drains >= 2.0, "{drains} drain jobs");
    // No drain lost its hold on the channel in a run without faults.
    let lost: f64 = workers
        .iter()
        .flat_map(|w| {
            ["taken_over", "expired"]
                .map(|reason| metric(w, "fanout_leases_lost_total", &[("reason", reason)]))
        })
        .sum();
    assert_eq!(lost, 0.0, "leases lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coalescing_channel_sends_the_waiting_messages_together_in_order_and_once() {
    let (env, got, _workers) = deliver_in_order(true).await;
    let expected: Vec<u64> = (0..MESSAGES).collect();
    for (numbers, posts) in &got {
        assert_eq!(numbers, &expected, "every message once, in publish order");
        // 500 were waiting before the workers started: read 64 at a time, they go in 8 posts.
        assert!((*posts as u64) < MESSAGES / 2, "{posts} posts");
    }
    let largest = env
        .gateway
        .delivered()
        .values()
        .flatten()
        .map(
            |body| match serde_json::from_slice::<Value>(body).unwrap() {
                Value::Array(batch) => batch.len(),
                _ => 1,
            },
        )
        .max()
        .unwrap();
    assert_eq!(
        largest,
        fanout_worker::ordered::READ_AHEAD,
        "the largest batch"
    );
    assert!(env.gateway.count(429) > 0, "429s were answered and retried");
}

/// The same on SQS (the drain jobs and their hand-overs on an SQS queue), smaller: 200 messages, two
/// workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ordered_channel_keeps_its_order_on_sqs() {
    let (env, _dlq) = crate::sqs::sqs_env(Duration::from_secs(10)).await;
    let (env, got, _workers) = deliver_in_order_on(env, 200, 2, false).await;
    let expected: Vec<u64> = (0..200).collect();
    for (numbers, _) in &got {
        assert_eq!(numbers, &expected, "every message once, in publish order");
    }
    assert!(env.gateway.count(429) > 0, "429s were answered and retried");
}

/// 20 messages to 5 members while each call takes 100 ms: the unordered channel posts several to one
/// connection at once; the ordered channel never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unordered_channel_keeps_its_parallelism_and_an_ordered_one_sends_one_at_a_time() {
    for ordered in [false, true] {
        let env = Env::start().await;
        let ids = env.register("p", 5, "room", "pat").await;
        env.gateway.delay(Duration::from_millis(100));
        let _worker = env.worker(&["--max-jobs-in-hand=32"]).await;
        for n in 0..20 {
            if ordered {
                env.publish_ordered("room", json!({ "n": n }), false).await;
            } else {
                env.publish(
                    common::job::Target::Channel {
                        channel: "room".into(),
                    },
                    json!({ "n": n }),
                )
                .await;
            }
        }
        eventually(LONG, "every member has all 20", || async {
            received(&env, &ids)
                .iter()
                .all(|(numbers, _)| numbers.len() == 20)
        })
        .await;
        let most = env.gateway.most_in_flight_to_one();
        if ordered {
            assert_eq!(most, 1, "an ordered channel posts one message at a time");
        } else {
            assert!(
                most > 1,
                "the unordered channel posted {most} at once at most"
            );
        }
    }
}

/// kill -9 of the worker draining an ordered channel: the worker started after it takes the channel over
/// when the drain job's visibility lapses, and every member still gets every message in order; the only
/// repeats are of the message being sent at the kill, each right after its first copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_draining_worker_keeps_the_order_and_loses_nothing() {
    let env = Env::start().await;
    let ids = env.register("q", 20, "room", "quinn").await;
    env.gateway.delay(Duration::from_millis(2));
    const SENT: u64 = 300;
    for n in 0..SENT {
        env.publish_ordered("room", json!({ "n": n }), false).await;
    }
    let flags = ["--visibility-timeout-secs=3"];
    let mut doomed = crate::support::spawn_binary(&env, &flags);
    eventually(LONG, "a third delivered", || async {
        received(&env, &ids)
            .iter()
            .any(|(numbers, _)| numbers.len() >= 100)
    })
    .await;
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let mut survivor = crate::support::spawn_binary(&env, &flags);
    eventually(LONG, "every member has the last message", || async {
        received(&env, &ids)
            .iter()
            .all(|(numbers, _)| numbers.last() == Some(&(SENT - 1)))
    })
    .await;
    let expected: Vec<u64> = (0..SENT).collect();
    let mut repeats = 0;
    for (numbers, _) in received(&env, &ids) {
        let mut once = numbers.clone();
        once.dedup();
        assert_eq!(once, expected, "in order, nothing lost: {numbers:?}");
        repeats += numbers.len() - once.len();
    }
    eprintln!("kill -9 while draining: {repeats} repeated posts");
    assert!(
        repeats <= ids.len(),
        "{repeats} repeats: at most the message at the kill, once per member"
    );
    crate::support::sigterm(&survivor);
    assert_eq!(survivor.wait().unwrap().code(), Some(0));
}

/// A drain retrying a member in place (every call answered 500) whose channel a later receipt of its
/// job took over meanwhile stops at its next renewal, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_retrying_in_place_stops_when_a_later_receipt_took_the_channel() {
    let env = Env::start().await;
    let ids = env.register("t", 1, "room", "tess").await;
    env.gateway.always(&ids[0], 500);
    let worker = env
        .worker(&["--requeue-delay-ms=100", "--max-attempts=100"])
        .await;
    env.publish_ordered("room", json!({ "n": 0 }), false).await;
    eventually(LONG, "the drain is retrying", || async {
        env.gateway.count(500) >= 2
    })
    .await;
    let lock = env.keys.ordered_lock("room");
    let mut redis = env.redis.clone();
    let holder: String = redis::cmd("GET")
        .arg(&lock)
        .query_async(&mut redis)
        .await
        .unwrap();
    let (job, token) = holder.rsplit_once('/').unwrap();
    let later = format!("{job}/{}", token.parse::<u64>().unwrap() + 1000);
    redis::cmd("SET")
        .arg(&lock)
        .arg(&later)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the drain stopped: its lease lost",
        || async {
            metric(
                &worker,
                "fanout_leases_lost_total",
                &[("reason", "taken_over")],
            ) >= 1.0
        },
    )
    .await;
    // The later holder's lock is untouched and the message still waits at the head.
    let now: String = redis::cmd("GET")
        .arg(&lock)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(now, later);
    assert!(env.exists(&env.keys.ordered_backlog("room")).await);
}

/// A member that keeps failing is dead-lettered once its attempts are spent, with the message it missed,
/// and the channel goes on: the others get every message, in order, and the drain finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_keeps_failing_is_dead_lettered_and_the_channel_goes_on() {
    let env = Env::start().await;
    let ids = env.register("f", 3, "room", "fay").await;
    env.gateway.always(&ids[0], 500);
    let worker = env
        .worker(&["--requeue-delay-ms=50", "--max-attempts=2"])
        .await;
    for n in 0..3 {
        env.publish_ordered("room", json!({ "n": n }), false).await;
    }
    eventually(LONG, "the drain finished", || async {
        env.gateway.count(200) == 6 && !env.exists(&env.keys.ordered_scheduled("room")).await
    })
    .await;
    for (numbers, _) in &received(&env, &ids[1..]) {
        assert_eq!(numbers, &[0, 1, 2]);
    }
    let letters = env.queue.peek_dead_letters(10).await.unwrap();
    assert!(!letters.is_empty(), "the failing member is dead-lettered");
    let mut missed = Vec::new();
    for letter in &letters {
        let dead = common::job::Job::decode(&letter.body).unwrap();
        assert_eq!(
            dead.target,
            common::job::Target::Connections {
                ids: vec![ids[0].clone()]
            }
        );
        let payload: Value = serde_json::from_str(dead.payload().unwrap().get()).unwrap();
        missed.push(payload["n"].as_u64().unwrap());
    }
    missed.sort_unstable();
    assert_eq!(missed, [0, 1, 2], "each message it missed, once");
    assert!(
        metric(&worker, "fanout_jobs_dead_lettered_total", &[]) >= 1.0,
        "dead letters counted"
    );
}

/// A coalescing channel's batch of a single message is recorded too: a drain that resumes it (after the
/// worker's shutdown) sends that message to the members who had not had it, not a bigger batch starting
/// with it that the members who had it would be skipped for, although more messages arrived meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_batch_of_one_message_is_sent_as_it_was_and_loses_nothing() {
    let env = Env::start().await;
    let ids = env.register("s", 2, "room", "sol").await;
    env.gateway.always(&ids[1], 500);
    let first = env
        .worker(&[
            "--requeue-delay-ms=100",
            "--max-attempts=100",
            "--shutdown-grace-secs=1",
        ])
        .await;
    env.publish_ordered("room", json!({ "n": 0 }), true).await;
    eventually(
        LONG,
        "one member has message 0, the other is retried",
        || async { env.gateway.count(500) >= 2 && received(&env, &ids[..1])[0].0 == [0] },
    )
    .await;
    for n in 1..5 {
        env.publish_ordered("room", json!({ "n": n }), true).await;
    }
    first.shutdown().await;
    env.gateway.always(&ids[1], 200);
    let _second = env.worker(&[]).await;
    eventually(LONG, "both members have the last message", || async {
        received(&env, &ids)
            .iter()
            .all(|(numbers, _)| numbers.last() == Some(&4))
    })
    .await;
    for (numbers, _) in received(&env, &ids) {
        assert_eq!(numbers, [0, 1, 2, 3, 4], "in order, once, nothing lost");
    }
}

/// A coalesced batch's size is recorded while it is being sent (so a drain that resumes it sends the
/// same batch, whatever arrived meanwhile) and cleared when it leaves the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_batch_records_its_size_until_it_leaves_the_head() {
    let env = Env::start().await;
    let ids = env.register("r", 2, "room", "rae").await;
    env.gateway.delay(Duration::from_millis(300));
    let mut first = None;
    for n in 0..10 {
        let job = env.publish_ordered("room", json!({ "n": n }), true).await;
        first.get_or_insert(job.id);
    }
    let _worker = env.worker(&[]).await;
    let key = env.keys.ordered_batch("room");
    let expected = format!("{} 10", first.unwrap());
    eventually(LONG, "the batch's size recorded", || async {
        let recorded: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut env.redis.clone())
            .await
            .unwrap();
        recorded.as_deref() == Some(expected.as_str())
    })
    .await;
    eventually(LONG, "both members have the batch", || async {
        received(&env, &ids)
            .iter()
            .all(|(numbers, _)| numbers.len() == 10)
    })
    .await;
    eventually(LONG, "the record cleared", || async {
        !env.exists(&key).await
    })
    .await;
    for (numbers, posts) in received(&env, &ids) {
        assert_eq!((numbers, posts), ((0..10).collect::<Vec<u64>>(), 1));
    }
}
