//! What follows a connection's comings and goings: presence events to the channel's members (see
//! [`crate::presence`]) and lifecycle webhook events to the application (see [`crate::webhooks`]).
//! Every path that changes membership reports here (connect, disconnect, `change_channel`, kicks, the
//! stale-connection sweep) with what the membership scripts said really changed, so each event fires
//! once even when two callbacks race.

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
    state.lifecycle_hooks.connected(conn, joined); // lifecycle webhook
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

/// A connection left `channel` for good; `left` is what leaving the channel did. The user, for the
/// lifecycle webhook, is read from the presence entry when there was one; [`gone_of`] is for callers
/// that have the connection's record.
pub async fn gone(
    state: &AppState,
    connection_id: &str,
    channel: &ChannelName,
    left: &Left,
    why: Gone,
) {
    let user = (left.presence.as_deref())
        .and_then(|entry| Member::from_stored(connection_id, entry).user_id);
    departed(state, connection_id, user.as_deref(), channel, left, why).await;
}

/// The connection `conn` left its channel for good; `left` is what leaving it did.
pub async fn gone_of(state: &AppState, conn: &Connection, left: &Left, why: Gone) {
    let user = conn.subject.as_ref().map(|s| s.as_str());
    departed(state, conn.id.as_str(), user, &conn.channel, left, why).await;
}

async fn departed(
    state: &AppState,
    connection_id: &str,
    user: Option<&str>,
    channel: &ChannelName,
    left: &Left,
    why: Gone,
) {
    tracing::debug!(connection_id, %channel, reason = why.reason(), "connection gone");
    state
        .lifecycle_hooks
        .gone(connection_id, user, channel, left, why.reason()); // lifecycle webhook
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
    state.lifecycle_hooks.moved(conn, from, left, joined); // lifecycle webhook
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
