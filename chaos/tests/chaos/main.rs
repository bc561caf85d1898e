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
    let deadline = Instant::now() + chaos::PATIENCE;
    while system.stats().await["received"].as_u64().unwrap() < CONNECTIONS / 5 {
        assert!(Instant::now() < deadline, "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Instant::now();
    system.workers[0].kill9();
    let outcome = system.outcome(CONNECTIONS, 1).await;
    let recovery = outcome.done.duration_since(killed);
    println!("kill -9 one of two workers: {outcome:?}, done {recovery:?} after the kill");
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
    system.gateway_fault("error", 3.0).await;
    let outcome = system.outcome(CONNECTIONS, 1).await;
    println!("gateway 500s for 3 s: {outcome:?}");
    assert_eq!(
        (outcome.lost, outcome.duplicates, outcome.extra),
        (0, 0, false)
    );
}
