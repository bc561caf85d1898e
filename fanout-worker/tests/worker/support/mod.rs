//! Shared set-up for the worker's tests: a private redis-server, the Management API test server
//! ([`gateway::MgmtServer`]), connections registered the way ingest registers them, jobs put on the
//! Redis Streams queue, workers started in-process or as the real binary, and waiting on conditions
//! with a deadline.
#![allow(dead_code)]

pub mod gateway;

use clap::Parser;
use common::job::{Job, Target, payload_of};
use common::keys::{Keyspace, conn_field as f};
use common::queue::streams::StreamQueue;
use common::queue::{Queue, QueueOptions};
use common::store::Redis;
use fanout_worker::Worker;
use fanout_worker::config::{Config, Settings};
use fanout_worker::delivery::{Deliver, LeanDeliver, SdkDeliver};
use gateway::MgmtServer;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::RedisServer;

pub const API_ID: &str = "testapi";
pub const STAGE: &str = "test";
pub const PREFIX: &str = "fo:";

/// Redis, the gateway and a queue for one test.
pub struct Env {
    pub redis_server: RedisServer,
    pub redis: Redis,
    pub keys: Keyspace,
    pub gateway: MgmtServer,
    pub queue: Arc<dyn Queue>,
    pub queue_url: String,
}

impl Env {
    /// Redis Streams queue `jobs` on a fresh redis-server.
    pub async fn start() -> Self {
        let redis_server = RedisServer::start();
        let queue_url = format!("{}?queue=jobs", redis_server.url());
        let redis = Redis::connect(&redis_server.url()).await.unwrap();
        let queue = Arc::new(
            StreamQueue::new(redis.clone(), "jobs", QueueOptions::default())
                .await
                .unwrap(),
        );
        Self::with_queue(redis_server, redis, queue, queue_url).await
    }

    pub async fn with_queue(
        redis_server: RedisServer,
        redis: Redis,
        queue: Arc<dyn Queue>,
        queue_url: String,
    ) -> Self {
        Self {
            redis_server,
            redis,
            keys: Keyspace::new(PREFIX),
            gateway: MgmtServer::start().await,
            queue,
            queue_url,
        }
    }

    /// The worker's flags for this environment, plus `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "fanout-worker".to_owned(),
            format!("--redis-url={}", self.redis_server.url()),
            format!("--queue-url={}", self.queue_url),
            format!("--api-gateway={API_ID}={}", self.gateway.endpoint(STAGE)),
            "--metrics-listen=127.0.0.1:0".into(),
            "--receive-wait-secs=1".into(),
            "--retry-min-delay-ms=5".into(),
            "--retry-max-delay-ms=50".into(),
            "--requeue-delay-ms=100".into(),
            "--shutdown-grace-secs=5".into(),
        ];
        // A flag given in `extra` replaces the default above.
        args.retain(|a| {
            let name = a.split('=').next().unwrap_or(a);
            !extra.iter().any(|e| e.split('=').next() == Some(name))
        });
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub fn settings(&self, extra: &[&str]) -> Settings {
        Config::try_parse_from(self.args(extra))
            .expect("flags parse")
            .validate()
            .expect("settings valid")
    }

    /// An in-process worker with the lean client (the default) and static test credentials.
    pub async fn worker(&self, extra: &[&str]) -> Worker {
        let settings = self.settings(extra);
        let deliver = test_deliver(&settings);
        Worker::start(settings, Arc::new(deliver)).await.unwrap()
    }

    /// An in-process worker with the reference client, the AWS SDK, and static test credentials.
    pub async fn sdk_worker(&self, extra: &[&str]) -> Worker {
        let settings = self.settings(extra);
        let deliver = sdk_deliver(settings.call_timeout).await;
        Worker::start(settings, Arc::new(deliver)).await.unwrap()
    }

    /// An in-process worker with `deliver`.
    pub async fn worker_with(&self, extra: &[&str], deliver: Arc<dyn Deliver>) -> Worker {
        Worker::start(self.settings(extra), deliver).await.unwrap()
    }

    /// Registers connections `{stem}-0 .. {stem}-{n-1}` in `channel`, all of `subject`, as ingest does.
    pub async fn register(
        &self,
        stem: &str,
        n: usize,
        channel: &str,
        subject: &str,
    ) -> Vec<String> {
        let ids: Vec<String> = (0..n).map(|i| format!("{stem}-{i}")).collect();
        for batch in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in batch {
                pipe.cmd("HSET")
                    .arg(self.keys.connection(id))
                    .arg(f::CHANNEL)
                    .arg(channel)
                    .arg(f::SUBJECT)
                    .arg(subject)
                    .arg(f::API_ID)
                    .arg(API_ID)
                    .arg(f::STAGE)
                    .arg(STAGE)
                    .ignore();
                pipe.cmd("SADD")
                    .arg(self.keys.channel(channel))
                    .arg(id)
                    .ignore();
                pipe.cmd("SADD")
                    .arg(self.keys.subject(subject))
                    .arg(id)
                    .ignore();
                pipe.cmd("SADD")
                    .arg(self.keys.all_bucket_of(id))
                    .arg(id)
                    .ignore();
            }
            pipe.query_async::<()>(&mut self.redis.clone())
                .await
                .unwrap();
        }
        ids
    }

    /// Puts a post job for `target` with `payload` on the queue; returns it.
    pub async fn publish(&self, target: Target, payload: serde_json::Value) -> Job {
        let job = Job::post(target, payload_of(&payload));
        self.queue
            .send_batch(std::slice::from_ref(&job))
            .await
            .unwrap();
        job
    }

    /// Puts a post job for `target` with `payload` on `lane`'s queue (the bulk lane's is the one the
    /// worker's settings name); returns it.
    pub async fn publish_on(
        &self,
        lane: common::job::Lane,
        target: Target,
        payload: serde_json::Value,
    ) -> Job {
        let job = Job::post(target, payload_of(&payload)).in_lane(lane);
        let queue = match lane {
            common::job::Lane::Interactive => self.queue.clone(),
            common::job::Lane::Bulk => {
                common::queue::open(&self.settings(&[]).bulk_queue_url, QueueOptions::default())
                    .await
                    .unwrap()
            }
        };
        queue.send_batch(std::slice::from_ref(&job)).await.unwrap();
        job
    }

    /// Publishes a post to an ordered `channel` the way ingest does ([`common::ordered::publish`]): into
    /// the channel's backlog, with a drain job on the queue when none is scheduled. Returns the message.
    pub async fn publish_ordered(
        &self,
        channel: &str,
        payload: serde_json::Value,
        coalesce: bool,
    ) -> Job {
        let job = Job::post(
            Target::Channel {
                channel: channel.to_owned(),
            },
            payload_of(&payload),
        );
        common::ordered::publish(
            &self.redis,
            &self.keys,
            self.queue.as_ref(),
            channel,
            &job,
            coalesce,
        )
        .await
        .unwrap();
        job
    }

    pub async fn is_member(&self, set: &str, id: &str) -> bool {
        redis::cmd("SISMEMBER")
            .arg(set)
            .arg(id)
            .query_async(&mut self.redis.clone())
            .await
            .unwrap()
    }

    pub async fn exists(&self, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(&mut self.redis.clone())
            .await
            .unwrap()
            == 1
    }

    /// Waits (up to `limit`) until the broadcast `id`'s report says it finished.
    pub async fn finished(&self, id: &str, limit: std::time::Duration) {
        eventually(limit, "the report says finished", || async {
            self.report(id)
                .await
                .contains_key(common::keys::report_field::FINISHED_MS)
        })
        .await;
    }

    /// The delivery report of a broadcast, as a map.
    pub async fn report(&self, id: &str) -> std::collections::HashMap<String, String> {
        redis::cmd("HGETALL")
            .arg(self.keys.report(id))
            .query_async(&mut self.redis.clone())
            .await
            .unwrap()
    }
}

/// The lean client with static test credentials (`test`/`test`), as the worker builds it.
pub fn test_deliver(settings: &Settings) -> LeanDeliver {
    let credentials = mgmt_client::CredentialsSource::fixed(
        mgmt_client::SigningCredentials::new("test", "test", None).unwrap(),
    );
    LeanDeliver::new(credentials, settings.call_timeout, settings.max_in_flight).unwrap()
}

/// The AWS SDK client with static test credentials.
pub async fn sdk_deliver(timeout: Duration) -> SdkDeliver {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    SdkDeliver::new(base, timeout)
}

/// Polls `check` until it is true or `limit` passes; panics with `what` then.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A metric's value from a worker's registry (summed over label sets matching `labels`).
pub fn metric(worker: &Worker, name: &str, labels: &[(&str, &str)]) -> f64 {
    worker
        .metrics()
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
        .sum()
}

/// The real binary, with the environment's settings as `FANOUT_*` variables plus `extra` flags.
pub fn spawn_binary(env: &Env, extra: &[&str]) -> std::process::Child {
    let args = env.args(extra);
    std::process::Command::new(env!("CARGO_BIN_EXE_fanout-worker"))
        .args(&args[1..])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the fanout-worker binary")
}

/// Sends SIGTERM to a child.
pub fn sigterm(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

/// Runs `fanout-worker dlq ...` (the real binary) with the environment's settings plus `extra` flags;
/// returns whether it succeeded and what it printed.
pub fn dlq_command(env: &Env, extra: &[&str], command: &[&str]) -> (bool, String) {
    let args = env.args(extra);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fanout-worker"))
        .args(&args[1..])
        .arg("dlq")
        .args(command)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "error")
        .output()
        .expect("run fanout-worker dlq");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Dead-letters two jobs on the environment's queue, then drives `fanout-worker dlq`: `list` names both
/// with their reasons, `show` prints one, `redrive --job` puts exactly that one back on the queue (and an
/// unknown id fails), `redrive --all` the other, and the dead-letter queue ends empty.
pub async fn dlq_round_trip(env: &Env, extra: &[&str]) {
    let a = Job::post(
        Target::Connections {
            ids: vec!["x".into()],
        },
        payload_of(&serde_json::json!({"a": 1})),
    );
    let b = Job::post(Target::All, payload_of(&serde_json::json!({"b": 2})));
    env.queue.send_batch(&[a.clone(), b.clone()]).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 2 && Instant::now() < deadline {
        got.extend(env.queue.receive(2, Duration::from_secs(1)).await.unwrap());
    }
    assert_eq!(got.len(), 2);
    for m in &got {
        let id = m.job().unwrap().id;
        env.queue
            .dead_letter(m, &format!("reason for {id}"))
            .await
            .unwrap();
    }
    let (ok, listed) = dlq_command(env, extra, &["list"]);
    assert!(ok, "{listed}");
    for job in [&a, &b] {
        assert!(
            listed.contains(&format!("reason for {}", job.id)) && listed.contains(&job.id),
            "{listed}"
        );
    }
    let (ok, shown) = dlq_command(env, extra, &["show", "--job", &a.id]);
    assert!(ok && shown.contains(r#"{"a":1}"#), "{shown}");
    let (ok, _) = dlq_command(env, extra, &["redrive", "--job", "no-such-job"]);
    assert!(!ok, "an unknown job id fails");
    let (ok, out) = dlq_command(env, extra, &["redrive", "--job", &a.id]);
    assert!(ok && out.contains("redriven: 1"), "{out}");
    let back = receive_one(env).await;
    assert_eq!(back.job().unwrap().id, a.id);
    env.queue.ack(&[back.receipt]).await.unwrap();
    let left = env.queue.peek_dead_letters(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].body.contains(&b.id));
    let (ok, out) = dlq_command(env, extra, &["redrive", "--all"]);
    assert!(ok && out.contains("redriven: 1"), "{out}");
    let back = receive_one(env).await;
    assert_eq!(back.job().unwrap().id, b.id);
    env.queue.ack(&[back.receipt]).await.unwrap();
    assert!(env.queue.peek_dead_letters(10).await.unwrap().is_empty());
}

/// The next message on the queue (waiting up to 30 s).
pub async fn receive_one(env: &Env) -> common::queue::Received {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(m) = env
            .queue
            .receive(1, Duration::from_secs(1))
            .await
            .unwrap()
            .pop()
        {
            return m;
        }
    }
    panic!("nothing came back on the queue");
}
