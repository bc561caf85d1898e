//! `DELETE /v1/connections/{id}`: kicks one connection (see [`crate::revocation`]): it is marked revoked
//! (its callbacks get 403 at once), leaves every channel, subject and broadcast set, and a `disconnect`
//! job asks a worker to close the socket at API Gateway (`DeleteConnection`). Answers
//! `202 {"job_id": ...}`, or 404 for an unknown connection.

use super::ApiKey;
use super::publish::JobAccepted;
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;
use crate::{membership, revocation};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use common::names::ConnectionId;

/// Kicks one connection: revoked at once, detached, closed by a worker.
#[utoipa::path(delete, path = "/v1/connections/{id}", operation_id = "kick_connection", tag = "kicks",
    params(("id" = String, Path, description = "An API Gateway connection id")),
    responses(
        (status = 202, description = "Revoked; the close is on the queue (its job id)", body = JobAccepted),
        (status = 400, description = "An invalid connection id", body = ErrorBody),
        (status = 401, description = "No or a wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown connection", body = ErrorBody),
        (status = 503, description = "Redis or the queue is unavailable; nothing changed", body = ErrorBody),
    ))]
pub async fn kick(
    _: ApiKey,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobAccepted>), AppError> {
    let id = ConnectionId::parse(&id).map_err(|_| AppError::ConnectionId)?;
    let conn = membership::peek(&state, &id)
        .await?
        .ok_or(AppError::UnknownConnection)?;
    let kicked = revocation::kick(&state, std::slice::from_ref(&conn)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(JobAccepted {
            job_id: kicked.job_ids.into_iter().next().unwrap_or_default(),
        }),
    ))
}
