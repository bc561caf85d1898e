//! A small Management API server for tests and benchmarks: answers `POST` and `DELETE
//! /{stage}/@connections/{id}` with 200/204, or with what a per-connection script says (410
//! `GoneException`, 429 `LimitExceededException`, 403 `ForbiddenException`, 413, 5xx, each with the
//! `x-amzn-ErrorType` header the AWS SDK types errors by), optionally behind a token bucket that answers
//! 429 like the account throttle, and records every call it received. For a benchmark run in another
//! process, `GET /__stats` answers `"<2xx count> <429 count>"` and `GET /__reset` clears the record and
//! refills the bucket.
//!
//! Like API Gateway, it checks every call's SigV4 signature (access key `test`, secret `test`, region
//! `us-east-1`, as [`super::test_deliver`] and the real binary in tests sign) with
//! `mgmt_client::Verifier`, and answers a bad, missing or stale one with 403 `ForbiddenException`,
//! recorded as a call with status 403 and counted in [`MgmtServer::signature_refusals`]; so a signing
//! bug fails every test that expects a delivery.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One call the server received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub connection_id: String,
    pub body: Bytes,
    pub status: u16,
}

#[derive(Debug, Default)]
struct Inner {
    /// Statuses to answer per connection id, in order; when a script runs out, 200.
    scripts: HashMap<String, VecDeque<u16>>,
    /// Statuses answered for ever per connection id.
    always: HashMap<String, u16>,
    calls: Vec<Call>,
    record_bodies: bool,
    bucket: Option<Bucket>,
    delay: Duration,
    verifier: Option<Arc<mgmt_client::Verifier>>,
    signature_refusals: usize,
    /// Calls being answered now, per connection id, and the most there ever were to one connection.
    in_flight: HashMap<String, usize>,
    most_in_flight_to_one: usize,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

/// The running server.
#[derive(Debug, Clone)]
pub struct MgmtServer {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl MgmtServer {
    /// Starts on a free loopback port, answering 200 to everything.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts on `port` of 127.0.0.1 (0: a free one).
    pub async fn start_on(port: u16) -> Self {
        let credentials = mgmt_client::SigningCredentials::new("test", "test", None).unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            record_bodies: true,
            verifier: Some(Arc::new(mgmt_client::Verifier::new(
                credentials,
                Some("us-east-1".to_owned()),
            ))),
            ..Inner::default()
        }));
        let app = Router::new().fallback(answer).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, inner }
    }

    /// The endpoint URL for `stage`, as `FANOUT_API_GATEWAYS` takes it (`API_ID=URL`).
    pub fn endpoint(&self, stage: &str) -> String {
        format!("http://{}/{stage}", self.addr)
    }

    /// Answers these statuses, in order, to `id`'s next calls (then 200).
    pub fn script(&self, id: &str, statuses: &[u16]) {
        self.lock()
            .scripts
            .insert(id.to_owned(), statuses.iter().copied().collect());
    }

    /// Answers `status` to every call for `id`.
    pub fn always(&self, id: &str, status: u16) {
        self.lock().always.insert(id.to_owned(), status);
    }

    /// Answers 429 above `rate` calls a second with a bucket of `burst`, like the account throttle.
    pub fn throttle(&self, rate: f64, burst: f64) {
        self.lock().bucket = Some(Bucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        });
    }

    /// Waits this long before answering each call.
    pub fn delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Stops checking signatures (a benchmark sink measures clients, not the verifier).
    pub fn skip_signature_checks(&self) {
        self.lock().verifier = None;
    }

    /// Calls refused for a bad, missing or stale signature.
    pub fn signature_refusals(&self) -> usize {
        self.lock().signature_refusals
    }

    /// Keeps only statuses, not bodies (for big runs).
    pub fn forget_bodies(&self) {
        self.lock().record_bodies = false;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Number of calls answered with `status`.
    pub fn count(&self, status: u16) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.status == status)
            .count()
    }

    /// Calls answered 2xx, per connection id.
    pub fn delivered(&self) -> HashMap<String, Vec<Bytes>> {
        let mut out: HashMap<String, Vec<Bytes>> = HashMap::new();
        for c in self.lock().calls.iter().filter(|c| c.status < 300) {
            out.entry(c.connection_id.clone())
                .or_default()
                .push(c.body.clone());
        }
        out
    }

    /// The most calls to one connection that were being answered at the same time.
    pub fn most_in_flight_to_one(&self) -> usize {
        self.lock().most_in_flight_to_one
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }
}

/// Percent-decodes a path segment.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len() + 1
            && let Ok(b) = u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or(""), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() == "/__stats" {
        let inner = inner.lock().unwrap();
        let count = |lo: u16, hi: u16| {
            inner
                .calls
                .iter()
                .filter(|c| (lo..=hi).contains(&c.status))
                .count()
        };
        return format!("{} {}", count(200, 299), count(429, 429)).into_response();
    }
    if uri.path() == "/__reset" {
        let mut inner = inner.lock().unwrap();
        inner.calls.clear();
        if let Some(b) = inner.bucket.as_mut() {
            b.tokens = b.burst;
            b.at = Instant::now();
        }
        return StatusCode::OK.into_response();
    }
    // /{stage}/@connections/{id}, the '@' possibly encoded.
    let segments: Vec<String> = uri.path().split('/').map(decode).collect();
    let Some(pos) = segments.iter().position(|s| s == "@connections") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(id) = segments.get(pos + 1).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let verifier = inner.lock().unwrap().verifier.clone();
    let refused = verifier.and_then(|v| {
        v.verify(&method, &uri, &headers, &body, std::time::SystemTime::now())
            .err()
    });
    let delay = {
        let mut inner = inner.lock().unwrap();
        let now = inner.in_flight.entry(id.clone()).or_default();
        *now += 1;
        let now = *now;
        inner.most_in_flight_to_one = inner.most_in_flight_to_one.max(now);
        inner.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = {
        let mut inner = inner.lock().unwrap();
        if let Some(n) = inner.in_flight.get_mut(&id) {
            *n -= 1;
        }
        let throttled = inner.bucket.as_mut().is_some_and(|b| {
            let now = Instant::now();
            b.tokens = (b.tokens + b.rate * now.duration_since(b.at).as_secs_f64()).min(b.burst);
            b.at = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                false
            } else {
                true
            }
        });
        let scripted = inner
            .scripts
            .get_mut(&id)
            .and_then(|s| s.pop_front())
            .or_else(|| inner.always.get(&id).copied());
        let status = if refused.is_some() {
            inner.signature_refusals += 1;
            403
        } else if throttled {
            429
        } else {
            scripted.unwrap_or(if method == Method::DELETE { 204 } else { 200 })
        };
        let body = if inner.record_bodies {
            body
        } else {
            Bytes::new()
        };
        inner.calls.push(Call {
            method: method.clone(),
            connection_id: id,
            body,
            status,
        });
        status
    };
    let error_type = match status {
        410 => "GoneException",
        429 => "LimitExceededException",
        403 => "ForbiddenException",
        413 => "PayloadTooLargeException",
        s if s >= 500 => "InternalServerErrorException",
        _ => return StatusCode::from_u16(status).unwrap().into_response(),
    };
    (
        StatusCode::from_u16(status).unwrap(),
        [
            ("x-amzn-ErrorType", error_type),
            ("content-type", "application/json"),
        ],
        format!(r#"{{"message":"{error_type}"}}"#),
    )
        .into_response()
}
