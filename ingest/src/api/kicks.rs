//! Kicks and revocation (see [`crate::revocation`]):
//!
//! - `POST /v1/kick` with exactly one of `{"connection": id}`, `{"user": subject}` or
//!   `{"channel": name}`: kicks that connection, every connection of the user, or every member of the
//!   channel. Answers `202 {"kicked": n, "job_ids": [...]}`; 404 for an unknown connection.
//! - `POST /v1/users/{subject}/revoke` (logout, role change): kicks every connection of the subject and
//!   makes every token minted for it so far useless. Answers `202 {"kicked": n, "job_ids": [...]}`.

use super::ApiKey;
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;
use crate::{membership, revocation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use common::names::{ChannelName, ConnectionId, Subject};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of `POST /v1/kick`: exactly one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KickRequest {
    /// One connection id.
    #[serde(default)]
    connection: Option<String>,
    /// Every connection of this user (token subject).
    #[serde(default)]
    user: Option<String>,
    /// Every member of this channel.
    #[serde(default)]
    channel: Option<String>,
}

/// What a kick did.
#[derive(Debug, Serialize, ToSchema)]
pub struct KickAccepted {
    /// Connections revoked and detached.
    pub kicked: usize,
    /// The queued jobs that close them.
    pub job_ids: Vec<String>,
}

const KICK_SHAPE: &str = "the body must be JSON with exactly one of {\"connection\": id}, {\"user\": subject}, {\"channel\": name}";

/// Whom a kick is for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KickTarget {
    Connection(ConnectionId),
    User(Subject),
    Channel(ChannelName),
}

impl KickRequest {
    /// Decodes and validates a `POST /v1/kick` body.
    pub fn decode(body: &[u8]) -> Result<KickTarget, AppError> {
        if !crate::json::depth_within(body, crate::json::MAX_DEPTH) {
            return Err(AppError::BadRequest(KICK_SHAPE));
        }
        let request: KickRequest =
            serde_json::from_slice(body).map_err(|_| AppError::BadRequest(KICK_SHAPE))?;
        match (request.connection, request.user, request.channel) {
            (Some(id), None, None) => ConnectionId::parse(&id)
                .map(KickTarget::Connection)
                .map_err(|_| AppError::ConnectionId),
            (None, Some(subject), None) => Subject::parse(&subject)
                .map(KickTarget::User)
                .map_err(|_| AppError::BadRequest("invalid subject")),
            (None, None, Some(channel)) => ChannelName::parse(&channel)
                .map(KickTarget::Channel)
                .map_err(|_| AppError::Channel),
            _ => Err(AppError::BadRequest(KICK_SHAPE)),
        }
    }
}

fn accepted(kicked: revocation::Kicked) -> (StatusCode, Json<KickAccepted>) {
    (
        StatusCode::ACCEPTED,
        Json(KickAccepted {
            kicked: kicked.connections,
            job_ids: kicked.job_ids,
        }),
    )
}

/// Kicks a connection, a user's connections or a channel's members: revoked at once (their callbacks
/// answer 403), detached, closed by a worker.
#[utoipa::path(post, path = "/v1/kick", operation_id = "kick", tag = "kicks",
    request_body(content = KickRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Revoked; the closes are on the queue", body = KickAccepted),
        (status = 400, description = "Not exactly one valid field", body = ErrorBody),
        (status = 401, description = "No or a wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown connection", body = ErrorBody),
        (status = 503, description = "Redis or the queue is unavailable", body = ErrorBody),
    ))]
pub async fn kick(
    _: ApiKey,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<KickAccepted>), AppError> {
    let conns = match KickRequest::decode(&body)? {
        KickTarget::Connection(id) => vec![
            membership::peek(&state, &id)
                .await?
                .ok_or(AppError::UnknownConnection)?,
        ],
        KickTarget::User(subject) => {
            revocation::members(&state, &state.keys.subject(subject.as_str())).await?
        }
        KickTarget::Channel(channel) => {
            revocation::members(&state, &state.keys.channel(channel.as_str())).await?
        }
    };
    Ok(accepted(revocation::kick(&state, &conns).await?))
}

/// Logs a user out everywhere: invalidates the tokens minted for it and kicks its live connections.
#[utoipa::path(post, path = "/v1/users/{subject}/revoke", operation_id = "revoke_user", tag = "kicks",
    params(("subject" = String, Path, description = "The user (token subject)")),
    responses(
        (status = 202, description = "Tokens invalidated, connections revoked", body = KickAccepted),
        (status = 400, description = "An invalid subject", body = ErrorBody),
        (status = 401, description = "No or a wrong API key", body = ErrorBody),
        (status = 503, description = "Redis or the queue is unavailable", body = ErrorBody),
    ))]
pub async fn revoke_user(
    _: ApiKey,
    State(state): State<AppState>,
    Path(subject): Path<String>,
) -> Result<(StatusCode, Json<KickAccepted>), AppError> {
    let subject = Subject::parse(&subject).map_err(|_| AppError::BadRequest("invalid subject"))?;
    // Tokens first, so no token minted before this call can open a connection the kick then misses.
    revocation::bump_generation(&state, subject.as_str()).await?;
    let conns = revocation::members(&state, &state.keys.subject(subject.as_str())).await?;
    Ok(accepted(revocation::kick(&state, &conns).await?))
}
