//! `recover`: `{"action":"recover","channel":...,"offset":N,"epoch":E}` from a client that reconnected.
//! The answer, `{"type":"recover","recovered":...}` (see [`crate::recovery::decide`]), is one job on the
//! queue like any reply, so the callback never waits for delivery. Only the connection's own channel can
//! be recovered.

use super::refuse;
use crate::error::AppError;
use crate::membership::Connection;
use crate::state::AppState;
use crate::{outbox, recovery};

pub async fn run(
    state: &AppState,
    conn: &Connection,
    channel: Option<&str>,
    offset: Option<u64>,
    epoch: Option<&str>,
) -> Result<(), AppError> {
    let (Some(offset), Some(epoch)) = (offset, epoch) else {
        return Err(refuse(
            state,
            conn,
            AppError::BadRequest("recover needs a numeric `offset` and a string `epoch`."),
        )
        .await);
    };
    if channel.is_some_and(|c| c != conn.channel.as_str()) {
        return Err(refuse(
            state,
            conn,
            AppError::BadRequest("Only the connection's own channel can be recovered."),
        )
        .await);
    }
    let now = recovery::snapshot(state, &conn.channel).await?;
    let answer = recovery::decide(&conn.channel, epoch, offset, &now);
    outbox::reply(state, &conn.id, answer).await.map(drop)
}
