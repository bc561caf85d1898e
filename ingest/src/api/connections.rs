//! `DELETE /v1/connections/{id}`: kicks one connection (see [`crate::revocation`]): it is marked revoked
//! (its callbacks get 403 at once), leaves every channel, subject and broadcast set, and a `disconnect`
//! job asks a worker to close the socket at API Gateway (`DeleteConnection`). Answers
//! `202 {"job_id": ...}`, or 404 for an unknown connection.

use super::ApiKey;
use crate::error::AppError;
use crate::state::AppState;
use crate::{membership, revocation};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
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
    let kicked = revocation::kick(&state, std::slice::from_ref(&conn)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": kicked.job_ids.first() })),
    ))
}
