//! Message routes (`default` and custom routes): a client frame, which must be a JSON object of at most
//! 128 KiB naming its handler in `handler` or, failing that, `action`. The connection must be registered;
//! the action then runs (see [`crate::actions`]).

use super::Callback;
use crate::actions::{self, Action};
use crate::error::AppError;
use crate::membership;
use crate::state::AppState;
use common::names::{ConnectionId, MAX_PAYLOAD_BYTES};
use serde_json::{Map, Value};

pub async fn handle(
    state: &AppState,
    cb: &Callback<'_>,
    route: &str,
    body: &[u8],
) -> Result<(), AppError> {
    let id = ConnectionId::parse(cb.connection_id).map_err(|_| AppError::ConnectionId)?;
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(AppError::PayloadTooLarge);
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err(AppError::Format);
    };
    let name = handler_name(&body).ok_or(AppError::Format)?;
    let conn = membership::lookup(state, &id)
        .await?
        .ok_or(AppError::ConnectionId)?;
    let action = Action::parse(&name, &body);
    actions::run(state, conn, route, action, body).await
}

/// `handler` if it is a string, else `action`.
fn handler_name(body: &Map<String, Value>) -> Option<String> {
    ["handler", "action"]
        .iter()
        .find_map(|key| body.get(*key).and_then(Value::as_str))
        .map(str::to_owned)
}
