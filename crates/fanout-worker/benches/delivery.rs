//! Benchmarks of the worker (not tests; `cargo bench -p fanout-worker`, or `./dev bench`):
//!
//! 1. **Delivery path vs. bare POSTs.** The same number of calls (`BENCH_CALLS`, default 20,000; 64 in
//!    flight) against a sink process answering 200 at once: first through the worker's dispatch path
//!    (governor, in-flight limit, AWS SDK client with SigV4, outcome classification), then as plain
//!    unsigned hyper POSTs. Prints calls/s, this process's CPU time per call, and the ratios.
//! 2. **A 100,000-connection broadcast through the full path** (Redis membership, planner, chunk jobs on
//!    Redis Streams, `fanout-worker` processes) against a sink enforcing API Gateway's default account
//!    throttle (a 10,000/s token bucket with a 5,000 burst), with 1 and with 4 worker processes, against
//!    the theoretical minimum of (100,000 − 5,000) / 10,000 = 9.5 s; plus the share of calls answered 429.
//!    `BENCH_BROADCAST` changes the size.
//!
//! Run as `delivery sink PORT [RATE BURST]`, the binary is the sink (the test suite's Management API
//! server), so that the sink's CPU is not counted as the client's.

#[path = "../tests/support/gateway.rs"]
mod gateway;

use bytes::Bytes;
use common::job::{Job, Target, payload_of};
use common::keys::{Keyspace, conn_field as f};
use common::metrics::WorkerMetrics;
use common::queue::{Queue, QueueOptions};
use common::store::Redis;
use fanout_worker::delivery::{Endpoint, SdkDeliver};
use fanout_worker::dispatch::{Dispatcher, Op};
use fanout_worker::governor::Governor;
use fanout_worker::recipients::Recipient;
use fanout_worker::retry::RetryPolicy;
use http_body_util::Full;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::{RedisServer, free_port};
use tokio_util::sync::CancellationToken;

const IN_FLIGHT: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.get(1).map(String::as_str) == Some("sink") {
        rt.block_on(sink(&args[2..]));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches`: nothing to list
    }
    rt.block_on(async {
        let calls = env_usize("BENCH_CALLS", 20_000);
        delivery_vs_plain(calls).await;
        let size = env_usize("BENCH_BROADCAST", 100_000);
        for workers in [1, 4] {
            broadcast(size, workers).await;
        }
    });
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn sink(args: &[String]) {
    let port: u16 = args[0].parse().unwrap();
    let server = gateway::MgmtServer::start_on(port).await;
    server.forget_bodies();
    if let (Some(rate), Some(burst)) = (args.get(1), args.get(2)) {
        server.throttle(rate.parse().unwrap(), burst.parse().unwrap());
    }
    std::future::pending::<()>().await;
}

/// Starts this binary as a sink process and waits until it answers.
async fn start_sink(throttle: Option<(u32, u32)>) -> (Child, String) {
    let port = free_port();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("sink").arg(port.to_string());
    if let Some((rate, burst)) = throttle {
        cmd.arg(rate.to_string()).arg(burst.to_string());
    }
    let child = cmd.stdout(Stdio::null()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base}/__stats")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the sink did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, base)
}

/// This process's CPU time (user + system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // CLK_TCK is 100 on Linux
}

struct Run {
    per_sec: f64,
    cpu_us: f64,
}

fn report(name: &str, calls: usize, wall: Duration, cpu: Duration) -> Run {
    let run = Run {
        per_sec: calls as f64 / wall.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / calls as f64,
    };
    println!(
        "  {name:<34} {calls:>7} calls in {:>6.2} s: {:>8.0} calls/s, {:>6.1} µs CPU per call",
        wall.as_secs_f64(),
        run.per_sec,
        run.cpu_us
    );
    run
}

async fn delivery_vs_plain(calls: usize) {
    println!(
        "\n== delivery path vs. plain POSTs ({calls} calls, {IN_FLIGHT} in flight, sink answers 200) =="
    );
    let (mut sink, base) = start_sink(None).await;
    let redis_server = RedisServer::start();
    let redis = Redis::connect(&redis_server.url()).await.unwrap();
    let metrics = WorkerMetrics::new();
    let base_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            "bench",
        ))
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let dispatcher = Dispatcher {
        deliver: Arc::new(SdkDeliver::new(base_config, Duration::from_secs(5))),
        governor: Arc::new(Governor::new(
            redis,
            &Keyspace::default(),
            "bench",
            1_000_000,
            1_000_000,
            metrics.clone(),
        )),
        in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        retry: RetryPolicy {
            retries: 0,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        },
        metrics,
    };
    let endpoint = Endpoint {
        url: Arc::from(format!("{base}/bench")),
        region: Arc::from("us-east-1"),
    };
    let payload = Bytes::from(format!(
        r#"{{"type":"system","message":"{}"}}"#,
        "x".repeat(70)
    ));
    let recipients = |round: usize| -> Vec<Recipient> {
        (0..calls)
            .map(|i| Recipient {
                id: format!("conn-{round}-{i}="),
                endpoint: endpoint.clone(),
                channel: None,
                subject: None,
            })
            .collect()
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let stop = CancellationToken::new();
    // Warm up both clients (connections, credentials, endpoint resolution).
    dispatcher
        .run(
            recipients(99).into_iter().take(500).collect(),
            Op::Post(payload.clone()),
            &stop,
        )
        .await;
    plain(&client, &base, 500, &payload).await;
    let mut worker_runs = Vec::new();
    let mut plain_runs = Vec::new();
    for round in 0..3 {
        let list = recipients(round);
        let (cpu0, t0) = (cpu_time(), Instant::now());
        let tally = dispatcher.run(list, Op::Post(payload.clone()), &stop).await;
        assert_eq!(tally.sent as usize, calls, "every call answered 200");
        worker_runs.push(report(
            "worker delivery path (AWS SDK)",
            calls,
            t0.elapsed(),
            cpu_time() - cpu0,
        ));
        let (cpu0, t0) = (cpu_time(), Instant::now());
        plain(&client, &base, calls, &payload).await;
        plain_runs.push(report(
            "plain unsigned hyper POST",
            calls,
            t0.elapsed(),
            cpu_time() - cpu0,
        ));
    }
    let median = |runs: &[Run], f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (w_rate, w_cpu) = (
        median(&worker_runs, |r| r.per_sec),
        median(&worker_runs, |r| r.cpu_us),
    );
    let (p_rate, p_cpu) = (
        median(&plain_runs, |r| r.per_sec),
        median(&plain_runs, |r| r.cpu_us),
    );
    println!(
        "  medians: worker {w_rate:.0}/s at {w_cpu:.1} µs CPU; plain {p_rate:.0}/s at {p_cpu:.1} µs CPU"
    );
    println!(
        "  ratio worker/plain: CPU per call {:.2}×, throughput {:.2}×",
        w_cpu / p_cpu,
        w_rate / p_rate
    );
    let _ = sink.kill();
    let _ = sink.wait();
}

async fn plain(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    base: &str,
    calls: usize,
    payload: &Bytes,
) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let client = client.clone();
        let next = next.clone();
        let payload = payload.clone();
        let base = base.to_owned();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls {
                    return;
                }
                let req = http::Request::post(format!("{base}/bench/@connections/plain-{i}%3D"))
                    .header("content-type", "application/octet-stream")
                    .body(Full::new(payload.clone()))
                    .unwrap();
                let res = client.request(req).await.unwrap();
                assert!(res.status().is_success());
                use http_body_util::BodyExt;
                let _ = res.into_body().collect().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn broadcast(size: usize, workers: usize) {
    println!(
        "\n== {size}-connection broadcast, {workers} worker process(es), sink throttled at 10,000/s with a 5,000 burst =="
    );
    let (mut sink, base) = start_sink(Some((10_000, 5_000))).await;
    let redis_server = RedisServer::start();
    let redis = Redis::connect(&redis_server.url()).await.unwrap();
    let keys = Keyspace::default();
    for batch in (0..size).collect::<Vec<_>>().chunks(5_000) {
        let mut pipe = redis::pipe();
        for i in batch {
            let id = format!("b{i:07}AbCdE=");
            pipe.cmd("HSET")
                .arg(keys.connection(&id))
                .arg(f::CHANNEL)
                .arg("big")
                .arg(f::API_ID)
                .arg("bench")
                .arg(f::STAGE)
                .arg("prod")
                .ignore();
            pipe.cmd("SADD").arg(keys.channel("big")).arg(&id).ignore();
            pipe.cmd("SADD")
                .arg(keys.all_bucket_of(&id))
                .arg(&id)
                .ignore();
        }
        pipe.query_async::<()>(&mut redis.clone()).await.unwrap();
    }
    let queue_url = format!("{}?queue=jobs", redis_server.url());
    let ports: Vec<u16> = (0..workers).map(|_| free_port()).collect();
    let mut children: Vec<Child> = ports
        .iter()
        .map(|port| {
            Command::new(env!("CARGO_BIN_EXE_fanout-worker"))
                .arg(format!("--redis-url={}", redis_server.url()))
                .arg(format!("--queue-url={queue_url}"))
                .arg(format!("--api-gateway=bench={base}/prod"))
                .arg(format!("--metrics-listen=127.0.0.1:{port}"))
                .arg("--receive-wait-secs=1")
                .arg("--account-rate-per-sec=10000")
                .arg("--account-burst=5000")
                .arg("--rate-headroom-percent=0")
                .arg("--chunk-size=500")
                .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
                .env("AWS_SECRET_ACCESS_KEY", "secret")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("RUST_LOG", "warn")
                .spawn()
                .unwrap()
        })
        .collect();
    let queue =
        common::queue::streams::StreamQueue::new(redis.clone(), "jobs", QueueOptions::default())
            .await
            .unwrap();
    // Wait until every worker answers on its metrics listener (it has started its pollers by then).
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in &ports {
        while http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the workers did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    http.get(format!("{base}/__reset")).send().await.unwrap();
    let job = Job::post(
        Target::Channel {
            channel: "big".into(),
        },
        payload_of(&serde_json::json!({"type": "system", "message": "x".repeat(70)})),
    );
    let t0 = Instant::now();
    queue.send_batch(std::slice::from_ref(&job)).await.unwrap();
    let (ok, throttled) = loop {
        let stats = http
            .get(format!("{base}/__stats"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut it = stats.split(' ').map(|n| n.parse::<usize>().unwrap());
        let (ok, throttled) = (it.next().unwrap(), it.next().unwrap());
        if ok >= size {
            break (ok, throttled);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "stuck at {ok} of {size}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = t0.elapsed();
    let ideal = (size.saturating_sub(5_000)) as f64 / 10_000.0;
    println!(
        "  delivered {ok} in {:.2} s (theoretical minimum {ideal:.2} s: {:.0}% of it); {throttled} calls answered 429 = {:.2}% of {} calls",
        took.as_secs_f64(),
        ideal / took.as_secs_f64() * 100.0,
        throttled as f64 * 100.0 / (ok + throttled) as f64,
        ok + throttled
    );
    for child in &mut children {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    let _ = sink.kill();
    let _ = sink.wait();
}
