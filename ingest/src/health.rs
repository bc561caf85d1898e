//! Operations endpoints: `/healthz` (the process answers), `/readyz` (Redis and the queue answer: a load
//! balancer should send traffic only when this is 200) and `/metrics` (Prometheus text format; the live
//! connection count and queue depth are read at scrape time).

use crate::membership;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (redis, queue) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, state.redis.ping()),
        tokio::time::timeout(CHECK_TIMEOUT, state.queue.ping())
    );
    let redis_ok = matches!(redis, Ok(Ok(())));
    let queue_ok = matches!(queue, Ok(Ok(())));
    let word = |ok| if ok { "ok" } else { "unavailable" };
    let status = if redis_ok && queue_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "redis": word(redis_ok), "queue": word(queue_ok) })),
    )
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (live, depth) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, membership::live_connections(&state)),
        tokio::time::timeout(CHECK_TIMEOUT, state.queue.depth())
    );
    if let Ok(Ok(n)) = live {
        state.metrics.live_connections.set(n as i64);
    }
    if let Ok(Ok(n)) = depth {
        state.metrics.queue_depth.set(n as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        common::metrics::render(&state.metrics.registry),
    )
}
