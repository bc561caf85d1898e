//! A socket's life: `$connect` (what it carries, and refusals), the limits and timers that close a socket,
//! `$disconnect` after every kind of close, and graceful shutdown.

use crate::support::*;
use common::gateways::headers;
use common::names::ConnectionId;
use futures::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[tokio::test]
async fn connect_forwards_query_and_headers_and_every_route_carries_the_mapped_headers() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let query = "channel=room-1&ws_token=abc%20def&next=%2Fa%3Fb%3D1";
    let mut request = format!("{}?{query}", gw.ws_url)
        .into_client_request()
        .unwrap();
    let sent = request.headers_mut();
    sent.insert("origin", "https://app.example.com".parse().unwrap());
    sent.insert("cookie", "session=s1; theme=dark".parse().unwrap());
    sent.insert("user-agent", "test-browser/1.0".parse().unwrap());
    sent.insert(
        "sec-websocket-protocol",
        "chat.v1, chat.v0".parse().unwrap(),
    );
    sent.insert("connectionid", "forged".parse().unwrap());
    sent.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
    sent.insert("x-ws-source-ip", "6.6.6.6".parse().unwrap());
    let (mut ws, response) = connect_async(request).await.expect("handshake");
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");

    let connect = backend
        .requests("connect")
        .pop()
        .expect("$connect was called");
    assert_eq!(connect.method, http::Method::POST);
    assert_eq!(connect.path, "/ws/connect");
    assert_eq!(
        connect.query.as_deref(),
        Some(query),
        "query passed unchanged"
    );
    let id = connect.connection_id().to_owned();
    assert_eq!(id.len(), 16, "{id}");
    assert!(
        id.ends_with('=') && ConnectionId::parse(&id).is_ok(),
        "{id}"
    );
    for (name, value) in [
        (headers::API_ID, API_ID),
        (headers::GATEWAY_SECRET, SECRET),
        (headers::FORWARDED_FOR, "127.0.0.1"),
        (headers::SOURCE_IP, "127.0.0.1"),
        ("X-Forwarded-Proto", "https"),
        ("User-Agent", "test-browser/1.0"),
        (headers::ORIGIN, "https://app.example.com"),
        ("Cookie", "session=s1; theme=dark"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "chat.v1, chat.v0"),
    ] {
        assert_eq!(connect.header(name), Some(value), "{name} on $connect");
    }
    assert!(connect.header("Sec-WebSocket-Key").is_some());
    assert!(
        connect
            .header("X-Amzn-Trace-Id")
            .is_some_and(|t| t.starts_with("Root=1-"))
    );
    assert_eq!(
        connect.header("upgrade"),
        None,
        "hop-by-hop headers are not forwarded"
    );

    ws.send(Message::text(r#"{"action":"x"}"#)).await.unwrap();
    let message = backend.wait_for_route("default", &id).await;
    ws.close(None).await.unwrap();
    let disconnect = backend.wait_for_route("disconnect", &id).await;
    for call in [&message, &disconnect] {
        for (name, value) in [
            (headers::API_ID, API_ID),
            (headers::GATEWAY_SECRET, SECRET),
            (headers::FORWARDED_FOR, "127.0.0.1"),
            (headers::SOURCE_IP, "127.0.0.1"),
            ("User-Agent", "test-browser/1.0"),
        ] {
            assert_eq!(
                call.header(name),
                Some(value),
                "{name} on /ws/{}",
                call.route
            );
        }
        assert_eq!(
            call.header(headers::ORIGIN),
            None,
            "only $connect carries the handshake's headers"
        );
        assert_eq!(call.query, None);
    }
    assert_eq!(message.body.as_ref(), br#"{"action":"x"}"#);
    assert!(disconnect.body.is_empty());
}

#[tokio::test]
async fn gateway_user_agent_mode_sends_api_gateways_own() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &["--integration-user-agent", "gateway"]).await;
    let client = connect(&gw, &backend).await;
    let connect = backend.wait_for_route("connect", &client.id).await;
    assert_eq!(
        connect.header("user-agent"),
        Some(format!("AmazonAPIGateway_{API_ID}").as_str())
    );
}

#[tokio::test]
async fn a_non_2xx_connect_refuses_the_handshake_with_its_status() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    backend.set_connect_status(401);
    let token = unique_token();
    let url = format!("{}?channel=room&ws_token={token}", gw.ws_url);
    match connect_async(url.as_str()).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 401);
            assert_eq!(response.body().as_deref(), Some(&b"connect answer"[..]));
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    backend.set_connect_status(503);
    match connect_async(url.as_str()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    let refused: Vec<String> = backend
        .requests("connect")
        .iter()
        .map(|r| r.connection_id().to_owned())
        .collect();
    assert_eq!(refused.len(), 2);

    // A refused connection does not exist: PostToConnection gets 410, and no $disconnect is owed. (The
    // accepted connection's $disconnect below arriving first shows none was queued before it.)
    let post = http()
        .post(connection_url(&gw, &refused[0]))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 410);
    backend.set_connect_status(200);
    let mut client = connect(&gw, &backend).await;
    client.ws.close(None).await.unwrap();
    backend.wait_for_route("disconnect", &client.id).await;
    assert!(
        backend
            .requests("disconnect")
            .iter()
            .all(|r| !refused.contains(&r.connection_id().to_owned()))
    );
}

#[tokio::test]
async fn an_unreachable_integration_refuses_with_502() {
    let backend = Backend::start().await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{closed_port}/ws");
    let gw = gateway(&backend, &["--integration-base", &base]).await;
    match connect_async(gw.ws_url.as_str()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 502),
        other => panic!("expected 502, got {other:?}"),
    }
}

#[tokio::test]
async fn the_stage_path_and_the_root_both_accept_and_another_path_is_forbidden() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let root = format!("ws://{}/", gw.ws_addr);
    assert!(connect_async(root.as_str()).await.is_ok());
    let other = format!("ws://{}/prod", gw.ws_addr);
    match connect_async(other.as_str()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn disconnect_follows_a_client_close() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    client.ws.close(None).await.unwrap();
    // The server answers the close handshake, then the stream ends.
    assert!(matches!(
        next_frame(&mut client.ws).await,
        Message::Close(_)
    ));
    let disconnect = backend.wait_for_route("disconnect", &client.id).await;
    assert_eq!(disconnect.path, "/ws/disconnect");
    let get = http()
        .get(connection_url(&gw, &client.id))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 410);
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009_and_fragmented_messages_up_to_the_payload_limit_pass()
 {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;

    // Exactly 32 KiB in one frame is allowed.
    client
        .ws
        .send(Message::text("a".repeat(32_768)))
        .await
        .unwrap();
    let at_limit = backend.wait_for_route("default", &client.id).await;
    assert_eq!(at_limit.body.len(), 32_768);

    // 100,000 bytes in four 25,000-byte frames is one message under 128 KiB.
    let payload = "b".repeat(100_000);
    send_fragmented(&mut client.ws, payload.as_bytes(), 25_000).await;
    let fragmented = backend
        .wait_for(|r| {
            r.route == "default" && r.connection_id() == client.id && r.body.len() == 100_000
        })
        .await;
    assert_eq!(fragmented.body.as_ref(), payload.as_bytes());

    client
        .ws
        .send(Message::text("c".repeat(32_769)))
        .await
        .unwrap();
    let close = expect_close(&mut client.ws).await;
    assert_eq!(close.code, CloseCode::Size);
    backend.wait_for_route("disconnect", &client.id).await;
    assert_eq!(
        backend
            .requests("default")
            .iter()
            .filter(|r| r.connection_id() == client.id)
            .count(),
        2,
        "the oversized frame never reached the integration"
    );
}

#[tokio::test]
async fn a_fragmented_message_over_the_payload_limit_closes_with_1009() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    send_fragmented(&mut client.ws, &[b'd'; 140_000], 28_000).await;
    assert_eq!(expect_close(&mut client.ws).await.code, CloseCode::Size);
    backend.wait_for_route("disconnect", &client.id).await;
}

async fn send_fragmented(ws: &mut Ws, payload: &[u8], frame_len: usize) {
    let chunks: Vec<&[u8]> = payload.chunks(frame_len).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(chunk.to_vec(), opcode, i + 1 == chunks.len());
        ws.feed(Message::Frame(frame)).await.unwrap();
    }
    ws.flush().await.unwrap();
}

#[tokio::test]
async fn idle_timeout_closes_with_1001_going_away() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &["--idle-timeout-secs", "0.3"]).await;
    let mut client = connect(&gw, &backend).await;
    let close = expect_close(&mut client.ws).await;
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason.as_str(), "Going away");
    backend.wait_for_route("disconnect", &client.id).await;
}

#[tokio::test]
async fn client_activity_keeps_a_socket_open_until_the_maximum_duration() {
    let backend = Backend::start().await;
    let gw = gateway(
        &backend,
        &["--idle-timeout-secs", "0.5", "--max-duration-secs", "1.5"],
    )
    .await;
    let started = Instant::now();
    let mut client = connect(&gw, &backend).await;
    let mut pings = tokio::time::interval(Duration::from_millis(100));
    let close = tokio::time::timeout(PATIENCE, async {
        loop {
            tokio::select! {
                _ = pings.tick() => client.ws.send(Message::Ping(Vec::new().into())).await.unwrap(),
                frame = client.ws.next() => match frame {
                    Some(Ok(Message::Close(Some(close)))) => return close,
                    Some(Ok(_)) => continue,
                    other => panic!("unexpected {other:?}"),
                },
            }
        }
    })
    .await
    .expect("the maximum duration closes the socket");
    finish_close(&mut client.ws).await;
    assert_eq!(close.code, CloseCode::Away);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "closed after {:?}: pings did not count as activity",
        started.elapsed()
    );
    backend.wait_for_route("disconnect", &client.id).await;
}

#[tokio::test]
async fn the_new_connection_limit_answers_429_before_connect() {
    let backend = Backend::start().await;
    let gw = gateway(
        &backend,
        &["--connect-rate", "0.01", "--connect-burst", "1"],
    )
    .await;
    let _first = connect(&gw, &backend).await;
    match connect_async(gw.ws_url.as_str()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(
        backend.requests("connect").len(),
        1,
        "no $connect for a throttled handshake"
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_sends_disconnect() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    let stopped = tokio::spawn(gw.stop());
    let close = expect_close(&mut client.ws).await;
    assert_eq!(close.code, CloseCode::Away);
    drop(client.ws);
    tokio::time::timeout(PATIENCE, stopped)
        .await
        .expect("shutdown finishes")
        .unwrap()
        .expect("clean shutdown");
    // The gateway waited for the $disconnect before it returned.
    assert_eq!(
        backend
            .requests("disconnect")
            .iter()
            .filter(|r| r.connection_id() == client.id)
            .count(),
        1
    );
}
