//! Revocation over the local gateway, on both queue backends: after a kick, the kicked browser's next
//! `chat_message` is refused by ingest (403, before the gateway has closed the socket) and reaches
//! nobody; after a user revoke, a token minted for the user earlier no longer opens a connection.

use e2e::{Backend, System};
use serde_json::json;

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_streams() {
                super::$scenario(e2e::Backend::RedisStreams).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqs() {
                super::$scenario(e2e::Backend::Sqs).await
            }
        }
    )*};
}

on_both_backends!(
    a_kicked_connection_cannot_chat_before_it_is_closed,
    a_revoked_user_cannot_use_its_tokens
);

const REFUSED_MESSAGES: &str =
    r#"fanout_callbacks_total{outcome="connection_revoked",route="message"}"#;

async fn a_kicked_connection_cannot_chat_before_it_is_closed(backend: Backend) {
    let mut system = System::start(backend, &["--chat-channel=general"], &[]).await;
    let mut alice = system.join("alice", "general").await;
    let mut bob = system.join("bob", "general").await;
    let alice_id = system
        .members(&system.keys.subject("alice"))
        .await
        .remove(0);

    // With the worker paused, the gateway keeps alice's socket open after the kick: the window in which
    // a kicked client could still talk.
    system.pause_worker().await;
    let r = system
        .api(reqwest::Method::POST, "/v1/kick")
        .json(&json!({ "connection": alice_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    alice
        .send(json!({"action": "chat_message", "message": "kicked but talking"}))
        .await;
    system
        .eventually(
            "ingest to refuse the kicked connection's message",
            || async { system.ingest_metric(REFUSED_MESSAGES).await >= 1.0 },
        )
        .await;

    // The worker closes alice's socket; bob's next message is his own, so alice's never went out.
    system.resume_worker().await;
    assert!(
        alice.closed().await.is_some(),
        "the gateway closed the socket"
    );
    bob.send(json!({"action": "chat_message", "message": "still here"}))
        .await;
    let m = bob.next_of("chat_message").await;
    assert_eq!(
        (m["username"].as_str(), m["message"].as_str()),
        (Some("bob"), Some("still here")),
        "nothing from the kicked connection reached bob"
    );
    assert_eq!(
        system.members(&system.keys.channel("general")).await.len(),
        1
    );
    system.stop().await;
}

async fn a_revoked_user_cannot_use_its_tokens(backend: Backend) {
    let system = System::start(backend, &[], &[]).await;
    let mut alice = system.join("alice", "general").await;
    let unused = system.token("alice").await;
    let r = system
        .api(reqwest::Method::POST, "/v1/users/alice/revoke")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        alice.closed().await.is_some(),
        "the live connection is closed"
    );
    assert_eq!(
        system
            .connect(&format!("channel=general&ws_token={unused}"))
            .await
            .err(),
        Some(400),
        "a token minted before the revoke is refused"
    );
    let _again = system.join("alice", "general").await;
    system.stop().await;
}
