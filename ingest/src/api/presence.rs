//! `GET /v1/channels/{channel}/presence[?cursor=C&limit=N]`: a presence channel's members, a page at a
//! time: `{"channel", "count", "members": [{"connection_id", "user_id", "info"}], "cursor"}`. `count` is
//! the number of members (constant time, whatever the channel's size); `members` holds about `limit`
//! (1 to 1000, default 100; small channels come back whole); `cursor` is the string to pass for the next
//! page, `null` after the last. Members who join or leave while paging may be missed or seen twice.
//! `?limit=0` answers the count alone. A channel without presence is 404 `presence_not_enabled`.

use super::ApiKey;
use crate::error::AppError;
use crate::presence;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use common::names::ChannelName;
use serde::Deserialize;
use serde_json::{Value, json};

/// The largest page asked for.
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize)]
pub struct PresenceQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn members(
    _: ApiKey,
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Query(query): Query<PresenceQuery>,
) -> Result<Json<Value>, AppError> {
    let channel = ChannelName::parse(&channel).map_err(|_| AppError::Channel)?;
    if !presence::enabled(&state, &channel) {
        return Err(AppError::PresenceDisabled);
    }
    let limit = query.limit.unwrap_or(100);
    if limit > MAX_LIMIT {
        return Err(AppError::BadRequest("limit must be between 0 and 1000"));
    }
    let cursor = match query.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse::<u64>()
            .map_err(|_| AppError::BadRequest("cursor must be a cursor from a previous page"))?,
    };
    let count = presence::count(&state, &channel).await?;
    let (members, next) = if limit == 0 {
        (Vec::new(), 0)
    } else {
        presence::page(&state, &channel, cursor, limit).await?
    };
    let next = (next != 0).then(|| next.to_string());
    Ok(Json(json!({
        "channel": channel.as_str(),
        "count": count,
        "members": members,
        "cursor": next,
    })))
}
