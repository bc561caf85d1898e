//! `GET /v1/channels/{channel}/history[?limit=N]`: what a channel's history keeps, for an application
//! that rebuilds its state (after a client's `recovered: false`, say): `{"channel", "epoch", "offset",
//! "messages", "truncated"}`, the newest `limit` messages (1 to 1000, default 100) oldest first, each as
//! its members received it (with its `offset` and `epoch`). An answer holds at most [`MAX_BYTES`] of
//! messages; `truncated` says that older ones were left out. `epoch` is `null` and `messages` empty for a
//! channel that never kept anything.

use super::ApiKey;
use crate::error::{AppError, ErrorBody};
use crate::recovery;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use common::names::ChannelName;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

/// The most message bytes one answer holds.
pub const MAX_BYTES: usize = 1024 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The newest messages to answer, 1 to 1000 (default 100; at most what the channel keeps).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A channel's kept messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    pub channel: String,
    /// Changes when the channel's history is lost or reset; `null` if it never kept a message.
    pub epoch: Option<String>,
    /// The last offset handed out on the channel.
    pub offset: u64,
    /// Oldest first, as members received them.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Box<RawValue>>,
    /// Older kept messages were left out to stay within 1 MiB.
    pub truncated: bool,
}

/// A channel's kept messages, oldest first, with its epoch and offset.
#[utoipa::path(get, path = "/v1/channels/{channel}/history", operation_id = "channel_history", tag = "channels",
    params(("channel" = String, Path, description = "A channel name"), HistoryQuery),
    responses(
        (status = 200, description = "The kept messages", body = History),
        (status = 400, description = "An invalid channel or limit", body = ErrorBody),
        (status = 401, description = "No or a wrong API key", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    ))]
pub async fn read(
    _: ApiKey,
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<History>, AppError> {
    let channel = ChannelName::parse(&channel).map_err(|_| AppError::Channel)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::BadRequest("limit must be between 1 and 1000"));
    }
    let snapshot = recovery::snapshot(&state, &channel).await?;
    let mut budget = MAX_BYTES;
    let mut messages = Vec::new();
    let mut truncated = false;
    for entry in snapshot.newest_first.into_iter().take(limit as usize) {
        if entry.len() > budget {
            truncated = true;
            break;
        }
        // Entries were valid JSON when written; anything else is skipped rather than answered.
        if let Ok(message) = RawValue::from_string(entry) {
            budget -= message.get().len();
            messages.push(message);
        }
    }
    messages.reverse();
    Ok(Json(History {
        channel: channel.as_str().to_owned(),
        epoch: snapshot.epoch,
        offset: snapshot.offset,
        messages,
        truncated,
    }))
}
