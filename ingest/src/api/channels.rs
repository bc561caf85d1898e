//! `GET /v1/channels/{channel}`: `{"channel", "connections", "subjects"}`, the number of connections in the
//! channel and of distinct subjects among them (anonymous connections count as connections only). The
//! subject count scans the channel's members, so it costs time proportional to the channel's size.

use super::ApiKey;
use crate::error::{AppError, ErrorBody};
use crate::membership;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use common::names::ChannelName;
use serde::Serialize;
use utoipa::ToSchema;

/// A channel's size.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelStats {
    pub channel: String,
    /// Connections in the channel.
    pub connections: u64,
    /// Distinct users (token subjects) among them.
    pub subjects: u64,
}

/// A channel's connections and distinct users.
#[utoipa::path(get, path = "/v1/channels/{channel}", operation_id = "channel_stats", tag = "channels",
    params(("channel" = String, Path, description = "A channel name")),
    responses(
        (status = 200, description = "The counts", body = ChannelStats),
        (status = 400, description = "An invalid channel name", body = ErrorBody),
        (status = 401, description = "No or a wrong API key", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    ))]
pub async fn stats(
    _: ApiKey,
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Json<ChannelStats>, AppError> {
    let channel = ChannelName::parse(&channel).map_err(|_| AppError::Channel)?;
    let (connections, subjects) = membership::channel_stats(&state, &channel).await?;
    Ok(Json(ChannelStats {
        channel: channel.as_str().to_owned(),
        connections,
        subjects,
    }))
}
