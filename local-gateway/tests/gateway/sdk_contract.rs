//! The contract with the AWS SDK for Rust: with the endpoint URL set to the gateway's stage, the SDK's
//! PostToConnection, GetConnection and DeleteConnection work, and an unknown id is a typed GoneException.

use crate::support::*;
use aws_config::BehaviorVersion;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::{Credentials, Region};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use tokio_tungstenite::tungstenite::Message;

async fn sdk(endpoint: &str) -> Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .endpoint_url(endpoint)
        .load()
        .await;
    Client::new(&config)
}

#[tokio::test]
async fn the_aws_sdk_posts_gets_and_deletes() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    let sdk = sdk(&gw.management_endpoint).await;

    sdk.post_to_connection()
        .connection_id(&client.id)
        .data(Blob::new("from the sdk"))
        .send()
        .await
        .expect("PostToConnection to a live connection");
    assert_eq!(
        next_frame(&mut client.ws).await,
        Message::text("from the sdk")
    );

    let error = sdk
        .post_to_connection()
        .connection_id("R0oXAdfD0kwCH6w=")
        .data(Blob::new("x"))
        .send()
        .await
        .expect_err("an unknown id");
    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_gone_exception()),
        "{error:?}"
    );

    let info = sdk
        .get_connection()
        .connection_id(&client.id)
        .send()
        .await
        .expect("GetConnection");
    assert!(info.connected_at().is_some() && info.last_active_at().is_some());
    let identity = info.identity().expect("identity");
    assert_eq!(identity.source_ip(), Some("127.0.0.1"));

    sdk.delete_connection()
        .connection_id(&client.id)
        .send()
        .await
        .expect("DeleteConnection");
    assert_eq!(expect_close(&mut client.ws).await.code, CloseCode::Normal);
    backend.wait_for_route("disconnect", &client.id).await;
    let error = sdk
        .get_connection()
        .connection_id(&client.id)
        .send()
        .await
        .expect_err("deleted");
    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_gone_exception()),
        "{error:?}"
    );
}
