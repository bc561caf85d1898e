//! The operations listener: `/metrics` (Prometheus text, the `fanout_*` families of
//! `common::metrics::WorkerMetrics`; the queue depth is read at scrape time) and `/healthz`.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use common::metrics::WorkerMetrics;
use common::queue::SharedQueue;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Ops {
    metrics: WorkerMetrics,
    queue: SharedQueue,
}

/// The listener's routes.
pub fn app(metrics: WorkerMetrics, queue: SharedQueue) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Ops { metrics, queue })
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
