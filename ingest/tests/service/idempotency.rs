//! `Idempotency-Key` on the publish routes: the same key gets the same job id and one job on the queue
//! (twice in a row, concurrently, after a 503 whose status was unknown, and after a claim Redis ran only
//! once its caller had given up), a key reused for another
//! request is refused, and keys belong to their API key.

use crate::support::Ingest;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::RedisServer;

async fn publish(ingest: &Ingest, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let r = ingest
        .api(Method::POST, path)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn the_same_key_twice_is_one_job() {
    let ingest = Ingest::start(&[]).await;
    let (s1, b1) = publish(&ingest, "/v1/broadcast", "k-1", json!({"m": 1})).await;
    let (s2, b2) = publish(&ingest, "/v1/broadcast", "k-1", json!({"m": 1})).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(b1["job_id"], b2["job_id"]);
    // Another key is another job; the same key on another request is refused.
    let (s3, b3) = publish(&ingest, "/v1/broadcast", "k-2", json!({"m": 1})).await;
    assert_eq!(s3, StatusCode::ACCEPTED);
    assert_ne!(b3["job_id"], b1["job_id"]);
    let (s4, b4) = publish(&ingest, "/v1/broadcast", "k-1", json!({"m": 2})).await;
    assert_eq!(s4, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b4["error"]["code"], "idempotency_key_reused");
    let (s5, _) = publish(&ingest, "/v1/users/alice/publish", "k-1", json!({"m": 1})).await;
    assert_eq!(s5, StatusCode::UNPROCESSABLE_ENTITY);
    let (s6, _) = publish(&ingest, "/v1/broadcast", "bad key", json!({"m": 1})).await;
    assert_eq!(s6, StatusCode::BAD_REQUEST);
    let ids: Vec<String> = ingest.jobs().await.into_iter().map(|j| j.id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], b1["job_id"].as_str().unwrap());
}

#[tokio::test]
async fn concurrent_requests_with_one_key_enqueue_one_job() {
    let ingest = Ingest::start(&[]).await;
    let answers = futures::future::join_all((0..12).map(|_| {
        publish(
            &ingest,
            "/v1/channels/general/publish",
            "same",
            json!({"c": 1}),
        )
    }))
    .await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, b)| &b["job_id"])
        .collect();
    assert!(!accepted.is_empty());
    assert!(accepted.iter().all(|id| *id == accepted[0]), "{answers:?}");
    for (status, body) in &answers {
        assert!(
            *status == StatusCode::ACCEPTED
                || (*status == StatusCode::CONFLICT
                    && body["error"]["code"] == "idempotency_key_in_use"),
            "{status} {body}"
        );
    }
    assert_eq!(ingest.jobs().await.len(), 1);
}

#[tokio::test]
async fn a_retry_after_an_unknown_503_is_the_same_job_and_is_queued_once() {
    // The queue on a Redis of its own, stopped: the publish cannot know whether it was queued.
    let mut queue_redis = RedisServer::start();
    let ingest = Ingest::start_on(
        RedisServer::start(),
        Some(format!("{}?queue=jobs", queue_redis.url())),
        &[],
    )
    .await;
    queue_redis.stop();
    let (status, body) = publish(&ingest, "/v1/broadcast", "retry-me", json!({"r": 1})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unknown", "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    queue_redis.restart();
    let mut answer = (StatusCode::SERVICE_UNAVAILABLE, Value::Null);
    for _ in 0..100 {
        answer = publish(&ingest, "/v1/broadcast", "retry-me", json!({"r": 1})).await;
        if answer.0 == StatusCode::ACCEPTED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(answer.1["job_id"], job_id.as_str());
    // And again: answered from the record, nothing more enqueued.
    let (status, body) = publish(&ingest, "/v1/broadcast", "retry-me", json!({"r": 1})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["job_id"], job_id.as_str());
    let ids: Vec<String> = ingest.jobs().await.into_iter().map(|j| j.id).collect();
    assert_eq!(ids, [job_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_does_not_leave_its_key_claimed() {
    let ingest = Ingest::start(&[]).await;
    let redis = ingest.redis.as_ref().unwrap();
    // Redis hangs for a second (less than the command timeout): the publish waits, and the caller gives up.
    redis.pause();
    let gave_up = ingest
        .api(Method::POST, "/v1/broadcast")
        .header("Idempotency-Key", "k-gone")
        .json(&json!({"m": 1}))
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
    tokio::time::sleep(std::time::Duration::from_secs(1)).await; // the hang's length, not a synchronisation
    redis.resume();
    // The publish went on without its caller: the job is enqueued and the key's outcome recorded, so the
    // retry is answered with that job at once (not refused as "in progress" until the claim expires).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut jobs = Vec::new();
    while jobs.is_empty() && std::time::Instant::now() < deadline {
        jobs = ingest.jobs().await;
    }
    assert_eq!(jobs.len(), 1);
    let (status, body) = loop {
        let (status, body) = publish(&ingest, "/v1/broadcast", "k-gone", json!({"m": 1})).await;
        if status != StatusCode::CONFLICT || std::time::Instant::now() > deadline {
            break (status, body);
        }
    };
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["job_id"], jobs[0].id.as_str());
    assert!(ingest.jobs().await.is_empty(), "enqueued once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_redis_ran_late_does_not_refuse_the_retry() {
    let ingest = Ingest::start(&[]).await;
    let redis = ingest.redis.as_ref().unwrap();
    // A first publish, so that ingest's connection to Redis is open before Redis hangs.
    let (status, _) = publish(&ingest, "/v1/broadcast", "k-first", json!({"m": 0})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(ingest.jobs().await.len(), 1);
    // Redis hangs past the command timeout (2 s): the claim gets no answer and the caller a 503, but the
    // paused Redis runs the claim when it resumes, leaving the key "pending".
    redis.pause();
    let (status, body) = publish(&ingest, "/v1/broadcast", "k-late", json!({"m": 1})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await; // the hang's length, not a synchronisation
    redis.resume();
    // The request released its own late claim: the retry is accepted within seconds, not refused with
    // 409 until the claim's 30 s in-flight window ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = publish(&ingest, "/v1/broadcast", "k-late", json!({"m": 1})).await;
        if status == StatusCode::ACCEPTED || std::time::Instant::now() > deadline {
            break (status, body);
        }
        assert!(
            status == StatusCode::CONFLICT || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let jobs = ingest.jobs().await;
    assert_eq!(jobs.len(), 1, "enqueued once");
    assert_eq!(body["job_id"], jobs[0].id.as_str());
    let (status, again) = publish(&ingest, "/v1/broadcast", "k-late", json!({"m": 1})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["job_id"], body["job_id"]);
    assert!(ingest.jobs().await.is_empty(), "nothing more enqueued");
}
