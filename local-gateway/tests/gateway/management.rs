//! The `@connections` Management API over plain HTTP: delivery, GetConnection's shape, DeleteConnection,
//! the typed errors (410, 413, 429, 403) with `x-amzn-ErrorType`, percent-encoded ids, and `/metrics`.

use crate::support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn post_delivers_a_text_frame_and_non_utf8_as_binary() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    let response = http()
        .post(connection_url(&gw, &client.id))
        .body(r#"{"type":"system","message":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.bytes().await.unwrap().len(),
        0,
        "200 with an empty body"
    );
    assert_eq!(
        next_frame(&mut client.ws).await,
        Message::text(r#"{"type":"system","message":"hello"}"#)
    );
    let response = http()
        .post(connection_url(&gw, &client.id))
        .body(vec![0xff, 0x00, 0xfe])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        next_frame(&mut client.ws).await,
        Message::binary(vec![0xff, 0x00, 0xfe])
    );
}

#[tokio::test]
async fn percent_encoded_ids_and_path_are_decoded() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    let encoded = client.id.replace('=', "%3D");
    assert_ne!(encoded, client.id);
    for url in [
        connection_url(&gw, &encoded),
        format!("{}/%40connections/{encoded}", gw.management_endpoint),
    ] {
        let response = http().post(&url).body("encoded").send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(next_frame(&mut client.ws).await, Message::text("encoded"));
    }
}

#[tokio::test]
async fn unknown_ids_get_410_gone_exception() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let client = http();
    for request in [
        client
            .post(connection_url(&gw, "L0SM9cOFvHcCIhw%3D"))
            .body("x"),
        client.get(connection_url(&gw, "L0SM9cOFvHcCIhw%3D")),
        client.delete(connection_url(&gw, "L0SM9cOFvHcCIhw%3D")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 410);
        assert_eq!(error_type(&response), Some("GoneException"));
        assert_eq!(response.text().await.unwrap(), r#"{"message":"Gone"}"#);
    }
}

#[tokio::test]
async fn payloads_over_128_kib_get_413_and_exactly_128_kib_is_delivered() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    let too_large = http()
        .post(connection_url(&gw, &client.id))
        .body(vec![b'x'; 131_073])
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    assert_eq!(error_type(&too_large), Some("PayloadTooLargeException"));
    let at_limit = http()
        .post(connection_url(&gw, &client.id))
        .body(vec![b'y'; 131_072])
        .send()
        .await
        .unwrap();
    assert_eq!(at_limit.status(), 200);
    match next_frame(&mut client.ws).await {
        Message::Text(text) => assert_eq!(text.len(), 131_072),
        other => panic!("expected the 128 KiB frame, got {other:?}"),
    }
}

#[tokio::test]
async fn get_connection_has_the_aws_shape() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            gw.ws_url.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("user-agent", "shape-test/2.0".parse().unwrap());
    let (_ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let id = backend.requests("connect")[0].connection_id().to_owned();
    let response = http().get(connection_url(&gw, &id)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["connectedAt", "identity", "lastActiveAt"]);
    for field in ["connectedAt", "lastActiveAt"] {
        let text = body[field].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(text).is_ok() && text.ends_with('Z'),
            "{field}: {text}"
        );
    }
    assert_eq!(
        body["identity"],
        serde_json::json!({"sourceIp": "127.0.0.1", "userAgent": "shape-test/2.0"})
    );
}

#[tokio::test]
async fn delete_closes_the_socket_then_disconnect_follows_and_the_id_is_gone() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    // A frame posted just before the DELETE still arrives before the close frame.
    let post = http()
        .post(connection_url(&gw, &client.id))
        .body("bye")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    let delete = http()
        .delete(connection_url(&gw, &client.id))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    assert_eq!(next_frame(&mut client.ws).await, Message::text("bye"));
    assert_eq!(expect_close(&mut client.ws).await.code, CloseCode::Normal);
    backend.wait_for_route("disconnect", &client.id).await;
    let after = http()
        .post(connection_url(&gw, &client.id))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 410);
    assert_eq!(error_type(&after), Some("GoneException"));
}

#[tokio::test]
async fn a_wrong_stage_or_path_gets_403_forbidden_exception() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let client = connect(&gw, &backend).await;
    for url in [
        format!(
            "http://{}/prod/@connections/{}",
            gw.management_addr, client.id
        ),
        format!("http://{}/@connections/{}", gw.management_addr, client.id),
        format!("{}/connections/{}", gw.management_endpoint, client.id),
    ] {
        let response = http().post(&url).body("x").send().await.unwrap();
        assert_eq!(response.status(), 403, "{url}");
        assert_eq!(error_type(&response), Some("ForbiddenException"), "{url}");
    }
}

#[tokio::test]
async fn the_account_throttle_answers_429_limit_exceeded() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &["--mgmt-rate", "0.01", "--mgmt-burst", "3"]).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = http()
            .get(connection_url(&gw, "unknown%3D"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert_eq!(error_type(&response), Some("LimitExceededException"));
        }
    }
    assert_eq!(
        statuses,
        [410, 410, 410, 429],
        "a bucket of 3, refilled every 100 s"
    );
}

#[tokio::test]
async fn metrics_count_handshakes_management_calls_and_frames() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    http()
        .post(connection_url(&gw, &client.id))
        .body("m")
        .send()
        .await
        .unwrap();
    next_frame(&mut client.ws).await;
    http()
        .get(connection_url(&gw, "nope"))
        .send()
        .await
        .unwrap();
    let text = http()
        .get(format!("http://{}/metrics", gw.management_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"fanout_emulator_connections_open{kind="socket"} 1"#,
        r#"fanout_emulator_handshakes_total{outcome="accepted"} 1"#,
        r#"fanout_emulator_management_calls_total{operation="post_to_connection",status="200"} 1"#,
        r#"fanout_emulator_management_calls_total{operation="get_connection",status="410"} 1"#,
        r#"fanout_emulator_frames_total{direction="out"} 1"#,
        r#"fanout_emulator_integration_calls_total{outcome="2xx",route="connect"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}
