//! `GET /v1/channels/{channel}/presence[?cursor=C&limit=N]`: a presence channel's members, a page at a
//! time: `{"channel", "count", "members": [{"connection_id", "user_id", "info"}], "cursor"}`. `count` is
//! the number of members (constant time, whatever the channel's size); `members` holds about `limit`
//! (1 to 1000, default 100; small channels come back whole); `cursor` is the string to pass for the next
//! page, `null` after the last. Members who join or leave while paging may be missed or seen twice.
//! `?limit=0` answers the count alone. A channel without presence is 404 `presence_not_enabled`.

use super::ApiKey;
use crate::error::{AppError, ErrorBody};
use crate::presence;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use common::names::ChannelName;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The largest page asked for.
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresenceQuery {
    /// The `cursor` of the previous page; the first page without it.
    #[serde(default)]
    cursor: Option<String>,
    /// About how many members a page holds, 0 to 1000 (default 100); 0 answers the count alone.
    #[serde(default)]
    #[param(maximum = 1000)]
    limit: Option<u32>,
}

/// A page of a presence channel's members.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresencePage {
    pub channel: String,
    /// The number of members.
    pub count: u64,
    pub members: Vec<presence::Member>,
    /// Pass it as `?cursor=` for the next page; `null` after the last.
    pub cursor: Option<String>,
}

/// A presence channel's members, a page at a time, and their count.
#[utoipa::path(get, path = "/v1/channels/{channel}/presence", operation_id = "presence_members", tag = "channels",
    params(("channel" = String, Path, description = "A channel name"), PresenceQuery),
    responses(
        (status = 200, description = "A page of members", body = PresencePage),
        (status = 400, description = "An invalid channel, limit or cursor", body = ErrorBody),
        (status = 401, description = "No or a wrong API key", body = ErrorBody),
        (status = 404, description = "Presence is not enabled on this channel", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    ))]
pub async fn members(
    _: ApiKey,
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Query(query): Query<PresenceQuery>,
) -> Result<Json<PresencePage>, AppError> {
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
    Ok(Json(PresencePage {
        channel: channel.as_str().to_owned(),
        count,
        members,
        cursor: next,
    }))
}
