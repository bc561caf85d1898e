//! Real servers for the test suites, started on free loopback ports and stopped when dropped.
//!
//! - [`RedisServer`]: a private `redis-server` per test (no persistence), which a test can stop and start
//!   again on the same port to play an outage.
//! - [`sqs_endpoint`]: the SQS-protocol server (moto's server mode) that `./dev test` starts once for the
//!   whole run; tests create their own uniquely named queues on it.
//!
//! Nothing here fakes a server: a test that needs one of these and cannot have it fails with a message
//! that says how to run the suite.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("fanout-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create a directory for redis-server");
            let mut server = RedisServer {
                port,
                dir,
                child: None,
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

    /// Stops the server (an outage). Its data is gone: it runs without persistence.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
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
