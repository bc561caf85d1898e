//! `$disconnect`: forgets a connection. Idempotent: an unknown connection (already removed, swept or
//! expired) is not an error, because API Gateway sends `$disconnect` at most once and on a best-effort basis.

use super::Callback;
use crate::error::AppError;
use crate::membership;
use crate::state::AppState;
use common::names::ConnectionId;

pub async fn handle(state: &AppState, cb: &Callback<'_>) -> Result<(), AppError> {
    let id = ConnectionId::parse(cb.connection_id).map_err(|_| AppError::ConnectionId)?;
    let removed = membership::remove(state, &id).await?;
    tracing::debug!(connection_id = %id, known = removed.is_some(), "disconnected");
    if let Some((conn, left)) = removed {
        crate::lifecycle::gone_of(state, &conn, &left, crate::lifecycle::Gone::Disconnected).await;
    }
    Ok(())
}
