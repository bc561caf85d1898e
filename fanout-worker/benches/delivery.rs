//! Benchmarks of the worker (not tests; `cargo bench -p fanout-worker`, or `./dev bench`):
//!
//! 1. **Delivery paths.** The same number of calls (`BENCH_CALLS`, default 20,000; 64 in flight; median
//!    of `BENCH_ROUNDS`, default 5, interleaved rounds, with the spread of the rounds' ratios) against a bare-hyper sink in a child process
//!    answering 200 at once (`test_support::bench::OkSink`), over plain HTTP and over TLS (HTTP/1.1):
//!    plain unsigned hyper POSTs, the worker's dispatch path (governor, in-flight limit, outcome
//!    classification; in a spawned task, as the worker runs each job) with an unsigned POST client (the
//!    path's own cost), with the lean client, and with the AWS SDK client; on a current-thread tokio runtime (every side on one thread), then a runtime
//!    with 2 worker threads. Prints calls/s, this process's CPU per call (process CPU clock), the
//!    ratio to the plain POST, and the peak RSS during the measurement (VmHWM, reset before each).
//!    `BENCH_SKIP_BROADCAST=1` stops after this part; `BENCH_SKIP_PATHS=1` skips it. For a profiler,
//!    `BENCH_ONLY=plain|path|lean|sdk` measures that one client alone (`BENCH_ROUNDS` times, its CPU per
//!    call each round, no ratios), `BENCH_THREADS=1` or `2` one runtime, `BENCH_TRANSPORT=http` or
//!    `https` one transport. `BENCH_SKIP_SDK=1` leaves the AWS SDK out (longer runs of the others).
//! 2. **A 100,000-connection broadcast through the full path** (Redis membership, planner, chunk jobs on
//!    Redis Streams, `fanout-worker` processes) against a sink enforcing API Gateway's default account
//!    throttle (a 10,000/s token bucket with a 5,000 burst), with 1 and with 4 worker processes, against
//!    the theoretical minimum of (100,000 − 5,000) / 10,000 = 9.5 s; plus the share of calls answered 429.
//!    `BENCH_BROADCAST` changes the size.
//!
//! Run as `delivery sink PORT [RATE BURST]`, the binary is the sink (the test suite's Management API
//! server), so that the sink's CPU is not counted as the client's.

#[path = "../tests/worker/support/gateway.rs"]
mod gateway;
mod support;

/// The allocator the `fanout-worker` binary uses (both sides of every ratio run on it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use common::job::{Job, Target, payload_of};
use common::keys::Keyspace;
use common::metrics::WorkerMetrics;
use common::queue::{Queue, QueueOptions};
use common::store::Redis;
use fanout_worker::delivery::{Endpoint, LeanDeliver, SdkDeliver};
use fanout_worker::dispatch::{Dispatcher, Op};
use fanout_worker::governor::Governor;
use fanout_worker::recipients::Recipient;
use fanout_worker::retry::RetryPolicy;
use http_body_util::Full;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::bench::{OkSink, Spread, cpu_time, env_or, peak_rss_mib, reset_peak_rss};
use test_support::{RedisServer, free_port};
use tokio_util::sync::CancellationToken;

const IN_FLIGHT: usize = 64;

fn main() {
    OkSink::serve_if_child();
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
    let calls: usize = env_or("BENCH_CALLS", 20_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let ok_sink = OkSink::start();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ok_sink.cert_der.clone(),
        ))
        .unwrap();
    let tls = Tls {
        roots,
        pem: ok_sink.cert_pem.clone(),
    };
    let (http_port, https_port) = (ok_sink.http_port, ok_sink.https_port);
    let paths = std::env::var_os("BENCH_SKIP_PATHS").is_none();
    let only_threads: Option<usize> = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    for threads in [1, 2]
        .into_iter()
        .filter(|t| paths && only_threads.is_none_or(|o| o == *t))
    {
        // One thread is a current-thread runtime: every side of the comparison really on one thread.
        let runtime = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(threads);
            b
        }
        .enable_all()
        .build()
        .unwrap();
        runtime.block_on(delivery_paths(
            calls,
            rounds,
            threads,
            (http_port, https_port),
            &tls,
        ));
    }
    drop(ok_sink);
    if std::env::var_os("BENCH_SKIP_BROADCAST").is_some() {
        return;
    }
    rt.block_on(async {
        let size: usize = env_or("BENCH_BROADCAST", 100_000);
        for workers in [1, 4] {
            broadcast(size, workers).await;
        }
    });
}

async fn sink(args: &[String]) {
    let port: u16 = args[0].parse().unwrap();
    let server = gateway::MgmtServer::start_on(port).await;
    server.forget_bodies();
    server.skip_signature_checks();
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Plain,
    PlainPath,
    Lean,
    Sdk,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Plain, Kind::PlainPath, Kind::Lean, Kind::Sdk];
    /// The kind `BENCH_ONLY` names.
    fn only() -> Option<Kind> {
        let only = std::env::var("BENCH_ONLY").ok()?;
        Some(match only.as_str() {
            "plain" => Kind::Plain,
            "path" => Kind::PlainPath,
            "lean" => Kind::Lean,
            "sdk" => Kind::Sdk,
            other => panic!("BENCH_ONLY={other}: plain, path, lean or sdk"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain unsigned hyper POST",
            Kind::PlainPath => "worker path, plain unsigned POST client",
            Kind::Lean => "worker path, lean client (mgmt-client)",
            Kind::Sdk => "worker path, AWS SDK client",
        }
    }
}

/// An unsigned hyper POST behind the worker's `Deliver` seam: the worker path with a client that costs
/// what a bare POST costs, so `lean / this` is the lean client's own price inside the worker.
#[derive(Debug)]
struct PlainDeliver(PlainClient);

#[async_trait::async_trait]
impl fanout_worker::delivery::Deliver for PlainDeliver {
    async fn post(
        &self,
        endpoint: &Endpoint,
        connection_id: &str,
        payload: Bytes,
    ) -> fanout_worker::delivery::Outcome {
        let req = http::Request::post(format!("{}/@connections/{connection_id}", endpoint.url))
            .header("content-type", "application/octet-stream")
            .body(Full::new(payload))
            .unwrap();
        match self.0.request(req).await {
            Ok(res) => {
                let status = res.status().as_u16();
                use http_body_util::BodyExt;
                let _ = res.into_body().collect().await;
                fanout_worker::delivery::outcome_of_status(status)
            }
            Err(_) => fanout_worker::delivery::Outcome::Retryable(
                fanout_worker::delivery::RetryReason::Other,
            ),
        }
    }

    async fn delete(&self, _: &Endpoint, _: &str) -> fanout_worker::delivery::Outcome {
        fanout_worker::delivery::Outcome::Sent
    }
}

type PlainClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Everything one transport's measurements need.
struct Paths {
    base: String,
    plain: PlainClient,
    plain_path: Arc<Dispatcher>,
    lean: Arc<Dispatcher>,
    sdk: Arc<Dispatcher>,
}

fn dispatcher(redis: Redis, deliver: Arc<dyn fanout_worker::delivery::Deliver>) -> Arc<Dispatcher> {
    let metrics = WorkerMetrics::new();
    Arc::new(Dispatcher {
        deliver,
        governor: Arc::new(Governor::new(
            redis,
            &Keyspace::default(),
            "bench",
            1_000_000,
            1_000_000,
            metrics.clone(),
        )),
        in_flight: fanout_worker::lanes::Shares::new(IN_FLIGHT, 0),
        gate: Arc::new(fanout_worker::lanes::TokenGate::new()),
        connect_grace: Duration::ZERO,
        retry: RetryPolicy {
            retries: 0,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        },
        metrics,
    })
}

impl Paths {
    async fn new(base: &str, redis: &Redis, roots: &rustls::RootCertStore, pem: &str) -> Self {
        let tls =
            mgmt_client::client::tls_config(&mgmt_client::TlsRoots::Custom(roots.clone())).unwrap();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let plain =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(IN_FLIGHT)
                .build(connector);

        let lean = LeanDeliver::with_options(
            mgmt_client::ClientOptions {
                call_timeout: Duration::from_secs(5),
                max_in_flight_per_endpoint: IN_FLIGHT,
                // As `LeanDeliver::new` does: the dispatcher's in-flight slots bound the calls.
                caller_bounds_in_flight: true,
                tls_roots: mgmt_client::TlsRoots::Custom(roots.clone()),
                ..mgmt_client::ClientOptions::default()
            },
            mgmt_client::CredentialsSource::fixed(
                mgmt_client::SigningCredentials::new("AKIDEXAMPLE", "secret", None).unwrap(),
            ),
        )
        .unwrap();

        use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(
                tls::TlsContext::builder()
                    .with_trust_store(tls::TrustStore::empty().with_pem_certificate(pem.as_bytes()))
                    .build()
                    .unwrap(),
            )
            .build_https();
        let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "bench",
            ))
            .region(aws_config::Region::new("us-east-1"))
            .http_client(http_client)
            .load()
            .await;
        Self {
            base: base.to_owned(),
            plain_path: dispatcher(redis.clone(), Arc::new(PlainDeliver(plain.clone()))),
            plain,
            lean: dispatcher(redis.clone(), Arc::new(lean)),
            sdk: dispatcher(
                redis.clone(),
                Arc::new(SdkDeliver::new(sdk_config, Duration::from_secs(5))),
            ),
        }
    }

    /// `calls` deliveries with `kind`, 64 in flight; (calls/s, CPU µs per call, peak RSS MiB).
    async fn measure(&self, kind: Kind, calls: usize, round: usize) -> (f64, f64, f64) {
        let payload = Bytes::from(format!(
            r#"{{"type":"system","message":"{}"}}"#,
            "x".repeat(70)
        ));
        let dispatcher = match kind {
            Kind::Plain => None,
            Kind::PlainPath => Some(&self.plain_path),
            Kind::Lean => Some(&self.lean),
            Kind::Sdk => Some(&self.sdk),
        };
        let recipients: Vec<Recipient> = match dispatcher {
            None => Vec::new(),
            Some(_) => {
                let endpoint = Endpoint {
                    url: Arc::from(format!("{}/bench", self.base)),
                    region: Arc::from("us-east-1"),
                };
                (0..calls)
                    .map(|i| Recipient {
                        id: format!("conn-{round}-{i}="),
                        endpoint: endpoint.clone(),
                        channel: None,
                        subject: None,
                        connected_at_ms: None,
                    })
                    .collect()
            }
        };
        reset_peak_rss();
        let (cpu0, t0) = (cpu_time(), Instant::now());
        match dispatcher {
            None => plain(&self.plain, &self.base, calls, &payload).await,
            Some(d) => {
                // In a task of its own, as the worker runs each job (on a worker thread of the
                // runtime, not on the thread that blocks on the runtime).
                let d = d.clone();
                let tally = tokio::spawn(async move {
                    d.run(recipients, Op::Post(payload), &CancellationToken::new())
                        .await
                })
                .await
                .unwrap();
                assert_eq!(tally.sent as usize, calls, "every call answered 200");
            }
        }
        let (wall, cpu) = (t0.elapsed(), cpu_time() - cpu0);
        (
            calls as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / calls as f64,
            peak_rss_mib(),
        )
    }
}

/// CPU per delivery and deliveries per second of the three paths, over HTTP and TLS, on a tokio runtime
/// with `threads` worker threads (the caller builds it).
async fn delivery_paths(calls: usize, rounds: usize, threads: usize, sink: (u16, u16), tls: &Tls) {
    println!(
        "\n== delivery paths: {calls} calls per measurement, {IN_FLIGHT} in flight, {threads} tokio worker thread(s), median of {rounds} interleaved rounds =="
    );
    println!(
        "  {:<6} {:<42} {:>9} {:>12} {:>9} {:>13} {:>11} {:>13}",
        "", "client", "calls/s", "CPU µs/call", "vs plain", "(spread)", "vs path", "peak RSS MiB"
    );
    let redis_server = RedisServer::start();
    let redis = Redis::connect(&redis_server.url()).await.unwrap();
    let only_transport = std::env::var("BENCH_TRANSPORT").ok();
    for (transport, base) in [
        ("http", format!("http://localhost:{}", sink.0)),
        ("https", format!("https://localhost:{}", sink.1)),
    ] {
        if only_transport.as_deref().is_some_and(|t| t != transport) {
            continue;
        }
        let paths = Paths::new(&base, &redis, &tls.roots, &tls.pem).await;
        if let Some(kind) = Kind::only() {
            paths.measure(kind, 500, 99).await;
            for round in 0..rounds {
                let (rate, cpu, _) = paths.measure(kind, calls, round).await;
                println!(
                    "  {transport:<6} {:<42} {rate:>9.0} {cpu:>12.1}",
                    kind.name()
                );
            }
            continue;
        }
        // Plain first and the plain-client path second: the ratios are to them.
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::Sdk || std::env::var_os("BENCH_SKIP_SDK").is_none())
            .collect();
        for &kind in &kinds {
            paths.measure(kind, 500, 99).await; // warm-up: connections, keys, allocator
        }
        let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); kinds.len()];
        for round in 0..rounds {
            for (i, &kind) in kinds.iter().enumerate() {
                results[i].push(paths.measure(kind, calls, round).await);
            }
        }
        let median = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(f64::total_cmp);
            x[x.len() / 2]
        };
        let plain_cpu = median(&results[0], |r| r.1);
        let path_cpu = median(&results[1], |r| r.1);
        for (&kind, r) in kinds.iter().zip(&results) {
            let cpu = median(r, |r| r.1);
            // Each round's ratio to the plain POST of the same round: their spread.
            let ratios: Vec<f64> = r.iter().zip(&results[0]).map(|(x, p)| x.1 / p.1).collect();
            let spread = Spread::of(&ratios);
            println!(
                "  {:<6} {:<42} {:>9.0} {:>12.1} {:>8.2}× {:>13} {:>10.2}× {:>13.1}",
                transport,
                kind.name(),
                median(r, |r| r.0),
                cpu,
                cpu / plain_cpu,
                format!("{:.2}–{:.2}", spread.min, spread.max),
                cpu / path_cpu,
                median(r, |r| r.2),
            );
        }
    }
}

/// The sink's generated certificate, as the clients trust it.
struct Tls {
    roots: rustls::RootCertStore,
    pem: String,
}

async fn plain(client: &PlainClient, base: &str, calls: usize, payload: &Bytes) {
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
    support::register_channel(&redis, "b", size, true).await;
    let queue_url = format!("{}?queue=jobs", redis_server.url());
    let (mut children, _ports) = support::start_workers(
        &redis_server.url(),
        &queue_url,
        &base,
        workers,
        &[
            "--account-rate-per-sec=10000".to_owned(),
            "--account-burst=5000".to_owned(),
            "--rate-headroom-percent=0".to_owned(),
        ],
    )
    .await;
    let queue =
        common::queue::streams::StreamQueue::new(redis.clone(), "jobs", QueueOptions::default())
            .await
            .unwrap();
    let http = reqwest::Client::new();
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
