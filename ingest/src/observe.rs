//! The metrics layer: counts every gateway callback by route and outcome (with its latency) and every API
//! request by operation (the route template, never the ids in the path) and outcome. The outcome is
//! `ok` or the error code [`AppError`](crate::error::AppError) put on the response.

use crate::callbacks::RouteKind;
use crate::error::ErrorCode;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

pub async fn record(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let outcome = match response.extensions().get::<ErrorCode>() {
        Some(ErrorCode(code)) => *code,
        None if response.status().is_success() => "ok",
        None => "rejected",
    };
    if outcome == "redis_unavailable" {
        state.metrics.redis_errors.inc();
    }
    let m = &state.metrics;
    if let Some(route) = path.strip_prefix("/ws/") {
        let label = RouteKind::of(route).label();
        m.callbacks.with_label_values(&[label, outcome]).inc();
        m.callback_duration
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
    } else if let Some(template) = matched
        .as_ref()
        .map(MatchedPath::as_str)
        .filter(|t| t.starts_with("/v1/"))
    {
        m.api_requests.with_label_values(&[template, outcome]).inc();
    }
    response
}
