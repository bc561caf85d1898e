//! Presence's shared parts: how a member is stored in a channel's presence hash (`pres:{name}`), how it is
//! shown to clients, the join/leave event message, and [`leave_channel`], the one script every process
//! uses to take a connection out of a channel and its presence (ingest on `$disconnect`, kicks and the
//! stale-connection sweep; the worker for connections API Gateway answered 410 for).
//!
//! The script answers the presence entry only to the call that removed it, so however many of those
//! paths race for one connection, its leave event is sent once.

use crate::keys::Keyspace;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A member as stored in the presence hash (short keys: one entry per connection).
#[derive(Debug, Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    u: Option<Cow<'a, str>>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    i: Option<&'a RawValue>,
}

/// The presence hash value for a connection of `subject` (if any) with client `info` (a JSON object as
/// compact text; unreadable info is left out).
pub fn stored_value(subject: Option<&str>, info: Option<&str>) -> String {
    let info = info.and_then(|i| serde_json::from_str::<&RawValue>(i).ok());
    serde_json::to_string(&Stored {
        u: subject.map(Cow::Borrowed),
        i: info,
    })
    .expect("a presence member serialises")
}

/// A member as clients and the API see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub connection_id: String,
    /// The token's subject; `null` for an anonymous connection.
    pub user_id: Option<String>,
    /// The token's client info; `null` when it had none.
    #[schema(value_type = Option<Object>)]
    pub info: Option<Box<RawValue>>,
}

impl Member {
    /// The member for a connection's presence hash entry (an unreadable entry shows no user or info).
    pub fn from_stored(connection_id: &str, value: &str) -> Self {
        let stored: Option<Stored<'_>> = serde_json::from_str(value).ok();
        Self {
            connection_id: connection_id.to_owned(),
            user_id: stored
                .as_ref()
                .and_then(|s| s.u.as_deref())
                .map(str::to_owned),
            info: stored.and_then(|s| s.i).map(RawValue::to_owned),
        }
    }
}

/// Which way a member went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Join,
    Leave,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::Join => "join",
            Event::Leave => "leave",
        }
    }
}

/// The message a channel's members get when `member` joins or leaves:
/// `{"type":"presence","event":"join"|"leave","channel":…,"member":{…}}`.
pub fn event_payload(channel: &str, event: Event, member: &Member) -> Box<RawValue> {
    crate::job::payload_of(&serde_json::json!({
        "type": "presence",
        "event": event.name(),
        "channel": channel,
        "member": member,
    }))
}

/// What leaving a channel did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Left {
    /// The connection was in the channel.
    pub removed: bool,
    /// It was the channel's last member.
    pub vacated: bool,
    /// Its presence entry, if it had one (and this call removed it).
    pub presence: Option<String>,
}

impl Left {
    /// Reads the answer of [`leave_channel`] (`None`, an answer that never came, is "nothing left").
    pub fn from_reply(value: Option<redis::Value>) -> Result<Self, redis::RedisError> {
        let (removed, vacated, member): (i64, i64, String) = match value {
            Some(v) => redis::from_redis_value(v)?,
            None => (0, 0, String::new()),
        };
        Ok(Self {
            removed: removed == 1,
            vacated: vacated == 1,
            presence: Some(member).filter(|m| !m.is_empty()),
        })
    }
}

/// The script call that takes connection `id` out of `channel` and its presence (a command, so it can be
/// part of a batch); its answer is read with [`Left::from_reply`]. The two keys share the channel's slot.
pub fn leave_channel(keys: &Keyspace, id: &str, channel: &str) -> redis::Cmd {
    redis::cmd("EVAL")
        .arg(crate::lua::LEAVE_CHANNEL)
        .arg(2)
        .arg(keys.channel(channel))
        .arg(keys.presence(channel))
        .arg(id)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_through_their_stored_form() {
        let value = stored_value(Some("ada"), Some(r#"{"name":"Ada"}"#));
        assert_eq!(value, r#"{"u":"ada","i":{"name":"Ada"}}"#);
        let shown = serde_json::to_value(Member::from_stored("c1", &value)).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({"connection_id":"c1","user_id":"ada","info":{"name":"Ada"}})
        );
        let event: serde_json::Value = serde_json::from_str(
            event_payload("room", Event::Leave, &Member::from_stored("c1", &value)).get(),
        )
        .unwrap();
        assert_eq!(
            event,
            serde_json::json!({"type":"presence","event":"leave","channel":"room",
                "member":{"connection_id":"c1","user_id":"ada","info":{"name":"Ada"}}})
        );
    }

    #[test]
    fn anonymous_members_and_unreadable_entries_show_nulls() {
        assert_eq!(stored_value(None, None), "{}");
        let back = Member::from_stored("c1", &stored_value(Some(r#"a"b\c"#), None));
        assert_eq!(back.user_id.as_deref(), Some(r#"a"b\c"#));
        let broken = serde_json::to_value(Member::from_stored("c2", "not json")).unwrap();
        assert_eq!(broken["user_id"], serde_json::Value::Null);
        assert_eq!(broken["info"], serde_json::Value::Null);
    }

    /// The leave script hands the presence entry to one caller only, however often it runs.
    #[tokio::test]
    async fn leaving_twice_hands_out_the_presence_entry_once() {
        let server = test_support::RedisServer::start();
        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys = Keyspace::default();
        let _: () = redis::pipe()
            .cmd("SADD")
            .arg(keys.channel("room"))
            .arg("c1")
            .cmd("HSET")
            .arg(keys.presence("room"))
            .arg("c1")
            .arg("{}")
            .query_async(&mut conn)
            .await
            .unwrap();
        let first: redis::Value = leave_channel(&keys, "c1", "room")
            .query_async(&mut conn)
            .await
            .unwrap();
        let second: redis::Value = leave_channel(&keys, "c1", "room")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            Left::from_reply(Some(first)).unwrap(),
            Left {
                removed: true,
                vacated: true,
                presence: Some("{}".into())
            }
        );
        assert_eq!(Left::from_reply(Some(second)).unwrap(), Left::default());
    }
}
