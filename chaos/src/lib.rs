//! The chaos suite's system: the real binaries as processes on free loopback ports — a private
//! `redis-server` (also the Redis Streams queue), `ingest`, the `local-gateway` holding virtual
//! connections that track their payloads, and N `fanout-worker` processes — plus the faults the suite
//! injects into them (kill -9 or SIGTERM of a worker, Redis SIGSTOP, a stall of or 500s from the Management
//! API) and what it measures afterwards:
//! recipients that never got a message (lost) and posts of a payload a connection had already received
//! (duplicates), both counted by the gateway from what it received, not from the workers' own reports.
//!
//! The queue is Redis Streams on that Redis, or SQS on a private moto server ([`Setup::queue`]), which the
//! suite can pause as an unavailable queue backend; Redis can keep an append-only file ([`Setup::aof`]) so
//! that a restart finds its data again.
//!
//! The binaries are built (or found up to date) with `cargo build` of the same profile as the caller, so
//! the suite never runs a stale build. [`full`] says which form runs: the short one CI runs, or the full
//! table `./dev chaos` prints (longer faults).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use test_support::{RedisServer, SqsServer, free_port};

pub const API_KEY: &str = "chaos-api-key-0123456789-abcdefghijklmn";
const SECRET: &str = "chaos-gateway-secret-0123456789-abcdefgh";
/// How long the suite waits for an event before it fails (a guard, never a synchronisation).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The environment variable that selects the full form of the suite (`1`; `./dev chaos` sets it).
pub const FULL_VAR: &str = "FANOUT_CHAOS_FULL";

/// Whether the full form runs (longer faults: minutes rather than seconds), or the short form CI runs.
pub fn full() -> bool {
    std::env::var(FULL_VAR).is_ok_and(|v| v == "1")
}

/// The worker's visibility timeout (its default), which the SQS queue is created with too.
pub const VISIBILITY: Duration = Duration::from_secs(5);

/// Which queue carries the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Redis Streams on the system's Redis.
    RedisStreams,
    /// SQS on a private moto server ([`System::sqs`]).
    Sqs,
}

/// What the system is made of.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Worker processes started at once.
    pub workers: usize,
    /// The fleet's delivery budget, posts a second (burst a tenth of it).
    pub rate: u32,
    /// Recipients per chunk job.
    pub chunk: usize,
    /// The queue backend.
    pub queue: Backend,
    /// Redis keeps an append-only file, written through on every write.
    pub aof: bool,
}

impl Setup {
    /// `workers` workers on Redis Streams, Redis without persistence.
    pub fn new(workers: usize, rate: u32, chunk: usize) -> Self {
        Setup {
            workers,
            rate,
            chunk,
            queue: Backend::RedisStreams,
            aof: false,
        }
    }
}

/// The folder of the built `ingest`, `fanout-worker` and `local-gateway` binaries.
fn binaries() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--locked",
            "-p",
            "ingest",
            "-p",
            "fanout-worker",
            "-p",
            "local-gateway",
            "--bins",
        ]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        // This executable lives in target/<profile>/deps (a test) or target/<profile> (the runner).
        let exe = std::env::current_exe().expect("the executable's path");
        let dir = exe.parent().expect("a folder");
        if dir.ends_with("deps") {
            dir.parent().expect("the profile folder").to_owned()
        } else {
            dir.to_owned()
        }
    })
}

/// One process of the system; killed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
}

impl Process {
    fn spawn(name: &str, args: &[String], env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(binaries().join(name));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.env("FANOUT_LOG_FORMAT", "text").env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}")),
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        signal(self.child.id(), "TERM");
        self.child.wait().ok()?.code()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends a signal (`STOP`, `CONT`, `TERM`) to a process with kill(1).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The system under test.
#[derive(Debug)]
pub struct System {
    pub redis: RedisServer,
    /// The SQS server when the queue is SQS.
    pub sqs: Option<SqsServer>,
    pub ingest: String,
    pub admin: String,
    pub workers: Vec<Process>,
    worker_env: Vec<(&'static str, String)>,
    _ingest: Process,
    _gateway: Process,
    pub http: reqwest::Client,
}

async fn wait_for(url: &str, http: &reqwest::Client) {
    let deadline = Instant::now() + PATIENCE;
    while !matches!(http.get(url).send().await, Ok(r) if r.status().is_success()) {
        assert!(Instant::now() < deadline, "{url} did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl System {
    /// Starts Redis, ingest, the gateway and `workers` workers on Redis Streams, delivering at most
    /// `rate` posts a second in chunks of `chunk` recipients.
    pub async fn start(workers: usize, rate: u32, chunk: usize) -> Self {
        Self::start_with(Setup::new(workers, rate, chunk)).await
    }

    /// Starts the system `setup` describes.
    pub async fn start_with(setup: Setup) -> Self {
        let Setup {
            workers,
            rate,
            chunk,
            queue,
            aof,
        } = setup;
        let redis = if aof {
            RedisServer::start_with_aof()
        } else {
            RedisServer::start()
        };
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let (ingest_port, ws_port, mgmt_port) = (free_port(), free_port(), free_port());
        let ingest = format!("http://127.0.0.1:{ingest_port}");
        let management = format!("http://127.0.0.1:{mgmt_port}/local");
        let (queue, sqs) = match queue {
            Backend::RedisStreams => (format!("{}?queue=jobs", redis.url()), None),
            Backend::Sqs => {
                let sqs = SqsServer::start();
                let url =
                    test_support::create_sqs_queue_at(&sqs.endpoint(), "chaos", VISIBILITY).await;
                (url, Some(sqs))
            }
        };
        let aws = [
            ("AWS_ACCESS_KEY_ID", "chaos".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "chaos".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ];
        let mut shared = vec![
            ("FANOUT_REDIS_URL", redis.url()),
            ("FANOUT_QUEUE_URL", queue),
            ("FANOUT_API_GATEWAYS", format!("local={management}")),
        ];
        shared.extend(aws);
        let mut env = shared.clone();
        env.extend([
            ("FANOUT_LISTEN", format!("127.0.0.1:{ingest_port}")),
            ("FANOUT_GATEWAY_SECRETS", SECRET.into()),
            ("FANOUT_API_KEYS", API_KEY.into()),
            ("FANOUT_PUBLIC_CHANNELS", "chaos".into()),
            ("FANOUT_CONNECT_LIMIT_PER_MINUTE", "1000000".into()),
        ]);
        let ingest_process = Process::spawn("ingest", &[], &env);
        wait_for(&format!("{ingest}/readyz"), &http).await;
        let gateway = Process::spawn(
            "local-gateway",
            &[
                format!("--ws-listen=127.0.0.1:{ws_port}"),
                format!("--management-listen=127.0.0.1:{mgmt_port}"),
                format!("--integration-base={ingest}/ws"),
                "--api-id=local".into(),
                "--stage=local".into(),
                format!("--gateway-secret={SECRET}"),
            ],
            &[],
        );
        let admin = format!("http://127.0.0.1:{mgmt_port}/_emulator");
        wait_for(&format!("{admin}/faults"), &http).await;
        let mut worker_env = shared;
        worker_env.extend([
            ("FANOUT_METRICS_LISTEN", "127.0.0.1:0".into()),
            ("FANOUT_RECEIVE_WAIT_SECS", "1".into()),
            ("FANOUT_CHUNK_SIZE", chunk.to_string()),
            ("FANOUT_ACCOUNT_RATE_PER_SEC", rate.to_string()),
            ("FANOUT_ACCOUNT_BURST", (rate / 10).max(1).to_string()),
        ]);
        let mut system = Self {
            redis,
            sqs,
            ingest,
            admin,
            workers: Vec::new(),
            worker_env,
            _ingest: ingest_process,
            _gateway: gateway,
            http,
        };
        for _ in 0..workers {
            system.add_worker();
        }
        system
    }

    /// Starts one more worker process.
    pub fn add_worker(&mut self) {
        self.workers
            .push(Process::spawn("fanout-worker", &[], &self.worker_env));
    }

    /// Creates `count` virtual connections in channel `chaos` that track their payloads.
    pub async fn connect(&self, count: usize) {
        let created: serde_json::Value = self
            .http
            .post(format!("{}/virtual", self.admin))
            .json(&serde_json::json!({"count": count, "query": "channel=chaos", "track_payloads": true}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(created["created"], count, "{created}");
    }

    /// Publishes message `n` to channel `chaos` with an idempotency key; returns the HTTP status.
    pub async fn publish(&self, n: u64) -> u16 {
        self.http
            .post(format!("{}/v1/channels/chaos/publish", self.ingest))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", format!("chaos-{n}"))
            .json(&serde_json::json!({"type": "chaos", "n": n}))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    /// Publishes message `n` like [`System::publish`] but gives up after `timeout`, as an impatient
    /// client: the status and body, or `None` when no answer came in time.
    pub async fn publish_within(
        &self,
        n: u64,
        timeout: Duration,
    ) -> Option<(u16, serde_json::Value)> {
        let sent = self
            .http
            .post(format!("{}/v1/channels/chaos/publish", self.ingest))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", format!("chaos-{n}"))
            .json(&serde_json::json!({"type": "chaos", "n": n}))
            .timeout(timeout)
            .send()
            .await
            .ok()?;
        let status = sent.status().as_u16();
        Some((status, sent.json().await.unwrap_or_default()))
    }

    /// Waits until the gateway has received `posts` posts in all (deliveries are under way).
    pub async fn wait_received(&self, posts: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.stats().await["received"].as_u64().unwrap() < posts {
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The gateway's virtual-connection stats.
    pub async fn stats(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/virtual/stats", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Starts a Management API fault (`stall` or `error`) for `seconds`.
    pub async fn gateway_fault(&self, fault: &str, seconds: f64) {
        let r = self
            .http
            .put(format!("{}/faults/management", self.admin))
            .json(&serde_json::json!({"fault": fault, "seconds": seconds}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// Waits until every one of `connections` has received `messages` distinct payloads (or the patience
    /// runs out) and measures: lost deliveries, duplicate posts, when the last delivery came.
    pub async fn outcome(&self, connections: u64, messages: u64) -> Outcome {
        let deadline = Instant::now() + PATIENCE;
        let mut stats = self.stats().await;
        while stats["per_connection"]["distinct_total"]
            .as_u64()
            .unwrap_or(0)
            < connections * messages
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stats = self.stats().await;
        }
        let done = Instant::now();
        // Late posts (a stalled call delivered late, a retry) still count as duplicates: settle a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats = self.stats().await;
        let distinct = stats["per_connection"]["distinct_total"]
            .as_u64()
            .unwrap_or(0);
        Outcome {
            lost: (connections * messages).saturating_sub(distinct),
            extra: stats["per_connection"]["distinct_max"]
                .as_u64()
                .unwrap_or(0)
                > messages,
            duplicates: stats["duplicate_posts"].as_u64().unwrap_or(0),
            done,
        }
    }
}

impl Outcome {
    /// The fault's row of the Markdown table `./dev chaos` prints: fault | lost | duplicate posts | time
    /// (from `since`, the fault, to the last delivery).
    pub fn row(&self, fault: &str, since: Instant) -> String {
        let time = self.done.saturating_duration_since(since).as_secs_f64();
        format!(
            "| {fault} | {} | {} | {time:.1} s |",
            self.lost, self.duplicates
        )
    }
}

/// What a fault cost.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Deliveries that never came.
    pub lost: u64,
    /// Some connection received a payload nobody published (a message enqueued twice as two).
    pub extra: bool,
    /// Posts of a payload the connection had already received.
    pub duplicates: u64,
    /// When every delivery had come.
    pub done: Instant,
}
