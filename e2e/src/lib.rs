//! The whole system on one machine, for end-to-end tests: a private redis-server, a queue (Redis Streams
//! on that Redis, or an SQS queue on the test SQS server), ingest, the local gateway in front of it and a
//! fan-out worker posting back through the gateway's Management API, all on free loopback ports, all
//! stopped when the [`System`] is dropped or [`System::stop`]ped. [`Client`] is a browser's WebSocket.
//!
//! The worker delivers with the lean client (`fanout_worker::delivery::LeanDeliver`, the default) and the
//! gateway verifies every Management API signature against the same credentials ([`SIGV4_ACCESS_KEY`],
//! region us-east-1), as API Gateway does, so a signing bug fails every scenario that expects a message;
//! [`System::stop`] also checks that no signature was refused.

use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use test_support::RedisServer;
use tokio_tungstenite::tungstenite::{self, Message};

/// How long a test waits for an event before failing (a guard, never a synchronisation).
pub const PATIENCE: Duration = Duration::from_secs(15);
pub const API_KEY: &str = "e2e-api-key-0123456789-abcdefghijklmn";
pub const SECRET: &str = "e2e-gateway-secret-0123456789-abcdefgh";
/// The credentials the worker signs with and the gateway verifies.
pub const SIGV4_ACCESS_KEY: &str = "AKIDE2EWORKER";
pub const SIGV4_SECRET_KEY: &str = "e2e-sigv4-secret-key-0123456789";
/// The region the worker signs for and the gateway expects.
pub const SIGV4_REGION: &str = "us-east-1";

/// Which queue carries the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    RedisStreams,
    Sqs,
}

/// A running system.
#[derive(Debug)]
pub struct System {
    /// ingest's base URL, e.g. `http://127.0.0.1:PORT`.
    pub ingest: String,
    /// Where browsers connect: `ws://ADDR/local`.
    pub ws_url: String,
    /// The gateway's Management API endpoint, `http://ADDR/local`.
    pub management: String,
    pub redis: RedisServer,
    pub http: reqwest::Client,
    pub keys: common::keys::Keyspace,
    gateway: Option<local_gateway::RunningGateway>,
    worker: Option<fanout_worker::Worker>,
    worker_args: Vec<String>,
    ingest_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl System {
    /// Starts everything; `ingest_args` and `gateway_args` are extra flags for those two (in a gateway flag,
    /// `INGEST` stands for ingest's base URL, e.g. `--route=sendmessage=INGEST/ws/sendmessage`).
    pub async fn start(backend: Backend, ingest_args: &[&str], gateway_args: &[&str]) -> Self {
        let redis = RedisServer::start();
        let (queue_url, dead_letter_url) = match backend {
            Backend::RedisStreams => (format!("{}?queue=jobs", redis.url()), None),
            Backend::Sqs => {
                let q = test_support::create_sqs_queue("e2e", Duration::from_secs(30), true).await;
                (q.queue_url, q.dead_letter_url)
            }
        };
        // ingest's address must be known before the gateway (its integration) and the gateway's before
        // ingest's settings (the API list): bind ingest's listener first.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ingest = format!("http://{}", listener.local_addr().unwrap());

        let mut args: Vec<String> = vec![
            "local-gateway".into(),
            "--ws-listen=127.0.0.1:0".into(),
            "--management-listen=127.0.0.1:0".into(),
            format!("--integration-base={ingest}/ws"),
            "--api-id=local".into(),
            "--stage=local".into(),
            format!("--gateway-secret={SECRET}"),
            format!("--verify-sigv4={SIGV4_ACCESS_KEY}:{SIGV4_SECRET_KEY}"),
            format!("--verify-sigv4-region={SIGV4_REGION}"),
        ];
        args.extend(gateway_args.iter().map(|s| s.replace("INGEST", &ingest)));
        let settings = local_gateway::Config::try_parse_from(args)
            .expect("gateway flags")
            .validate()
            .expect("gateway settings");
        let gateway = local_gateway::LocalGateway::bind(settings)
            .await
            .expect("the gateway binds");
        let (ws_url, management) = (gateway.ws_url(), gateway.management_endpoint());
        let gateway = gateway.spawn();

        let mut args: Vec<String> = vec![
            "ingest".into(),
            format!("--redis-url={}", redis.url()),
            format!("--queue-url={queue_url}"),
            format!("--api-gateway=local={management}"),
            format!("--gateway-secret={SECRET}"),
            format!("--api-key={API_KEY}"),
            format!("--demo-ws-url={ws_url}"),
            // The chat page is served by ingest, so its origin is ingest's.
            format!("--allowed-origin={ingest}"),
            "--connect-limit-per-minute=10000".into(),
            "--token-issue-limit-per-minute=10000".into(),
        ];
        args.extend(ingest_args.iter().map(|s| s.to_string()));
        let settings = ingest::config::Config::try_parse_from(args)
            .expect("ingest flags")
            .validate()
            .expect("ingest settings");
        let state = ingest::build_state(settings, Duration::from_secs(10))
            .await
            .expect("ingest starts");
        let (ingest_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(ingest::serve(listener, state, async {
            let _ = stopped.await;
        }));

        let mut worker_args: Vec<String> = vec![
            "fanout-worker".into(),
            format!("--redis-url={}", redis.url()),
            format!("--queue-url={queue_url}"),
            format!("--api-gateway=local={management}"),
            "--metrics-listen=127.0.0.1:0".into(),
            "--receive-wait-secs=1".into(),
            "--requeue-delay-ms=200".into(),
            format!("--aws-region={SIGV4_REGION}"),
            "--delivery-client=lean".into(),
            // Connections here open within milliseconds of their `$connect` (300 ms with the gateway's
            // `--open-delay-ms`): a 2 s grace covers that and keeps a vanished connection's 410 (ingest
            // knows it, the gateway does not) well inside the tests' patience.
            "--connect-grace-ms=2000".into(),
        ];
        if let Some(dlq) = dead_letter_url {
            worker_args.push(format!("--dead-letter-queue-url={dlq}"));
        }
        let worker = start_worker(&worker_args).await;

        Self {
            ingest,
            ws_url,
            management,
            redis,
            http: reqwest::Client::new(),
            keys: common::keys::Keyspace::default(),
            gateway: Some(gateway),
            worker: Some(worker),
            worker_args,
            ingest_stop: Some(ingest_stop),
        }
    }

    /// Stops the worker (draining): jobs stay on the queue until [`System::resume_worker`].
    pub async fn pause_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await;
        }
    }

    /// Starts a worker again after [`System::pause_worker`].
    pub async fn resume_worker(&mut self) {
        assert!(self.worker.is_none(), "the worker is running");
        self.worker = Some(start_worker(&self.worker_args).await);
    }

    /// The value of one of ingest's metrics (a full series name with labels, as `/metrics` prints it),
    /// 0 when absent.
    pub async fn ingest_metric(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.ingest))
            .send()
            .await
            .expect("ingest's /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The worker's `/metrics` URL, `http://ADDR/metrics` (its metrics listener).
    pub fn worker_metrics_url(&self) -> String {
        let worker = self.worker.as_ref().expect("the worker runs until stop");
        format!("http://{}/metrics", worker.metrics_addr())
    }

    /// Management API calls the gateway refused for their signature, from its `/metrics`.
    pub async fn signatures_refused(&self) -> u64 {
        let base = self
            .management
            .rsplit_once('/')
            .map_or(self.management.as_str(), |(base, _stage)| base);
        let text = self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("the gateway's /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with("fanout_emulator_signatures_refused_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Stops the worker (draining), the gateway and ingest, after checking that the gateway refused no
    /// signature.
    pub async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await;
        }
        assert_eq!(
            self.signatures_refused().await,
            0,
            "the gateway refused Management API signatures"
        );
        if let Some(gateway) = self.gateway.take() {
            gateway.stop().await.expect("the gateway stops cleanly");
        }
        if let Some(stop) = self.ingest_stop.take() {
            let _ = stop.send(());
        }
    }

    /// An authenticated API request.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.ingest))
            .bearer_auth(API_KEY)
    }

    /// Mints a token through the API.
    pub async fn token(&self, subject: &str) -> String {
        let r = self
            .api(reqwest::Method::POST, "/v1/tokens")
            .json(&serde_json::json!({ "subject": subject }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Registers `ghost` (user `ghost`) in `channel` with a `$connect` straight to ingest, never opened at the
    /// gateway: a connection whose client vanished and whose `$disconnect` was lost. Asserts 200.
    pub async fn connect_ghost(&self, ghost: &str, channel: &str) {
        let token = self.token("ghost").await;
        let r = self
            .http
            .post(format!(
                "{}/ws/connect?channel={channel}&ws_token={token}",
                self.ingest
            ))
            .header("connectionId", ghost)
            .header("X-Amzn-Apigateway-Api-Id", "local")
            .header("X-Ws-Gateway-Secret", SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// Publishes `payload` through the API at `path`; asserts 202.
    pub async fn publish(&self, path: &str, payload: Value) {
        let r = self
            .api(reqwest::Method::POST, path)
            .json(&payload)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED, "{path}");
    }

    /// Opens a WebSocket as `subject` in `channel` with a fresh token.
    pub async fn join(&self, subject: &str, channel: &str) -> Client {
        let token = self.token(subject).await;
        self.connect(&format!("channel={channel}&ws_token={token}"))
            .await
            .expect("the handshake succeeds")
    }

    /// Opens a WebSocket with a query string; a refused handshake returns its HTTP status.
    pub async fn connect(&self, query: &str) -> Result<Client, u16> {
        match tokio_tungstenite::connect_async(format!("{}?{query}", self.ws_url)).await {
            Ok((socket, _)) => Ok(Client { socket }),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("the WebSocket handshake failed: {e}"),
        }
    }

    /// Connection ids in a Redis set.
    pub async fn members(&self, key: &str) -> Vec<String> {
        let mut conn = common::store::Redis::connect(&self.redis.url())
            .await
            .unwrap();
        let mut m: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        m.sort();
        m
    }

    /// Waits until `check` holds, or fails with `what`.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts a worker with the lean client signing with the test credentials.
async fn start_worker(args: &[String]) -> fanout_worker::Worker {
    let settings = fanout_worker::config::Config::try_parse_from(args)
        .expect("worker flags")
        .validate()
        .expect("worker settings");
    let credentials = mgmt_client::CredentialsSource::fixed(
        mgmt_client::SigningCredentials::new(SIGV4_ACCESS_KEY, SIGV4_SECRET_KEY, None)
            .expect("valid test credentials"),
    );
    let deliver = Arc::new(
        fanout_worker::delivery::LeanDeliver::new(
            credentials,
            settings.call_timeout,
            settings.max_in_flight,
        )
        .expect("the lean client builds"),
    );
    fanout_worker::Worker::start(settings, deliver)
        .await
        .expect("the worker starts")
}

/// A browser's WebSocket.
#[derive(Debug)]
pub struct Client {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Client {
    /// Sends a JSON message.
    pub async fn send(&mut self, value: Value) {
        self.socket
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    /// Closes the socket as a browser does (a close frame, code 1000), and waits for the close to finish.
    pub async fn close(mut self) {
        self.socket.close(None).await.unwrap();
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, self.socket.next()).await {}
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: String) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    /// The next JSON message; fails after [`PATIENCE`] or when the socket closes.
    pub async fn next(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("a message within the patience")
                .expect("the socket is open")
                .expect("a frame");
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("JSON from the server");
                }
                Message::Close(close) => panic!("the socket closed: {close:?}"),
                _ => continue,
            }
        }
    }

    /// The next message whose `type` is `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let m = self.next().await;
            if m["type"] == kind {
                return m;
            }
        }
    }

    /// Waits for the server to close the socket and returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("a close within the patience");
            match frame {
                Some(Ok(Message::Close(close))) => return close.map(|c| u16::from(c.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}
