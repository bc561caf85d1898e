//! Real servers for the test suites, started on free loopback ports and stopped when dropped.
//!
//! - [`RedisServer`]: a private `redis-server` per test (no persistence, or an append-only file with
//!   [`RedisServer::start_with_aof`]), which a test can stop and start again on the same port to play an
//!   outage, or pause.
//! - [`RedisCluster`]: a three-node Redis Cluster, for the code paths that must stay within one slot.
//! - [`RedisTlsServer`]: a TLS-only `redis-server` with a certificate from a CA generated for the test, for
//!   the `rediss://` paths.
//! - [`sqs_endpoint`]: the SQS-protocol server (moto's server mode) that `./dev test` starts once for the
//!   whole run; tests create their own uniquely named queues on it with [`create_sqs_queue`] (optionally
//!   with a dead-letter queue wired by a redrive policy), using [`sqs_test_client`].
//! - [`SqsServer`]: a private SQS-protocol server (moto's server mode from the workspace's `.venv`), for a
//!   test that stops or pauses it (the shared one serves every test at once), with [`create_sqs_queue_at`].
//!
//! - [`bench`]: what the benchmarks share (process CPU clocks, medians with their spread, the OK sink).
//!
//! Nothing here fakes a server: a test that needs one of these and cannot have it fails with a message
//! that says how to run the suite.

pub mod bench;
mod cluster;
mod tls;

pub use cluster::RedisCluster;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
pub use tls::{RedisTlsServer, unrelated_ca_file};

/// The environment variable that carries the SQS endpoint for tests (set by `./dev test`).
pub const SQS_ENDPOINT_VAR: &str = "FANOUT_TEST_SQS_ENDPOINT";

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` child process on a free loopback port.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Keeps its data in an append-only file in `dir`, written through on every write.
    aof: bool,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_persistent(false)
    }

    /// Starts a server that keeps its data in an append-only file (`appendonly yes`, `appendfsync
    /// always`): after [`RedisServer::stop`] (a kill -9) and [`RedisServer::restart`] on the same port,
    /// every write it acknowledged is there again.
    pub fn start_with_aof() -> Self {
        Self::start_persistent(true)
    }

    fn start_persistent(aof: bool) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("fanout-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create a directory for redis-server");
            let mut server = RedisServer {
                port,
                dir,
                child: None,
                aof,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "redis-server did not start; install it (./dev test does) and make sure it is on PATH"
        );
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (to pause it with SIGSTOP, as a hung Redis).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Pauses the server (SIGSTOP), as a hung Redis: connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.pid().expect("redis-server runs");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Stops the server with kill -9 (an outage). Its data is gone unless it keeps an append-only file.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (and directory, so an append-only file is read back).
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    fn spawn(&mut self) -> bool {
        let child = redis_server_with(self.port, &self.dir, self.aof).spawn();
        let Ok(mut child) = child else { return false };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely the port was taken meanwhile
            }
            if ping(self.port) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A quiet `redis-server` on 127.0.0.1:`port` without persistence, its files in `dir`.
fn redis_server(port: u16, dir: &std::path::Path) -> Command {
    redis_server_with(port, dir, false)
}

/// A quiet `redis-server` on 127.0.0.1:`port` without snapshots, its files in `dir`; with an
/// append-only file written through on every write when `aof`, without persistence otherwise.
fn redis_server_with(port: u16, dir: &std::path::Path, aof: bool) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        if aof { "yes" } else { "no" },
        "--appendfsync",
        "always",
    ])
    .arg("--dir")
    .arg(dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

fn ping(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

/// The SQS endpoint started by `./dev test`, e.g. `http://127.0.0.1:41234`.
pub fn sqs_endpoint() -> String {
    std::env::var(SQS_ENDPOINT_VAR).unwrap_or_else(|_| {
        panic!("{SQS_ENDPOINT_VAR} is not set: run the suite with `./dev test`, which starts the SQS server")
    })
}

/// A name no other test uses, for queues and key prefixes.
pub fn unique_name(stem: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{stem}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The static credentials the local SQS server accepts (it does not check them, but requests must be signed).
pub fn sqs_test_credentials() -> aws_sdk_sqs::config::Credentials {
    aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "test-support")
}

/// The region the tests use on the local SQS server.
pub const SQS_TEST_REGION: &str = "us-east-1";

/// An SQS client for the local SQS server at [`sqs_endpoint`], with [`sqs_test_credentials`] and
/// [`SQS_TEST_REGION`]. For setting up and inspecting queues; the code under test builds its own client.
pub fn sqs_test_client() -> aws_sdk_sqs::Client {
    use aws_sdk_sqs::config::{BehaviorVersion, Builder, Region};
    let config = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(SQS_TEST_REGION))
        .credentials_provider(sqs_test_credentials())
        .endpoint_url(sqs_endpoint())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// A uniquely named queue on the local SQS server, made by [`create_sqs_queue`].
#[derive(Debug, Clone)]
pub struct SqsTestQueue {
    /// The endpoint the queue lives on ([`sqs_endpoint`]).
    pub endpoint: String,
    /// The queue's URL.
    pub queue_url: String,
    /// The bulk lane's queue beside it (`NAME-bulk`, the URL ingest and the worker derive), with the same
    /// attributes and dead-letter queue.
    pub bulk_queue_url: String,
    /// The URL of its dead-letter queue, when one was asked for. The main queue's `RedrivePolicy` names it,
    /// with a `maxReceiveCount` high enough that no test reaches it by accident.
    pub dead_letter_url: Option<String>,
}

/// How many receives the test queues' redrive policy allows before the server moves a message to the
/// dead-letter queue by itself: far more than any test receives one message.
pub const SQS_TEST_MAX_RECEIVE_COUNT: u32 = 100;

/// Creates a uniquely named standard queue on [`sqs_endpoint`] with the given visibility timeout (whole
/// seconds, at least 1 s is sensible), its bulk lane's queue (`NAME-bulk`), and, if
/// `with_dead_letter_queue`, a dead-letter queue wired to both by a `RedrivePolicy`. Panics with the
/// server's answer if the server refuses.
pub async fn create_sqs_queue(
    stem: &str,
    visibility_timeout: Duration,
    with_dead_letter_queue: bool,
) -> SqsTestQueue {
    use aws_sdk_sqs::types::QueueAttributeName;
    let client = sqs_test_client();
    let name = unique_name(stem);
    let dead_letter = if with_dead_letter_queue {
        let url = client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create the dead-letter queue on {}: {e:?}", sqs_endpoint()))
            .queue_url
            .expect("CreateQueue returns the queue URL");
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("read the dead-letter queue's ARN: {e:?}"));
        let arn = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .expect("GetQueueAttributes returns the QueueArn");
        Some((url, arn))
    } else {
        None
    };
    let create_named = |queue_name: String| {
        let mut create = client.create_queue().queue_name(queue_name).attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout.as_secs().to_string(),
        );
        if let Some((_, arn)) = &dead_letter {
            create = create.attributes(
                QueueAttributeName::RedrivePolicy,
                format!(
                    r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{SQS_TEST_MAX_RECEIVE_COUNT}"}}"#
                ),
            );
        }
        async move {
            create
                .send()
                .await
                .unwrap_or_else(|e| panic!("create the queue on {}: {e:?}", sqs_endpoint()))
                .queue_url
                .expect("CreateQueue returns the queue URL")
        }
    };
    let queue_url = create_named(name.clone()).await;
    let bulk_queue_url = create_named(format!("{name}-bulk")).await;
    SqsTestQueue {
        endpoint: sqs_endpoint(),
        queue_url,
        bulk_queue_url,
        dead_letter_url: dead_letter.map(|(url, _)| url),
    }
}

/// A private SQS-protocol server: moto's server mode (`.venv/bin/moto_server` of the workspace, which
/// `./dev setup` installs) on a free loopback port, stopped when dropped. For tests that pause it.
#[derive(Debug)]
pub struct SqsServer {
    port: u16,
    child: Child,
}

impl SqsServer {
    /// Starts the server and waits (up to 60 s) until it accepts connections.
    pub fn start() -> Self {
        let moto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
        assert!(
            moto.exists(),
            "{} is missing: run ./dev setup (it installs moto into .venv)",
            moto.display()
        );
        let port = free_port();
        let mut child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", moto.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited ({status}) before it listened on port {port}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SqsServer { port, child }
    }

    /// The endpoint, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Pauses the server (SIGSTOP): connections stay open and nothing answers.
    pub fn pause(&self) {
        kill(self.child.id(), "STOP");
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&self) {
        kill(self.child.id(), "CONT");
    }
}

impl Drop for SqsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends signal `name` (`STOP`, `CONT`) to `pid` with kill(1).
fn kill(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Creates a uniquely named standard queue on the SQS server at `endpoint` with the given visibility
/// timeout (whole seconds), and its bulk lane's queue (`NAME-bulk`), and returns the first's URL.
pub async fn create_sqs_queue_at(
    endpoint: &str,
    stem: &str,
    visibility_timeout: Duration,
) -> String {
    use aws_sdk_sqs::config::{BehaviorVersion, Builder, Region};
    use aws_sdk_sqs::types::QueueAttributeName;
    let config = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(SQS_TEST_REGION))
        .credentials_provider(sqs_test_credentials())
        .endpoint_url(endpoint)
        .build();
    let client = aws_sdk_sqs::Client::from_conf(config);
    let name = unique_name(stem);
    let mut urls = Vec::new();
    // The queue, then its bulk lane's queue (`NAME-bulk`, the URL the services derive).
    for queue_name in [name.clone(), format!("{name}-bulk")] {
        urls.push(
            client
                .create_queue()
                .queue_name(queue_name)
                .attributes(
                    QueueAttributeName::VisibilityTimeout,
                    visibility_timeout.as_secs().to_string(),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("create a queue on {endpoint}: {e:?}"))
                .queue_url
                .expect("CreateQueue returns the queue URL"),
        );
    }
    urls.swap_remove(0)
}
