//! Unknown actions go to the application's webhook: a JSON POST with the connection's context and the
//! client's message. A 2xx answer with a JSON body is sent back to the client as is (an empty body sends
//! nothing); any other answer (a redirect included: they are not followed), no answer within the timeout,
//! or a reply over [`MAX_REPLY_BYTES`] or nested deeper than [`crate::json::MAX_DEPTH`] is a 502 and the
//! client gets an error. The client and the capped read are shared with the lifecycle webhook (see
//! [`crate::webhooks`]). Every outcome is counted (`fanout_webhook_calls_total`).

use super::refuse;
use crate::error::AppError;
use crate::membership::Connection;
use crate::outbox;
use crate::state::AppState;
use serde_json::{Map, Value, json, value::RawValue};

pub use crate::webhooks::MAX_REPLY_BYTES;
use crate::webhooks::read_capped;

pub async fn run(
    state: &AppState,
    url: &url::Url,
    conn: &Connection,
    route: &str,
    action: &str,
    body: Map<String, Value>,
) -> Result<(), AppError> {
    let event = json!({
        "connection_id": conn.id.as_str(),
        "subject": conn.subject.as_ref().map(|s| s.as_str()),
        "channel": conn.channel.as_str(),
        "route": route,
        "action": action,
        "body": body,
    });
    let mut request = state.http.post(url.clone()).json(&event);
    if let Some(secret) = &state.settings.webhook_secret {
        request = request.bearer_auth(secret.expose());
    }
    let outcome = match request.send().await {
        Ok(response) if response.status().is_success() => {
            let body = read_capped(response).await;
            if body.is_none() {
                tracing::warn!(
                    action,
                    "webhook reply over {MAX_REPLY_BYTES} bytes, refused"
                );
            }
            body
        }
        Ok(response) => {
            tracing::warn!(status = %response.status(), action, "webhook refused an action");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, action, "webhook call failed");
            None
        }
    };
    let Some(answer) = outcome else {
        state
            .metrics
            .webhook_calls
            .with_label_values(&["failed"])
            .inc();
        return Err(refuse(state, conn, AppError::Webhook).await);
    };
    state.metrics.webhook_calls.with_label_values(&["ok"]).inc();
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let reply = std::str::from_utf8(&answer)
        .ok()
        .filter(|_| crate::json::depth_within(&answer, crate::json::MAX_DEPTH))
        .and_then(|text| RawValue::from_string(text.trim().to_owned()).ok());
    match reply {
        Some(payload) => outbox::reply(state, &conn.id, payload).await.map(drop),
        None => {
            tracing::warn!(action, "webhook answered with something that is not JSON");
            state
                .metrics
                .webhook_calls
                .with_label_values(&["invalid_reply"])
                .inc();
            Err(refuse(state, conn, AppError::Webhook).await)
        }
    }
}
