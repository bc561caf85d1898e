//! Long because it walks the Django package's whole failure table, one test per row group.
//!
//! Gateway callbacks over real HTTP against a real Redis: every applicable row of the Django package's
//! failure table with its status, tokens, rate limits, membership and the built-in actions.

use crate::support::{Ingest, payload};
use common::job::Target;
use common::keys::{Keyspace, conn_field as f};
use reqwest::StatusCode;
use serde_json::{Value, json};

const K: fn() -> Keyspace = Keyspace::default;

#[tokio::test]
async fn the_gateway_secret_is_checked_first_on_every_route() {
    let ingest = Ingest::start(&[]).await;
    for route in ["connect", "disconnect", "default", "custom"] {
        // Wrong secret, and even a malformed connection id: 403 comes first.
        let r = ingest
            .callback(route, "bad id!")
            .headers(crate::support::set("X-Ws-Gateway-Secret", "nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{route}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains(crate::support::SECRET) && !body.contains("nope"),
            "{body}"
        );
        let r = ingest
            .http
            .post(format!("{}/ws/{route}", ingest.url))
            .header("connectionId", "abc=")
            .headers(crate::support::set(
                "X-Amzn-Apigateway-Api-Id",
                crate::support::API_ID,
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "{route} without the header"
        );
    }
}

#[tokio::test]
async fn missing_headers_and_unknown_api_ids_are_refused() {
    let ingest = Ingest::start(&[]).await;
    let no_conn = ingest
        .http
        .post(format!("{}/ws/default", ingest.url))
        .headers(crate::support::set(
            "X-Amzn-Apigateway-Api-Id",
            crate::support::API_ID,
        ))
        .headers(crate::support::set(
            "X-Ws-Gateway-Secret",
            crate::support::SECRET,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(no_conn.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        no_conn.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_request_headers"
    );
    let r = ingest
        .callback("connect", "abc=")
        .headers(crate::support::set("X-Amzn-Apigateway-Api-Id", "otherapi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // GET is not a callback.
    let r = ingest
        .http
        .get(format!("{}/ws/connect", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn connect_registers_the_connection_everywhere() {
    let ingest = Ingest::start(&[]).await;
    let token = ingest.token("alice", None).await;
    let r = ingest
        .callback(
            &format!("connect?channel=general&ws_token={token}"),
            "Abc123=",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}));
    assert_eq!(ingest.smembers(&K().channel("general")).await, ["Abc123="]);
    assert_eq!(ingest.smembers(&K().subject("alice")).await, ["Abc123="]);
    assert_eq!(
        ingest.smembers(&K().all_bucket_of("Abc123=")).await,
        ["Abc123="]
    );
    let mut redis = ingest.redis().await;
    let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(K().connection("Abc123="))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(hash[f::CHANNEL], "general");
    assert_eq!(hash[f::SUBJECT], "alice");
    assert_eq!(hash[f::API_ID], crate::support::API_ID);
    assert_eq!(hash[f::STAGE], "test");
    assert_eq!(hash[f::SOURCE_IP], "203.0.113.7");
    assert_eq!(hash[f::TOKEN_HASH], common::keys::record_token_hash(&token));
    assert!(hash[f::CONNECTED_AT_MS].parse::<u64>().is_ok());
    // Only the short field names are written.
    for (_, legacy) in f::WITH_LEGACY {
        assert!(!hash.contains_key(legacy), "{legacy} in {hash:?}");
    }
    let ttl: i64 = redis::cmd("TTL")
        .arg(K().connection("Abc123="))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 7200 && ttl <= 7500, "{ttl}");
    // No channel in the URL: the default channel.
    ingest.join("NoChan=", "bob", "").await;
    assert_eq!(ingest.smembers(&K().channel("default")).await, ["NoChan="]);
}

#[tokio::test]
async fn token_failures_and_replays() {
    let ingest = Ingest::start(&[]).await;
    // Missing, unknown.
    assert_eq!(
        ingest.connect("c1", "channel=general").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        ingest
            .connect("c1", "channel=general&ws_token=deadbeef")
            .await,
        StatusCode::BAD_REQUEST
    );
    // Used once, then replayed on another connection.
    let token = ingest.token("alice", None).await;
    assert_eq!(
        ingest
            .connect("c1", &format!("channel=general&ws_token={token}"))
            .await,
        StatusCode::OK
    );
    assert_eq!(
        ingest
            .connect("c2", &format!("channel=general&ws_token={token}"))
            .await,
        StatusCode::BAD_REQUEST
    );
    // The same $connect again (API Gateway retrying) is idempotent.
    assert_eq!(
        ingest
            .connect("c1", &format!("channel=general&ws_token={token}"))
            .await,
        StatusCode::OK
    );
    assert_eq!(ingest.smembers(&K().channel("general")).await, ["c1"]);
    // Expired: make the token's key expire now, wait until Redis has dropped it.
    let token = ingest.token("alice", None).await;
    let mut redis = ingest.redis().await;
    let _: () = redis::cmd("PEXPIRE")
        .arg(K().token(&token))
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    while redis::cmd("EXISTS")
        .arg(K().token(&token))
        .query_async::<bool>(&mut redis)
        .await
        .unwrap()
    {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        ingest
            .connect("c3", &format!("channel=general&ws_token={token}"))
            .await,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn an_invalid_channel_does_not_spend_the_token() {
    let ingest = Ingest::start(&[]).await;
    let token = ingest.token("alice", None).await;
    for bad in ["a%20b", "a.b", &"x".repeat(129)] {
        let r = ingest
            .callback(&format!("connect?channel={bad}&ws_token={token}"), "c1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_channel"
        );
    }
    // Nor does a bad connection id or a refused origin.
    assert_eq!(
        ingest
            .connect("bad/id", &format!("channel=general&ws_token={token}"))
            .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        ingest
            .connect("c1", &format!("channel=general&ws_token={token}"))
            .await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_connects_once_under_concurrent_connects() {
    let ingest = Ingest::start(&["--connect-limit-per-minute=1000"]).await;
    let token = ingest.token("alice", None).await;
    let attempts = (0..20).map(|i| {
        let query = format!("channel=general&ws_token={token}");
        let ingest = &ingest;
        async move { ingest.connect(&format!("race{i}"), &query).await }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::BAD_REQUEST)
            .count(),
        19
    );
    assert_eq!(ingest.smembers(&K().channel("general")).await.len(), 1);
}

#[tokio::test]
async fn connect_rate_limits_per_ip_and_per_subject() {
    let ingest = Ingest::start(&["--connect-limit-per-minute=3"]).await;
    // Per IP: every attempt counts, even refused ones.
    for i in 0..3 {
        assert_eq!(
            ingest.connect(&format!("ip{i}"), "channel=general").await,
            StatusCode::BAD_REQUEST
        );
    }
    let token = ingest.token("alice", None).await;
    let r = ingest
        .callback(&format!("connect?channel=general&ws_token={token}"), "ip4")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "too_many_connection_attempts"
    );
    // The token survived the refusal; another IP is not limited.
    let r = ingest
        .callback(&format!("connect?channel=general&ws_token={token}"), "ip4")
        .headers(crate::support::set("X-Ws-Source-Ip", "198.51.100.1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Per subject, across IPs.
    for i in 0..3 {
        let token = ingest.token("bob", None).await;
        let r = ingest
            .callback(
                &format!("connect?channel=general&ws_token={token}"),
                &format!("bob{i}"),
            )
            .headers(crate::support::set(
                "X-Ws-Source-Ip",
                format!("192.0.2.{i}"),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "attempt {i}");
    }
    let token = ingest.token("bob", None).await;
    let r = ingest
        .callback(&format!("connect?channel=general&ws_token={token}"), "bob9")
        .headers(crate::support::set("X-Ws-Source-Ip", "192.0.2.99"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "too_many_connection_attempts"
    );
}

#[tokio::test]
async fn exempt_addresses_skip_the_per_ip_limit_only() {
    let ingest = Ingest::start(&[
        "--connect-limit-per-minute=2",
        "--connect-limit-exempt=127.0.0.0/8,::1",
    ])
    .await;
    let connect = |id: String, ip: &'static str| {
        let ingest = &ingest;
        async move {
            let token = ingest.token(&id, None).await;
            let r = ingest
                .callback(&format!("connect?channel=general&ws_token={token}"), &id)
                .headers(crate::support::set("X-Ws-Source-Ip", ip))
                .send()
                .await
                .unwrap();
            r.status()
        }
    };
    // Loopback: far past the limit, every connect (each its own subject) is accepted.
    for i in 0..6 {
        assert_eq!(
            connect(format!("local{i}"), "127.0.0.1").await,
            StatusCode::OK
        );
    }
    assert_eq!(connect("v6".to_owned(), "::1").await, StatusCode::OK);
    // Any other address is limited as before.
    for i in 0..2 {
        assert_eq!(
            connect(format!("far{i}"), "203.0.113.7").await,
            StatusCode::OK
        );
    }
    assert_eq!(
        connect("far9".to_owned(), "203.0.113.7").await,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn origins_and_channel_permissions() {
    let ingest = Ingest::start(&[
        "--allowed-origin=https://*.example.com",
        "--public-channel=lobby",
    ])
    .await;
    let with_origin = |origin: &'static str, token: String, id: &'static str| {
        ingest
            .callback(&format!("connect?channel=general&ws_token={token}"), id)
            .header("Origin", origin)
            .send()
    };
    let token = ingest.token("alice", None).await;
    assert_eq!(
        with_origin("https://example.com.attacker.net", token.clone(), "o1")
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        with_origin("https://app.example.com", token, "o1")
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // A token limited to room-1 cannot join general.
    let token = ingest.token("alice", Some(&["room-1"])).await;
    let r = ingest
        .callback(&format!("connect?channel=general&ws_token={token}"), "p1")
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "permission_denied"
    );
    // Public channels need no token.
    let r = ingest
        .callback("connect?channel=lobby", "anon1")
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(ingest.smembers(&K().channel("lobby")).await, ["anon1"]);
}

#[tokio::test]
async fn disconnect_removes_the_connection_from_every_set_and_is_idempotent() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("d1", "alice", "general").await;
    for _ in 0..2 {
        let r = ingest.callback("disconnect", "d1").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert!(ingest.smembers(&K().channel("general")).await.is_empty());
    assert!(ingest.smembers(&K().subject("alice")).await.is_empty());
    assert!(ingest.smembers(&K().all_bucket_of("d1")).await.is_empty());
    let mut redis = ingest.redis().await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(K().connection("d1"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!exists);
    assert_eq!(
        ingest
            .callback("disconnect", "never-seen")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn malformed_messages() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("m1", "alice", "general").await;
    let send = |body: Vec<u8>| ingest.callback("default", "m1").body(body).send();
    for (body, status) in [
        (b"not json".to_vec(), StatusCode::BAD_REQUEST),
        (b"[1,2]".to_vec(), StatusCode::BAD_REQUEST),
        (
            br#"{"message":"no handler"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (br#"{"action":5}"#.to_vec(), StatusCode::BAD_REQUEST),
        (vec![0xff, 0xfe], StatusCode::BAD_REQUEST),
        (
            format!(r#"{{"action":"x","pad":"{}"}}"#, "a".repeat(131_072)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (vec![b' '; 1_000_000], StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let r = send(body).await.unwrap();
        assert_eq!(r.status(), status);
    }
    let r = send(br#"{"message":"x"}"#.to_vec()).await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_request_format"
    );
    // Unknown connection.
    let (status, body) = ingest
        .message("ghost", json!({"action": "fetch_history"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_connection_id"))
    );
    assert!(
        ingest.jobs().await.is_empty(),
        "nothing was queued for refused messages"
    );
}

#[tokio::test]
async fn change_channel_moves_membership_and_answers() {
    let ingest = Ingest::start(&["--public-channel=lobby"]).await;
    ingest.join("cc1", "alice", "general").await;
    let (status, _) = ingest
        .message(
            "cc1",
            json!({"action": "change_channel", "channel": "support"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(ingest.smembers(&K().channel("general")).await.is_empty());
    assert_eq!(ingest.smembers(&K().channel("support")).await, ["cc1"]);
    // `handler` wins over `action`.
    let (status, _) = ingest
        .message(
            "cc1",
            json!({"handler": "change_channel", "action": "dance", "channel": "random"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = ingest
        .message(
            "cc1",
            json!({"action": "change_channel", "channel": "bad name"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_channel"))
    );
    let jobs = ingest.jobs().await;
    let payloads: Vec<Value> = jobs.iter().map(payload).collect();
    assert_eq!(
        payloads,
        [
            json!({"type": "channel_changed", "channel": "support"}),
            json!({"type": "channel_changed", "channel": "random"}),
            json!({"type": "error", "error": "Invalid channel"}),
        ]
    );
    assert!(jobs.iter().all(|j| j.target
        == Target::Connections {
            ids: vec!["cc1".into()]
        }));
    // An anonymous connection may only move between public channels.
    assert_eq!(
        ingest.connect("anon", "channel=lobby").await,
        StatusCode::OK
    );
    let (status, _) = ingest
        .message(
            "anon",
            json!({"action": "change_channel", "channel": "general"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(ingest.smembers(&K().channel("lobby")).await, ["anon"]);
}

#[tokio::test]
async fn chat_messages_reach_the_room_and_history_is_capped() {
    let ingest = Ingest::start(&[
        "--chat-channel=general",
        "--history-size=3",
        "--public-channel=general",
    ])
    .await;
    ingest.join("h1", "alice", "general").await;
    for i in 0..5 {
        let (status, _) = ingest
            .message(
                "h1",
                json!({"action": "chat_message", "message": format!("  hello {i} ")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let jobs = ingest.jobs().await;
    assert_eq!(jobs.len(), 5);
    assert_eq!(
        jobs[0].target,
        Target::Channel {
            channel: "general".into()
        }
    );
    let first = payload(&jobs[0]);
    assert_eq!(
        (first["type"].as_str(), first["room"].as_str()),
        (Some("chat_message"), Some("general"))
    );
    assert_eq!(
        (first["username"].as_str(), first["message"].as_str()),
        (Some("alice"), Some("hello 0"))
    );
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));

    let (status, _) = ingest
        .message("h1", json!({"action": "fetch_history"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let history = payload(&ingest.jobs().await[0]);
    assert_eq!(
        (history["type"].as_str(), history["room"].as_str()),
        (Some("history"), Some("general"))
    );
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello 2", "hello 3", "hello 4"]);

    // Empty messages are refused with the package's text; anonymous senders show as Anonymous.
    let (status, _) = ingest
        .message("h1", json!({"action": "chat_message", "message": "   "}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        payload(&ingest.jobs().await[0]),
        json!({"type": "error", "error": "Message cannot be empty."})
    );
    assert_eq!(
        ingest.connect("anon", "channel=general").await,
        StatusCode::OK
    );
    ingest
        .message("anon", json!({"action": "chat_message", "message": "hi"}))
        .await;
    assert_eq!(payload(&ingest.jobs().await[0])["username"], "Anonymous");
}

#[tokio::test]
async fn publishing_needs_a_chat_channel_and_unknown_actions_get_an_error() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("u1", "alice", "general").await;
    let (status, _) = ingest
        .message("u1", json!({"action": "chat_message", "message": "hi"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = ingest.message("u1", json!({"action": "dance"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unknown_action"))
    );
    let payloads: Vec<Value> = ingest.jobs().await.iter().map(payload).collect();
    assert_eq!(
        payloads,
        [
            json!({"type": "error", "error": "Publishing is not allowed on this channel."}),
            json!({"type": "error", "error": "Unknown WebSocket action."}),
        ]
    );
}

#[tokio::test]
async fn unknown_actions_go_to_the_webhook_with_context() {
    // The application's webhook is the boundary here: a small HTTP server that records what it gets.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Option<String>, Value)>();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(event): axum::Json<Value>| {
                let tx = tx.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let reply = if event["action"] == "wave" {
                        r#"{"type":"pong"}"#
                    } else {
                        ""
                    };
                    tx.send((auth, event)).unwrap();
                    reply
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });

    let ingest = Ingest::start(&[
        &format!("--webhook-url={hook_url}"),
        "--webhook-secret=hook-secret",
    ])
    .await;
    ingest.join("w1", "alice", "general").await;
    let (status, _) = ingest
        .message("w1", json!({"action": "wave", "n": 1}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The callback answers only once the webhook has answered, so the call is already recorded.
    let (auth, event) = rx
        .try_recv()
        .expect("the webhook is called before the callback answers");
    assert_eq!(auth.as_deref(), Some("Bearer hook-secret"));
    assert_eq!(
        event,
        json!({"connection_id": "w1", "subject": "alice", "channel": "general", "route": "default", "action": "wave",
               "body": {"action": "wave", "n": 1}})
    );
    let (status, _) = ingest.message("w1", json!({"action": "silent"})).await;
    assert_eq!(status, StatusCode::OK);
    let payloads: Vec<Value> = ingest.jobs().await.iter().map(payload).collect();
    assert_eq!(
        payloads,
        [json!({"type": "pong"})],
        "an empty webhook answer sends nothing"
    );
}

#[tokio::test]
async fn a_failing_webhook_is_a_bad_gateway() {
    let ingest = Ingest::start(&[&format!(
        "--webhook-url=http://127.0.0.1:{}/hook",
        test_support::free_port()
    )])
    .await;
    ingest.join("w2", "alice", "general").await;
    let (status, body) = ingest.message("w2", json!({"action": "wave"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("webhook_failed"))
    );
    assert_eq!(payload(&ingest.jobs().await[0])["type"], "error");
}

/// A client can write any `X-Forwarded-For`: without `X-Ws-Source-Ip`, it is believed only from a
/// configured proxy, so rotating it does not get round the per-IP connect limit.
#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let raw = |ingest: &Ingest, id: String, forwarded: String| {
        ingest
            .http
            .post(format!("{}/ws/connect?channel=general", ingest.url))
            .header("connectionId", id)
            .header("X-Amzn-Apigateway-Api-Id", crate::support::API_ID)
            .header("X-Ws-Gateway-Secret", crate::support::SECRET)
            .header("X-Forwarded-For", forwarded)
            .send()
    };
    let ingest = Ingest::start(&["--connect-limit-per-minute=3", "--public-channel=general"]).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = raw(&ingest, format!("x{i}"), format!("192.0.2.{i}"))
            .await
            .unwrap();
        statuses.push(r.status());
    }
    // Counted against the peer (127.0.0.1) whatever the header said.
    assert_eq!(statuses[..3], [StatusCode::OK; 3]);
    assert_eq!(statuses[3..], [StatusCode::BAD_REQUEST; 2]);
    let source: Option<String> = redis::cmd("HGET")
        .arg(K().connection("x0"))
        .arg(f::SOURCE_IP)
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap();
    assert_eq!(source.as_deref(), Some("127.0.0.1"));
    ingest.stop().await;

    // Behind a trusted proxy, the rightmost address it did not add is the client's.
    let ingest = Ingest::start(&["--trusted-proxy=127.0.0.0/8", "--public-channel=general"]).await;
    let r = raw(
        &ingest,
        "y1".into(),
        "6.6.6.6, 198.51.100.4, 127.0.0.9".into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let source: Option<String> = redis::cmd("HGET")
        .arg(K().connection("y1"))
        .arg(f::SOURCE_IP)
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap();
    assert_eq!(source.as_deref(), Some("198.51.100.4"));
}

#[tokio::test]
async fn insecure_dev_still_checks_a_configured_secret() {
    // --insecure-dev only lets callbacks in without a secret when none is configured.
    let ingest = Ingest::start(&["--insecure-dev"]).await;
    for route in ["connect", "disconnect", "default"] {
        let r = ingest
            .callback(route, "abc=")
            .headers(crate::support::set("X-Ws-Gateway-Secret", "nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{route}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_request",
            "{route}"
        );
    }
}

#[tokio::test]
async fn a_frame_of_exactly_128_kib_is_read_and_one_byte_more_is_not() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("m1", "alice", "general").await;
    let frame = |len: usize| {
        let (head, tail) = (r#"{"action":"dance","pad":""#, r#""}"#);
        format!("{head}{}{tail}", "a".repeat(len - head.len() - tail.len()))
    };
    let max = common::names::MAX_PAYLOAD_BYTES;
    for (len, status, code) in [
        (max, StatusCode::BAD_REQUEST, "unknown_action"),
        (max + 1, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
    ] {
        let body = frame(len);
        assert_eq!(body.len(), len);
        let r = ingest
            .callback("default", "m1")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{len} bytes");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], code);
    }
}

#[tokio::test]
async fn a_token_with_a_channel_list_moves_only_among_its_channels() {
    let ingest = Ingest::start(&[]).await;
    let token = ingest.token("alice", Some(&["room-1", "room-3"])).await;
    assert_eq!(
        ingest
            .connect("l1", &format!("channel=room-1&ws_token={token}"))
            .await,
        StatusCode::OK
    );
    let (status, _) = ingest
        .message(
            "l1",
            json!({"action": "change_channel", "channel": "room-3"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ingest.smembers(&K().channel("room-3")).await, ["l1"]);
    let (status, body) = ingest
        .message(
            "l1",
            json!({"action": "change_channel", "channel": "room-2"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("permission_denied"))
    );
    assert_eq!(ingest.smembers(&K().channel("room-3")).await, ["l1"]);
}

#[tokio::test]
async fn callbacks_are_counted_by_route_kind_and_outcome() {
    let ingest = Ingest::start(&["--chat-channel=general"]).await;
    ingest.join("k1", "alice", "general").await;
    let (status, _) = ingest
        .message("k1", json!({"action": "chat_message", "message": "hi"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // A custom route is a message route too.
    let r = ingest
        .callback("custom-route", "k1")
        .body(json!({"action": "nope"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = ingest.callback("disconnect", "k1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = ingest
        .http
        .get(format!("{}/metrics", ingest.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"fanout_callbacks_total{outcome="ok",route="connect"} 1"#,
        r#"fanout_callbacks_total{outcome="ok",route="message"} 1"#,
        r#"fanout_callbacks_total{outcome="unknown_action",route="message"} 1"#,
        r#"fanout_callbacks_total{outcome="ok",route="disconnect"} 1"#,
    ] {
        assert!(text.contains(series), "{series} in {text}");
    }
}

/// A record registered before the field names were shortened (a rolling upgrade) keeps working: a
/// repeated `$connect` recognises its full token hash, its messages pass the gate, and moving it writes
/// the new channel under the short name, which wins over the old one.
#[tokio::test]
async fn a_record_with_the_older_field_names_still_works() {
    let ingest = Ingest::start(&[]).await;
    let token = ingest.token("ada", None).await;
    let id = "Old1=";
    let mut redis = ingest.redis().await;
    let _: () = redis::cmd("DEL")
        .arg(K().token(&token))
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(K().connection(id))
        .arg(f::legacy::CHANNEL)
        .arg("general")
        .arg(f::legacy::SUBJECT)
        .arg("ada")
        .arg(f::legacy::API_ID)
        .arg(crate::support::API_ID)
        .arg(f::legacy::STAGE)
        .arg("test")
        .arg(f::legacy::CONNECTED_AT_MS)
        .arg(1_000)
        .arg(f::legacy::SOURCE_IP)
        .arg("203.0.113.7")
        .arg(f::legacy::TOKEN_HASH)
        .arg(common::keys::token_hash(&token))
        .query_async(&mut redis)
        .await
        .unwrap();
    for set in [
        K().channel("general"),
        K().subject("ada"),
        K().all_bucket_of(id),
    ] {
        let _: () = redis::cmd("SADD")
            .arg(set)
            .arg(id)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    // The token is spent; the record's full hash recognises the same $connect again.
    assert_eq!(
        ingest
            .connect(id, &format!("channel=general&ws_token={token}"))
            .await,
        StatusCode::OK
    );
    assert_eq!(
        ingest
            .connect(id, &format!("channel=general&ws_token={token}x"))
            .await,
        StatusCode::BAD_REQUEST,
        "another token is refused"
    );
    let (status, _) = ingest
        .message(
            id,
            json!({"action": "change_channel", "channel": "support"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ingest.smembers(&K().channel("support")).await, [id]);
    assert!(ingest.smembers(&K().channel("general")).await.is_empty());
    let channel: [Option<String>; 2] = redis::cmd("HMGET")
        .arg(K().connection(id))
        .arg(f::CHANNEL)
        .arg(f::legacy::CHANNEL)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(channel, [Some("support".to_owned()), None]);
    let (status, _) = ingest
        .message(id, json!({"action": "change_channel", "channel": "random"}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "moved from the short name's channel"
    );
    assert!(ingest.smembers(&K().channel("support")).await.is_empty());
    assert_eq!(ingest.smembers(&K().channel("random")).await, [id]);
    let payloads: Vec<Value> = ingest.jobs().await.iter().map(payload).collect();
    assert_eq!(
        payloads,
        [
            json!({"type": "channel_changed", "channel": "support"}),
            json!({"type": "channel_changed", "channel": "random"}),
        ]
    );
}

/// With `FANOUT_LEGACY_RECORD_FIELDS` (the first step of an upgrade, while replicas that read only the
/// earlier names still run) records are written under those names with the full token hash, and a move
/// keeps them there.
#[tokio::test]
async fn legacy_record_fields_are_written_under_the_earlier_names() {
    let ingest = Ingest::start(&["--legacy-record-fields"]).await;
    let token = ingest.token("ada", None).await;
    let id = "Leg1=";
    let query = format!("channel=general&ws_token={token}");
    assert_eq!(ingest.connect(id, &query).await, StatusCode::OK);
    let record = || async {
        let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(K().connection(id))
            .query_async(&mut ingest.redis().await)
            .await
            .unwrap();
        hash
    };
    let hash = record().await;
    for (short, _) in f::WITH_LEGACY {
        assert!(!hash.contains_key(short), "{short} in {hash:?}");
    }
    assert_eq!(hash[f::legacy::CHANNEL], "general");
    assert_eq!(hash[f::legacy::SUBJECT], "ada");
    assert_eq!(hash[f::legacy::API_ID], crate::support::API_ID);
    assert_eq!(
        hash[f::legacy::TOKEN_HASH],
        common::keys::token_hash(&token)
    );
    assert_eq!(ingest.connect(id, &query).await, StatusCode::OK, "again");
    let (status, _) = ingest
        .message(
            id,
            json!({"action": "change_channel", "channel": "support"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let hash = record().await;
    assert_eq!(hash[f::legacy::CHANNEL], "support");
    assert!(!hash.contains_key(f::CHANNEL), "{hash:?}");
    assert_eq!(ingest.smembers(&K().channel("support")).await, [id]);
}
