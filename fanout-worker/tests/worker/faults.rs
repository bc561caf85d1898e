//! The worker when things go wrong, against a real redis-server, the Redis Streams queue and the
//! Management API test server: job leases fence a stale holder (its control writes are refused and it
//! stops), a job received again skips the recipients already delivered, and the report counts each
//! recipient once and every second post as a duplicate; `fanout-worker dlq` lists, shows and redrives
//! dead letters (the SQS run is in `sqs.rs`); and kill -9 of one of two worker processes mid-broadcast
//! loses nobody and repeats at most the outcomes it had not written; Redis paused (SIGSTOP) past the
//! visibility timeout makes the jobs' leases lapse, and the worker that receives them again does not run
//! them beside their first run nor repeat what was delivered during the pause (outcomes that could not be
//! written wait in the worker's ledger, [`Owed`]).

use crate::support::{Env, eventually, metric};
use common::job::{BroadcastRef, Job, Target, payload_of};
use common::keys::report_field as rf;
use fanout_worker::lease::{Hold, Lease, Lost};
use fanout_worker::progress::{Batch, FlushError, Owed, Progress};
use fanout_worker::report::{Reports, WriteError};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(30);

fn chunk(broadcast: &str, ids: Vec<String>) -> Job {
    let mut job = Job::post(Target::Connections { ids }, payload_of(&json!({"m": 1})));
    job.id = format!("{broadcast}.0");
    job.broadcast = Some(BroadcastRef {
        id: broadcast.to_owned(),
        index: 0,
    });
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_holder_is_fenced_out_of_every_control_write() {
    let env = Env::start().await;
    let job = chunk("b-fence", vec!["x".into(), "y".into()]);
    let ttl = Duration::from_secs(60);
    let hard_stop = CancellationToken::new();
    let stale = Lease::acquire(&env.redis, &env.keys, &job, ttl, Hold::new(&hard_stop))
        .await
        .unwrap();
    // The job is received again: the new receipt takes a newer token.
    let current = Lease::acquire(&env.redis, &env.keys, &job, ttl, Hold::new(&hard_stop))
        .await
        .unwrap();
    assert!(current.token > stale.token);

    let reports = Reports {
        redis: env.redis.clone(),
        keys: env.keys.clone(),
        ttl,
    };
    // Control writes under the stale token are refused and write nothing.
    assert!(matches!(
        reports.checkpoint(&stale, "b-fence", 3, 0, 0, true).await,
        Err(WriteError::Lost(Lost::TakenOver))
    ));
    assert!(matches!(
        reports.record(&stale, "b-fence", &job.id, 1, true).await,
        Err(WriteError::Lost(Lost::TakenOver))
    ));
    let report = env.report("b-fence").await;
    assert!(!report.contains_key(rf::CHUNKS), "{report:?}");
    assert!(!report.contains_key(rf::FAILED), "{report:?}");
    assert_eq!(stale.check(&env.redis).await.unwrap(), Err(Lost::TakenOver));
    assert_eq!(stale.hold.lost(), Some(Lost::TakenOver));
    assert!(
        stale.hold.stop.is_cancelled(),
        "the stale holder's work stops"
    );

    // A stale holder's deliveries are still facts: recorded, so the current holder skips them, but the
    // stale holder is told to stop.
    let mut stale_progress = Progress::new(
        env.redis.clone(),
        &env.keys,
        stale.clone(),
        &job.id,
        Some("b-fence"),
        ttl,
        Owed::default(),
    );
    let delivered = Batch {
        sent: vec!["x".into()],
        ..Batch::default()
    };
    assert!(matches!(
        stale_progress.flush(delivered).await,
        Err(FlushError::Lost(Lost::TakenOver))
    ));
    let mut progress = Progress::new(
        env.redis.clone(),
        &env.keys,
        current.clone(),
        &job.id,
        Some("b-fence"),
        ttl,
        Owed::default(),
    );
    assert_eq!(
        progress
            .remaining(vec!["x".into(), "y".into()])
            .await
            .unwrap(),
        vec!["y".to_owned()]
    );
    // The current holder posts to x again anyway (it read its work before): a duplicate, not a second
    // recipient.
    progress
        .flush(Batch {
            sent: vec!["x".into(), "y".into()],
            ..Batch::default()
        })
        .await
        .unwrap();
    assert!(current.check(&env.redis).await.unwrap().is_ok());
    assert!(
        reports
            .record(&current, "b-fence", &job.id, 0, true)
            .await
            .is_ok()
    );
    let report = env.report("b-fence").await;
    assert_eq!(report[rf::SENT], "2");
    assert_eq!(report[rf::DUPLICATES], "1");
    assert!(!current.hold.stop.is_cancelled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_delivered_while_redis_is_paused_are_written_once_it_answers() {
    let env = Env::start().await;
    let job = chunk("b-owed", vec!["x".into(), "y".into(), "z".into()]);
    let ttl = Duration::from_secs(60);
    let hard_stop = CancellationToken::new();
    let owed = Owed::default();
    let receipt = || Lease::acquire(&env.redis, &env.keys, &job, ttl, Hold::new(&hard_stop));
    let progress = |lease: Lease, owed: &Owed| {
        Progress::new(
            env.redis.clone(),
            &env.keys,
            lease,
            &job.id,
            Some("b-owed"),
            ttl,
            owed.clone(),
        )
    };
    let sent = |id: &str| Batch {
        sent: vec![id.to_owned()],
        retries: 1,
        ..Batch::default()
    };

    // x is delivered while Redis is paused: its write times out, and Redis runs it when it resumes
    // (the answer was lost, the write was not).
    let mut first = progress(receipt().await.unwrap(), &owed);
    env.redis_server.pause();
    let flushed = first.flush(sent("x")).await;
    env.redis_server.resume();
    assert!(matches!(flushed, Err(FlushError::Redis(_))), "{flushed:?}");
    assert_eq!(owed.len(), 1, "x waits in the ledger");

    // The job is received again by this worker (a new token): the ledger is written before the read,
    // and a write Redis already ran is not counted twice.
    let mut again = progress(receipt().await.unwrap(), &owed);
    assert_eq!(
        again
            .remaining(vec!["x".into(), "y".into(), "z".into()])
            .await
            .unwrap(),
        vec!["y".to_owned(), "z".to_owned()]
    );
    assert!(owed.is_empty());

    // y is delivered during a second pause, and another worker takes the job over: the background
    // write records y with its stale token, so the new holder skips it.
    env.redis_server.pause();
    let flushed = again.flush(sent("y")).await;
    env.redis_server.resume();
    assert!(matches!(flushed, Err(FlushError::Redis(_))), "{flushed:?}");
    let elsewhere = receipt().await.unwrap();
    assert_eq!(owed.write_all(&env.redis).await, 1);
    assert_eq!(owed.write_all(&env.redis).await, 0, "written once");
    let mut other = progress(elsewhere, &Owed::default());
    assert_eq!(
        other
            .remaining(vec!["x".into(), "y".into(), "z".into()])
            .await
            .unwrap(),
        vec!["z".to_owned()]
    );
    let report = env.report("b-owed").await;
    assert_eq!(report[rf::SENT], "2", "{report:?}");
    assert_eq!(report[rf::RETRIES], "2", "{report:?}");
    assert_eq!(
        report
            .get(rf::DUPLICATES)
            .map(String::as_str)
            .unwrap_or("0"),
        "0",
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_job_is_taken_over_stops_and_the_new_receipt_skips_what_was_delivered() {
    let env = Env::start().await;
    let ids = env.register("t", 400, "takeover", "tina").await;
    // Slow answers and few calls in flight, so the job is still running when its lease is taken.
    env.gateway.delay(Duration::from_millis(20));
    let worker = env
        .worker(&[
            "--max-in-flight=8",
            "--visibility-timeout-secs=2",
            "--max-jobs-in-hand=1",
        ])
        .await;
    let job = chunk("b-takeover", ids.clone());
    env.queue
        .send_batch(std::slice::from_ref(&job))
        .await
        .unwrap();
    eventually(LONG, "a quarter of the recipients delivered", || async {
        env.gateway.delivered().len() >= 100
    })
    .await;
    // Another receipt takes the job over (as a worker that received it after a pause would).
    let lease_key = env.keys.job_lease("b-takeover", &job.id);
    let _: u64 = redis::cmd("INCR")
        .arg(&lease_key)
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    eventually(LONG, "the worker notices it lost the lease", || async {
        metric(
            &worker,
            "fanout_leases_lost_total",
            &[("reason", "taken_over")],
        ) == 1.0
    })
    .await;
    let at_stop = env.gateway.delivered().len();
    assert!(at_stop < ids.len(), "stopped before the end: {at_stop}");
    // Nobody acknowledged the job: it comes back after its visibility timeout, to this same worker,
    // which finishes it under a new token.
    eventually(LONG, "the job is finished by its next receipt", || async {
        metric(
            &worker,
            "fanout_jobs_completed_total",
            &[("outcome", "acked")],
        ) == 1.0
    })
    .await;
    let delivered = env.gateway.delivered();
    assert_eq!(delivered.len(), ids.len(), "everyone received it");
    let posts: usize = delivered.values().map(Vec::len).sum();
    let duplicates = posts - ids.len();
    // At most what was in flight or not yet written when the lease was taken.
    assert!(
        duplicates <= fanout_worker::progress::FLUSH_EVERY + 8,
        "{duplicates} duplicates"
    );
    let report = env.report("b-takeover").await;
    assert_eq!(report[rf::SENT], ids.len().to_string(), "{report:?}");
    assert_eq!(
        report
            .get(rf::DUPLICATES)
            .map(String::as_str)
            .unwrap_or("0"),
        duplicates.to_string(),
        "the report counts every second post: {report:?}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_on_the_queue_twice_is_counted_once_and_every_second_post_is_a_duplicate() {
    let env = Env::start().await;
    let ids = env.register("d", 300, "twice", "dora").await;
    env.gateway.delay(Duration::from_millis(5));
    let worker = env
        .worker(&[
            "--max-in-flight=16",
            "--visibility-timeout-secs=2",
            "--max-jobs-in-hand=2",
        ])
        .await;
    // The same chunk twice (a re-plan after the planner died, or the queue delivering it twice), both
    // in hand at once: the second receipt's token fences the first.
    let job = chunk("b-twice", ids.clone());
    env.queue
        .send_batch(&[job.clone(), job.clone()])
        .await
        .unwrap();
    eventually(LONG, "both copies acknowledged", || async {
        metric(
            &worker,
            "fanout_jobs_completed_total",
            &[("outcome", "acked")],
        ) == 2.0
    })
    .await;
    let delivered = env.gateway.delivered();
    assert_eq!(delivered.len(), ids.len(), "everyone received it");
    let posts: usize = delivered.values().map(Vec::len).sum();
    let report = env.report("b-twice").await;
    assert_eq!(report[rf::SENT], ids.len().to_string(), "{report:?}");
    assert_eq!(
        report
            .get(rf::DUPLICATES)
            .map(String::as_str)
            .unwrap_or("0"),
        (posts - ids.len()).to_string(),
        "the report counts exactly the posts the gateway saw twice: {report:?}"
    );
    assert_eq!(report[rf::FAILED], "0");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven_on_redis_streams() {
    let env = Env::start().await;
    crate::support::dlq_round_trip(&env, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_of_two_workers_loses_nobody_and_repeats_at_most_its_unwritten_outcomes() {
    let env = Env::start().await;
    let ids = env.register("k", 3000, "chaos", "kim").await;
    env.gateway.delay(Duration::from_millis(2));
    // The default visibility timeout (10 s): the killed worker's jobs come back within it.
    let flags = [
        "--chunk-size=200",
        "--max-in-flight=16",
        "--max-jobs-in-hand=2",
    ];
    let mut doomed = crate::support::spawn_binary(&env, &flags);
    let mut survivor = crate::support::spawn_binary(&env, &flags);
    let job = env
        .publish(
            Target::Channel {
                channel: "chaos".into(),
            },
            json!({"k": 9}),
        )
        .await;
    eventually(LONG, "a fifth delivered", || async {
        env.gateway.delivered().len() >= 600
    })
    .await;
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let killed = std::time::Instant::now();
    eventually(LONG, "everyone received it", || async {
        env.gateway.delivered().len() == ids.len()
    })
    .await;
    let recovery = killed.elapsed();
    env.finished(&job.id, LONG).await;
    let posts: usize = env.gateway.delivered().values().map(Vec::len).sum();
    let duplicates = posts - ids.len();
    // The killed worker held at most 2 jobs, each with at most 50 unwritten outcomes and 16 in flight.
    let bound = 2 * (fanout_worker::progress::FLUSH_EVERY + 16);
    eprintln!(
        "kill -9: {duplicates} duplicate posts (bound {bound}), finished {recovery:?} after the kill"
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, bound {bound}"
    );
    assert!(
        recovery <= Duration::from_secs(20),
        "finished {recovery:?} after the kill"
    );
    let report = env.report(&job.id).await;
    assert_eq!(report[rf::SENT], ids.len().to_string(), "{report:?}");
    crate::support::sigterm(&survivor);
    assert_eq!(survivor.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_past_the_visibility_timeout_loses_nobody_and_no_job_runs_twice() {
    let env = Env::start().await;
    let ids = env.register("p", 3000, "paused", "pat").await;
    env.gateway.delay(Duration::from_millis(2));
    let worker = env
        .worker(&[
            "--chunk-size=200",
            "--max-in-flight=16",
            "--max-jobs-in-hand=2",
            "--visibility-timeout-secs=3",
        ])
        .await;
    let job = env
        .publish(
            Target::Channel {
                channel: "paused".into(),
            },
            json!({"p": 1}),
        )
        .await;
    eventually(LONG, "a fifth delivered", || async {
        env.gateway.delivered().len() >= 600
    })
    .await;
    // SIGSTOP the redis-server for twice the visibility timeout: every job in hand lapses and is
    // received again when Redis returns, by this same worker.
    env.redis_server.pause();
    tokio::time::sleep(Duration::from_secs(6)).await; // the fault's length, not a synchronisation
    env.redis_server.resume();
    eventually(LONG, "everyone received it", || async {
        env.gateway.delivered().len() == ids.len()
    })
    .await;
    env.finished(&job.id, LONG).await;
    let posts: usize = env.gateway.delivered().values().map(Vec::len).sum();
    let duplicates = posts - ids.len();
    let lost = metric(&worker, "fanout_leases_lost_total", &[]);
    eprintln!(
        "Redis paused 6 s (visibility 3 s): {duplicates} duplicate posts, {lost} leases lost"
    );
    assert!(lost >= 1.0, "the pause outlasted the jobs' leases");
    // What was delivered during the pause waited in the worker's ledger and was written before the
    // jobs were run again.
    assert_eq!(duplicates, 0);
    let report = env.report(&job.id).await;
    assert_eq!(report[rf::SENT], ids.len().to_string(), "{report:?}");
    worker.shutdown().await;
}
