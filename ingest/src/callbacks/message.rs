//! Message routes (`default` and custom routes): a client frame, which must be a JSON object of at most
//! 128 KiB naming its handler in `handler` or, failing that, `action`.
//!
//! First the message gate ([`membership::gate`], one round trip): a kicked connection is refused with 403
//! whatever it sent; then the frame is parsed; the connection must be registered; a connection over its
//! message rate gets an error frame (once per run of refusals) and 429, and nothing is fanned out; the
//! action then runs (see [`crate::actions`]).

use super::Callback;
use crate::actions::{self, Action};
use crate::error::AppError;
use crate::membership::{self, Gate, Rate};
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
    let gate = membership::gate(state, &id).await?;
    if matches!(gate, Gate::Revoked) {
        return Err(AppError::ConnectionRevoked);
    }
    let (name, body) = parse_frame(body)?;
    let Gate::Live { conn, rate } = gate else {
        return Err(AppError::ConnectionId);
    };
    match rate {
        Rate::Allowed => {}
        Rate::Refused => {
            return Err(actions::refuse(state, &conn, AppError::MessageRateLimited).await);
        }
        Rate::RefusedAgain => return Err(AppError::MessageRateLimited),
    }
    let action = Action::parse(&name, &body);
    actions::run(state, *conn, route, action, body).await
}

/// Checks a client frame: at most 128 KiB, a JSON object (nested at most
/// [`crate::json::MAX_DEPTH`] deep) naming its handler. Returns the handler's name and the object.
pub fn parse_frame(body: &[u8]) -> Result<(String, Map<String, Value>), AppError> {
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(AppError::PayloadTooLarge);
    }
    if !crate::json::depth_within(body, crate::json::MAX_DEPTH) {
        return Err(AppError::Format);
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err(AppError::Format);
    };
    let name = handler_name(&body).ok_or(AppError::Format)?;
    Ok((name, body))
}

/// `handler` if it is a string, else `action`.
fn handler_name(body: &Map<String, Value>) -> Option<String> {
    ["handler", "action"]
        .iter()
        .find_map(|key| body.get(*key).and_then(Value::as_str))
        .map(str::to_owned)
}
