//! `DELETE /v1/connections/{id}`: kicks a connection. It leaves every channel, subject and broadcast set
//! at once (no further message reaches it) and a `disconnect` job asks a worker to close the socket at
//! API Gateway (`DeleteConnection`); the record stays a few minutes so the worker can find its endpoint,
//! and the `$disconnect` that follows deletes it. Answers `202 {"job_id": ...}`, or 404 for an unknown
//! connection.

use super::ApiKey;
use crate::error::AppError;
use crate::state::AppState;
use crate::{membership, outbox};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use common::job::{Action, Job, Target};
use common::names::ConnectionId;
use serde_json::{Value, json};

pub async fn kick(
    _: ApiKey,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let id = ConnectionId::parse(&id).map_err(|_| AppError::ConnectionId)?;
    let conn = membership::peek(&state, &id)
        .await?
        .ok_or(AppError::UnknownConnection)?;
    // Queue the close first: if the queue is down nothing changes and the caller can retry.
    let job_id = outbox::enqueue(
        &state,
        Job::new(
            Target::Connections {
                ids: vec![id.as_str().to_owned()],
            },
            Action::Disconnect,
        ),
    )
    .await?;
    membership::detach(&state, &conn).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job_id }))))
}
