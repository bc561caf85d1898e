//! End to end, over real sockets: browsers (WebSocket clients) at the local gateway, ingest behind it, a
//! worker delivering through the gateway's Management API, Redis, and each queue backend. Every scenario
//! runs on Redis Streams and on SQS.

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
    tokens,
    broadcasts_reach_exactly_their_targets,
    client_actions,
    vanished_clients_are_forgotten,
    kick,
    recovery_after_a_forced_reconnect,
    presence
);

async fn tokens(backend: Backend) {
    let system = System::start(backend, &[], &[]).await;
    let token = system.token("alice").await;
    let query = format!("channel=general&ws_token={token}");
    let _alice = system
        .connect(&query)
        .await
        .expect("a valid token connects");
    assert_eq!(
        system.connect(&query).await.err(),
        Some(400),
        "a replayed token is refused"
    );
    assert_eq!(
        system.connect("channel=general&ws_token=0123").await.err(),
        Some(400),
        "an unknown token is refused"
    );
    // Expired: the token's key expires now.
    let token = system.token("alice").await;
    let mut redis = common::store::Redis::connect(&system.redis.url())
        .await
        .unwrap();
    let _: () = redis::cmd("PEXPIRE")
        .arg(system.keys.token(&token))
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    system
        .eventually("the token to expire", || {
            let mut redis = redis.clone();
            let key = system.keys.token(&token);
            async move {
                !redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<bool>(&mut redis)
                    .await
                    .unwrap()
            }
        })
        .await;
    assert_eq!(
        system
            .connect(&format!("channel=general&ws_token={token}"))
            .await
            .err(),
        Some(400)
    );
    assert_eq!(system.connect("channel=bad.name").await.err(), Some(400));
    assert_eq!(
        system.members(&system.keys.channel("general")).await.len(),
        1
    );
    system.stop().await;
}

async fn broadcasts_reach_exactly_their_targets(backend: Backend) {
    let system = System::start(backend, &[], &[]).await;
    let mut alice1 = system.join("alice", "general").await;
    let mut alice2 = system.join("alice", "random").await;
    let mut bob = system.join("bob", "general").await;
    let mut carol = system.join("carol", "random").await;

    system
        .publish(
            "/v1/channels/general/publish",
            json!({"type": "system", "message": "to general"}),
        )
        .await;
    assert_eq!(alice1.next().await["message"], "to general");
    assert_eq!(bob.next().await["message"], "to general");

    system
        .publish(
            "/v1/users/alice/publish",
            json!({"type": "system", "message": "to alice"}),
        )
        .await;
    assert_eq!(alice1.next().await["message"], "to alice");
    // alice2 (in random) never got "to general": its first message is the one for alice.
    assert_eq!(alice2.next().await["message"], "to alice");

    system
        .publish(
            "/v1/broadcast",
            json!({"type": "system", "message": "to everyone"}),
        )
        .await;
    for client in [&mut alice1, &mut alice2, &mut bob] {
        assert_eq!(client.next().await["message"], "to everyone");
    }
    // carol (random, not alice) got neither earlier message.
    assert_eq!(carol.next().await["message"], "to everyone");
    system.stop().await;
}

async fn client_actions(backend: Backend) {
    let system = System::start(backend, &["--chat-channel=*"], &[]).await;
    let mut alice = system.join("alice", "general").await;
    let mut bob = system.join("bob", "general").await;

    alice
        .send(json!({"action": "chat_message", "message": "hello"}))
        .await;
    for client in [&mut alice, &mut bob] {
        let m = client.next_of("chat_message").await;
        assert_eq!(
            (
                m["room"].as_str(),
                m["username"].as_str(),
                m["message"].as_str()
            ),
            (Some("general"), Some("alice"), Some("hello"))
        );
    }
    bob.send(json!({"action": "fetch_history"})).await;
    let history = bob.next_of("history").await;
    assert_eq!(history["room"], "general");
    assert_eq!(history["messages"][0]["message"], "hello");

    bob.send(json!({"action": "change_channel", "channel": "support"}))
        .await;
    assert_eq!(bob.next_of("channel_changed").await["channel"], "support");
    alice
        .send(json!({"action": "chat_message", "message": "bob left"}))
        .await;
    assert_eq!(alice.next_of("chat_message").await["message"], "bob left");
    system
        .publish(
            "/v1/channels/support/publish",
            json!({"type": "system", "message": "marker"}),
        )
        .await;
    assert_eq!(
        bob.next().await["message"],
        "marker",
        "bob saw nothing from general after leaving it"
    );

    // A keepalive ping is accepted and answered with nothing: the next frames are the next answers.
    alice.send(json!({"action": "ping"})).await;
    alice
        .send(json!({"action": "chat_message", "message": "  "}))
        .await;
    alice.send(json!({"action": "no_such_action"})).await;
    assert_eq!(
        alice.next().await,
        json!({"type": "error", "error": "Message cannot be empty."})
    );
    assert_eq!(
        alice.next().await,
        json!({"type": "error", "error": "Unknown WebSocket action."})
    );
    system.stop().await;
}

async fn vanished_clients_are_forgotten(backend: Backend) {
    let system = System::start(backend, &[], &[]).await;
    let mut alice = system.join("alice", "general").await;
    // A connection ingest knows but the gateway does not: its client vanished and $disconnect was lost.
    system.connect_ghost("ghostConnection=", "general").await;
    assert_eq!(
        system.members(&system.keys.channel("general")).await.len(),
        2
    );

    system
        .publish(
            "/v1/channels/general/publish",
            json!({"type": "system", "message": "anyone there?"}),
        )
        .await;
    assert_eq!(alice.next().await["message"], "anyone there?");
    let (channel, subject) = (system.keys.channel("general"), system.keys.subject("ghost"));
    system
        .eventually(
            "the vanished connection to be removed after its 410",
            || async {
                !system
                    .members(&channel)
                    .await
                    .contains(&"ghostConnection=".to_owned())
                    && system.members(&subject).await.is_empty()
            },
        )
        .await;
    system.stop().await;
}

async fn kick(backend: Backend) {
    let system = System::start(backend, &[], &[]).await;
    let mut alice = system.join("alice", "general").await;
    let id = system
        .members(&system.keys.channel("general"))
        .await
        .remove(0);
    let r = system
        .api(reqwest::Method::DELETE, &format!("/v1/connections/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        alice.closed().await.is_some(),
        "the gateway closed the socket"
    );
    assert!(
        system
            .members(&system.keys.channel("general"))
            .await
            .is_empty()
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_the_socket_with_1009() {
    let system = System::start(Backend::RedisStreams, &[], &[]).await;
    let mut alice = system.join("alice", "general").await;
    alice
        .send_text(format!(
            r#"{{"action":"x","pad":"{}"}}"#,
            "a".repeat(40_000)
        ))
        .await;
    assert_eq!(alice.closed().await, Some(1009));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_selection_reaches_ingest_on_the_selected_route() {
    // The application's webhook records which route each unknown action arrived on.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(event): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                tx.send(event).unwrap();
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });

    // A custom route to ingest's /ws/sendmessage; everything else goes to $default (/ws/default).
    let system = System::start(
        Backend::RedisStreams,
        &[&format!("--webhook-url={hook_url}")],
        &["--route=sendmessage=INGEST/ws/sendmessage"],
    )
    .await;
    let mut alice = system.join("alice", "general").await;
    alice
        .send(json!({"action": "sendmessage", "text": "a"}))
        .await;
    alice.send(json!({"action": "other"})).await;
    alice.send_text("not json".into()).await;
    let first = rx.recv().await.unwrap();
    let second = rx.recv().await.unwrap();
    assert_eq!(
        (first["route"].as_str(), first["action"].as_str()),
        (Some("sendmessage"), Some("sendmessage"))
    );
    assert_eq!(
        (second["route"].as_str(), second["action"].as_str()),
        (Some("default"), Some("other"))
    );
    system.stop().await;
}

/// The gateway closes the socket at its maximum duration (1001, as API Gateway does after 2 hours); what
/// was published while the client was away comes back exactly once and in order when it reconnects and
/// asks to recover from the last offset it saw. After the channel's history is lost, the old epoch is
/// refused with `recovered: false`.
async fn recovery_after_a_forced_reconnect(backend: Backend) {
    let system = System::start(backend, &[], &["--max-duration-secs=3"]).await;
    let path = "/v1/channels/general/publish?history=true";
    let mut alice = system.join("alice", "general").await;
    system.publish(path, json!({"n": 1})).await;
    let first = alice.next().await;
    assert_eq!(
        (first["n"].as_u64(), first["offset"].as_u64()),
        (Some(1), Some(1))
    );
    let epoch = first["epoch"].as_str().unwrap().to_owned();

    assert_eq!(
        alice.closed().await,
        Some(1001),
        "closed at the maximum duration"
    );
    let channel = system.keys.channel("general");
    system
        .eventually("the $disconnect to reach ingest", || async {
            system.members(&channel).await.is_empty()
        })
        .await;
    for n in 2..=4 {
        let r = system
            .api(reqwest::Method::POST, path)
            .json(&json!({"n": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
        let job = r.json::<serde_json::Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Planned while alice is away: otherwise she would get it live after reconnecting.
        system
            .eventually("the publish to be delivered to nobody", || async {
                let r = system
                    .api(reqwest::Method::GET, &format!("/v1/broadcasts/{job}"))
                    .send()
                    .await
                    .unwrap();
                r.status() == reqwest::StatusCode::OK
                    && r.json::<serde_json::Value>().await.unwrap()["state"] == "finished"
            })
            .await;
    }

    let mut alice = system.join("alice", "general").await;
    alice
        .send(json!({"action": "recover", "channel": "general", "offset": 1, "epoch": epoch}))
        .await;
    let answer = alice.next().await;
    assert_eq!(
        (answer["type"].as_str(), answer["recovered"].as_bool()),
        (Some("recover"), Some(true))
    );
    let missed: Vec<(u64, u64)> = answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["n"].as_u64().unwrap(), m["offset"].as_u64().unwrap()))
        .collect();
    assert_eq!(missed, [(2, 2), (3, 3), (4, 4)]);
    // Nothing missed arrives a second time: the next message is the next one published.
    system.publish(path, json!({"n": 5})).await;
    let next = alice.next().await;
    assert_eq!(
        (next["n"].as_u64(), next["offset"].as_u64()),
        (Some(5), Some(5))
    );

    // History lost: the channel starts a new epoch, and the old one cannot be recovered.
    let mut redis = common::store::Redis::connect(&system.redis.url())
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(system.keys.history("general"))
        .query_async(&mut redis)
        .await
        .unwrap();
    system.publish(path, json!({"n": 6})).await;
    let mut bob = system.join("bob", "general").await;
    bob.send(json!({"action": "recover", "offset": 5, "epoch": epoch}))
        .await;
    let answer = bob.next_of("recover").await;
    assert_eq!(answer["recovered"], false);
    assert_eq!(answer["reason"], "epoch_changed");
    assert_eq!(answer["offset"], 1);
    assert_ne!(answer["epoch"].as_str(), Some(epoch.as_str()));
    system.stop().await;
}

/// The next presence event (`join` or `leave`) a client receives, skipping other messages.
async fn presence_event(client: &mut e2e::Client) -> serde_json::Value {
    loop {
        let m = client.next_of("presence").await;
        if m.get("event").is_some() {
            return m;
        }
    }
}

/// The members `GET /v1/channels/{channel}/presence` lists, as (connection id, user id), sorted.
async fn presence_list(system: &System, channel: &str) -> Vec<(String, serde_json::Value)> {
    let r = system
        .api(
            reqwest::Method::GET,
            &format!("/v1/channels/{channel}/presence"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let mut members: Vec<(String, serde_json::Value)> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["connection_id"].as_str().unwrap().to_owned(),
                m["user_id"].clone(),
            )
        })
        .collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(body["count"], members.len(), "{body}");
    members
}

/// Presence over real sockets: two clients join a presence channel and each sees the other's join; the
/// API lists both and the `presence` action answers both; one closes its socket and the other sees it
/// leave; a client that vanished without a `$disconnect` leaves when the worker meets its 410. Every
/// connection opens 300 ms after its `$connect` answered (`--open-delay-ms`), so its own join is
/// published while API Gateway would still answer 410 for it: it must arrive all the same, and the
/// connection must not be taken for gone.
async fn presence(backend: Backend) {
    let system = System::start(
        backend,
        &["--presence-channel=room-*"],
        &["--open-delay-ms=300"],
    )
    .await;
    let r = system
        .api(reqwest::Method::POST, "/v1/tokens")
        .json(&json!({"subject": "alice", "info": {"name": "Alice"}}))
        .send()
        .await
        .unwrap();
    let token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut alice = system
        .connect(&format!("channel=room-1&ws_token={token}"))
        .await
        .unwrap();
    let own = presence_event(&mut alice).await;
    assert_eq!(own["event"], "join");
    assert_eq!(own["member"]["user_id"], "alice");
    assert_eq!(own["member"]["info"], json!({"name": "Alice"}));
    let alice_id = own["member"]["connection_id"].as_str().unwrap().to_owned();

    let mut bob = system.join("bob", "room-1").await;
    let joined = presence_event(&mut alice).await;
    assert_eq!(joined["event"], "join");
    assert_eq!(joined["channel"], "room-1");
    assert_eq!(joined["member"]["user_id"], "bob");
    assert_eq!(joined["member"]["info"], serde_json::Value::Null);
    let bob_id = joined["member"]["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        presence_event(&mut bob).await,
        joined,
        "bob sees his own join"
    );

    let mut expected = vec![
        (alice_id.clone(), json!("alice")),
        (bob_id.clone(), json!("bob")),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(presence_list(&system, "room-1").await, expected);
    bob.send(json!({"action": "presence"})).await;
    let reply = bob.next_of("presence").await;
    assert_eq!(reply["channel"], "room-1");
    assert_eq!(reply["members"].as_array().unwrap().len(), 2, "{reply}");

    // Bob closes his socket: the gateway sends $disconnect and Alice is told.
    bob.close().await;
    let left = presence_event(&mut alice).await;
    assert_eq!(left["event"], "leave");
    assert_eq!(left["member"]["connection_id"], bob_id.as_str());
    assert_eq!(
        presence_list(&system, "room-1").await,
        vec![(alice_id.clone(), json!("alice"))]
    );

    // A connection ingest knows but the gateway does not (its $disconnect was lost): it joins presence,
    // and leaves it when the worker's post to it is answered 410.
    system.connect_ghost("ghostConnection=", "room-1").await;
    let ghost = presence_event(&mut alice).await;
    assert_eq!(ghost["event"], "join");
    assert_eq!(ghost["member"]["connection_id"], "ghostConnection=");
    system
        .publish(
            "/v1/channels/room-1/publish",
            json!({"type": "system", "message": "anyone there?"}),
        )
        .await;
    let gone = presence_event(&mut alice).await;
    assert_eq!(gone["event"], "leave");
    assert_eq!(gone["member"]["connection_id"], "ghostConnection=");
    assert_eq!(gone["member"]["user_id"], "ghost");
    assert_eq!(
        presence_list(&system, "room-1").await,
        vec![(alice_id, json!("alice"))]
    );
    system.stop().await;
}
