//! Starts a real ingest for a test: a private redis-server, ingest's state over it with the Redis
//! Streams queue, and the HTTP service on a free loopback port. Helpers speak the gateway's callback
//! contract and read back the jobs ingest queued.
#![allow(dead_code)]

use clap::Parser;
use common::job::Job;
use common::queue::{Queue, QueueOptions};
use ingest::config::Config;
use ingest::state::AppState;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use test_support::RedisServer;

pub const API_ID: &str = "testapi";
pub const SECRET: &str = "gateway-secret-0123456789-abcdefghij";
pub const API_KEY: &str = "api-key-0123456789-abcdefghijklmnop";

pub struct Ingest {
    pub url: String,
    /// The single-node Redis, when the test runs on one (see [`Ingest::start_on_cluster`] for the other case).
    pub redis: Option<RedisServer>,
    pub cluster: Option<test_support::RedisCluster>,
    pub redis_url: String,
    pub queue_url: String,
    pub state: AppState,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Ingest {
    /// Starts ingest with the test defaults plus `extra` flags.
    pub async fn start(extra: &[&str]) -> Self {
        let redis = RedisServer::start();
        Self::start_on(redis, None, extra).await
    }

    /// Starts ingest on an existing Redis, optionally with a queue URL of its own.
    pub async fn start_on(redis: RedisServer, queue_url: Option<String>, extra: &[&str]) -> Self {
        let redis_url = redis.url();
        let queue_url = queue_url.unwrap_or_else(|| format!("{redis_url}?queue=jobs"));
        let mut ingest = Self::launch(redis_url, queue_url, extra).await;
        ingest.redis = Some(redis);
        ingest
    }

    /// Starts ingest with state and queue on a three-node Redis Cluster.
    pub async fn start_on_cluster(extra: &[&str]) -> Self {
        let cluster = test_support::RedisCluster::start();
        let url = cluster.url();
        let mut ingest = Self::launch(url.clone(), format!("{url}?queue=jobs"), extra).await;
        ingest.cluster = Some(cluster);
        ingest
    }

    async fn launch(redis_url: String, queue_url: String, extra: &[&str]) -> Self {
        let mut args = vec![
            "ingest".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!("--redis-url={redis_url}"),
            format!("--queue-url={queue_url}"),
            format!("--api-gateway={API_ID}=http://127.0.0.1:9/test"),
            format!("--gateway-secret={SECRET}"),
            format!("--api-key={API_KEY}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let settings = Config::try_parse_from(args)
            .expect("flags parse")
            .validate()
            .expect("settings valid");
        // Boxed: the state's start-up future (both lanes' queues opened and checked) is deep, and every
        // test's future holds it.
        let state = Box::pin(ingest::build_state(settings, Duration::from_secs(10)))
            .await
            .expect("state builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            ingest::serve(listener, serve_state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            url,
            redis: None,
            cluster: None,
            redis_url,
            queue_url,
            state,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// A callback as API Gateway sends it, with the right secret and API id.
    pub fn callback(&self, route: &str, connection_id: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/ws/{route}", self.url))
            .header("connectionId", connection_id)
            .header("X-Amzn-Apigateway-Api-Id", API_ID)
            .header("X-Ws-Gateway-Secret", SECRET)
            .header("X-Ws-Source-Ip", "203.0.113.7")
    }

    /// `$connect` with a query string; returns the status.
    pub async fn connect(&self, connection_id: &str, query: &str) -> StatusCode {
        self.callback(&format!("connect?{query}"), connection_id)
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn message(&self, connection_id: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .callback("default", connection_id)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The text ingest's `/metrics` answers.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// An authenticated API request.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(API_KEY)
    }

    /// Mints a token through the API.
    pub async fn token(&self, subject: &str, channels: Option<&[&str]>) -> String {
        let mut body = serde_json::json!({ "subject": subject });
        if let Some(c) = channels {
            body["channels"] = serde_json::json!(c);
        }
        let r = self
            .api(reqwest::Method::POST, "/v1/tokens")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Connects `id` to `channel` as `subject` with a fresh token; asserts success.
    pub async fn join(&self, id: &str, subject: &str, channel: &str) {
        let token = self.token(subject, None).await;
        assert_eq!(
            self.connect(id, &format!("channel={channel}&ws_token={token}"))
                .await,
            StatusCode::OK
        );
    }

    /// Every job queued so far on either lane (taken off the queues and acknowledged), interactive first.
    pub async fn jobs(&self) -> Vec<Job> {
        let mut jobs = self.lane_jobs(common::job::Lane::Interactive).await;
        jobs.extend(self.lane_jobs(common::job::Lane::Bulk).await);
        jobs
    }

    /// Every job queued so far on `lane`'s queue (taken off it and acknowledged).
    pub async fn lane_jobs(&self, lane: common::job::Lane) -> Vec<Job> {
        let url = match lane {
            common::job::Lane::Interactive => self.queue_url.clone(),
            common::job::Lane::Bulk => self.state.settings.bulk_queue_url.clone(),
        };
        let queue = common::queue::open(&url, QueueOptions::default())
            .await
            .unwrap();
        drain(&*queue).await
    }

    /// A connection to the state store (single node or cluster).
    pub async fn redis(&self) -> common::store::Redis {
        common::store::Redis::connect(&self.redis_url)
            .await
            .unwrap()
    }

    /// Stops the single-node Redis (an outage).
    pub fn stop_redis(&mut self) {
        self.redis.as_mut().expect("a single-node test").stop();
    }

    pub fn restart_redis(&mut self) {
        self.redis.as_mut().expect("a single-node test").restart();
    }

    pub async fn smembers(&self, key: &str) -> Vec<String> {
        let mut m: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
        m.sort();
        m
    }
}

pub async fn drain(queue: &dyn Queue) -> Vec<Job> {
    let mut jobs = Vec::new();
    loop {
        let batch = queue.receive(10, Duration::from_millis(50)).await.unwrap();
        if batch.is_empty() {
            return jobs;
        }
        let receipts: Vec<_> = batch.iter().map(|m| m.receipt.clone()).collect();
        jobs.extend(batch.iter().map(|m| m.job().unwrap()));
        queue.ack(&receipts).await.unwrap();
    }
}

/// The payload of a job as JSON.
pub fn payload(job: &Job) -> Value {
    serde_json::from_str(job.payload().expect("a post job").get()).unwrap()
}

/// A connection record for tests that register directly (the connect path runs the same script): on the
/// test API's stage, with no token, client info or channel list.
pub fn connection(
    id: &str,
    channel: &str,
    subject: Option<&str>,
) -> ingest::membership::Connection {
    ingest::membership::Connection {
        id: common::names::ConnectionId::parse(id).unwrap(),
        channel: common::names::ChannelName::parse(channel).unwrap(),
        subject: subject.map(|s| common::names::Subject::parse(s).unwrap()),
        allowed: None,
        api_id: API_ID.into(),
        stage: "test".into(),
        connected_at_ms: 1,
        source_ip: "127.0.0.1".into(),
        token_hash: None,
        info: None,
    }
}

/// One header, to replace the value a helper set: `.headers(set("X-Forwarded-For", "..."))`.
pub fn set(name: &'static str, value: impl AsRef<str>) -> reqwest::header::HeaderMap {
    let mut map = reqwest::header::HeaderMap::new();
    map.insert(name, value.as_ref().parse().unwrap());
    map
}
