//! Virtual connections: created through `$connect` like real ones, counting what is posted to them, gone
//! (410, with `$disconnect`) after a DELETE.

use crate::support::*;
use serde_json::{Value, json};

async fn create(gw: &local_gateway::RunningGateway, body: Value) -> Value {
    let response = http()
        .post(format!("http://{}/_emulator/virtual", gw.management_addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn post(gw: &local_gateway::RunningGateway, id: &str) -> u16 {
    http()
        .post(connection_url(gw, &id.replace('=', "%3D")))
        .body("payload")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn stats(gw: &local_gateway::RunningGateway) -> Value {
    http()
        .get(format!(
            "http://{}/_emulator/virtual/stats",
            gw.management_addr
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn virtual_connections_go_through_connect_and_count_posts() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let created = create(
        &gw,
        json!({
            "queries": ["channel=a&ws_token=t1", "channel=a&ws_token=deny", "channel=b&ws_token=t3"],
            "headers": {"Origin": "https://app.example.com"},
            "concurrency": 2
        }),
    )
    .await;
    assert_eq!(created["created"], 2);
    assert_eq!(created["refused"], 1);
    assert_eq!(created["refused_by_status"], json!({"403": 1}));
    let ids = created["connection_ids"].as_array().unwrap();
    assert!(ids[1].is_null(), "ids follow the order of the queries");
    let (first, third) = (ids[0].as_str().unwrap(), ids[2].as_str().unwrap());

    let connect = backend.wait_for_route("connect", first).await;
    assert_eq!(connect.query.as_deref(), Some("channel=a&ws_token=t1"));
    assert_eq!(connect.header("origin"), Some("https://app.example.com"));
    let other = backend.wait_for_route("connect", third).await;
    assert_ne!(
        connect.header("x-forwarded-for"),
        other.header("x-forwarded-for"),
        "each virtual connection has its own source IP"
    );

    for _ in 0..5 {
        assert_eq!(post(&gw, first).await, 200);
    }
    let s = stats(&gw).await;
    assert_eq!(s["open"], 2);
    assert_eq!(s["received"], 5);
    assert_eq!(
        s["per_connection"],
        json!({"min": 0, "max": 5, "mean": 2.5, "none_received": 1,
               "distinct_min": 0, "distinct_max": 0, "distinct_total": 0})
    );
    assert!(s["first_received_at"].as_str().unwrap() <= s["last_received_at"].as_str().unwrap());

    let delete = http()
        .delete(connection_url(&gw, first))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    assert_eq!(post(&gw, first).await, 410);
    backend.wait_for_route("disconnect", first).await;
    assert_eq!(stats(&gw).await["open"], 1);

    let reset = http()
        .delete(format!(
            "http://{}/_emulator/virtual/stats",
            gw.management_addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    let s = stats(&gw).await;
    assert_eq!(
        (s["received"].clone(), s["first_received_at"].clone()),
        (json!(0), Value::Null)
    );
}

#[tokio::test]
async fn count_form_and_bulk_delete() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let created = create(&gw, json!({"count": 50, "query": "channel=public"})).await;
    assert_eq!(created["created"], 50);
    let ids: Vec<String> = created["connection_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        assert_eq!(post(&gw, id).await, 200);
    }
    assert_eq!(stats(&gw).await["per_connection"]["min"], 1);
    let deleted: Value = http()
        .delete(format!("http://{}/_emulator/virtual", gw.management_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deleted, json!({"deleted": 50}));
    assert_eq!(
        backend.requests("disconnect").len(),
        50,
        "the bulk delete waits for every $disconnect"
    );
    assert_eq!(post(&gw, &ids[0]).await, 410);

    // Without a body, the query string works too.
    let response: Value = http()
        .post(format!(
            "http://{}/_emulator/virtual?count=2&query=channel%3Dq",
            gw.management_addr
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["created"], 2);
    let id = response["connection_ids"][0].as_str().unwrap();
    let connect = backend.wait_for_route("connect", id).await;
    assert_eq!(connect.query.as_deref(), Some("channel=q"));
}

#[tokio::test]
async fn bad_create_requests_are_refused_with_a_reason() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    for body in [
        json!({}),
        json!({"count": 1, "queries": ["a=b"]}),
        json!({"count": 1, "concurrency": 0}),
        json!({"count": 1, "bogus": true}),
    ] {
        let response = http()
            .post(format!("http://{}/_emulator/virtual", gw.management_addr))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
}
