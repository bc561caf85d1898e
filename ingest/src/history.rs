//! Channel history: the last N messages of a channel (a capped Redis list, newest first), appended (stamped
//! with an offset) by [`crate::recovery::append`] and read back by `fetch_history`, oldest first.

use crate::state::AppState;
use common::names::{ChannelName, MAX_PAYLOAD_BYTES};
use serde_json::value::RawValue;

/// The `{"type":"history","room":...,"messages":[...]}` reply, oldest message first. When the whole
/// history would not fit in one API Gateway message, the oldest messages are left out.
pub async fn reply(
    state: &AppState,
    channel: &ChannelName,
) -> Result<Box<RawValue>, redis::RedisError> {
    let key = state.keys.history(channel.as_str());
    let newest_first: Vec<String> = redis::cmd("LRANGE")
        .arg(&key)
        .arg(0)
        .arg(i64::from(state.settings.history_size) - 1)
        .query_async(&mut state.conn())
        .await?;
    let head = format!(
        r#"{{"type":"history","room":{},"messages":["#,
        serde_json::to_string(channel.as_str()).expect("a string serialises")
    );
    let mut budget = MAX_PAYLOAD_BYTES - head.len() - 2;
    let mut kept = Vec::new();
    for entry in &newest_first {
        // Entries were valid JSON when written; anything else is skipped rather than sent.
        if RawValue::from_string(entry.clone()).is_err() || entry.len() + 1 > budget {
            continue;
        }
        budget -= entry.len() + 1;
        kept.push(entry.as_str());
    }
    kept.reverse();
    let text = format!("{head}{}]}}", kept.join(","));
    Ok(RawValue::from_string(text).expect("built from valid JSON parts"))
}

/// Takes one message back out of history (when it could not be sent after all).
pub async fn remove(
    state: &AppState,
    channel: &ChannelName,
    message: &str,
) -> Result<(), redis::RedisError> {
    redis::cmd("LREM")
        .arg(state.keys.history(channel.as_str()))
        .arg(1)
        .arg(message)
        .query_async::<()>(&mut state.conn())
        .await
}
