//! The dispatcher on its own, against the Management API test server over real sockets: every recipient
//! ends with the outcome its answers call for (sent, gone, or left over with its reason), 429s and
//! retries are counted on the way, a connection still connecting is retried past its 410s, a stop
//! leaves everyone over without a call, and outcomes reach the job's progress set every
//! [`FLUSH_EVERY`] while the rest is handed back, as the delivery counters are.

use crate::support::{Env, STAGE, test_deliver};
use bytes::Bytes;
use common::job::{Action, Job, Target, now_ms};
use common::metrics::WorkerMetrics;
use fanout_worker::delivery::{Endpoint, RetryReason};
use fanout_worker::dispatch::{Dispatcher, Op, Tally, Why};
use fanout_worker::governor::Governor;
use fanout_worker::lease::{Hold, Lease, RUNNING_TTL};
use fanout_worker::progress::{FLUSH_EVERY, Owed, Progress};
use fanout_worker::recipients::Recipient;
use fanout_worker::retry::RetryPolicy;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Retries per recipient.
const RETRIES: usize = 3;

fn dispatcher(env: &Env, connect_grace: Duration) -> Dispatcher {
    let settings = env.settings(&[]);
    let metrics = WorkerMetrics::new();
    Dispatcher {
        deliver: Arc::new(test_deliver(&settings)),
        governor: Arc::new(Governor::new(
            env.redis.clone(),
            &env.keys,
            "dispatch",
            100_000,
            100_000,
            metrics.clone(),
        )),
        in_flight: fanout_worker::lanes::Shares::new(16, 0),
        gate: Arc::new(fanout_worker::lanes::TokenGate::new()),
        retry: RetryPolicy {
            retries: RETRIES,
            min_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(10),
        },
        connect_grace,
        metrics,
    }
}

fn recipient(env: &Env, id: &str, connected_at_ms: Option<u64>) -> Recipient {
    Recipient {
        id: id.to_owned(),
        endpoint: Endpoint {
            url: Arc::from(env.gateway.endpoint(STAGE).as_str()),
            region: Arc::from("us-east-1"),
        },
        channel: None,
        subject: None,
        connected_at_ms,
    }
}

fn post() -> Op {
    Op::Post(Bytes::from_static(br#"{"hi":1}"#))
}

fn sorted_leftovers(tally: &Tally) -> Vec<(String, Why)> {
    let mut left = tally.leftovers.clone();
    left.sort();
    left
}

/// Each answer leads to its outcome: 200 sent, 410 gone, 403 and 413 left over at once, 429 and 5xx
/// retried (then sent, or left over when they keep coming); the 429s and retries are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipient_ends_with_the_outcome_its_answers_call_for() {
    let env = Env::start().await;
    let gw = &env.gateway;
    gw.always("gone", 410);
    gw.script("busy", &[429, 429]);
    gw.script("flaky", &[500]);
    gw.always("refused", 403);
    gw.always("large", 413);
    gw.always("throttled", 429);
    gw.always("failing", 503);
    let ids = [
        "ok",
        "gone",
        "busy",
        "flaky",
        "refused",
        "large",
        "throttled",
        "failing",
    ];
    let recipients = ids.iter().map(|id| recipient(&env, id, None)).collect();
    let d = dispatcher(&env, Duration::ZERO);
    let tally = d.run(recipients, post(), &CancellationToken::new()).await;

    assert_eq!(tally.sent, 3);
    let gone: Vec<&str> = tally.gone.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(gone, ["gone"]);
    assert_eq!(
        sorted_leftovers(&tally),
        [
            ("failing".to_owned(), Why::Failed(RetryReason::Http5xx)),
            ("large".to_owned(), Why::PayloadTooLarge),
            ("refused".to_owned(), Why::Forbidden),
            ("throttled".to_owned(), Why::Throttled),
        ]
    );
    // Every answer of 429: two from `busy`, one per call (the first and its retries) from `throttled`.
    let throttled = 2 + (RETRIES as u64 + 1);
    assert_eq!(tally.throttled, throttled);
    assert_eq!(gw.count(429), throttled as usize);
    // Calls made again: busy 2, flaky 1, throttled and failing all their retries.
    let retries = 2 + 1 + 2 * RETRIES as u64;
    assert_eq!(tally.retries, retries);
    assert_eq!(gw.calls().len() as u64, ids.len() as u64 + retries);

    // Nothing was written (no progress): all of it is handed back.
    let unflushed = &tally.unflushed;
    let sent: HashSet<&str> = unflushed.sent.iter().map(String::as_str).collect();
    assert_eq!(sent, HashSet::from(["ok", "busy", "flaky"]));
    assert_eq!(unflushed.gone, ["gone"]);
    assert_eq!(
        (unflushed.throttled, unflushed.retries),
        (throttled, retries)
    );
}

/// A 410 from a connection that connected within the grace is retried until it answers, past the end
/// of the retry schedule; once the grace is over, a 410 is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_while_connecting_is_retried_until_the_connection_answers() {
    let env = Env::start().await;
    let statuses = [410; RETRIES + 2];
    env.gateway.script("new", &statuses);
    env.gateway.script("old", &[410]);
    let d = dispatcher(&env, Duration::from_secs(60));
    let recipients = vec![
        recipient(&env, "new", Some(now_ms())),
        recipient(&env, "old", Some(now_ms() - 120_000)),
    ];
    let tally = d.run(recipients, post(), &CancellationToken::new()).await;
    assert_eq!(tally.sent, 1);
    assert_eq!(tally.unflushed.sent, ["new"]);
    let gone: Vec<&str> = tally.gone.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(gone, ["old"]);
    assert_eq!(tally.retries, statuses.len() as u64);
    assert_eq!(tally.throttled, 0);
    assert!(tally.leftovers.is_empty(), "{:?}", tally.leftovers);
}

/// Once the job must stop, no call goes out: every recipient is left over for shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_job_calls_nobody_and_leaves_everyone_over() {
    let env = Env::start().await;
    let d = dispatcher(&env, Duration::ZERO);
    let stop = CancellationToken::new();
    stop.cancel();
    let recipients = vec![recipient(&env, "a", None), recipient(&env, "b", None)];
    let tally = d.run(recipients, post(), &stop).await;
    assert_eq!(
        sorted_leftovers(&tally),
        [
            ("a".to_owned(), Why::Shutdown),
            ("b".to_owned(), Why::Shutdown)
        ]
    );
    assert_eq!(tally.sent, 0);
    assert!(env.gateway.calls().is_empty());
}

/// With a progress, outcomes are written every [`FLUSH_EVERY`]; the remainder is handed back unwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_written_every_flush_and_the_rest_handed_back() {
    let env = Env::start().await;
    let job = Job::new(Target::Connections { ids: vec![] }, Action::Disconnect);
    let lease = Lease::acquire(
        &env.redis,
        &env.keys,
        &job,
        RUNNING_TTL,
        Hold::new(&CancellationToken::new()),
    )
    .await
    .unwrap();
    let mut progress = Progress::new(
        env.redis.clone(),
        &env.keys,
        lease.clone(),
        &job.id,
        None,
        RUNNING_TTL,
        Owed::default(),
    );
    let n = 2 * FLUSH_EVERY + 7;
    let recipients = (0..n)
        .map(|i| recipient(&env, &format!("c-{i}"), None))
        .collect();
    let d = dispatcher(&env, Duration::ZERO);
    let tally = d
        .run_with(
            recipients,
            Op::Delete,
            common::job::Lane::Interactive,
            &lease.hold.stop,
            Some(&mut progress),
        )
        .await;
    assert_eq!(tally.sent, n as u64);
    assert_eq!(tally.unflushed.sent.len(), 7);
    let written: HashSet<String> = redis::cmd("SMEMBERS")
        .arg(env.keys.job_progress(&job.id, &job.id))
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    let written: HashSet<String> = written
        .into_iter()
        .filter(|m| !m.starts_with('\0'))
        .collect();
    assert_eq!(written.len(), 2 * FLUSH_EVERY);
    assert!(tally.unflushed.sent.iter().all(|id| !written.contains(id)));
}

/// `fanout_deliveries_total{sent,gone}` moves in steps of [`FLUSH_EVERY`] outcomes while a job runs (read
/// by a watcher during the job) and holds every outcome once the job is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_counted_every_flush_while_a_job_runs_and_in_full_at_its_end() {
    let env = Env::start().await;
    // 16 calls at a time, 40 ms each: the job lasts long enough to be watched.
    env.gateway.delay(Duration::from_millis(40));
    let n = 2 * FLUSH_EVERY + 7;
    let mut recipients: Vec<Recipient> = (0..n)
        .map(|i| recipient(&env, &format!("s-{i}"), None))
        .collect();
    for i in 0..3 {
        let id = format!("g-{i}");
        env.gateway.always(&id, 410);
        recipients.push(recipient(&env, &id, None));
    }
    let d = dispatcher(&env, Duration::ZERO);
    let sent = d.metrics.deliveries.with_label_values(&["sent"]);
    let gone = d.metrics.deliveries.with_label_values(&["gone"]);
    let done = std::sync::atomic::AtomicBool::new(false);
    let watch = async {
        let mut seen = Vec::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            seen.push(sent.get() + gone.get());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen
    };
    let run = async {
        let tally = d.run(recipients, post(), &CancellationToken::new()).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        tally
    };
    let (seen, tally) = tokio::join!(watch, run);
    assert_eq!((tally.sent, tally.gone.len()), (n as u64, 3));
    assert!(
        seen.iter().all(|v| v % FLUSH_EVERY as u64 == 0),
        "counted in steps of {FLUSH_EVERY}: {seen:?}"
    );
    assert!(
        seen.iter().any(|v| *v >= FLUSH_EVERY as u64),
        "counted while the job ran: {seen:?}"
    );
    assert_eq!((sent.get(), gone.get()), (n as u64, 3));
}
