//! The lifecycle events the application can receive: [`EventKind`] names them, [`LifecycleEvent`] is one
//! as it appears in a batch's `events` array, and [`EventFilter`] is the set configuration chose.

use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A connection was registered (`$connect` accepted).
    Connect,
    /// A connection went away: `$disconnect`, a kick, or its record expired (see `reason`).
    Disconnect,
    /// A member joined a presence channel.
    Join,
    /// A member left a presence channel.
    Leave,
    /// A channel got its first member.
    ChannelOccupied,
    /// A channel lost its last member.
    ChannelVacated,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Connect,
        EventKind::Disconnect,
        EventKind::Join,
        EventKind::Leave,
        EventKind::ChannelOccupied,
        EventKind::ChannelVacated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::Disconnect => "disconnect",
            EventKind::Join => "join",
            EventKind::Leave => "leave",
            EventKind::ChannelOccupied => "channel_occupied",
            EventKind::ChannelVacated => "channel_vacated",
        }
    }

    /// The kind named `name` (as in `FANOUT_LIFECYCLE_WEBHOOK_EVENTS`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The kinds that are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFilter(u8);

impl EventFilter {
    /// Exactly `kinds`; every kind when `kinds` is empty.
    pub fn only(kinds: &[EventKind]) -> Self {
        let kinds = if kinds.is_empty() {
            &EventKind::ALL[..]
        } else {
            kinds
        };
        Self(kinds.iter().fold(0, |bits, k| bits | k.bit()))
    }

    pub fn allows(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

/// One event, as the application receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When ingest saw it, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The connection the event is about (for `channel_occupied`/`channel_vacated`, the one whose
    /// arrival or departure caused it).
    pub connection_id: String,
    /// The connection's user (the token's subject); `null` for an anonymous connection, or when an
    /// expired record no longer says.
    pub user_id: Option<String>,
    pub channel: String,
    /// For `disconnect`: `disconnected`, `kicked` or `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.name()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.name())
            );
        }
        assert_eq!(EventKind::parse("Connect"), None);
    }

    #[test]
    fn a_filter_allows_what_it_names_and_empty_means_all() {
        let some = EventFilter::only(&[EventKind::Connect, EventKind::ChannelVacated]);
        assert!(some.allows(EventKind::Connect) && some.allows(EventKind::ChannelVacated));
        assert!(!some.allows(EventKind::Join) && !some.allows(EventKind::Disconnect));
        assert!(
            EventKind::ALL
                .iter()
                .all(|k| EventFilter::only(&[]).allows(*k))
        );
    }
}
