//! `chat_message`: a browser publishes to its own channel, where configuration allows it. Everyone in the
//! channel (the sender included) receives `{"type":"chat_message","room","username","message","created_at"}`,
//! and the message is kept in the channel's history (stamped with `offset` and `epoch`, see
//! [`crate::recovery`]). History is written first and taken back if the
//! job cannot be queued, so history never holds a message nobody was sent.

use super::refuse;
use crate::error::AppError;
use crate::membership::Connection;
use crate::outbox;
use crate::state::AppState;
use common::names::ChannelPattern;
use serde_json::json;

pub async fn run(
    state: &AppState,
    conn: &Connection,
    message: Option<&str>,
) -> Result<(), AppError> {
    if !ChannelPattern::any_matches(&state.settings.chat_channels, &conn.channel) {
        return Err(refuse(
            state,
            conn,
            AppError::BadRequest("Publishing is not allowed on this channel."),
        )
        .await);
    }
    let text = message.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err(refuse(
            state,
            conn,
            AppError::BadRequest("Message cannot be empty."),
        )
        .await);
    }
    if text.chars().count() > state.settings.chat_message_max_chars {
        return Err(refuse(state, conn, AppError::BadRequest("Message is too long.")).await);
    }
    let payload = common::job::payload_of(&json!({
        "type": "chat_message",
        "room": conn.channel.as_str(),
        "username": conn.display_name(),
        "message": text,
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }));
    outbox::enqueue_kept(state, &conn.channel, &payload)
        .await
        .map(drop)
}
