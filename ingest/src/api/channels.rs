//! `GET /v1/channels/{channel}`: `{"channel", "connections", "subjects"}`, the number of connections in the
//! channel and of distinct subjects among them (anonymous connections count as connections only). The
//! subject count scans the channel's members, so it costs time proportional to the channel's size.

use super::ApiKey;
use crate::error::AppError;
use crate::membership;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use common::names::ChannelName;
use serde_json::{Value, json};

pub async fn stats(
    _: ApiKey,
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Json<Value>, AppError> {
    let channel = ChannelName::parse(&channel).map_err(|_| AppError::Channel)?;
    let (connections, subjects) = membership::channel_stats(&state, &channel).await?;
    Ok(Json(
        json!({ "channel": channel.as_str(), "connections": connections, "subjects": subjects }),
    ))
}
