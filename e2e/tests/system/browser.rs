//! The chat room page in headless Chromium (Debian's `chromium`, driven by `playwright-core` from npm;
//! `./dev test` installs both) against the whole local system: two pages see each other's messages, a late
//! joiner gets the history, a room change stops the old room's messages, a system broadcast arrives.

use e2e::{API_KEY, Backend, System};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_works_in_a_real_browser() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
    assert!(
        demo.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in demo/: run the suite with ./dev test, which installs it"
    );
    let system = System::start(
        Backend::RedisStreams,
        &["--chat-channel=general,support,random"],
        &[],
    )
    .await;
    let output = tokio::process::Command::new("node")
        .arg(demo.join("chat-browser-test.mjs"))
        .arg(format!("{}/demo/", system.ingest))
        .arg(&system.ingest)
        .arg(API_KEY)
        .current_dir(&demo)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("browser test passed"), "{stdout}");
    system.stop().await;
}
