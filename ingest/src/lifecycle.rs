//! What follows a connection's comings and goings: presence events to the channel's members (see
//! [`crate::presence`]). Every path that changes membership reports here (connect, disconnect,
//! `change_channel`, kicks, the stale-connection sweep) with what the membership scripts said really
//! changed, so each event fires once even when two callbacks race.

use crate::membership::{Connection, Joined, Left};
use crate::presence::{self, Event, Member};
use crate::state::AppState;
use common::names::ChannelName;

/// Why a connection went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// `$disconnect`.
    Disconnected,
    /// Kicked or revoked through the API.
    Kicked,
    /// Its record expired and the stale-connection sweep removed it.
    Expired,
}

impl Gone {
    pub fn reason(self) -> &'static str {
        match self {
            Gone::Disconnected => "disconnected",
            Gone::Kicked => "kicked",
            Gone::Expired => "expired",
        }
    }
}

/// A connection was registered in `conn.channel`.
pub async fn connected(state: &AppState, conn: &Connection, joined: Joined) {
    if joined.presence {
        presence::announce(
            state,
            &conn.channel,
            Event::Join,
            &presence::member_of(conn),
        )
        .await;
    }
}

/// A connection left `channel` for good; `left` is what leaving the channel did.
pub async fn gone(
    state: &AppState,
    connection_id: &str,
    channel: &ChannelName,
    left: &Left,
    why: Gone,
) {
    tracing::debug!(connection_id, %channel, reason = why.reason(), "connection gone");
    if let Some(entry) = &left.presence {
        let member = Member::from_stored(connection_id, entry);
        presence::announce(state, channel, Event::Leave, &member).await;
    }
}

/// A connection moved from `from` to `conn.channel`.
pub async fn moved(
    state: &AppState,
    conn: &Connection,
    from: &ChannelName,
    left: &Left,
    joined: Joined,
) {
    if let Some(entry) = &left.presence {
        let member = Member::from_stored(conn.id.as_str(), entry);
        presence::announce(state, from, Event::Leave, &member).await;
    }
    if joined.presence {
        presence::announce(
            state,
            &conn.channel,
            Event::Join,
            &presence::member_of(conn),
        )
        .await;
    }
}
