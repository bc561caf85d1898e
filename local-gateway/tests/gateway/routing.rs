//! Route selection on `$request.body.action`: custom routes, the `$default` fallback for other JSON,
//! non-JSON text and binary frames, and frames forwarded in order with their exact bytes.

use crate::support::*;
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn frames_go_to_the_selected_route_or_default() {
    let backend = Backend::start().await;
    let send_route = format!("sendmessage={}/custom/sendmessage", backend.origin);
    let gw = gateway(&backend, &["--route", &send_route]).await;
    let mut client = connect(&gw, &backend).await;

    let cases: [(Message, &str, &str); 6] = [
        (
            Message::text(r#"{"action":"sendmessage","text":"hi"}"#),
            "/custom/sendmessage",
            "custom route",
        ),
        (
            Message::text(r#"{"action":"other"}"#),
            "/ws/default",
            "unknown action",
        ),
        (
            Message::text(r#"{"handler":"sendmessage"}"#),
            "/ws/default",
            "no action field",
        ),
        (Message::text("sendmessage"), "/ws/default", "non-JSON text"),
        (
            Message::binary(br#"{"action":"sendmessage"}"#.to_vec()),
            "/ws/default",
            "binary frame",
        ),
        (
            Message::text(r#"  {"action":"sendmessage"}"#),
            "/custom/sendmessage",
            "leading whitespace",
        ),
    ];
    for (frame, _, _) in &cases {
        client.ws.send(frame.clone()).await.unwrap();
    }
    // Frames of one connection reach the integration one after another, in order.
    backend
        .wait_for(|r| {
            r.connection_id() == client.id && r.body.as_ref() == br#"  {"action":"sendmessage"}"#
        })
        .await;
    let received: Vec<Recorded> = backend
        .requests("sendmessage")
        .into_iter()
        .chain(backend.requests("default"))
        .collect();
    for (frame, path, why) in &cases {
        let recorded = received
            .iter()
            .find(|r| r.body.as_ref() == frame.clone().into_data().as_ref())
            .unwrap_or_else(|| panic!("{why}: not received"));
        assert_eq!(recorded.path, *path, "{why}");
        assert_eq!(recorded.connection_id(), client.id, "{why}");
    }
}

#[tokio::test]
async fn a_nested_selection_expression_and_default_override() {
    let backend = Backend::start().await;
    let go = format!("go={}/custom/go", backend.origin);
    let default = format!("$default={}/custom/fallback", backend.origin);
    let gw = gateway(
        &backend,
        &[
            "--route",
            &go,
            "--route",
            &default,
            "--route-selection-expression",
            "$request.body.meta.kind",
        ],
    )
    .await;
    let mut client = connect(&gw, &backend).await;
    client
        .ws
        .send(Message::text(r#"{"meta":{"kind":"go"}}"#))
        .await
        .unwrap();
    client
        .ws
        .send(Message::text(r#"{"action":"go"}"#))
        .await
        .unwrap();
    let go = backend.wait_for_route("go", &client.id).await;
    assert_eq!(go.body.as_ref(), br#"{"meta":{"kind":"go"}}"#);
    let fallback = backend.wait_for_route("fallback", &client.id).await;
    assert_eq!(fallback.body.as_ref(), br#"{"action":"go"}"#);
}
