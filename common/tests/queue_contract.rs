//! Long because it is one contract: every behaviour a queue backend owes, run against both backends; split, the
//! two backends could drift apart unnoticed.
//!
//! The queue contract: the behaviour every [`Queue`] backend must have, written once as async functions
//! over a [`SharedQueue`] and run against each backend on a real server.
//!
//! - `redis_streams`: [`StreamQueue::connect`] (a dedicated blocking reader) on a private `redis-server`.
//! - `redis_streams_polling`: [`StreamQueue::new`] on the shared connection only (it polls instead of
//!   blocking), on a private `redis-server`.
//! - `sqs`: [`SqsQueue`] on the SQS server at `FANOUT_TEST_SQS_ENDPOINT`, each test on its own queue with
//!   a dead-letter queue wired by a redrive policy.
//!
//! After the contract come tests of one backend's own behaviour (several Redis Streams consumers, stale
//! receipts, a Redis restart, blocking reads; SQS error mapping and a queue without a dead-letter queue),
//! and both lanes' queues on each backend keeping their jobs apart.
//!
//! Timing: visibility timeouts are 1–2 s, so the cases that wait one out take about that long; everything
//! else polls for the event it expects, with a deadline.

use common::job::{Job, Target, payload_of};
use common::queue::sqs::SqsQueue;
use common::queue::streams::StreamQueue;
use common::queue::{DeadLetter, Queue, QueueError, QueueOptions, Receipt, Received, SharedQueue};
use common::store::Redis;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::RedisServer;

// ---------------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------------

/// A queue under test, and the server it needs kept alive.
struct Subject {
    queue: SharedQueue,
    _redis: Option<RedisServer>,
}

fn options(visibility: Duration) -> QueueOptions {
    QueueOptions {
        visibility_timeout: visibility,
        key_prefix: format!("{}:", test_support::unique_name("t")),
        ..QueueOptions::default()
    }
}

async fn redis_streams(visibility: Duration) -> Subject {
    let server = RedisServer::start();
    let queue = StreamQueue::connect(&server.url(), "jobs", options(visibility))
        .await
        .expect("open the Redis Streams queue");
    Subject {
        queue: Arc::new(queue),
        _redis: Some(server),
    }
}

async fn redis_streams_polling(visibility: Duration) -> Subject {
    let server = RedisServer::start();
    let redis = Redis::connect(&server.url()).await.expect("connect");
    let queue = StreamQueue::new(redis, "jobs", options(visibility))
        .await
        .expect("open the Redis Streams queue");
    Subject {
        queue: Arc::new(queue),
        _redis: Some(server),
    }
}

async fn sqs_queue(url: &str, options: QueueOptions) -> SqsQueue {
    SqsQueue::connect_with_credentials(
        url,
        Some(&test_support::sqs_endpoint()),
        Some(test_support::SQS_TEST_REGION),
        test_support::sqs_test_credentials(),
        options,
    )
    .await
    .expect("open the SQS queue")
}

async fn sqs(visibility: Duration) -> Subject {
    // SQS's visibility timeout is the queue's attribute: set where the queue is created. The dead-letter
    // queue is found through the redrive policy (options.dead_letter_url stays None).
    let created = test_support::create_sqs_queue("contract", visibility, true).await;
    Subject {
        queue: Arc::new(sqs_queue(&created.queue_url, options(visibility)).await),
        _redis: None,
    }
}

/// Runs each case against each backend: `case(visibility timeout)` becomes a module with one test per
/// backend.
macro_rules! contract {
    ($($case:ident($visibility:expr);)*) => {$(
        mod $case {
            use super::*;

            #[tokio::test]
            async fn redis_streams() {
                let subject = super::redis_streams($visibility).await;
                super::$case(subject.queue.clone()).await;
            }

            #[tokio::test]
            async fn redis_streams_polling() {
                let subject = super::redis_streams_polling($visibility).await;
                super::$case(subject.queue.clone()).await;
            }

            #[tokio::test]
            async fn sqs() {
                let subject = super::sqs($visibility).await;
                super::$case(subject.queue.clone()).await;
            }
        }
    )*};
}

const LONG: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_secs(1);

contract! {
    batch_is_received_exactly_once(LONG);
    unacked_job_comes_back_after_the_visibility_timeout(SHORT);
    ack_removes_jobs(SHORT);
    release_makes_a_job_receivable_at_once(LONG);
    extend_keeps_a_job_hidden_past_its_timeout(Duration::from_secs(2));
    delayed_job_arrives_after_its_delay(LONG);
    dead_letter_moves_the_message_with_its_reason(SHORT);
    depth_counts_waiting_jobs(LONG);
    ping_answers(LONG);
}

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

/// `n` distinct jobs whose payloads hold characters that an encoding could mangle.
fn jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| {
            Job::post(
                Target::Channel {
                    channel: format!("room-{i}"),
                },
                payload_of(&serde_json::json!({ "n": i, "text": "héllo \"there\"\n\t✓ {}" })),
            )
        })
        .collect()
}

/// Receives until `want` messages arrived or `within` passed, whichever is first.
async fn receive_until(queue: &SharedQueue, want: usize, within: Duration) -> Vec<Received> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        got.extend(receive_once(queue, (want - got.len()).min(10), left).await);
    }
    got
}

/// Asserts that nothing is received for `period` (polling throughout).
async fn receive_nothing_for(queue: &SharedQueue, period: Duration, why: &str) {
    let got = receive_until(queue, 1, period).await;
    assert!(
        got.is_empty(),
        "{why}: received {:?}",
        got.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
}

/// One receive of at most `wait` (capped at 1 s so callers keep their deadlines). A backend may return
/// early with nothing (SQS rounds the wait down to whole seconds); pause briefly then rather than spin.
async fn receive_once(queue: &SharedQueue, max: usize, wait: Duration) -> Vec<Received> {
    let started = Instant::now();
    let wait = wait.min(Duration::from_secs(1));
    let got = queue.receive(max, wait).await.expect("receive");
    if got.is_empty() && started.elapsed() < wait {
        tokio::time::sleep((wait - started.elapsed()).min(Duration::from_millis(50))).await;
    }
    got
}

async fn receive_one(queue: &SharedQueue) -> Received {
    let mut got = receive_until(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "expected one message");
    got.remove(0)
}

// ---------------------------------------------------------------------------------------------------
// The contract
// ---------------------------------------------------------------------------------------------------

/// Every job of a batch (larger than one SQS batch) is received once, with its body intact.
async fn batch_is_received_exactly_once(queue: SharedQueue) {
    let sent = jobs(25);
    queue.send_batch(&sent).await.expect("send_batch");

    let got = receive_until(&queue, 25, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 25, "all 25 jobs arrive");
    let by_id: HashMap<String, &Received> = got
        .iter()
        .map(|r| (r.job().expect("the body decodes as a job").id, r))
        .collect();
    assert_eq!(by_id.len(), 25, "no job arrives twice");
    for job in &sent {
        let r = by_id.get(&job.id).expect("every sent job arrives");
        assert_eq!(r.body, job.encode(), "the body is intact");
        assert_eq!(r.receive_count, 1);
        let back = r.job().unwrap();
        assert_eq!(back.target, job.target);
        assert_eq!(back.payload().unwrap().get(), job.payload().unwrap().get());
    }
    // Nothing more: the jobs are in flight (30 s visibility), and there were no duplicates.
    receive_nothing_for(&queue, Duration::from_millis(500), "after the batch").await;

    let receipts: Vec<Receipt> = got.iter().map(|r| r.receipt.clone()).collect();
    queue
        .ack(&receipts)
        .await
        .expect("ack 25 (more than one batch)");
    assert_eq!(queue.depth().await.unwrap(), 0);
}

/// A job that is received and neither acknowledged nor released is hidden for the visibility timeout,
/// then delivered again with a higher receive count.
async fn unacked_job_comes_back_after_the_visibility_timeout(queue: SharedQueue) {
    let job = &jobs(1)[0];
    queue
        .send_batch(std::slice::from_ref(job))
        .await
        .expect("send");
    let first = receive_one(&queue).await;
    let received_at = Instant::now();
    assert_eq!(first.body, job.encode());
    assert_eq!(first.receive_count, 1);

    // Hidden meanwhile.
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());

    let again = receive_one(&queue).await;
    assert!(
        received_at.elapsed() >= Duration::from_millis(900),
        "came back after {:?}, before the 1 s visibility timeout",
        received_at.elapsed()
    );
    assert_eq!(again.body, job.encode());
    assert_eq!(again.receive_count, 2);
    queue.ack(&[again.receipt]).await.expect("ack");
}

/// Acknowledged jobs are gone: the depth drops to 0 and they do not come back after the visibility
/// timeout.
async fn ack_removes_jobs(queue: SharedQueue) {
    queue.send_batch(&jobs(3)).await.expect("send");
    let got = receive_until(&queue, 3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 3);
    let receipts: Vec<Receipt> = got.into_iter().map(|r| r.receipt).collect();
    queue.ack(&receipts).await.expect("ack");
    assert_eq!(queue.depth().await.unwrap(), 0);
    receive_nothing_for(
        &queue,
        Duration::from_millis(1500),
        "acknowledged jobs after the visibility timeout",
    )
    .await;
    assert_eq!(queue.depth().await.unwrap(), 0);
}

/// A released job can be received again at once, long before its 30 s visibility timeout.
async fn release_makes_a_job_receivable_at_once(queue: SharedQueue) {
    let job = &jobs(1)[0];
    queue
        .send_batch(std::slice::from_ref(job))
        .await
        .expect("send");
    let first = receive_one(&queue).await;
    queue.release(&first.receipt).await.expect("release");
    let released_at = Instant::now();

    let again = receive_one(&queue).await;
    assert!(
        released_at.elapsed() < Duration::from_secs(5),
        "took {:?}",
        released_at.elapsed()
    );
    assert_eq!(again.body, job.encode());
    assert_eq!(again.receive_count, 2);
    queue.ack(&[again.receipt]).await.expect("ack");
}

/// `extend` keeps a job hidden past the end of its original visibility timeout (2 s here), and the job
/// does come back once the extension ends.
async fn extend_keeps_a_job_hidden_past_its_timeout(queue: SharedQueue) {
    queue.send_batch(&jobs(1)).await.expect("send");
    let first = receive_one(&queue).await;
    let received_at = Instant::now();

    // A heartbeat half-way through: hidden for 2 s from now, i.e. until ~3 s after the receive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    queue
        .extend(&first.receipt, Duration::from_secs(2))
        .await
        .expect("extend");

    // Still hidden at 2.6 s, past the original 2 s.
    let hidden_until = received_at + Duration::from_millis(2600);
    receive_nothing_for(
        &queue,
        hidden_until.saturating_duration_since(Instant::now()),
        "an extended job",
    )
    .await;

    let again = receive_one(&queue).await;
    assert_eq!(again.body, first.body);
    assert_eq!(again.receive_count, 2);
    queue.ack(&[again.receipt]).await.expect("ack");
}

/// A delayed job is not received before its delay, and is received after it.
async fn delayed_job_arrives_after_its_delay(queue: SharedQueue) {
    let job = &jobs(1)[0];
    let sent_at = Instant::now();
    queue
        .send_delayed(job, Duration::from_secs(2))
        .await
        .expect("send_delayed");

    receive_nothing_for(
        &queue,
        Duration::from_millis(1500).saturating_sub(sent_at.elapsed()),
        "a job delayed by 2 s",
    )
    .await;

    let got = receive_one(&queue).await;
    assert!(
        sent_at.elapsed() >= Duration::from_millis(1950),
        "arrived after {:?}",
        sent_at.elapsed()
    );
    assert_eq!(got.body, job.encode());
    assert_eq!(got.receive_count, 1);
    queue.ack(&[got.receipt]).await.expect("ack");
}

/// `dead_letter` moves a message, with its reason, to the dead letters and off the queue for good.
async fn dead_letter_moves_the_message_with_its_reason(queue: SharedQueue) {
    assert!(queue.peek_dead_letters(10).await.unwrap().is_empty());
    queue.send_batch(&jobs(2)).await.expect("send");
    let got = receive_until(&queue, 2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2);
    let (bad, good) = (&got[0], &got[1]);
    let reason = "unsupported job version 9: \"quoted\", ünïcode";
    queue.dead_letter(bad, reason).await.expect("dead_letter");
    queue
        .ack(std::slice::from_ref(&good.receipt))
        .await
        .expect("ack");

    assert_eq!(
        queue.peek_dead_letters(10).await.unwrap(),
        vec![DeadLetter {
            body: bad.body.clone(),
            reason: reason.to_owned()
        }]
    );
    // Peeking does not remove.
    assert_eq!(queue.peek_dead_letters(10).await.unwrap().len(), 1);

    assert_eq!(queue.depth().await.unwrap(), 0);
    receive_nothing_for(
        &queue,
        Duration::from_millis(1500),
        "a dead-lettered job after the visibility timeout",
    )
    .await;
}

/// `depth` counts jobs waiting, visible or delayed, and not those in flight.
async fn depth_counts_waiting_jobs(queue: SharedQueue) {
    assert_eq!(queue.depth().await.unwrap(), 0);
    queue.send_batch(&jobs(3)).await.expect("send");
    assert_eq!(queue.depth().await.unwrap(), 3);
    queue
        .send_delayed(&jobs(1)[0], Duration::from_secs(600))
        .await
        .expect("send_delayed");
    assert_eq!(queue.depth().await.unwrap(), 4, "delayed jobs count");

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut one = Vec::new();
    while one.is_empty() && Instant::now() < deadline {
        one = receive_once(&queue, 1, Duration::from_secs(1)).await;
    }
    assert_eq!(one.len(), 1);
    assert_eq!(
        queue.depth().await.unwrap(),
        3,
        "a job in flight is not waiting"
    );
    queue.ack(&[one.remove(0).receipt]).await.expect("ack");
    assert_eq!(queue.depth().await.unwrap(), 3);
}

async fn ping_answers(queue: SharedQueue) {
    queue.ping().await.expect("ping");
    assert!(["sqs", "redis-streams"].contains(&queue.backend()));
}

// ---------------------------------------------------------------------------------------------------
// Redis Streams only
// ---------------------------------------------------------------------------------------------------

/// Two consumers (two queue values with different consumer names) on one queue split the work: each job
/// goes to exactly one of them.
#[tokio::test]
async fn streams_consumers_share_the_work() {
    let server = RedisServer::start();
    let prefix = format!("{}:", test_support::unique_name("share"));
    let consumer = |name: &str| {
        let mut o = options(LONG);
        o.key_prefix = prefix.clone();
        o.consumer = name.to_owned();
        let url = server.url();
        async move {
            let q: SharedQueue = Arc::new(StreamQueue::connect(&url, "jobs", o).await.unwrap());
            q
        }
    };
    let a = consumer("a").await;
    let b = consumer("b").await;

    // Taking turns: each receive gets jobs the other has not had.
    let sent = jobs(30);
    a.send_batch(&sent).await.unwrap();
    let mut seen: HashMap<String, &str> = HashMap::new();
    let (mut from_a, mut from_b) = (0, 0);
    for turn in 0.. {
        let (q, name) = if turn % 2 == 0 { (&a, "a") } else { (&b, "b") };
        let got = q.receive(7, Duration::from_millis(200)).await.unwrap();
        if got.is_empty() {
            break;
        }
        *(if name == "a" {
            &mut from_a
        } else {
            &mut from_b
        }) += got.len();
        for r in got {
            let id = r.job().unwrap().id;
            if let Some(other) = seen.insert(id.clone(), name) {
                panic!("job {id} went to both {other} and {name}");
            }
        }
    }
    assert_eq!(seen.len(), 30);
    assert!(from_a > 0 && from_b > 0, "a: {from_a}, b: {from_b}");

    // Concurrently: two consumers racing over 40 more jobs still never share one.
    let sent: HashSet<String> = {
        let more = jobs(40);
        a.send_batch(&more).await.unwrap();
        more.into_iter().map(|j| j.id).collect()
    };
    let drain = |q: SharedQueue| {
        tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let got = q.receive(5, Duration::from_millis(300)).await.unwrap();
                if got.is_empty() {
                    return ids;
                }
                let receipts: Vec<Receipt> = got.iter().map(|r| r.receipt.clone()).collect();
                ids.extend(got.iter().map(|r| r.job().unwrap().id));
                q.ack(&receipts).await.unwrap();
            }
        })
    };
    let (ids_a, ids_b) = (drain(a.clone()), drain(b.clone()));
    let (ids_a, ids_b) = (ids_a.await.unwrap(), ids_b.await.unwrap());
    let all: HashSet<String> = ids_a.iter().chain(&ids_b).cloned().collect();
    assert_eq!(ids_a.len() + ids_b.len(), 40, "no job delivered twice");
    assert_eq!(all, sent);
}

/// A job whose visibility timeout passed belongs to whoever took it over: the first holder can no longer
/// extend or release it (which would take it back), and the new holder's receive count says 2.
#[tokio::test]
async fn streams_stale_receipts_are_refused() {
    let server = RedisServer::start();
    let prefix = format!("{}:", test_support::unique_name("stale"));
    let url = server.url();
    let open = |name: &str| {
        let mut o = options(SHORT);
        o.key_prefix = prefix.clone();
        o.consumer = name.to_owned();
        StreamQueue::connect(&url, "jobs", o)
    };
    let a: SharedQueue = Arc::new(open("a").await.unwrap());
    let b: SharedQueue = Arc::new(open("b").await.unwrap());
    a.send_batch(&jobs(1)).await.unwrap();
    let first = receive_one(&a).await;
    // b takes it over once the 1 s visibility timeout has passed.
    let taken = receive_one(&b).await;
    assert_eq!(taken.body, first.body);
    assert_eq!(taken.receive_count, 2);

    for result in [
        a.extend(&first.receipt, SHORT).await,
        a.release(&first.receipt).await,
    ] {
        match result {
            Err(QueueError::Refused(m)) => assert!(m.contains("no longer held"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // b still holds it: nothing to receive, and its own extend works.
    b.extend(&taken.receipt, SHORT)
        .await
        .expect("extend by the holder");
    assert!(a.receive(10, Duration::ZERO).await.unwrap().is_empty());
    b.ack(&[taken.receipt]).await.unwrap();

    let bogus = Receipt("not-an-id".into());
    assert!(matches!(a.ack(&[bogus]).await, Err(QueueError::Refused(_))));
}

/// While one receive blocks waiting for jobs, the shared connection keeps serving other commands, and a
/// job sent meanwhile wakes the receive at once.
#[tokio::test]
async fn streams_blocking_receive_leaves_the_shared_connection_free() {
    let server = RedisServer::start();
    let shared = Redis::connect(&server.url()).await.unwrap();
    let reader = Redis::connect(&server.url()).await.unwrap();
    let queue: SharedQueue = Arc::new(
        StreamQueue::new(shared.clone(), "jobs", options(LONG))
            .await
            .unwrap()
            .with_blocking_reader(reader),
    );

    let receiving = tokio::spawn({
        let queue = queue.clone();
        async move { queue.receive(1, Duration::from_secs(5)).await }
    });

    // Wait until the server has a client blocked in XREADGROUP.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = shared.clone();
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        if clients
            .lines()
            .any(|l| l.contains("cmd=xreadgroup") && l.contains("flags=b"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no blocked reader: {clients}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    shared.ping().await.unwrap();
    queue.depth().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "the shared connection waited {:?}",
        started.elapsed()
    );

    let job = &jobs(1)[0];
    let sent_at = Instant::now();
    queue.send_batch(std::slice::from_ref(job)).await.unwrap();
    let got = receiving.await.unwrap().unwrap();
    assert!(
        sent_at.elapsed() < Duration::from_millis(700),
        "woke after {:?}",
        sent_at.elapsed()
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, job.encode());
}

/// Redis going away turns into errors, and after it comes back empty (no persistence: the consumer group
/// is gone too) the queue recreates its group and jobs sent since are delivered.
#[tokio::test]
async fn streams_survive_a_redis_restart() {
    let mut server = RedisServer::start();
    let queue: SharedQueue = Arc::new(
        StreamQueue::connect(&server.url(), "jobs", options(LONG))
            .await
            .unwrap(),
    );
    queue.ping().await.unwrap();

    server.stop();
    assert!(matches!(
        queue.ping().await,
        Err(QueueError::Unavailable(_))
    ));
    assert!(queue.receive(1, Duration::ZERO).await.is_err());
    // A queue opened while Redis is down opens anyway (its group is created once Redis answers).
    let late: SharedQueue = Arc::new(
        StreamQueue::connect(&server.url(), "late", options(LONG))
            .await
            .expect("open while Redis is down"),
    );

    server.restart();
    // The connections reconnect by themselves; the first command after the restart may still fail.
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue.ping().await.is_err() {
        assert!(Instant::now() < deadline, "no reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The XADD recreates the stream without the group.
    let job = &jobs(1)[0];
    queue.send_batch(std::slice::from_ref(job)).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), 1);
    let got = receive_one(&queue).await;
    assert_eq!(got.body, job.encode());

    late.send_batch(std::slice::from_ref(job)).await.unwrap();
    assert_eq!(receive_one(&late).await.body, job.encode());
}

// ---------------------------------------------------------------------------------------------------
// SQS only
// ---------------------------------------------------------------------------------------------------

/// Without a dead-letter queue (no redrive policy, none configured) dead-lettering is refused, with a
/// message that says what to configure; with one configured explicitly, it is used.
#[tokio::test]
async fn sqs_dead_letter_needs_a_dead_letter_queue() {
    let plain = test_support::create_sqs_queue("nodlq", LONG, false).await;
    let queue: SharedQueue = Arc::new(sqs_queue(&plain.queue_url, options(LONG)).await);
    queue.send_batch(&jobs(1)).await.unwrap();
    let got = receive_one(&queue).await;
    match queue.dead_letter(&got, "bad").await {
        Err(QueueError::Refused(m)) => assert!(m.contains("dead-letter queue"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        queue.peek_dead_letters(1).await,
        Err(QueueError::Refused(_))
    ));

    // The same queue with an explicit dead-letter queue URL.
    let other = test_support::create_sqs_queue("dlq", LONG, false).await;
    let mut o = options(LONG);
    o.dead_letter_url = Some(other.queue_url.clone());
    let queue: SharedQueue = Arc::new(sqs_queue(&plain.queue_url, o).await);
    queue.dead_letter(&got, "bad").await.expect("dead_letter");
    assert_eq!(
        queue.peek_dead_letters(5).await.unwrap(),
        vec![DeadLetter {
            body: got.body.clone(),
            reason: "bad".into()
        }]
    );
}

/// A 4xx answer is a refusal and an unreachable endpoint is an outage; neither message carries the
/// credentials.
#[tokio::test]
async fn sqs_errors_are_classified() {
    // The local server takes any credentials; these are recognisable in a message.
    let (key_id, secret) = ("AKIDMARKER0123456789", "secret-marker-0123456789");
    let connect = |queue_url: String, endpoint: String| async move {
        SqsQueue::connect_with_credentials(
            &queue_url,
            Some(&endpoint),
            Some(test_support::SQS_TEST_REGION),
            aws_sdk_sqs::config::Credentials::new(key_id, secret, None, None, "test"),
            QueueOptions {
                dead_letter_url: Some(format!("{queue_url}-dlq")),
                ..options(LONG)
            },
        )
        .await
        .expect("connect does not need the queue or the server")
    };
    let no_secrets = |m: &str| {
        assert!(!m.contains(key_id) && !m.contains(secret), "{m}");
    };

    let endpoint = test_support::sqs_endpoint();
    let missing = connect(
        format!(
            "{endpoint}/123456789012/{}",
            test_support::unique_name("missing")
        ),
        endpoint,
    )
    .await;
    match missing.ping().await {
        Err(QueueError::Refused(m)) => {
            no_secrets(&m);
            assert!(m.contains("GetQueueAttributes"), "{m}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let closed = format!("http://127.0.0.1:{}", test_support::free_port());
    let closed = connect(format!("{closed}/123456789012/q"), closed).await;
    match closed.ping().await {
        Err(QueueError::Unavailable(m)) => no_secrets(&m),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

/// Both lanes' queues, opened as the services open them: [`common::queue::Lanes::send`] puts each job on
/// its lane's queue, and each queue gives back only its own.
async fn lanes_keep_their_jobs_apart(lanes: common::queue::Lanes) {
    use common::job::Lane;
    let mut sent = jobs(4);
    sent[1].lane = Lane::Bulk;
    sent[3].lane = Lane::Bulk;
    lanes.send(&sent).await.expect("send on both lanes");
    for (lane, want) in [(Lane::Interactive, [0, 2]), (Lane::Bulk, [1, 3])] {
        let got = receive_until(lanes.get(lane), 2, LONG).await;
        let ids: HashSet<String> = got.iter().map(|m| m.job().unwrap().id).collect();
        let expected: HashSet<String> = want.iter().map(|&i| sent[i].id.clone()).collect();
        assert_eq!(ids, expected, "{lane:?}");
        assert!(got.iter().all(|m| m.job().unwrap().lane == lane));
        receive_nothing_for(
            lanes.get(lane),
            Duration::from_millis(300),
            "no job of the other lane",
        )
        .await;
    }
    assert_eq!(lanes.depth().await.unwrap(), 0);
    lanes.ping().await.unwrap();
}

#[tokio::test]
async fn lanes_keep_their_jobs_apart_on_redis_streams() {
    let server = RedisServer::start();
    let url = format!("{}?queue=jobs", server.url());
    let bulk = common::queue::lanes::bulk_url(&url).unwrap();
    let lanes = common::queue::Lanes::open(&url, &bulk, options(LONG))
        .await
        .expect("both streams open");
    lanes_keep_their_jobs_apart(lanes).await;
}

#[tokio::test]
async fn lanes_keep_their_jobs_apart_on_sqs() {
    let created = test_support::create_sqs_queue("lanes", LONG, true).await;
    assert_eq!(
        common::queue::lanes::bulk_url(&created.queue_url).unwrap(),
        created.bulk_queue_url,
        "the bulk lane's queue is the derived one"
    );
    let lanes = common::queue::Lanes {
        interactive: Arc::new(sqs_queue(&created.queue_url, options(LONG)).await),
        bulk: Arc::new(sqs_queue(&created.bulk_queue_url, options(LONG)).await),
    };
    lanes_keep_their_jobs_apart(lanes).await;
}
