//! Injected Management API faults (`/_emulator/faults`): 500s that deliver nothing, stalls whose held
//! calls are answered 504 (or delivered late, when asked) once they end; and payload tracking on virtual
//! connections, which counts a second post of the same bytes as a duplicate.

use crate::support::*;
use serde_json::{Value, json};

fn admin(gw: &local_gateway::RunningGateway, path: &str) -> String {
    format!("http://{}/_emulator/{path}", gw.management_addr)
}

async fn get(gw: &local_gateway::RunningGateway, path: &str) -> Value {
    http()
        .get(admin(gw, path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn start_fault(gw: &local_gateway::RunningGateway, body: Value) -> reqwest::Response {
    http()
        .put(admin(gw, "faults/management"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// One tracking virtual connection; returns its id.
async fn tracked_connection(gw: &local_gateway::RunningGateway) -> String {
    let created: Value = http()
        .post(admin(gw, "virtual"))
        .json(&json!({"count": 1, "query": "channel=public", "track_payloads": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["connection_ids"][0].as_str().unwrap().to_owned()
}

async fn post(
    gw: &local_gateway::RunningGateway,
    id: &str,
    body: &'static str,
) -> reqwest::Response {
    http()
        .post(connection_url(gw, id))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Waits until the gateway reports `count` calls held by stalls.
async fn held(gw: &local_gateway::RunningGateway, count: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(gw, "faults").await["held"] != count {
        assert!(tokio::time::Instant::now() < deadline, "no call was held");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_repeated_payload_is_counted_as_a_duplicate() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let id = tracked_connection(&gw).await;
    for body in ["a", "b", "a", "a"] {
        assert_eq!(post(&gw, &id, body).await.status(), 200);
    }
    let stats = get(&gw, "virtual/stats").await;
    assert_eq!(stats["received"], 4);
    assert_eq!(stats["duplicate_posts"], 2);
    assert_eq!(stats["per_connection"]["distinct_total"], 2);
    assert_eq!(stats["per_connection"]["distinct_max"], 2);
}

#[tokio::test]
async fn an_error_fault_answers_500_and_delivers_nothing_until_it_ends() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let id = tracked_connection(&gw).await;
    let started = start_fault(&gw, json!({"fault": "error", "seconds": 600})).await;
    assert_eq!(started.status(), 200);
    let answer = post(&gw, &id, "x").await;
    assert_eq!(answer.status(), 500);
    assert_eq!(error_type(&answer), Some("InternalServerErrorException"));
    assert_eq!(get(&gw, "virtual/stats").await["received"], 0);
    let status = get(&gw, "faults").await;
    assert_eq!(status["failed"], 1);
    assert_eq!(status["management"]["fault"], "error");

    let ended = http()
        .delete(admin(&gw, "faults/management"))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
    assert_eq!(get(&gw, "faults").await["management"], Value::Null);
    assert_eq!(post(&gw, &id, "x").await.status(), 200);
    assert_eq!(get(&gw, "virtual/stats").await["received"], 1);
}

#[tokio::test]
async fn a_stall_holds_calls_and_then_drops_them_or_delivers_them_late() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let id = tracked_connection(&gw).await;

    // Held, then answered 504 without delivery when the stall is ended.
    assert_eq!(
        start_fault(&gw, json!({"fault": "stall", "seconds": 600}))
            .await
            .status(),
        200
    );
    let call = tokio::spawn({
        let url = connection_url(&gw, &id);
        async move {
            http()
                .post(url)
                .body("dropped")
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    held(&gw, 1).await;
    assert!(!call.is_finished(), "a stalled call gets no answer");
    http()
        .delete(admin(&gw, "faults/management"))
        .send()
        .await
        .unwrap();
    assert_eq!(call.await.unwrap(), 504);
    assert_eq!(get(&gw, "virtual/stats").await["received"], 0);

    // Held, then delivered when the stall runs out by itself.
    assert_eq!(
        start_fault(
            &gw,
            json!({"fault": "stall", "seconds": 0.5, "deliver_late": true})
        )
        .await
        .status(),
        200
    );
    let answer = post(&gw, &id, "late").await;
    assert_eq!(answer.status(), 200);
    let status = get(&gw, "faults").await;
    assert_eq!(
        (status["held"].clone(), status["delivered_late"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(
        get(&gw, "virtual/stats").await["per_connection"]["distinct_total"],
        1
    );
}

#[tokio::test]
async fn bad_fault_requests_are_refused_with_a_reason() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    for body in [
        json!({"fault": "stall"}),
        json!({"fault": "melt", "seconds": 1}),
        json!({"fault": "stall", "seconds": 0}),
        json!({"fault": "stall", "seconds": 1e9}),
        json!({"fault": "error", "seconds": 1, "deliver_late": true}),
    ] {
        let response = start_fault(&gw, body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["message"].is_string(), "{body}: {answer}");
    }
    assert_eq!(get(&gw, "faults").await["management"], Value::Null);
}
