//! Channel history: the last N messages of a channel (a capped Redis list, newest first), appended (stamped
//! with an offset) by [`crate::recovery::append`] and read back by `fetch_history`, oldest first.

use crate::state::AppState;
use common::names::{ChannelName, MAX_PAYLOAD_BYTES};
use serde_json::value::RawValue;

/// Entries read per `LRANGE` while building a reply.
const PAGE: i64 = 10;

/// The `{"type":"history","room":...,"messages":[...]}` reply, oldest message first: the most recent
/// messages that fit in one API Gateway message (128 KiB), at most the configured history size. History
/// is read newest first, a page at a time, and reading stops once the reply is full, so one
/// `fetch_history` reads at most 128 KiB plus a page, however long the list or its entries.
pub async fn reply(
    state: &AppState,
    channel: &ChannelName,
) -> Result<Box<RawValue>, redis::RedisError> {
    let key = state.keys.history(channel.as_str());
    let head = format!(
        r#"{{"type":"history","room":{},"messages":["#,
        serde_json::to_string(channel.as_str()).expect("a string serialises")
    );
    let mut budget = MAX_PAYLOAD_BYTES - head.len() - 2;
    let limit = i64::from(state.settings.history_size);
    let mut kept: Vec<String> = Vec::new();
    let mut start = 0;
    'pages: while start < limit {
        let stop = (start + PAGE).min(limit) - 1;
        let page: Vec<String> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(start)
            .arg(stop)
            .query_async(&mut state.conn())
            .await?;
        let last_page = (page.len() as i64) < stop - start + 1;
        for entry in page {
            if entry.len() + 1 > budget {
                break 'pages;
            }
            // Entries were valid JSON when written; anything else is skipped rather than sent.
            if RawValue::from_string(entry.clone()).is_err() {
                continue;
            }
            budget -= entry.len() + 1;
            kept.push(entry);
        }
        if last_page {
            break;
        }
        start = stop + 1;
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
