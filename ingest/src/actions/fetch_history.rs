//! `fetch_history`: answers `{"type":"history","room":...,"messages":[...]}` with the current channel's
//! recent messages, oldest first.

use crate::error::AppError;
use crate::membership::Connection;
use crate::state::AppState;
use crate::{history, outbox};

pub async fn run(state: &AppState, conn: &Connection) -> Result<(), AppError> {
    let payload = history::reply(state, &conn.channel).await?;
    outbox::reply(state, &conn.id, payload).await.map(drop)
}
