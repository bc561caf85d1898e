//! Redis over TLS (`rediss://`), against a real TLS-only `redis-server` whose certificate a certificate
//! authority generated for this run signed (`test_support::RedisTlsServer`): the state store
//! (`common::store::Redis`, a single node) and the Redis Streams queue (`common::queue::open` with
//! `rediss://...?queue=`) connect, write, read, receive, acknowledge and dead-letter over TLS; a client that
//! does not trust the server's CA is refused before any command runs.
//!
//! The services take their TLS roots from `SSL_CERT_FILE` (the images point it at the system bundle), which
//! the process reads when it connects. Setting it here would need `unsafe` (the workspace forbids it), so
//! this test has no libtest harness (`harness = false` in Cargo.toml): the parent starts the server and runs
//! this same binary twice as a child, once with `SSL_CERT_FILE` naming the server's CA and once naming an
//! unrelated CA, and checks what each child reports.

use common::job::{Job, Target, payload_of};
use common::queue::{QueueOptions, open};
use common::store::Redis;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use test_support::{RedisTlsServer, unrelated_ca_file};

/// Set in a child: the `rediss://` URL to use, and whether the server must be trusted or refused.
const CHILD_URL: &str = "FANOUT_TLS_TEST_URL";
const CHILD_EXPECT: &str = "FANOUT_TLS_TEST_EXPECT";

fn main() -> ExitCode {
    match (std::env::var(CHILD_URL), std::env::var(CHILD_EXPECT)) {
        (Ok(url), Ok(expect)) => child(&url, &expect),
        _ => parent(),
    }
}

fn parent() -> ExitCode {
    println!("\nrunning 2 checks (Redis over TLS)");
    let server = RedisTlsServer::start();
    let unrelated = unrelated_ca_file(server.dir());
    let mut failed = 0;
    for (name, ca, expect) in [
        (
            "state_and_queue_work_over_tls_with_the_servers_ca",
            server.ca_file(),
            "trusted",
        ),
        (
            "a_client_that_does_not_trust_the_ca_is_refused",
            unrelated,
            "refused",
        ),
    ] {
        let out = Command::new(std::env::current_exe().unwrap())
            .env("SSL_CERT_FILE", &ca)
            .env_remove("SSL_CERT_DIR")
            .env(CHILD_URL, server.url())
            .env(CHILD_EXPECT, expect)
            .output()
            .expect("run the TLS client as a child process");
        let ok = out.status.success();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed += 1;
            eprintln!(
                "---- {name} ----\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed\n",
        if failed == 0 { "ok" } else { "FAILED" },
        2 - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn child(url: &str, expect: &str) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        match expect {
            "trusted" => trusted(url).await,
            "refused" => refused(url).await,
            other => Err(format!("unknown expectation {other}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("{why}");
            ExitCode::FAILURE
        }
    }
}

fn options() -> QueueOptions {
    QueueOptions {
        visibility_timeout: Duration::from_secs(5),
        key_prefix: "tls:".to_owned(),
        ..QueueOptions::default()
    }
}

/// With the server's CA trusted: the state store and the queue do their work over TLS.
async fn trusted(url: &str) -> Result<(), String> {
    // The state store: a single node over rediss://.
    let redis = Redis::connect(url)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    redis
        .ping()
        .await
        .map_err(|e| format!("PING over TLS: {e}"))?;
    let mut set = redis::cmd("SET");
    set.arg("tls:conn:abc").arg("{\"channel\":\"general\"}");
    let mut add = redis::cmd("SADD");
    add.arg("tls:members:general").arg("abc");
    let mut get = redis::cmd("GET");
    get.arg("tls:conn:abc");
    let mut members = redis::cmd("SMEMBERS");
    members.arg("tls:members:general");
    let answers = redis
        .batch(vec![set, add, get, members])
        .await
        .map_err(|e| format!("a batch over TLS: {e}"))?;
    let stored: String = redis::from_redis_value(answers[2].clone()).map_err(|e| e.to_string())?;
    let listed: Vec<String> =
        redis::from_redis_value(answers[3].clone()).map_err(|e| e.to_string())?;
    if stored != "{\"channel\":\"general\"}" || listed != ["abc"] {
        return Err(format!("read back {stored:?} and {listed:?}"));
    }

    // The Redis Streams queue on the same TLS server.
    let queue = open(&format!("{url}?queue=jobs"), options())
        .await
        .map_err(|e| format!("open the queue over TLS: {e}"))?;
    queue.ping().await.map_err(|e| format!("queue ping: {e}"))?;
    let jobs: Vec<Job> = (0..3)
        .map(|i| {
            Job::post(
                Target::Channel {
                    channel: format!("room-{i}"),
                },
                payload_of(&serde_json::json!({ "n": i })),
            )
        })
        .collect();
    queue
        .send_batch(&jobs)
        .await
        .map_err(|e| format!("send over TLS: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut received = Vec::new();
    while received.len() < jobs.len() && Instant::now() < deadline {
        let batch = queue
            .receive(10, Duration::from_secs(1))
            .await
            .map_err(|e| format!("receive over TLS: {e}"))?;
        received.extend(batch);
    }
    let mut bodies: Vec<String> = received.iter().map(|r| r.body.clone()).collect();
    let mut sent: Vec<String> = jobs.iter().map(Job::encode).collect();
    bodies.sort();
    sent.sort();
    if bodies != sent {
        return Err(format!("received {bodies:?}, sent {sent:?}"));
    }
    queue
        .dead_letter(&received[0], "malformed")
        .await
        .map_err(|e| format!("dead-letter over TLS: {e}"))?;
    let receipts: Vec<_> = received[1..].iter().map(|r| r.receipt.clone()).collect();
    queue
        .ack(&receipts)
        .await
        .map_err(|e| format!("ack over TLS: {e}"))?;
    let depth = queue.depth().await.map_err(|e| format!("depth: {e}"))?;
    let dead = queue
        .peek_dead_letters(10)
        .await
        .map_err(|e| format!("peek dead letters: {e}"))?;
    if depth != 0 || dead.len() != 1 {
        return Err(format!(
            "after ack: depth {depth}, {} dead letters",
            dead.len()
        ));
    }
    Ok(())
}

/// With an unrelated CA trusted: neither the store nor the queue gets a command through.
async fn refused(url: &str) -> Result<(), String> {
    let redis = Redis::connect(url)
        .await
        .map_err(|e| format!("connect is lazy and must not fail yet: {e}"))?;
    match redis.ping().await {
        Ok(()) => return Err("PING succeeded against a server whose CA is not trusted".into()),
        Err(e) => println!("the store refused the server: {e}"),
    }
    let queue = open(&format!("{url}?queue=jobs"), options()).await;
    match queue {
        Err(e) => println!("the queue refused the server: {e}"),
        Ok(q) => {
            if q.ping().await.is_ok() {
                return Err("the queue reached a server whose CA is not trusted".into());
            }
        }
    }
    Ok(())
}
