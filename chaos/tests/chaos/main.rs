//! The chaos suite: the real system as processes, one fault per test, asserting nothing is lost and
//! duplicates stay within their bound, counted by the gateway. Tests run one at a time so that timings
//! are not skewed by each other. CI runs the short form (faults of seconds); with `FANOUT_CHAOS_FULL=1`
//! (`./dev chaos`) the same tests run the faults at full length ([`chaos::full`]).

use chaos::{Backend, Setup, System, full};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const CONNECTIONS: u64 = 1_000;
const RATE: u32 = 400;
const CHUNK: usize = 100;

/// The bar for a killed worker's jobs: back and delivered within 10 s of the kill.
const RECOVERY: Duration = Duration::from_secs(10);

/// Kills a worker with kill -9 once deliveries are under way (starting a fresh one right after when
/// `replace`, as an orchestrator would) and checks: nothing lost, duplicates within the bound, every
/// delivery made within [`RECOVERY`] of the kill.
async fn kill_9(workers: usize, replace: bool, fault: &str) {
    let mut system = System::start(workers, RATE, CHUNK).await;
    system.connect(CONNECTIONS as usize).await;
    assert_eq!(system.publish(1).await, 202);
    system.wait_received(CONNECTIONS / 5).await;
    let killed = Instant::now();
    system.workers[0].kill9();
    if replace {
        system.add_worker();
    }
    let outcome = system.outcome(CONNECTIONS, 1).await;
    let recovery = outcome.done.duration_since(killed);
    println!("{}", outcome.row(fault, killed));
    assert_eq!(outcome.lost, 0, "{outcome:?}");
    assert!(!outcome.extra);
    // Bound: the chunks the killed worker had in flight (at most all chunks of this broadcast here).
    assert!(outcome.duplicates <= CONNECTIONS, "{outcome:?}");
    assert!(recovery <= RECOVERY, "recovery took {recovery:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_one_of_two_workers_loses_nothing_and_recovers_within_10_s() {
    let _one = ONE_AT_A_TIME.lock().await;
    kill_9(2, false, "kill -9 one of two workers mid-broadcast").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_only_worker_loses_nothing_and_recovers_within_10_s() {
    let _one = ONE_AT_A_TIME.lock().await;
    kill_9(
        1,
        true,
        "kill -9 the only worker mid-broadcast (a fresh one started at once)",
    )
    .await;
}

/// A fault's length in this form of the suite: `short` seconds in CI, `long` in the full form.
fn length(short: u64, long: u64) -> Duration {
    Duration::from_secs(if full() { long } else { short })
}

/// Starts a Management API fault (`stall` or `error`) for `length` while a broadcast is delivered:
/// nothing lost, nothing posted twice.
async fn gateway_fault(fault: &str, length: Duration, row: &str) {
    let system = System::start(1, RATE, CHUNK).await;
    system.connect(CONNECTIONS as usize).await;
    assert_eq!(system.publish(1).await, 202);
    let start = Instant::now();
    system.gateway_fault(fault, length.as_secs_f64()).await;
    let outcome = system.outcome(CONNECTIONS, 1).await;
    println!("{}", outcome.row(row, start));
    assert_eq!(
        (outcome.lost, outcome.duplicates, outcome.extra),
        (0, 0, false),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_500s_lose_nothing_and_duplicate_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let length = length(3, 10);
    let row = format!("Management API answers 500 for {} s", length.as_secs());
    gateway_fault("error", length, &row).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_stall_loses_nothing_and_duplicates_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let length = length(3, 10);
    let row = format!("Management API stalled {} s", length.as_secs());
    gateway_fault("stall", length, &row).await;
}

/// Pauses Redis (SIGSTOP) for `length` while a broadcast is delivered.
async fn redis_pause(length: Duration) {
    let system = System::start(1, RATE, CHUNK).await;
    system.connect(CONNECTIONS as usize).await;
    assert_eq!(system.publish(1).await, 202);
    system.wait_received(CONNECTIONS / 5).await;
    let fault = Instant::now();
    system.redis.pause();
    tokio::time::sleep(length).await; // the fault's length, not a synchronisation
    system.redis.resume();
    let outcome = system.outcome(CONNECTIONS, 1).await;
    let row = format!("Redis paused (SIGSTOP) {} s", length.as_secs());
    println!("{}", outcome.row(&row, fault));
    assert_eq!(
        (outcome.lost, outcome.duplicates, outcome.extra),
        (0, 0, false),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sigstop_loses_nothing_and_duplicates_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    if full() {
        redis_pause(Duration::from_secs(15)).await;
        redis_pause(Duration::from_secs(45)).await;
    } else {
        redis_pause(Duration::from_secs(8)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restart_with_aof_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut system = System::start_with(Setup {
        aof: true,
        ..Setup::new(1, RATE, CHUNK)
    })
    .await;
    system.connect(CONNECTIONS as usize).await;
    assert_eq!(system.publish(1).await, 202);
    system.wait_received(CONNECTIONS / 5).await;
    let fault = Instant::now();
    // kill -9 and start again on the same port, reading the append-only file back.
    system.redis.restart();
    let outcome = system.outcome(CONNECTIONS, 1).await;
    println!(
        "{}",
        outcome.row("Redis kill -9 and restart (append-only file on)", fault)
    );
    assert_eq!((outcome.lost, outcome.extra), (0, false), "{outcome:?}");
    // Bound: the calls in flight and the outcomes not yet written when Redis died (one chunk).
    assert!(outcome.duplicates <= CHUNK as u64, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_unavailable_loses_nothing_and_publishes_retried_with_their_key_arrive_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let system = System::start_with(Setup {
        queue: Backend::Sqs,
        ..Setup::new(1, RATE, CHUNK)
    })
    .await;
    system.connect(CONNECTIONS as usize).await;
    assert_eq!(system.publish(1).await, 202);
    system.wait_received(CONNECTIONS / 5).await;
    let length = length(3, 10);
    let sqs = system.sqs.as_ref().expect("the queue is SQS");
    let fault = Instant::now();
    sqs.pause();
    // Publishes meanwhile: their clients give up after 1 s (the enqueue may or may not have happened).
    let answers = publish_all(&system, 2..=3, |_| Duration::from_secs(1)).await;
    tokio::time::sleep(length.saturating_sub(fault.elapsed())).await; // the fault's length
    sqs.resume();
    println!("answers during the pause: {answers:?}");
    let failed = not_accepted(&answers);
    retry_until_accepted(&system, &failed).await;
    let outcome = system.outcome(CONNECTIONS, 3).await;
    let row = format!(
        "SQS unavailable (moto SIGSTOP) {} s, SQS queue; {} publishes meanwhile not accepted, retried with their Idempotency-Key",
        length.as_secs(),
        failed.len()
    );
    println!("{}", outcome.row(&row, fault));
    assert_eq!(
        (outcome.lost, outcome.duplicates, outcome.extra),
        (0, 0, false),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_during_a_redis_pause_retried_with_their_key_are_delivered_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    const PUBLISHES: u64 = 6;
    const RECIPIENTS: u64 = 100;
    let system = System::start(1, RATE, CHUNK).await;
    system.connect(RECIPIENTS as usize).await;
    let pause = length(5, 15);
    let fault = Instant::now();
    system.redis.pause();
    // Half the clients give up after 1 s (no answer: unknown to them), half wait for ingest's answer
    // (503: Redis did not answer it either).
    let answers = publish_all(&system, 1..=PUBLISHES, |n| {
        Duration::from_secs(if n % 2 == 0 { 1 } else { 10 })
    })
    .await;
    tokio::time::sleep(pause.saturating_sub(fault.elapsed())).await; // the fault's length
    system.redis.resume();
    println!("answers during the pause: {answers:?}");
    let failed = not_accepted(&answers);
    assert_eq!(failed.len() as u64, PUBLISHES, "{answers:?}");
    assert!(
        answers.iter().any(|(_, a)| matches!(a, Some((503, _)))),
        "some publishes got ingest's 503: {answers:?}"
    );
    retry_until_accepted(&system, &failed).await;
    let outcome = system.outcome(RECIPIENTS, PUBLISHES).await;
    let row = format!(
        "publish during a Redis pause of {} s ({} of {PUBLISHES} not accepted), retried with its Idempotency-Key",
        pause.as_secs(),
        failed.len()
    );
    println!("{}", outcome.row(&row, fault));
    assert_eq!(
        (outcome.lost, outcome.duplicates, outcome.extra),
        (0, 0, false),
        "{outcome:?}"
    );
}

/// Publishes messages `numbers` at once, message `n` giving up after `timeout(n)`; the answers.
async fn publish_all(
    system: &System,
    numbers: impl Iterator<Item = u64>,
    timeout: impl Fn(u64) -> Duration,
) -> Vec<(u64, Option<(u16, serde_json::Value)>)> {
    futures::future::join_all(numbers.map(|n| {
        let timeout = timeout(n);
        async move { (n, system.publish_within(n, timeout).await) }
    }))
    .await
}

/// The messages whose publish was not answered 202.
fn not_accepted(answers: &[(u64, Option<(u16, serde_json::Value)>)]) -> Vec<u64> {
    answers
        .iter()
        .filter(|(_, a)| !matches!(a, Some((202, _))))
        .map(|(n, _)| *n)
        .collect()
}

/// Publishes each message of `numbers` again with its idempotency key until it is accepted (409 means
/// the first attempt still holds the key: ingest never learnt how it ended, and frees the key after its
/// in-flight window).
async fn retry_until_accepted(system: &System, numbers: &[u64]) {
    for &n in numbers {
        let deadline = Instant::now() + chaos::PATIENCE;
        loop {
            match system.publish_within(n, Duration::from_secs(5)).await {
                Some((202, _)) => break,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "publish {n} never accepted: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_sigterm_mid_job_drains_exits_0_and_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut system = System::start(1, RATE, CHUNK).await;
    system.connect(CONNECTIONS as usize).await;
    assert_eq!(system.publish(1).await, 202);
    system.wait_received(CONNECTIONS / 5).await;
    let fault = Instant::now();
    assert_eq!(
        system.workers[0].terminate(),
        Some(0),
        "the worker drains and exits 0"
    );
    // What it did not finish is back on the queue for the next worker.
    system.add_worker();
    let outcome = system.outcome(CONNECTIONS, 1).await;
    println!(
        "{}",
        outcome.row(
            "worker SIGTERM mid-broadcast (drains, exits 0; a new worker finishes)",
            fault
        )
    );
    assert_eq!(
        (outcome.lost, outcome.duplicates, outcome.extra),
        (0, 0, false)
    );
}
