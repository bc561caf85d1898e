//! `GET /v1/broadcasts/{id}`: the delivery report of a broadcast (a channel, user or everyone publish;
//! `id` is the `job_id` the publish answered with), as the workers keep it in Redis for a while:
//! `{"id", "state": "queued"|"running"|"finished", "target", "sent", "gone", "throttled", "failed",
//! "chunks", "outstanding", "enqueued_at_ms", "started_at_ms", "finished_at_ms"}`. 404 when no worker has
//! started it yet or its report has expired; one-connection publishes have no report.

use super::ApiKey;
use crate::error::AppError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use common::keys::report_field as f;
use serde_json::{Value, json};
use std::collections::HashMap;

pub async fn report(
    _: ApiKey,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
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
    let number = |name: &str| -> Value {
        fields
            .get(name)
            .and_then(|v| v.parse::<i64>().ok())
            .map_or(Value::Null, Value::from)
    };
    let count = |name: &str| {
        fields
            .get(name)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let state_word = if fields.contains_key(f::FINISHED_MS) {
        "finished"
    } else if fields.contains_key(f::STARTED_MS) {
        "running"
    } else {
        "queued"
    };
    Ok(Json(json!({
        "id": id,
        "state": state_word,
        "target": fields.get(f::TARGET),
        "sent": count(f::SENT),
        "duplicates": count(f::DUPLICATES),
        "gone": count(f::GONE),
        "throttled": count(f::THROTTLED),
        "retries": count(f::RETRIES),
        "failed": count(f::FAILED),
        "chunks": count(f::CHUNKS),
        "outstanding": count(f::OUTSTANDING).max(0),
        "enqueued_at_ms": number(f::ENQUEUED_MS),
        "started_at_ms": number(f::STARTED_MS),
        "finished_at_ms": number(f::FINISHED_MS),
    }))
    .into_response())
}
