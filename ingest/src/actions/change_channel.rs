//! `change_channel`: moves the connection to another channel (one channel at a time, as in the Django
//! package) after the same name and permission checks as `$connect`, and answers
//! `{"type":"channel_changed","channel":...}`.

use super::refuse;
use crate::error::AppError;
use crate::membership::{self, Connection};
use crate::outbox;
use crate::state::AppState;
use common::names::ChannelName;
use serde_json::json;

pub async fn run(
    state: &AppState,
    mut conn: Connection,
    channel: Option<&str>,
) -> Result<(), AppError> {
    let Some(channel) = channel.and_then(|c| ChannelName::parse(c).ok()) else {
        return Err(refuse(state, &conn, AppError::Channel).await);
    };
    if !membership::may_join(
        state,
        conn.subject.as_ref(),
        conn.allowed
            .as_ref()
            .map(membership::Allowed::patterns)
            .as_deref(),
        &channel,
    ) {
        return Err(refuse(state, &conn, AppError::PermissionDenied).await);
    }
    if channel != conn.channel {
        let from = conn.channel.clone();
        let (left, joined) = membership::move_to(state, &mut conn, channel).await?;
        crate::lifecycle::moved(state, &conn, &from, &left, joined).await;
    }
    outbox::reply(
        state,
        &conn.id,
        common::job::payload_of(
            &json!({"type": "channel_changed", "channel": conn.channel.as_str()}),
        ),
    )
    .await
    .map(drop)
}
