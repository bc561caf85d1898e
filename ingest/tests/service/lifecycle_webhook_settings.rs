//! Lifecycle webhook settings: a plain-http URL off loopback, a missing or short signing secret, an unknown
//! event kind and out-of-range batch, buffer and retry settings are refused at start-up with one line that
//! names the setting and never shows the secret; the binary exits with status 2.

use crate::lifecycle_webhooks::KEY;

#[test]
fn bad_settings_are_refused_with_the_setting_named() {
    use clap::Parser;
    let check = |extra: &[&str]| -> Result<(), String> {
        let mut args = vec![
            "ingest",
            "--api-gateway=abc/prod",
            "--api-key=k-0123456789abcdef0123456789abcdef",
            "--gateway-secret=g-0123456789abcdef0123456789abcdef",
        ];
        args.extend_from_slice(extra);
        ingest::config::Config::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .validate()
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let secret = format!("--lifecycle-webhook-secret={KEY}");
    let refused = |extra: &[&str], says: &[&str]| {
        let message = check(extra).expect_err("refused");
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(!message.contains(KEY), "no secret in: {message}");
        for part in says {
            assert!(message.contains(part), "{part:?} not in: {message}");
        }
    };
    refused(
        &[
            "--lifecycle-webhook-url=http://hooks.example.com/e",
            &secret,
        ],
        &[
            "FANOUT_LIFECYCLE_WEBHOOK_URL",
            "https://",
            "FANOUT_LIFECYCLE_WEBHOOK_ALLOW_HTTP",
        ],
    );
    refused(
        &["--lifecycle-webhook-url=ftp://x/e", &secret],
        &["FANOUT_LIFECYCLE_WEBHOOK_URL"],
    );
    refused(
        &["--lifecycle-webhook-url=https://hooks.example.com/e"],
        &["FANOUT_LIFECYCLE_WEBHOOK_SECRETS", "required"],
    );
    refused(
        &[
            "--lifecycle-webhook-url=https://hooks.example.com/e",
            "--lifecycle-webhook-secret=short",
        ],
        &["FANOUT_LIFECYCLE_WEBHOOK_SECRETS", "32 characters"],
    );
    refused(
        &[
            "--lifecycle-webhook-url=https://h.example.com/e",
            &secret,
            "--lifecycle-webhook-event=connect,joined",
        ],
        &[
            "FANOUT_LIFECYCLE_WEBHOOK_EVENTS",
            "\"joined\"",
            "channel_occupied",
        ],
    );
    for (flag, setting) in [
        (
            "--lifecycle-webhook-batch-max-events=0",
            "FANOUT_LIFECYCLE_WEBHOOK_BATCH_MAX_EVENTS",
        ),
        (
            "--lifecycle-webhook-flush-interval-ms=0",
            "FANOUT_LIFECYCLE_WEBHOOK_FLUSH_INTERVAL_MS",
        ),
        (
            "--lifecycle-webhook-buffer-events=0",
            "FANOUT_LIFECYCLE_WEBHOOK_BUFFER_EVENTS",
        ),
        (
            "--lifecycle-webhook-max-attempts=21",
            "FANOUT_LIFECYCLE_WEBHOOK_MAX_ATTEMPTS",
        ),
        (
            "--lifecycle-webhook-retry-min-delay-ms=0",
            "FANOUT_LIFECYCLE_WEBHOOK_RETRY_MIN_DELAY_MS",
        ),
    ] {
        refused(
            &[
                "--lifecycle-webhook-url=https://h.example.com/e",
                &secret,
                flag,
            ],
            &[setting],
        );
    }
    // Accepted: https anywhere, http on loopback, http elsewhere when explicitly allowed, and no URL at all.
    for ok in [
        vec![
            "--lifecycle-webhook-url=https://hooks.example.com/e",
            secret.as_str(),
        ],
        vec![
            "--lifecycle-webhook-url=http://127.0.0.1:9/e",
            secret.as_str(),
        ],
        vec![
            "--lifecycle-webhook-url=http://localhost:9/e",
            secret.as_str(),
        ],
        vec!["--lifecycle-webhook-url=http://[::1]:9/e", secret.as_str()],
        vec![
            "--lifecycle-webhook-url=http://hooks.internal/e",
            secret.as_str(),
            "--lifecycle-webhook-allow-http",
        ],
        vec![],
    ] {
        check(&ok).unwrap_or_else(|e| panic!("{ok:?} refused: {e}"));
    }
}

#[test]
fn the_binary_refuses_an_insecure_url_in_one_line_with_status_2() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .env_clear()
        .env("FANOUT_API_GATEWAYS", "abc/prod")
        .env("FANOUT_API_KEYS", "k-0123456789abcdef0123456789abcdef")
        .env(
            "FANOUT_GATEWAY_SECRETS",
            "g-0123456789abcdef0123456789abcdef",
        )
        .env("FANOUT_LIFECYCLE_WEBHOOK_URL", "http://hooks.example.com/e")
        .env("FANOUT_LIFECYCLE_WEBHOOK_SECRETS", KEY)
        .env("FANOUT_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("FANOUT_LIFECYCLE_WEBHOOK_ALLOW_HTTP"),
        "{stderr}"
    );
    assert!(!stderr.contains(KEY), "{stderr}");
}
