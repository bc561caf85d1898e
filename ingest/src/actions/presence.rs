//! `presence`: `{"action":"presence"}` answers the members of the connection's own channel, as one job
//! like any reply: `{"type":"presence","channel":…,"members":[{"connection_id","user_id","info"}]}`, with
//! `"truncated": true` added when the members do not all fit in one WebSocket message (128 KiB; the
//! application API pages through any number). A channel without presence gets an error reply.

use super::refuse;
use crate::error::AppError;
use crate::membership::Connection;
use crate::state::AppState;
use crate::{outbox, presence};
use serde_json::json;

pub async fn run(state: &AppState, conn: &Connection) -> Result<(), AppError> {
    if !presence::enabled(state, &conn.channel) {
        return Err(refuse(state, conn, AppError::PresenceDisabled).await);
    }
    let (members, truncated) = presence::for_client(state, &conn.channel).await?;
    let mut answer = json!({
        "type": "presence",
        "channel": conn.channel.as_str(),
        "members": members,
    });
    if truncated {
        answer["truncated"] = json!(true);
    }
    outbox::reply(state, &conn.id, common::job::payload_of(&answer))
        .await
        .map(drop)
}
