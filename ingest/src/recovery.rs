//! Recovery from an offset. Every message kept in a channel's history is stamped, in the same Lua script
//! that writes it, with the channel's `offset` (1, 2, 3, ... per channel) and `epoch` (a random id that
//! changes whenever the channel's history is lost or reset, so offsets from before mean nothing). A client
//! that reconnects asks for what came after the last offset it saw; [`decide`] answers from history with
//! the missed messages, oldest first, or with the reason they cannot all be given back.
//!
//! The position lives in [`common::keys::Keyspace::history_position`], which shares the history list's
//! hash tag: both scripts touch one slot, so they are atomic on a cluster too.

use crate::state::AppState;
use common::names::{ChannelName, MAX_PAYLOAD_BYTES};
use redis::Script;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Why a payload cannot be kept in history with an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    #[error("a payload kept in history must be a JSON object")]
    NotAnObject,
    #[error("a payload kept in history cannot have its own `offset` or `epoch` field")]
    ReservedField,
}

/// The object's members as text, without the braces (`""` for `{}`), once it is known to be an object
/// without `offset` or `epoch` of its own.
pub fn members_of(payload: &RawValue) -> Result<&str, StampError> {
    let fields: BTreeMap<String, &RawValue> =
        serde_json::from_str(payload.get()).map_err(|_| StampError::NotAnObject)?;
    if fields.contains_key("offset") || fields.contains_key("epoch") {
        return Err(StampError::ReservedField);
    }
    let text = payload.get().trim();
    Ok(text[1..text.len() - 1].trim())
}

/// KEYS: history list, position hash. ARGV: the object's members, a fresh epoch, the history size.
/// A new epoch starts when the position is missing, or when it says messages were kept but the list is
/// gone (history lost or reset): then counting starts again at 1.
const APPEND: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local offset = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')
if (not epoch) or (offset > 0 and redis.call('EXISTS', KEYS[1]) == 0) then
  epoch = ARGV[2]
  offset = 0
  redis.call('DEL', KEYS[1])
end
offset = offset + 1
redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', offset)
local entry = '{"offset":' .. string.format('%d', offset) .. ',"epoch":"' .. epoch .. '"'
if ARGV[1] ~= '' then entry = entry .. ',' .. ARGV[1] end
entry = entry .. '}'
redis.call('LPUSH', KEYS[1], entry)
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
return entry
"#;

/// KEYS: history list, position hash. Returns the epoch (or false), the last offset and the list, newest
/// first, read together.
const READ: &str = r#"
local pos = redis.call('HMGET', KEYS[2], 'epoch', 'offset')
return {pos[1], tonumber(pos[2] or '0'), redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)}
"#;

/// Stamps `payload` (already checked by [`members_of`]) with the channel's next offset, keeps it in
/// history and returns the stamped message, which is what every recipient must receive.
pub async fn append(
    state: &AppState,
    channel: &ChannelName,
    members: &str,
) -> Result<Box<RawValue>, redis::RedisError> {
    static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND));
    let entry: String = SCRIPT
        .key(state.keys.history(channel.as_str()))
        .key(state.keys.history_position(channel.as_str()))
        .arg(members)
        .arg(uuid::Uuid::new_v4().simple().to_string())
        .arg(state.settings.history_size)
        .invoke_async(&mut state.conn())
        .await?;
    RawValue::from_string(entry).map_err(|_| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "history script returned invalid JSON",
        ))
    })
}

/// What the channel's history holds now: its epoch (none if nothing was ever kept), the last offset
/// handed out, and the entries, newest first.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub epoch: Option<String>,
    pub offset: u64,
    pub newest_first: Vec<String>,
}

pub async fn snapshot(
    state: &AppState,
    channel: &ChannelName,
) -> Result<Snapshot, redis::RedisError> {
    static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(READ));
    let (epoch, offset, newest_first): (Option<String>, u64, Vec<String>) = SCRIPT
        .key(state.keys.history(channel.as_str()))
        .key(state.keys.history_position(channel.as_str()))
        .arg(state.settings.history_size)
        .invoke_async(&mut state.conn())
        .await?;
    Ok(Snapshot {
        epoch,
        offset,
        newest_first,
    })
}

/// Why the missed messages cannot all be given back; the client should reload its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The channel's history was lost or reset since the client's offset was handed out.
    EpochChanged,
    /// History no longer reaches back to the client's offset.
    Gap,
    /// The missed messages do not fit in one message to the client.
    TooLarge,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::EpochChanged => "epoch_changed",
            Refusal::Gap => "gap",
            Refusal::TooLarge => "too_large",
        }
    }
}

#[derive(Deserialize)]
struct Stamp {
    offset: u64,
}

/// The `{"type":"recover",...}` answer to a client that last saw `offset` in `epoch`: `recovered: true`
/// with the missed messages oldest first, or `recovered: false` with the reason. Either way it names the
/// channel's current `epoch` and `offset`, from which the client continues.
pub fn decide(channel: &ChannelName, epoch: &str, offset: u64, now: &Snapshot) -> Box<RawValue> {
    let head = |recovered: bool| {
        format!(
            r#"{{"type":"recover","channel":{},"recovered":{recovered},"epoch":{},"offset":{}"#,
            serde_json::to_string(channel.as_str()).expect("a string serialises"),
            serde_json::to_string(&now.epoch).expect("an option serialises"),
            now.offset,
        )
    };
    let refuse = |why: Refusal| {
        let text = format!(r#"{},"reason":"{}"}}"#, head(false), why.reason());
        RawValue::from_string(text).expect("built from valid JSON parts")
    };
    if now.epoch.as_deref() != Some(epoch) || offset > now.offset {
        return refuse(Refusal::EpochChanged);
    }
    // Entries after `offset`, newest first; the walk stops at the first one at or before it.
    let mut missed = Vec::new();
    let mut reached = offset == now.offset;
    for entry in &now.newest_first {
        match serde_json::from_str::<Stamp>(entry) {
            Ok(stamp) if stamp.offset > offset => missed.push(entry.as_str()),
            Ok(_) => {
                reached = true;
                break;
            }
            Err(_) => break,
        }
    }
    // The oldest missed entry must be the one right after `offset`, or history has lost some.
    let oldest = missed
        .last()
        .and_then(|e| serde_json::from_str::<Stamp>(e).ok());
    if !reached && oldest.map(|s| s.offset) != Some(offset + 1) {
        return refuse(Refusal::Gap);
    }
    missed.reverse();
    let text = format!(r#"{},"messages":[{}]}}"#, head(true), missed.join(","));
    if text.len() > MAX_PAYLOAD_BYTES {
        return refuse(Refusal::TooLarge);
    }
    RawValue::from_string(text).expect("built from valid JSON parts")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn entry(offset: u64, text: &str) -> String {
        format!(r#"{{"offset":{offset},"epoch":"e1","text":"{text}"}}"#)
    }

    fn snapshot(last: u64, kept: std::ops::RangeInclusive<u64>) -> Snapshot {
        Snapshot {
            epoch: Some("e1".into()),
            offset: last,
            newest_first: kept.rev().map(|o| entry(o, &format!("m{o}"))).collect(),
        }
    }

    fn answer(epoch: &str, offset: u64, now: &Snapshot) -> Value {
        let channel = ChannelName::parse("room").unwrap();
        serde_json::from_str(decide(&channel, epoch, offset, now).get()).unwrap()
    }

    #[test]
    fn members_are_the_object_without_braces() {
        assert_eq!(
            members_of(&raw(r#"{"a":1, "b":[2]}"#)),
            Ok(r#""a":1, "b":[2]"#)
        );
        assert_eq!(members_of(&raw("{ }")), Ok(""));
        assert_eq!(members_of(&raw("[1]")), Err(StampError::NotAnObject));
        assert_eq!(members_of(&raw("\"x\"")), Err(StampError::NotAnObject));
        assert_eq!(
            members_of(&raw(r#"{"offset":3}"#)),
            Err(StampError::ReservedField)
        );
        assert_eq!(
            members_of(&raw(r#"{"epoch":"x"}"#)),
            Err(StampError::ReservedField)
        );
    }

    #[test]
    fn missed_messages_come_back_oldest_first() {
        let a = answer("e1", 4, &snapshot(7, 1..=7));
        assert_eq!(a["recovered"], true);
        assert_eq!(a["offset"], 7);
        assert_eq!(a["epoch"], "e1");
        let texts: Vec<_> = a["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["m5", "m6", "m7"]);
    }

    #[test]
    fn nothing_missed_is_recovered_with_no_messages() {
        let a = answer("e1", 7, &snapshot(7, 3..=7));
        assert_eq!(a["recovered"], true);
        assert_eq!(a["messages"], json!([]));
    }

    #[test]
    fn the_oldest_kept_message_right_after_the_offset_is_no_gap() {
        let a = answer("e1", 2, &snapshot(7, 3..=7));
        assert_eq!(a["recovered"], true);
        assert_eq!(a["messages"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn history_that_no_longer_reaches_the_offset_is_a_gap() {
        let a = answer("e1", 1, &snapshot(7, 3..=7));
        assert_eq!(a["recovered"], false);
        assert_eq!(a["reason"], "gap");
        assert_eq!(a["offset"], 7);
        assert!(a.get("messages").is_none());
    }

    #[test]
    fn another_epoch_or_an_offset_never_handed_out_is_refused() {
        let now = snapshot(7, 1..=7);
        assert_eq!(answer("e0", 4, &now)["reason"], "epoch_changed");
        assert_eq!(answer("e1", 8, &now)["reason"], "epoch_changed");
        let a = answer("e1", 0, &Snapshot::default());
        assert_eq!(a["reason"], "epoch_changed");
        assert_eq!(a["epoch"], Value::Null);
    }

    #[test]
    fn more_than_one_message_can_hold_is_too_large() {
        let big = "x".repeat(MAX_PAYLOAD_BYTES / 2);
        let now = Snapshot {
            epoch: Some("e1".into()),
            offset: 3,
            newest_first: (1..=3).rev().map(|o| entry(o, &big)).collect(),
        };
        assert_eq!(answer("e1", 0, &now)["reason"], "too_large");
        assert_eq!(answer("e1", 2, &now)["recovered"], true);
    }
}
