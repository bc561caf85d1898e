//! Revocation that bites: a kicked connection's callbacks are refused with 403 at once (before the
//! gateway closes it), it is in no set, its record is not kept alive by its own messages, and a revoked
//! user's unused tokens no longer open connections. Real ingest on a private redis-server.

use crate::support::Ingest;
use common::job::{Action, Target};
use common::keys::Keyspace;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn k() -> Keyspace {
    Keyspace::default()
}

async fn ttl_ms(ingest: &Ingest, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap()
}

async fn kick(ingest: &Ingest, body: Value) -> (StatusCode, Value) {
    let r = ingest
        .api(Method::POST, "/v1/kick")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_kicked_connection_is_refused_at_once_and_reaches_nobody() {
    let ingest = Ingest::start(&["--chat-channel=general"]).await;
    ingest.join("c1", "alice", "general").await;
    ingest.join("c2", "bob", "general").await;
    ingest.jobs().await;

    let (status, body) = kick(&ingest, json!({"connection": "c1"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["kicked"], 1);
    let jobs = ingest.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert!(matches!(jobs[0].action, Action::Disconnect));
    assert!(matches!(&jobs[0].target, Target::Connections { ids } if ids == &["c1"]));

    // Every callback from it is refused, whatever it sends, and nothing is queued.
    for frame in [
        json!({"action": "chat_message", "message": "still here"}),
        json!({"action": "change_channel", "channel": "other"}),
        json!({"action": "fetch_history"}),
    ] {
        let (status, body) = ingest.message("c1", frame.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{frame}");
        assert_eq!(body["error"]["code"], "connection_revoked");
    }
    assert!(ingest.jobs().await.is_empty(), "nothing reaches anyone");
    assert_eq!(ingest.smembers(&k().channel("general")).await, ["c2"]);
    assert!(ingest.smembers(&k().channel("other")).await.is_empty());
    assert!(ingest.smembers(&k().subject("alice")).await.is_empty());
    // Its own messages do not keep its record alive, and the mark outlives API Gateway's 2 hours.
    assert!(ttl_ms(&ingest, &k().connection("c1")).await <= 300_000);
    assert!(ttl_ms(&ingest, &k().revoked("c1")).await > 7_200_000);
    // The others go on.
    let (status, _) = ingest
        .message("c2", json!({"action": "chat_message", "message": "hi"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // $disconnect still cleans up.
    let r = ingest.callback("disconnect", "c1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn kicks_by_user_and_by_channel() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("a1", "alice", "general").await;
    ingest.join("a2", "alice", "random").await;
    ingest.join("b1", "bob", "random").await;
    ingest.join("c1", "carol", "general").await;

    let (status, body) = kick(&ingest, json!({"user": "alice"})).await;
    assert_eq!(
        (status, body["kicked"].clone()),
        (StatusCode::ACCEPTED, json!(2))
    );
    for id in ["a1", "a2"] {
        let (status, _) = ingest.message(id, json!({"action": "fetch_history"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{id}");
    }
    assert_eq!(ingest.smembers(&k().channel("random")).await, ["b1"]);

    let (status, body) = kick(&ingest, json!({"channel": "random"})).await;
    assert_eq!(
        (status, body["kicked"].clone()),
        (StatusCode::ACCEPTED, json!(1))
    );
    let (status, _) = ingest
        .message("b1", json!({"action": "fetch_history"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = ingest
        .message("c1", json!({"action": "fetch_history"}))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Bad kick requests change nothing.
    for (body, code) in [
        (json!({}), "bad_request"),
        (
            json!({"user": "alice", "channel": "general"}),
            "bad_request",
        ),
        (json!({"connection": "no such"}), "invalid_connection_id"),
        (json!({"channel": "gen*"}), "invalid_channel"),
        (json!({"connection": "unknown1"}), "unknown_connection"),
        (json!({"everyone": true}), "bad_request"),
    ] {
        let (_, answer) = kick(&ingest, body.clone()).await;
        assert_eq!(answer["error"]["code"], code, "{body}");
    }
    assert_eq!(ingest.smembers(&k().channel("general")).await, ["c1"]);
}

#[tokio::test]
async fn revoking_a_user_kicks_it_and_voids_its_unused_tokens() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("live1", "alice", "general").await;
    let unused = ingest.token("alice", None).await;
    let bobs = ingest.token("bob", None).await;

    let r = ingest
        .api(Method::POST, "/v1/users/alice/revoke")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.json::<Value>().await.unwrap()["kicked"], 1);
    let (status, _) = ingest
        .message("live1", json!({"action": "fetch_history"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The token minted before the revoke is refused (and spent); another user's is not affected.
    assert_eq!(
        ingest
            .connect("new1", &format!("channel=general&ws_token={unused}"))
            .await,
        StatusCode::BAD_REQUEST
    );
    assert!(ingest.smembers(&k().subject("alice")).await.is_empty());
    assert_eq!(
        ingest
            .connect("bob1", &format!("channel=general&ws_token={bobs}"))
            .await,
        StatusCode::OK
    );
    // A token minted after the revoke works.
    ingest.join("new2", "alice", "general").await;
    assert_eq!(ingest.smembers(&k().subject("alice")).await, ["new2"]);

    let r = ingest
        .api(Method::POST, "/v1/users/a%20b/revoke")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn change_channel_checks_the_current_rules() {
    // A token limited to `room-1` cannot move its connection elsewhere, nor can a revoked one move.
    let ingest = Ingest::start(&[]).await;
    let token = ingest.token("alice", Some(&["room-1"])).await;
    assert_eq!(
        ingest
            .connect("r1", &format!("channel=room-1&ws_token={token}"))
            .await,
        StatusCode::OK
    );
    let (status, body) = ingest
        .message(
            "r1",
            json!({"action": "change_channel", "channel": "room-2"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("permission_denied"))
    );
    assert_eq!(ingest.smembers(&k().channel("room-1")).await, ["r1"]);
}
