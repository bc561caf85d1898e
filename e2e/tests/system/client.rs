//! The JS client (`client/fanout.js`) in headless Chromium against the whole local system, through
//! `demo/client-browser-test.mjs`: connect and receive, forced reconnects (the gateway's maximum duration
//! set to seconds) with no gap and no duplicate, recovery that fails with its reason, a token that expired
//! before use, a kick that stops the client instead of starting a reconnect loop, and presence (join and
//! leave events, `presence()`), and a coalescing channel's batch unpacked in order.

use e2e::{API_KEY, Backend, System};
use serde_json::{Value, json};
use std::path::Path;

/// Runs one scenario of the client's browser test against `system`; `settings` are merged with the
/// gateway's URL.
async fn run_scenario(system: &System, scenario: &str, mut settings: Value) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
    assert!(
        demo.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in demo/: run the suite with ./dev test, which installs it"
    );
    settings["ws_url"] = json!(system.ws_url);
    let output = tokio::process::Command::new("node")
        .arg(demo.join("client-browser-test.mjs"))
        .arg(scenario)
        .arg(&system.ingest)
        .arg(API_KEY)
        .arg(settings.to_string())
        .current_dir(&demo)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the client test ({scenario}) failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("client test passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_through_forced_closes_without_gap_or_duplicate() {
    let system = System::start(
        Backend::RedisStreams,
        &["--chat-channel=general"],
        &["--max-duration-secs=3"],
    )
    .await;
    run_scenario(&system, "reconnect", json!({})).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reports_what_cannot_be_recovered_with_the_reason() {
    let system = System::start(Backend::RedisStreams, &["--history-size=3"], &[]).await;
    let settings = json!({
        "redis_url": system.redis.url(),
        "history_key": system.keys.history("general"),
    });
    run_scenario(&system, "lost", settings).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_fetches_a_fresh_token_when_one_expired_before_use() {
    let system = System::start(Backend::RedisStreams, &[], &[]).await;
    let r = system
        .api(reqwest::Method::POST, "/v1/tokens")
        .json(&json!({"subject": "alice", "ttl": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = system.keys.token(&token);
    let redis = redis::Client::open(system.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    system
        .eventually("the token to expire", || {
            let (key, mut redis) = (key.clone(), redis.clone());
            async move {
                !redis::cmd("EXISTS")
                    .arg(&key)
                    .query_async::<bool>(&mut redis)
                    .await
                    .unwrap()
            }
        })
        .await;
    run_scenario(&system, "expired-token", json!({ "expired_token": token })).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_client_stops_and_a_refused_token_ends_its_retries() {
    let system = System::start(Backend::RedisStreams, &[], &[]).await;
    run_scenario(&system, "kick", json!({})).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sees_presence_joins_and_leaves_and_lists_members() {
    let system = System::start(Backend::RedisStreams, &["--presence-channel=general"], &[]).await;
    run_scenario(&system, "presence", json!({})).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_unpacks_a_coalescing_channels_batch_in_order() {
    let system = System::start(Backend::RedisStreams, &["--coalesced-channel=general"], &[]).await;
    let gateway = system
        .management
        .strip_suffix("/local")
        .expect("the management endpoint ends in the stage");
    let settings = json!({ "emulator_url": format!("{gateway}/_emulator") });
    run_scenario(&system, "coalesced", settings).await;
    system.stop().await;
}
