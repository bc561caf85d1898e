//! The contract with the AWS CLI (`aws apigatewaymanagementapi ... --endpoint-url`), the tool operators
//! reach for first: post, get and delete work against a live connection, and an unknown id is reported as
//! `GoneException`. The CLI comes from `.venv` (`./dev test` installs it).

use crate::support::*;
use std::path::PathBuf;
use tokio_tungstenite::tungstenite::Message;

fn aws_cli() -> PathBuf {
    let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/aws");
    assert!(
        cli.exists(),
        "the AWS CLI is not in .venv: run the suite with ./dev test, which installs it"
    );
    cli
}

async fn aws(endpoint: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(aws_cli())
        .arg("apigatewaymanagementapi")
        .args(args)
        .args([
            "--endpoint-url",
            endpoint,
            "--region",
            "us-east-1",
            "--output",
            "json",
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .expect("the AWS CLI runs")
}

#[tokio::test]
async fn the_aws_cli_posts_gets_and_deletes() {
    let backend = Backend::start().await;
    let gw = gateway(&backend, &[]).await;
    let mut client = connect(&gw, &backend).await;
    let endpoint = gw.management_endpoint.clone();
    // In one argument: an id may start with '-', which the CLI would take for an option.
    let id_arg = format!("--connection-id={}", client.id);

    let out = aws(
        &endpoint,
        &["post-to-connection", &id_arg, "--data", "from the cli"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        next_frame(&mut client.ws).await,
        Message::text("from the cli")
    );

    let out = aws(&endpoint, &["get-connection", &id_arg]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("JSON from get-connection");
    assert!(
        info["ConnectedAt"].is_string() && info["Identity"]["SourceIp"].is_string(),
        "{info}"
    );

    let out = aws(
        &endpoint,
        &[
            "post-to-connection",
            "--connection-id",
            "R0oXAdfD0kwCH6w=",
            "--data",
            "x",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GoneException"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = aws(&endpoint, &["delete-connection", &id_arg]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    backend.wait_for_route("disconnect", &client.id).await;
}
