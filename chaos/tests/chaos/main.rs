//! The chaos suite's short form: the real system as processes, one fault per test, asserting nothing is
//! lost and duplicates stay within their bound, counted by the gateway. Tests run one at a time so that
//! timings are not skewed by each other.

use chaos::System;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const CONNECTIONS: u64 = 1_000;
const RATE: u32 = 400;
const CHUNK: usize = 100;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_one_of_two_workers_loses_nothing_and_recovers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut system = System::start(2, RATE, CHUNK).await;
    system.connect(CONNECTIONS as usize).await;
    assert_eq!(system.publish(1).await, 202);
    // Kill once deliveries are under way.
    system.wait_received(CONNECTIONS / 5).await;
    let killed = Instant::now();
    system.workers[0].kill9();
    let outcome = system.outcome(CONNECTIONS, 1).await;
    let recovery = outcome.done.duration_since(killed);
    println!(
        "{}",
        outcome.row("kill -9 one of two workers mid-broadcast", killed)
    );
    assert_eq!(outcome.lost, 0);
    assert!(!outcome.extra);
    // Bound: one chunk per job the killed worker held (at most all chunks of this broadcast here).
    assert!(outcome.duplicates <= CONNECTIONS, "{outcome:?}");
    assert!(
        recovery <= Duration::from_secs(15),
        "recovery took {recovery:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_500s_for_3_s_lose_nothing_and_duplicate_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let system = System::start(1, RATE, CHUNK).await;
    system.connect(CONNECTIONS as usize).await;
    assert_eq!(system.publish(1).await, 202);
    let fault = Instant::now();
    system.gateway_fault("error", 3.0).await;
    let outcome = system.outcome(CONNECTIONS, 1).await;
    println!(
        "{}",
        outcome.row("Management API answers 500 for 3 s", fault)
    );
    assert_eq!(
        (outcome.lost, outcome.duplicates, outcome.extra),
        (0, 0, false)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_stall_of_3_s_loses_nothing_and_duplicates_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let system = System::start(1, RATE, CHUNK).await;
    system.connect(CONNECTIONS as usize).await;
    assert_eq!(system.publish(1).await, 202);
    let fault = Instant::now();
    system.gateway_fault("stall", 3.0).await;
    let outcome = system.outcome(CONNECTIONS, 1).await;
    println!("{}", outcome.row("Management API stalled 3 s", fault));
    assert_eq!(
        (outcome.lost, outcome.duplicates, outcome.extra),
        (0, 0, false)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sigstop_for_8_s_loses_nothing_and_duplicates_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let system = System::start(1, RATE, CHUNK).await;
    system.connect(CONNECTIONS as usize).await;
    assert_eq!(system.publish(1).await, 202);
    let fault = Instant::now();
    system.redis.pause();
    tokio::time::sleep(Duration::from_secs(8)).await; // the fault's length, not a synchronisation
    system.redis.resume();
    let outcome = system.outcome(CONNECTIONS, 1).await;
    println!("{}", outcome.row("Redis paused (SIGSTOP) 8 s", fault));
    assert_eq!(
        (outcome.lost, outcome.duplicates, outcome.extra),
        (0, 0, false)
    );
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
