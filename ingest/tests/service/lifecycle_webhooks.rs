//! Lifecycle webhooks against a real Redis and a real HTTP receiver on a free port: connection and channel
//! events arrive batched (by count and by time), in order and signed; a receiver that fails is retried and
//! gets each batch once; one that hangs slows no callback; a full buffer drops and counts. Their settings
//! are checked in `lifecycle_webhook_settings`.

use crate::support::Ingest;
use aws_lc_rs::hmac;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub const KEY: &str = "lifecycle-key-0123456789abcdefghijkl";
const OLD_KEY: &str = "lifecycle-old-0123456789abcdefghijkl";
const NO_LIMIT: &str = "--connect-limit-exempt=203.0.113.7";

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Holds the request until the receiver is released, then answers 200.
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    timestamp: String,
    signature: String,
    batch_id: String,
    body: Bytes,
    answered: Option<u16>,
}

impl Received {
    fn events(&self) -> Vec<Value> {
        let body: Value = serde_json::from_slice(&self.body).unwrap();
        body["events"].as_array().unwrap().clone()
    }
}

/// The application's side: an HTTP server that records every request and answers from a script
/// (200 once the script is used up).
struct Receiver {
    url: String,
    requests: mpsc::UnboundedReceiver<Received>,
    release: watch::Sender<bool>,
}

impl Receiver {
    async fn start(script: &[Reply]) -> Self {
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (tx, requests) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let hook = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (script, tx, mut released) = (script.clone(), tx.clone(), released.clone());
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    let reply = script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or(Reply::Status(200));
                    let mut got = Received {
                        timestamp: header("x-fanout-timestamp"),
                        signature: header("x-fanout-signature"),
                        batch_id: header("x-fanout-batch-id"),
                        body,
                        answered: None,
                    };
                    match reply {
                        Reply::Status(code) => {
                            got.answered = Some(code);
                            let _ = tx.send(got);
                            StatusCode::from_u16(code).unwrap()
                        }
                        Reply::Hang => {
                            let _ = tx.send(got);
                            let _ = released.wait_for(|r| *r).await;
                            StatusCode::OK
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });
        Self {
            url,
            requests,
            release,
        }
    }

    /// The next request, waiting at most 20 s.
    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(20), self.requests.recv())
            .await
            .expect("a webhook request within 20 s")
            .unwrap()
    }

    /// Requests answered 2xx until they hold `n` events in all.
    async fn accepted_events(&mut self, n: usize) -> (Vec<Received>, Vec<Value>) {
        let (mut batches, mut events) = (Vec::new(), Vec::new());
        while events.len() < n {
            let got = self.next().await;
            if got.answered.is_none_or(|s| (200..300).contains(&s)) {
                events.extend(got.events());
                batches.push(got);
            }
        }
        assert_eq!(events.len(), n, "no more events than expected: {events:?}");
        (batches, events)
    }
}

/// Ingest with the lifecycle webhook pointed at `url`, plus `extra` flags.
async fn ingest_with_hook(url: &str, extra: &[&str]) -> Ingest {
    let mut flags = vec![
        format!("--lifecycle-webhook-url={url}"),
        format!("--lifecycle-webhook-secret={KEY}"),
        NO_LIMIT.to_owned(),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Ingest::start(&flags).await
}

/// (type, connection, user, channel, reason) of an event, for comparing sequences.
fn summary(event: &Value) -> (String, String, Value, String, Value) {
    (
        event["type"].as_str().unwrap().to_owned(),
        event["connection_id"].as_str().unwrap().to_owned(),
        event["user_id"].clone(),
        event["channel"].as_str().unwrap().to_owned(),
        event.get("reason").cloned().unwrap_or(Value::Null),
    )
}

fn ev(kind: &str, id: &str, user: &str, channel: &str) -> (String, String, Value, String, Value) {
    (
        kind.into(),
        id.into(),
        json!(user),
        channel.into(),
        Value::Null,
    )
}

/// A receiver's check, written from the README's description rather than with ingest's code:
/// HMAC-SHA256 over "timestamp.body", hex, in one of the `v1=` entries.
fn verifies(key: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = format!("v1={}", hex::encode(hmac::sign(&key, &signed).as_ref()));
    signature.split(',').any(|entry| entry == expected)
}

/// A counter's value from ingest's `/metrics`.
async fn metric(ingest: &Ingest, series: &str) -> u64 {
    let text = ingest.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
}

/// Waits (at most 10 s) until a counter reaches `expected`, for counts that are bumped after the
/// receiver answered, and asserts it is exactly that.
async fn metric_reaches(ingest: &Ingest, series: &str, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(ingest, series).await;
        if value >= expected || Instant::now() > deadline {
            assert_eq!(value, expected, "{series}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_kind_of_event_arrives_in_order_in_full_batches() {
    let mut receiver = Receiver::start(&[]).await;
    // Batches of 4 and a flush interval no test waits for: every batch below was sent because it was full.
    let ingest = ingest_with_hook(
        &receiver.url,
        &[
            "--presence-channel=room",
            "--lifecycle-webhook-batch-max-events=4",
            "--lifecycle-webhook-flush-interval-ms=60000",
        ],
    )
    .await;
    ingest.join("c1", "ada", "room").await;
    ingest.join("c2", "bob", "room").await;
    let (status, _) = ingest
        .message(
            "c1",
            json!({"action": "change_channel", "channel": "lobby"}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let disconnect = |id: &'static str| ingest.callback("disconnect", id).send();
    assert!(disconnect("c2").await.unwrap().status().is_success());
    let kick = ingest
        .api(Method::POST, "/v1/kick")
        .json(&json!({"connection": "c1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kick.status(), reqwest::StatusCode::ACCEPTED);
    // The gateway's $disconnect after the kick closed the socket: the kick already said it all.
    assert!(disconnect("c1").await.unwrap().status().is_success());
    ingest.join("c3", "cy", "lobby").await;
    assert!(disconnect("c3").await.unwrap().status().is_success());

    let (batches, events) = receiver.accepted_events(16).await;
    assert_eq!(
        batches.iter().map(|b| b.events().len()).collect::<Vec<_>>(),
        [4, 4, 4, 4]
    );
    let mut expected = vec![
        ev("connect", "c1", "ada", "room"),
        ev("channel_occupied", "c1", "ada", "room"),
        ev("join", "c1", "ada", "room"),
        ev("connect", "c2", "bob", "room"),
        ev("join", "c2", "bob", "room"),
        ev("leave", "c1", "ada", "room"),
        ev("channel_occupied", "c1", "ada", "lobby"),
        ev("leave", "c2", "bob", "room"),
        ev("channel_vacated", "c2", "bob", "room"),
        ev("disconnect", "c2", "bob", "room"),
        ev("channel_vacated", "c1", "ada", "lobby"),
        ev("disconnect", "c1", "ada", "lobby"),
        ev("connect", "c3", "cy", "lobby"),
        ev("channel_occupied", "c3", "cy", "lobby"),
        ev("channel_vacated", "c3", "cy", "lobby"),
        ev("disconnect", "c3", "cy", "lobby"),
    ];
    expected[9].4 = json!("disconnected");
    expected[11].4 = json!("kicked");
    expected[15].4 = json!("disconnected");
    assert_eq!(events.iter().map(summary).collect::<Vec<_>>(), expected);
    let times: Vec<u64> = events
        .iter()
        .map(|e| e["time_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let mut ids: Vec<&str> = batches.iter().map(|b| b.batch_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4, "a batch id per batch");
    metric_reaches(
        &ingest,
        "fanout_lifecycle_batches_total{outcome=\"sent\"}",
        4,
    )
    .await;
}

#[tokio::test]
async fn a_partial_batch_goes_out_after_the_flush_interval_signed_with_every_key() {
    let mut receiver = Receiver::start(&[]).await;
    let ingest = ingest_with_hook(
        &receiver.url,
        &[
            "--public-channel=general",
            "--lifecycle-webhook-flush-interval-ms=500",
            &format!("--lifecycle-webhook-secret={OLD_KEY}"),
        ],
    )
    .await;
    let started = Instant::now();
    for id in ["p1", "p2"] {
        assert!(ingest.connect(id, "channel=general").await.is_success());
    }
    let (batches, events) = receiver.accepted_events(3).await;
    let waited = started.elapsed();
    assert_eq!(batches.len(), 1, "three events well inside one interval");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            (
                "connect".into(),
                "p1".into(),
                Value::Null,
                "general".into(),
                Value::Null
            ),
            (
                "channel_occupied".into(),
                "p1".into(),
                Value::Null,
                "general".into(),
                Value::Null
            ),
            (
                "connect".into(),
                "p2".into(),
                Value::Null,
                "general".into(),
                Value::Null
            ),
        ]
    );

    let batch = &batches[0];
    let now = common::job::now_ms() / 1000;
    let sent: u64 = batch.timestamp.parse().unwrap();
    assert!(now.abs_diff(sent) <= 60, "timestamp {sent}, now {now}");
    assert_eq!(
        batch.signature.matches("v1=").count(),
        2,
        "{}",
        batch.signature
    );
    for key in [KEY, OLD_KEY] {
        assert!(verifies(
            key,
            &batch.timestamp,
            &batch.body,
            &batch.signature
        ));
    }
    // A tampered body, a replayed signature with another timestamp, or another key: refused.
    let mut tampered = batch.body.to_vec();
    let at = tampered.iter().position(|&b| b == b'p').unwrap();
    tampered[at] = b'q';
    assert!(!verifies(
        KEY,
        &batch.timestamp,
        &tampered,
        &batch.signature
    ));
    let later = (sent + 600).to_string();
    assert!(!verifies(KEY, &later, &batch.body, &batch.signature));
    assert!(!verifies(
        "another-key-0123456789abcdefghijklm",
        &batch.timestamp,
        &batch.body,
        &batch.signature
    ));
    // ingest's own receiver helper agrees.
    assert!(ingest::webhooks::signing::verify(
        KEY.as_bytes(),
        &batch.timestamp,
        &batch.body,
        &batch.signature
    ));
    assert!(!ingest::webhooks::signing::verify(
        KEY.as_bytes(),
        &batch.timestamp,
        &tampered,
        &batch.signature
    ));
}

#[tokio::test]
async fn a_failing_receiver_is_retried_and_gets_each_batch_once() {
    use Reply::Status;
    // Two failures then success; then a refusal that is not retried; then success again.
    let mut receiver = Receiver::start(&[Status(500), Status(503), Status(200), Status(400)]).await;
    let ingest = ingest_with_hook(
        &receiver.url,
        &[
            "--public-channel=general",
            "--lifecycle-webhook-event=connect",
            "--lifecycle-webhook-flush-interval-ms=10",
            "--lifecycle-webhook-retry-min-delay-ms=20",
            "--lifecycle-webhook-max-attempts=3",
        ],
    )
    .await;
    assert!(ingest.connect("r1", "channel=general").await.is_success());
    let attempts = [
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ];
    assert_eq!(
        attempts.iter().map(|a| a.answered).collect::<Vec<_>>(),
        [Some(500), Some(503), Some(200)]
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.batch_id == attempts[0].batch_id && a.body == attempts[0].body)
    );
    assert!(
        attempts
            .iter()
            .all(|a| verifies(KEY, &a.timestamp, &a.body, &a.signature))
    );
    assert_eq!(attempts[2].events()[0]["connection_id"], "r1");

    // 400 is the receiver's final word: no retry, the batch is counted as failed and its event dropped.
    assert!(ingest.connect("r2", "channel=general").await.is_success());
    let refused = receiver.next().await;
    assert_eq!(
        (
            refused.answered,
            refused.events()[0]["connection_id"].as_str()
        ),
        (Some(400), Some("r2"))
    );
    // The next batch is the next event: nothing of r1's or r2's came again.
    assert!(ingest.connect("r3", "channel=general").await.is_success());
    let next = receiver.next().await;
    assert_eq!(next.answered, Some(200));
    assert_eq!(
        next.events()
            .iter()
            .map(summary)
            .map(|s| s.1)
            .collect::<Vec<_>>(),
        ["r3"]
    );

    assert_eq!(metric(&ingest, "fanout_lifecycle_retries_total").await, 2);
    metric_reaches(
        &ingest,
        "fanout_lifecycle_batches_total{outcome=\"sent\"}",
        2,
    )
    .await;
    assert_eq!(
        metric(
            &ingest,
            "fanout_lifecycle_batches_total{outcome=\"failed\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            &ingest,
            "fanout_lifecycle_events_dropped_total{reason=\"failed\"}"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_hanging_receiver_does_not_slow_callbacks() {
    let mut receiver = Receiver::start(&[Reply::Hang]).await;
    let ingest = ingest_with_hook(
        &receiver.url,
        &[
            "--public-channel=general",
            "--webhook-timeout-ms=30000",
            "--lifecycle-webhook-batch-max-events=1",
        ],
    )
    .await;
    assert!(ingest.connect("h0", "channel=general").await.is_success());
    let hung = receiver.next().await;
    assert_eq!(hung.answered, None, "the receiver holds the first batch");

    // Callbacks while the receiver holds a request (and the rest queue behind it).
    let mut latencies = Vec::new();
    for i in 1..=40 {
        let id = format!("h{i}");
        let started = Instant::now();
        assert!(ingest.connect(&id, "channel=general").await.is_success());
        let status = ingest
            .callback("disconnect", &id)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
        latencies.push(started.elapsed() / 2);
    }
    latencies.sort();
    let (median, max) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    println!("callback latency with a hanging lifecycle webhook: median {median:?}, max {max:?}");
    // The webhook holds for 30 s; a callback that waited for it would take that long.
    assert!(median < Duration::from_millis(100), "median {median:?}");
    assert!(max < Duration::from_secs(5), "max {max:?}");
    assert!(
        receiver.requests.try_recv().is_err(),
        "still held: nothing else was sent meanwhile"
    );
}

#[tokio::test]
async fn a_full_buffer_drops_new_events_and_counts_them() {
    let mut receiver = Receiver::start(&[Reply::Hang]).await;
    let ingest = ingest_with_hook(
        &receiver.url,
        &[
            "--public-channel=general",
            "--webhook-timeout-ms=30000",
            "--lifecycle-webhook-event=connect",
            "--lifecycle-webhook-batch-max-events=1",
            "--lifecycle-webhook-buffer-events=4",
        ],
    )
    .await;
    assert!(ingest.connect("f0", "channel=general").await.is_success());
    assert_eq!(receiver.next().await.answered, None, "f0's batch is held");
    // Four fit in the buffer; the other fifteen are dropped, and every callback still succeeds.
    for i in 1..=19 {
        assert!(
            ingest
                .connect(&format!("f{i}"), "channel=general")
                .await
                .is_success()
        );
    }
    assert_eq!(
        metric(
            &ingest,
            "fanout_lifecycle_events_dropped_total{reason=\"buffer_full\"}"
        )
        .await,
        15
    );
    receiver.release.send(true).unwrap();
    let (_, events) = receiver.accepted_events(4).await;
    assert_eq!(
        events.iter().map(summary).map(|s| s.1).collect::<Vec<_>>(),
        ["f1", "f2", "f3", "f4"]
    );
    // Once there is room again, events flow.
    assert!(ingest.connect("f20", "channel=general").await.is_success());
    let (_, events) = receiver.accepted_events(1).await;
    assert_eq!(events[0]["connection_id"], "f20");
    metric_reaches(
        &ingest,
        "fanout_lifecycle_batches_total{outcome=\"sent\"}",
        6,
    )
    .await;
}

#[tokio::test]
async fn buffered_events_are_sent_at_shutdown() {
    let mut receiver = Receiver::start(&[]).await;
    let ingest = ingest_with_hook(
        &receiver.url,
        &[
            "--public-channel=general",
            "--lifecycle-webhook-flush-interval-ms=60000",
        ],
    )
    .await;
    assert!(ingest.connect("s1", "channel=general").await.is_success());
    ingest.stop().await;
    let (_, events) = receiver.accepted_events(2).await;
    assert_eq!(
        events.iter().map(summary).map(|s| s.0).collect::<Vec<_>>(),
        ["connect", "channel_occupied"]
    );
}
