//! Benchmark: how many Management API posts per second the emulator accepts. A hyper HTTP/1 client keeps
//! a fixed number of `POST /{stage}/@connections/{id}` in flight against virtual connections (so only the
//! emulator's request path is measured, no socket writing) and reports throughput, latency and the CPU
//! each side spent per post.
//!
//! Run with `cargo bench -p local-gateway --bench management_api` (or `./dev bench`). The emulator runs as
//! its own process (the release `local-gateway` binary, which cargo builds for the bench), and a stub
//! integration in this process accepts every `$connect`. Settings: `BENCH_SECONDS` (default 10, after a
//! one-second warm-up), `BENCH_IN_FLIGHT` (64), `BENCH_CONNECTIONS` (1000), `BENCH_PAYLOAD_BYTES` (100),
//! and `BENCH_IN_PROCESS=1` to run the emulator on its own runtime inside this process instead.

use anyhow::{Context, bail};
use axum::Router;
use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode, Uri};
use hyper::body::Body as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::bench::{cpu_time, cpu_time_of};

#[derive(Debug)]
struct Args {
    seconds: f64,
    in_flight: usize,
    connections: usize,
    payload_bytes: usize,
    in_process: bool,
}

impl Args {
    fn from_env() -> Self {
        fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        }
        Self {
            seconds: env("BENCH_SECONDS", 10.0),
            in_flight: env("BENCH_IN_FLIGHT", 64),
            connections: env("BENCH_CONNECTIONS", 1000),
            payload_bytes: env("BENCH_PAYLOAD_BYTES", 100),
            in_process: env("BENCH_IN_PROCESS", 0u8) == 1,
        }
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, String>;

fn main() -> anyhow::Result<()> {
    let args = Args::from_env();
    // The client (and the stub integration) get one thread, so the emulator has the rest of the machine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let stub = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let stub_base = format!("http://{}/ws", stub.local_addr()?);
    tokio::spawn(async move {
        let app = Router::new().fallback(|| async { "{}" });
        axum::serve(stub, app).await
    });

    let emulator = if args.in_process {
        Emulator::in_process(&stub_base)?
    } else {
        Emulator::spawn(&stub_base)?
    };
    let admin = reqwest::Client::builder().no_proxy().build()?;
    wait_until_ready(&admin, &emulator.management).await?;

    let created: serde_json::Value = admin
        .post(format!("{}/_emulator/virtual", emulator.management))
        .json(&serde_json::json!({"count": args.connections, "query": "channel=bench", "concurrency": 64}))
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<String> = created["connection_ids"]
        .as_array()
        .context("no connection ids")?
        .iter()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect();
    if ids.len() != args.connections {
        bail!(
            "only {} of {} virtual connections were created",
            ids.len(),
            args.connections
        );
    }
    println!(
        "{} virtual connections created through $connect in {} ms",
        ids.len(),
        created["elapsed_ms"]
    );
    let uris: Vec<Uri> = ids
        .iter()
        .map(|id| {
            format!(
                "{}/local/@connections/{}",
                emulator.management,
                id.replace('=', "%3D")
            )
            .parse()
            .expect("a valid URI")
        })
        .collect();
    let payload = "x".repeat(args.payload_bytes);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.in_flight)
        .build_http();

    drive(
        &client,
        &uris,
        &payload,
        args.in_flight,
        Duration::from_secs(1),
    )
    .await;
    admin
        .delete(format!("{}/_emulator/virtual/stats", emulator.management))
        .send()
        .await?;
    let cpu_before = (cpu_time_of(emulator.pid), cpu_time());
    let started = Instant::now();
    let result = drive(
        &client,
        &uris,
        &payload,
        args.in_flight,
        Duration::from_secs_f64(args.seconds),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = (cpu_time_of(emulator.pid), cpu_time());
    let stats: serde_json::Value = admin
        .get(format!("{}/_emulator/virtual/stats", emulator.management))
        .send()
        .await?
        .json()
        .await?;

    let mut latencies = result.latencies_us;
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let rate = result.ok as f64 / elapsed;
    println!(
        "{} posts accepted in {elapsed:.1} s: {rate:.0} posts/s ({} in flight, {} virtual connections, {}-byte bodies, emulator {})",
        result.ok,
        args.in_flight,
        args.connections,
        args.payload_bytes,
        if args.in_process {
            "in process"
        } else {
            "as its own process"
        }
    );
    println!(
        "non-200 answers: {}; posts the emulator counted: {}",
        result.other, stats["received"]
    );
    println!(
        "latency: p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    // Process CPU clocks, in nanoseconds.
    let per_post = |before: Duration, after: Duration| {
        let spent = (after - before).as_secs_f64();
        format!(
            "{:.1} µs/post ({:.0}% of a core)",
            spent * 1e6 / result.ok.max(1) as f64,
            spent * 100.0 / elapsed
        )
    };
    if args.in_process {
        println!(
            "CPU, emulator and client together: {}",
            per_post(cpu_before.1, cpu_after.1)
        );
    } else {
        println!(
            "CPU: emulator {}; bench client {}",
            per_post(cpu_before.0, cpu_after.0),
            per_post(cpu_before.1, cpu_after.1)
        );
    }
    drop(emulator);
    Ok(())
}

#[derive(Debug, Default)]
struct DriveResult {
    ok: u64,
    other: u64,
    latencies_us: Vec<u32>,
}

/// Keeps `in_flight` posts going, round robin over `uris`, for `duration`.
async fn drive(
    client: &HttpClient,
    uris: &[Uri],
    payload: &str,
    in_flight: usize,
    duration: Duration,
) -> DriveResult {
    let deadline = Instant::now() + duration;
    let workers = (0..in_flight).map(|worker| async move {
        let mut result = DriveResult::default();
        let mut next = worker;
        while Instant::now() < deadline {
            let request = Request::post(uris[next % uris.len()].clone())
                .body(payload.to_owned())
                .expect("a valid request");
            next += in_flight;
            let sent = Instant::now();
            let Ok(response) = client.request(request).await else {
                result.other += 1;
                continue;
            };
            let status = response.status();
            let mut body = response.into_body();
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                let _: Bytes = frame
                    .ok()
                    .and_then(|f| f.into_data().ok())
                    .unwrap_or_default();
            }
            result.latencies_us.push(sent.elapsed().as_micros() as u32);
            if status == StatusCode::OK {
                result.ok += 1;
            } else {
                result.other += 1;
            }
        }
        result
    });
    let mut total = DriveResult::default();
    for part in futures::future::join_all(workers).await {
        total.ok += part.ok;
        total.other += part.other;
        total.latencies_us.extend(part.latencies_us);
    }
    total
}

async fn wait_until_ready(admin: &reqwest::Client, management: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(response) = admin.get(format!("{management}/metrics")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the emulator did not answer at {management}")
}

/// The emulator under test, stopped when dropped.
struct Emulator {
    /// `http://ADDR` of the management listener.
    management: String,
    pid: u32,
    child: Option<Child>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Emulator {
    fn spawn(stub_base: &str) -> anyhow::Result<Self> {
        let bin = env!("CARGO_BIN_EXE_local-gateway");
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
        };
        let (ws_port, management_port) = (port()?, port()?);
        let child = Command::new(bin)
            .args(["--ws-listen", &format!("127.0.0.1:{ws_port}")])
            .args([
                "--management-listen",
                &format!("127.0.0.1:{management_port}"),
            ])
            .args(["--integration-base", stub_base])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {bin}"))?;
        Ok(Self {
            management: format!("http://127.0.0.1:{management_port}"),
            pid: child.id(),
            child: Some(child),
            stop: None,
        })
    }

    fn in_process(stub_base: &str) -> anyhow::Result<Self> {
        let settings = local_gateway::Config::try_parse_from([
            "local-gateway",
            "--ws-listen",
            "127.0.0.1:0",
            "--management-listen",
            "127.0.0.1:0",
            "--integration-base",
            stub_base,
        ])?
        .validate()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let gateway = local_gateway::LocalGateway::bind(settings)
                    .await
                    .expect("the emulator binds");
                let _ = addr_tx.send(gateway.management_addr());
                let _ = gateway
                    .serve(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().context("the emulator did not start")?;
        Ok(Self {
            management: format!("http://{addr}"),
            pid: std::process::id(),
            child: None,
            stop: Some(stop),
        })
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
