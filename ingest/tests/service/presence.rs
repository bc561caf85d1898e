//! Presence against a real Redis: members with the client info of their token, listed and counted through
//! the API (paged) and the `presence` action, and join/leave events queued to the channel for every way
//! in and out (connect, disconnect, `change_channel`, kick), once each; channels without presence stay
//! silent.

use crate::support::{Ingest, connection, payload};
use common::job::Target;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const PRESENCE: &str = "--presence-channel=room-*";
const NO_LIMIT: &str = "--connect-limit-exempt=203.0.113.7";

/// Mints a token for `subject` with `info` and connects `id` to `channel` with it.
async fn join_with_info(ingest: &Ingest, id: &str, subject: &str, channel: &str, info: Value) {
    let r = ingest
        .api(Method::POST, "/v1/tokens")
        .json(&json!({ "subject": subject, "info": info }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        ingest
            .connect(id, &format!("channel={channel}&ws_token={token}"))
            .await,
        StatusCode::OK
    );
}

/// The presence events among the queued jobs, as (channel target, payload).
fn events(jobs: &[common::job::Job]) -> Vec<(String, Value)> {
    jobs.iter()
        .filter(|j| j.payload().is_some()) // a kick's disconnect job carries none
        .map(|j| (j, payload(j)))
        .filter(|(_, p)| p["type"] == "presence")
        .map(|(j, p)| match &j.target {
            Target::Channel { channel } => (channel.clone(), p),
            other => panic!("a presence event goes to a channel, not {other:?}"),
        })
        .collect()
}

fn event(kind: &str, channel: &str, id: &str, user: Value, info: Value) -> (String, Value) {
    (
        channel.to_owned(),
        json!({
            "type": "presence", "event": kind, "channel": channel,
            "member": {"connection_id": id, "user_id": user, "info": info}
        }),
    )
}

async fn get_presence(ingest: &Ingest, path: &str) -> (StatusCode, Value) {
    let r = ingest.api(Method::GET, path).send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn joins_and_leaves_are_announced_once_for_every_way_in_and_out() {
    let ingest = Ingest::start(&[PRESENCE, NO_LIMIT]).await;
    join_with_info(&ingest, "a1", "ada", "room-1", json!({"name": "Ada"})).await;
    ingest.join("b1", "bob", "room-1").await;
    ingest.join("q1", "quiet", "lobby").await; // no presence there
    assert_eq!(
        events(&ingest.jobs().await),
        vec![
            event("join", "room-1", "a1", json!("ada"), json!({"name": "Ada"})),
            event("join", "room-1", "b1", json!("bob"), Value::Null),
        ]
    );

    // change_channel: leave the old room, join the new one (and the move's own reply).
    let (status, _) = ingest
        .message(
            "b1",
            json!({"action": "change_channel", "channel": "room-2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        events(&ingest.jobs().await),
        vec![
            event("leave", "room-1", "b1", json!("bob"), Value::Null),
            event("join", "room-2", "b1", json!("bob"), Value::Null),
        ]
    );
    // Moving between channels without presence says nothing.
    ingest
        .message(
            "q1",
            json!({"action": "change_channel", "channel": "other"}),
        )
        .await;
    assert!(events(&ingest.jobs().await).is_empty());

    // A kick is a leave; the $disconnect that follows the close is not a second one.
    let r = ingest
        .api(Method::POST, "/v1/kick")
        .json(&json!({"connection": "b1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        events(&ingest.jobs().await),
        vec![event("leave", "room-2", "b1", json!("bob"), Value::Null)]
    );
    assert_eq!(
        ingest
            .callback("disconnect", "b1")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(events(&ingest.jobs().await).is_empty());

    // $disconnect is a leave, once: a repeated one announces nothing.
    for _ in 0..2 {
        let r = ingest.callback("disconnect", "a1").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        events(&ingest.jobs().await),
        vec![event(
            "leave",
            "room-1",
            "a1",
            json!("ada"),
            json!({"name": "Ada"})
        )]
    );
    let (status, body) = get_presence(&ingest, "/v1/channels/room-1/presence").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["count"], 0);
    ingest.stop().await;
}

#[tokio::test]
async fn a_repeated_connect_is_not_a_second_join() {
    let ingest = Ingest::start(&[PRESENCE, NO_LIMIT]).await;
    let token = ingest.token("ada", None).await;
    let query = format!("channel=room-1&ws_token={token}");
    assert_eq!(ingest.connect("a1", &query).await, StatusCode::OK);
    assert_eq!(ingest.connect("a1", &query).await, StatusCode::OK);
    assert_eq!(events(&ingest.jobs().await).len(), 1);
    ingest.stop().await;
}

#[tokio::test]
async fn the_api_counts_and_pages_through_every_member() {
    let ingest = Ingest::start(&[PRESENCE, NO_LIMIT]).await;
    join_with_info(
        &ingest,
        "a1",
        "ada",
        "room-1",
        json!({"name": "Ada", "n": [1, 2]}),
    )
    .await;
    ingest.join("b1", "bob", "room-1").await;
    let (status, body) = get_presence(&ingest, "/v1/channels/room-1/presence").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["channel"], "room-1");
    assert_eq!(body["count"], 2);
    assert_eq!(body["cursor"], Value::Null);
    let mut members = body["members"].as_array().unwrap().clone();
    members.sort_by_key(|m| m["connection_id"].as_str().unwrap().to_owned());
    assert_eq!(
        members,
        vec![
            json!({"connection_id": "a1", "user_id": "ada", "info": {"name": "Ada", "n": [1, 2]}}),
            json!({"connection_id": "b1", "user_id": "bob", "info": null}),
        ]
    );

    // A big channel: registered directly (the connect path is the same script), then paged.
    for i in 0..600 {
        let conn = ingest::membership::Connection {
            info: Some(format!(r#"{{"i":{i}}}"#)),
            ..connection(&format!("bulk{i}"), "room-big", Some(&format!("user{i}")))
        };
        let joined = ingest::membership::register(&ingest.state, &conn)
            .await
            .unwrap();
        assert!(joined.presence && joined.added);
        assert_eq!(joined.occupied, i == 0);
    }
    let (_, count_only) = get_presence(&ingest, "/v1/channels/room-big/presence?limit=0").await;
    assert_eq!(count_only["count"], 600);
    assert_eq!(count_only["members"], json!([]));
    let mut seen = BTreeSet::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, page) = get_presence(
            &ingest,
            &format!("/v1/channels/room-big/presence?limit=100&cursor={cursor}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        pages += 1;
        let members = page["members"].as_array().unwrap();
        assert!(members.len() < 300, "a page holds about `limit` members");
        for m in members {
            let id = m["connection_id"].as_str().unwrap().to_owned();
            let i: u64 = id.trim_start_matches("bulk").parse().unwrap();
            assert_eq!(m["info"], json!({ "i": i }));
            assert_eq!(m["user_id"], format!("user{i}"));
            seen.insert(id);
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 600, "every member seen");
    assert!(pages >= 4, "{pages} pages");
    ingest.stop().await;
}

#[tokio::test]
async fn presence_requests_are_checked() {
    let ingest = Ingest::start(&[PRESENCE, NO_LIMIT]).await;
    for (path, status, code) in [
        (
            "/v1/channels/lobby/presence",
            StatusCode::NOT_FOUND,
            "presence_not_enabled",
        ),
        (
            "/v1/channels/bad%20name/presence",
            StatusCode::BAD_REQUEST,
            "invalid_channel",
        ),
        (
            "/v1/channels/room-1/presence?limit=1001",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/channels/room-1/presence?cursor=abc",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (got, body) = get_presence(&ingest, path).await;
        assert_eq!(got, status, "{path}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }
    let r = ingest
        .http
        .get(format!("{}/v1/channels/room-1/presence", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Token info must be a small object; nothing is minted otherwise.
    for info in [json!("Ada"), json!({"name": "x".repeat(1100)})] {
        let r = ingest
            .api(Method::POST, "/v1/tokens")
            .json(&json!({"subject": "ada", "info": info}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains("info"),
            "{body}"
        );
    }
    ingest.stop().await;
}

#[tokio::test]
async fn the_presence_action_answers_the_members_of_the_own_channel() {
    let ingest = Ingest::start(&[PRESENCE, NO_LIMIT]).await;
    join_with_info(&ingest, "a1", "ada", "room-1", json!({"name": "Ada"})).await;
    ingest.join("b1", "bob", "room-1").await;
    ingest.join("q1", "quiet", "lobby").await;
    ingest.jobs().await;

    let (status, _) = ingest.message("b1", json!({"action": "presence"})).await;
    assert_eq!(status, StatusCode::OK);
    let jobs = ingest.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].target,
        Target::Connections {
            ids: vec!["b1".into()]
        }
    );
    let mut reply = payload(&jobs[0]);
    reply["members"]
        .as_array_mut()
        .unwrap()
        .sort_by_key(|m| m["connection_id"].as_str().unwrap().to_owned());
    assert_eq!(
        reply,
        json!({"type": "presence", "channel": "room-1", "members": [
            {"connection_id": "a1", "user_id": "ada", "info": {"name": "Ada"}},
            {"connection_id": "b1", "user_id": "bob", "info": null},
        ]})
    );

    let (status, body) = ingest.message("q1", json!({"action": "presence"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "presence_not_enabled");
    let jobs = ingest.jobs().await;
    assert_eq!(
        payload(&jobs[0]),
        json!({"type": "error", "error": "Presence is not enabled on this channel."})
    );
    ingest.stop().await;
}
