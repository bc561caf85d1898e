//! `GET /v1/broadcasts/{id}`: the delivery report of a broadcast (a channel, user or everyone publish;
//! `id` is the `job_id` the publish answered with), as the workers keep it in Redis for a while:
//! `{"id", "state": "queued"|"running"|"finished", "target", "sent", "gone", "throttled", "failed",
//! "chunks", "outstanding", "enqueued_at_ms", "started_at_ms", "finished_at_ms"}`. 404 when no worker has
//! started it yet or its report has expired; one-connection publishes have no report.

use super::ApiKey;
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use common::keys::report_field as f;
use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;

/// Where a broadcast is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BroadcastState {
    /// On the queue; no worker has planned it yet.
    Queued,
    /// Planned; chunks are being delivered.
    Running,
    /// Every chunk is done.
    Finished,
}

/// A broadcast's delivery report. Counts are of recipients, except `duplicates` (second posts to a
/// recipient, after a worker was killed mid-chunk), `throttled` (429 answers) and `retries` (calls made
/// again).
#[derive(Debug, Serialize, ToSchema)]
pub struct BroadcastReport {
    pub id: String,
    pub state: BroadcastState,
    /// The kind of target: `channel`, `subject` or `all`.
    pub target: Option<String>,
    /// Recipients that received it.
    pub sent: i64,
    pub duplicates: i64,
    /// Recipients whose connection was gone (410), removed.
    pub gone: i64,
    pub throttled: i64,
    pub retries: i64,
    /// Recipients not delivered after every retry (dead-lettered).
    pub failed: i64,
    /// Chunks planned.
    pub chunks: i64,
    /// Chunks not finished yet.
    pub outstanding: i64,
    pub enqueued_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

/// A broadcast's delivery report, kept by the workers.
#[utoipa::path(get, path = "/v1/broadcasts/{id}", operation_id = "broadcast_report", tag = "broadcasts",
    params(("id" = String, Path, description = "The `job_id` a channel, user or everyone publish answered")),
    responses(
        (status = 200, description = "The report", body = BroadcastReport),
        (status = 400, description = "An invalid id", body = ErrorBody),
        (status = 401, description = "No or a wrong API key", body = ErrorBody),
        (status = 404, description = "Not started yet, expired, or a one-connection publish", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    ))]
pub async fn report(
    _: ApiKey,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BroadcastReport>, AppError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return Err(AppError::BadRequest("invalid broadcast id"));
    }
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(state.keys.report(&id))
        .query_async(&mut state.conn())
        .await?;
    if fields.is_empty() {
        return Err(AppError::UnknownBroadcast);
    }
    let number = |name: &str| fields.get(name).and_then(|v| v.parse::<i64>().ok());
    let count = |name: &str| number(name).unwrap_or(0);
    let state = if fields.contains_key(f::FINISHED_MS) {
        BroadcastState::Finished
    } else if fields.contains_key(f::STARTED_MS) {
        BroadcastState::Running
    } else {
        BroadcastState::Queued
    };
    Ok(Json(BroadcastReport {
        state,
        target: fields.get(f::TARGET).cloned(),
        sent: count(f::SENT),
        duplicates: count(f::DUPLICATES),
        gone: count(f::GONE),
        throttled: count(f::THROTTLED),
        retries: count(f::RETRIES),
        failed: count(f::FAILED),
        chunks: count(f::CHUNKS),
        outstanding: count(f::OUTSTANDING).max(0),
        enqueued_at_ms: number(f::ENQUEUED_MS),
        started_at_ms: number(f::STARTED_MS),
        finished_at_ms: number(f::FINISHED_MS),
        id,
    }))
}
