//! Presence: who is in a channel, for the channels configuration enables (`FANOUT_PRESENCE_CHANNELS`).
//!
//! A presence channel keeps one hash beside its member set, `pres:{name}` (same hash tag, so joining the
//! channel and its presence is one script, see [`crate::membership`]): connection id → the member's user
//! id and client info as compact JSON (`{"u":…,"i":…}`). That is one field per connection in a key per
//! channel, no key per connection, and counting members is `HLEN`, constant time whatever the channel's
//! size. Listing pages through the hash with `HSCAN`.
//!
//! When someone joins or leaves (connect, disconnect, `change_channel`, a kick, or the stale-connection
//! sweep), the channel's members get `{"type":"presence","event":"join"|"leave","channel":…,"member":…}`
//! as one job on the queue, like any channel publish. A connection asks for the members of its own
//! channel with `{"action":"presence"}` (see [`crate::actions`]); the application with
//! `GET /v1/channels/{name}/presence`.

use crate::error::AppError;
use crate::membership::Connection;
use crate::outbox;
use crate::state::AppState;
use common::job::{Job, Target};
use common::names::{ChannelName, MAX_PAYLOAD_BYTES};

/// True when `channel` has presence.
pub fn enabled(state: &AppState, channel: &ChannelName) -> bool {
    common::names::ChannelPattern::any_matches(&state.settings.presence_channels, channel)
}

pub use common::presence::{Event, Member};

/// The presence hash value for a connection (see [`common::presence`] for the stored form).
pub fn stored(conn: &Connection) -> String {
    common::presence::stored_value(
        conn.subject.as_ref().map(|s| s.as_str()),
        conn.info.as_deref(),
    )
}

/// The member a connection is.
pub fn member_of(conn: &Connection) -> Member {
    Member::from_stored(conn.id.as_str(), &stored(conn))
}

/// Tells the channel's members that `member` joined or left: one job to the channel. A queue failure is
/// logged and counted (`fanout_enqueue_failures_total`), not returned: the membership change it
/// announces has already happened, and failing the callback would not undo it.
pub async fn announce(state: &AppState, channel: &ChannelName, event: Event, member: &Member) {
    let payload = common::presence::event_payload(channel.as_str(), event, member);
    let job = Job::post(
        Target::Channel {
            channel: channel.as_str().to_owned(),
        },
        payload,
    );
    if let Err(e) = outbox::enqueue(state, job).await {
        tracing::warn!(error = %e, %channel, event = event.name(), "presence event not queued");
    }
}

/// How many members a presence channel has (`HLEN`: constant time).
pub async fn count(state: &AppState, channel: &ChannelName) -> Result<u64, redis::RedisError> {
    redis::cmd("HLEN")
        .arg(state.keys.presence(channel.as_str()))
        .query_async(&mut state.conn())
        .await
}

/// One page of members from `cursor` (0 to start), of about `count` members (`HSCAN`'s `COUNT`, a hint:
/// small hashes come back whole), and the cursor of the next page (0 when done).
pub async fn page(
    state: &AppState,
    channel: &ChannelName,
    cursor: u64,
    count: u32,
) -> Result<(Vec<Member>, u64), redis::RedisError> {
    let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
        .arg(state.keys.presence(channel.as_str()))
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(&mut state.conn())
        .await?;
    let members = flat
        .chunks_exact(2)
        .map(|pair| Member::from_stored(&pair[0], &pair[1]))
        .collect();
    Ok((members, next))
}

/// The room a presence reply to a client leaves for its envelope.
const REPLY_ENVELOPE_BYTES: usize = 1024;

/// The members of `channel` for a client's `presence` action: as many as fit in one WebSocket message
/// (128 KiB), and whether some were left out.
pub async fn for_client(
    state: &AppState,
    channel: &ChannelName,
) -> Result<(Vec<Member>, bool), AppError> {
    let mut members = Vec::new();
    let mut bytes = REPLY_ENVELOPE_BYTES;
    let mut cursor = 0;
    loop {
        let (batch, next) = page(state, channel, cursor, 500).await?;
        for member in batch {
            let size = serde_json::to_string(&member).map_or(usize::MAX, |s| s.len()) + 1;
            if bytes + size > MAX_PAYLOAD_BYTES {
                return Ok((members, true));
            }
            bytes += size;
            members.push(member);
        }
        if next == 0 {
            return Ok((members, false));
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::names::{ConnectionId, Subject};

    fn conn(subject: Option<&str>, info: Option<&str>) -> Connection {
        Connection {
            id: ConnectionId::parse("c1").unwrap(),
            channel: ChannelName::parse("room").unwrap(),
            subject: subject.map(|s| Subject::parse(s).unwrap()),
            allowed: None,
            api_id: "a".into(),
            stage: "s".into(),
            connected_at_ms: 0,
            source_ip: "ip".into(),
            token_hash: None,
            info: info.map(str::to_owned),
        }
    }

    #[test]
    fn members_round_trip_through_their_stored_form() {
        let c = conn(Some("ada"), Some(r#"{"name":"Ada"}"#));
        let value = stored(&c);
        assert_eq!(value, r#"{"u":"ada","i":{"name":"Ada"}}"#);
        let shown = serde_json::to_value(Member::from_stored("c1", &value)).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({"connection_id":"c1","user_id":"ada","info":{"name":"Ada"}})
        );
    }

    #[test]
    fn anonymous_members_and_unreadable_entries_show_nulls() {
        assert_eq!(stored(&conn(None, None)), "{}");
        let shown = serde_json::to_value(member_of(&conn(None, None))).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({"connection_id":"c1","user_id":null,"info":null})
        );
        let quoted = conn(Some(r#"a"b\c"#), None);
        let back = Member::from_stored("c1", &stored(&quoted));
        assert_eq!(back.user_id.as_deref(), Some(r#"a"b\c"#));
        let broken = serde_json::to_value(Member::from_stored("c2", "not json")).unwrap();
        assert_eq!(broken["user_id"], serde_json::Value::Null);
    }
}
