//! The operations listener: `/metrics` (Prometheus text, the `fanout_*` families of
//! `common::metrics::WorkerMetrics`; the queue depth, both lanes together, is read at scrape time) and `/healthz`, which
//! answers 503 while a queue poller is down (see [`crate::supervise`]).

use crate::supervise::Health;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::metrics::WorkerMetrics;
use common::queue::Lanes;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Ops {
    metrics: WorkerMetrics,
    queue: Lanes,
    health: Arc<Health>,
}

/// The listener's routes.
pub fn app(metrics: WorkerMetrics, queue: Lanes, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .with_state(Ops {
            metrics,
            queue,
            health,
        })
}

/// 200 `ok` while every poller runs; 503 with how many run while one is down.
async fn healthz(State(ops): State<Ops>) -> impl IntoResponse {
    let (running, wanted) = ops.health.pollers();
    if ops.health.healthy() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{running} of {wanted} queue pollers running"),
        )
    }
}

async fn scrape(State(ops): State<Ops>) -> impl IntoResponse {
    if let Ok(Ok(depth)) = tokio::time::timeout(Duration::from_secs(2), ops.queue.depth()).await {
        ops.metrics.queue_depth.set(depth as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        common::metrics::render(&ops.metrics.registry),
    )
}
