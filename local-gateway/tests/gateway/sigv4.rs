//! SigV4 verification on the Management API (`--verify-sigv4`): the AWS SDK and the lean client signing
//! with the configured credentials are accepted for every operation; a request signed with the wrong
//! secret, an unknown key, the wrong region, an hour ago, or not at all is refused with 403
//! `ForbiddenException` and a `{"message"}` that does not echo the signature, nothing reaches the client,
//! and every refusal is counted by reason in `/metrics`.

use crate::support::*;
use aws_config::BehaviorVersion;
use aws_sdk_apigatewaymanagement::config::{Credentials, Region};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bytes::Bytes;
use mgmt_client::{ClientOptions, CredentialsSource, MgmtClient, MgmtError, SigningCredentials};
use std::time::{Duration, SystemTime};
use tokio_tungstenite::tungstenite::Message;

const ACCESS: &str = "AKIDLOCALGATEWAY";
const SECRET_KEY: &str = "local-gateway-secret-key";
const REGION: &str = "eu-west-1";

async fn verifying_gateway(backend: &Backend) -> local_gateway::RunningGateway {
    let flag = format!("--verify-sigv4={ACCESS}:{SECRET_KEY}");
    gateway(backend, &[&flag, "--verify-sigv4-region", REGION]).await
}

async fn sdk(endpoint: &str, secret: &str) -> aws_sdk_apigatewaymanagement::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(ACCESS, secret, None, None, "static"))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_apigatewaymanagement::Client::new(&config)
}

fn lean(access: &str, secret: &str) -> MgmtClient {
    MgmtClient::new(
        ClientOptions::default(),
        CredentialsSource::fixed(SigningCredentials::new(access, secret, None).unwrap()),
    )
    .unwrap()
}

/// `fanout_emulator_signatures_refused_total{reason="…"}` from `/metrics` (0 when absent).
async fn refused(gw: &local_gateway::RunningGateway, reason: &str) -> u64 {
    let text = http()
        .get(format!("http://{}/metrics", gw.management_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let needle = format!("fanout_emulator_signatures_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn the_sdk_and_the_lean_client_with_the_right_credentials_are_accepted() {
    let backend = Backend::start().await;
    let gw = verifying_gateway(&backend).await;
    let mut client = connect(&gw, &backend).await;

    let sdk = sdk(&gw.management_endpoint, SECRET_KEY).await;
    sdk.post_to_connection()
        .connection_id(&client.id)
        .data(Blob::new("signed by the sdk"))
        .send()
        .await
        .expect("the SDK's PostToConnection verifies");
    assert_eq!(
        next_frame(&mut client.ws).await,
        Message::text("signed by the sdk")
    );
    sdk.get_connection()
        .connection_id(&client.id)
        .send()
        .await
        .expect("the SDK's GetConnection verifies");

    let lean = lean(ACCESS, SECRET_KEY);
    let endpoint = lean.endpoint(&gw.management_endpoint, REGION).unwrap();
    lean.post_to_connection(&endpoint, &client.id, Bytes::from_static(b"signed lean"))
        .await
        .expect("the lean client's PostToConnection verifies");
    assert_eq!(
        next_frame(&mut client.ws).await,
        Message::text("signed lean")
    );
    // An empty body and a binary one sign and verify too.
    lean.post_to_connection(&endpoint, &client.id, Bytes::new())
        .await
        .unwrap();
    lean.get_connection(&endpoint, &client.id)
        .await
        .expect("GetConnection verifies");
    // A gone connection is still a GoneException once the signature passed.
    assert_eq!(
        lean.post_to_connection(&endpoint, "R0oXAdfD0kwCH6w=", Bytes::from_static(b"x"))
            .await,
        Err(MgmtError::Gone)
    );
    lean.delete_connection(&endpoint, &client.id)
        .await
        .expect("DeleteConnection verifies");
    backend.wait_for_route("disconnect", &client.id).await;
    for reason in ["bad_signature", "missing_header", "stale", "wrong_scope"] {
        assert_eq!(refused(&gw, reason).await, 0, "{reason}");
    }
}

#[tokio::test]
async fn wrong_missing_or_stale_signatures_are_refused_with_403_forbidden() {
    let backend = Backend::start().await;
    let gw = verifying_gateway(&backend).await;
    let mut client = connect(&gw, &backend).await;

    // The lean client and the SDK with the wrong secret: a typed ForbiddenException each.
    let wrong = lean(ACCESS, "not-the-secret");
    let endpoint = wrong.endpoint(&gw.management_endpoint, REGION).unwrap();
    assert_eq!(
        wrong
            .post_to_connection(&endpoint, &client.id, Bytes::from_static(b"forged"))
            .await,
        Err(MgmtError::Forbidden)
    );
    assert_eq!(
        wrong.delete_connection(&endpoint, &client.id).await,
        Err(MgmtError::Forbidden)
    );
    let error = sdk(&gw.management_endpoint, "not-the-secret")
        .await
        .post_to_connection()
        .connection_id(&client.id)
        .data(Blob::new("forged by the sdk"))
        .send()
        .await
        .expect_err("a wrong secret");
    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_forbidden_exception()),
        "{error:?}"
    );
    assert_eq!(refused(&gw, "bad_signature").await, 3);

    // Another key, the wrong region.
    let stranger = lean("AKIDSOMEONEELSE", SECRET_KEY);
    let endpoint = stranger.endpoint(&gw.management_endpoint, REGION).unwrap();
    assert_eq!(
        stranger
            .post_to_connection(&endpoint, &client.id, Bytes::from_static(b"x"))
            .await,
        Err(MgmtError::Forbidden)
    );
    assert_eq!(refused(&gw, "unknown_credentials").await, 1);
    let right = lean(ACCESS, SECRET_KEY);
    let elsewhere = right
        .endpoint(&gw.management_endpoint, "us-east-1")
        .unwrap();
    assert_eq!(
        right
            .post_to_connection(&elsewhere, &client.id, Bytes::from_static(b"x"))
            .await,
        Err(MgmtError::Forbidden)
    );
    assert_eq!(refused(&gw, "wrong_scope").await, 1);

    // Unsigned, and signed correctly but an hour ago: the raw answer, as API Gateway words it.
    let url = connection_url(&gw, &client.id);
    let unsigned = http().post(&url).body("unsigned").send().await.unwrap();
    assert_eq!(unsigned.status(), 403);
    assert_eq!(error_type(&unsigned), Some("ForbiddenException"));
    let body: serde_json::Value = unsigned.json().await.unwrap();
    assert_eq!(body["message"], "Missing Authentication Token");
    assert_eq!(refused(&gw, "missing_header").await, 1);

    let parsed = url::Url::parse(&url).unwrap();
    let host = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
    let credentials = SigningCredentials::new(ACCESS, SECRET_KEY, None).unwrap();
    let signature = mgmt_client::Signer::new().sign(
        &credentials,
        REGION,
        &mgmt_client::signer::SigningRequest {
            method: "POST",
            host: &host,
            path: parsed.path(),
            content_type: Some("application/octet-stream"),
            body: b"stale",
        },
        SystemTime::now() - Duration::from_secs(3600),
    );
    let authorization = signature.authorization.to_str().unwrap().to_owned();
    let stale = http()
        .post(&url)
        .header("content-type", "application/octet-stream")
        .header("x-amz-date", signature.x_amz_date)
        .header("authorization", signature.authorization)
        .body("stale")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 403);
    assert_eq!(error_type(&stale), Some("ForbiddenException"));
    let text = stale.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired"),
        "{text}"
    );
    let sent_signature = authorization.rsplit("Signature=").next().unwrap();
    assert_eq!(sent_signature.len(), 64);
    assert!(
        !text.contains(sent_signature),
        "the answer echoes the signature: {text}"
    );
    assert_eq!(refused(&gw, "stale").await, 1);

    // None of it reached the client; a correctly signed post still does, and arrives first.
    right
        .post_to_connection(
            &right.endpoint(&gw.management_endpoint, REGION).unwrap(),
            &client.id,
            Bytes::from_static(b"genuine"),
        )
        .await
        .unwrap();
    assert_eq!(next_frame(&mut client.ws).await, Message::text("genuine"));
}

#[tokio::test]
async fn without_the_flag_nothing_is_checked() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    let response = http()
        .post(connection_url(&gw, &client.id))
        .body("unsigned is fine here")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        next_frame(&mut client.ws).await,
        Message::text("unsigned is fine here")
    );
}
