//! The actions a connected client can ask for in a message, one file each, and [`run`] to dispatch:
//!
//! - [`change_channel`]: move to another channel (validated and permission-checked).
//! - [`fetch_history`]: get the channel's recent messages.
//! - [`chat_message`]: publish to the channel, where configuration allows browsers to publish.
//! - [`recover`]: the messages the channel's history holds after an offset, for a reconnected client.
//! - [`presence`]: the members of the connection's channel, where presence is enabled.
//! - `ping`: accepted and ignored (no answer, no job); a client sends it to stay under API Gateway's
//!   10-minute idle timeout. Like every message it refreshes the connection's record.
//! - anything else is [`Action::Unknown`], handed to the application's webhook ([`webhook`]) or answered
//!   with an error.
//!
//! Every answer to the client is a job on the queue. When an action is refused, the client is also told
//! why (`{"type":"error","error":...}`), since API Gateway never shows it the HTTP status.

mod change_channel;
mod chat_message;
mod fetch_history;
mod presence;
mod recover;
mod webhook;

use crate::error::AppError;
use crate::membership::Connection;
use crate::outbox;
use crate::state::AppState;
use serde_json::{Map, Value};

/// A parsed client action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    ChangeChannel {
        channel: Option<String>,
    },
    FetchHistory,
    ChatMessage {
        message: Option<String>,
    },
    Recover {
        channel: Option<String>,
        offset: Option<u64>,
        epoch: Option<String>,
    },
    Presence,
    Ping,
    Unknown {
        name: String,
    },
}

impl Action {
    /// Reads the action named `name` from the message body.
    pub fn parse(name: &str, body: &Map<String, Value>) -> Self {
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        match name {
            "change_channel" => Action::ChangeChannel {
                channel: text("channel"),
            },
            "fetch_history" => Action::FetchHistory,
            "ping" => Action::Ping,
            "recover" => Action::Recover {
                channel: text("channel"),
                offset: body.get("offset").and_then(Value::as_u64),
                epoch: text("epoch"),
            },
            "presence" => Action::Presence,
            "chat_message" => Action::ChatMessage {
                message: text("message"),
            },
            other => Action::Unknown {
                name: other.to_owned(),
            },
        }
    }
}

/// Runs an action for a registered connection.
pub async fn run(
    state: &AppState,
    conn: Connection,
    route: &str,
    action: Action,
    body: Map<String, Value>,
) -> Result<(), AppError> {
    match action {
        Action::ChangeChannel { channel } => {
            change_channel::run(state, conn, channel.as_deref()).await
        }
        Action::FetchHistory => fetch_history::run(state, &conn).await,
        Action::ChatMessage { message } => {
            chat_message::run(state, &conn, message.as_deref()).await
        }
        Action::Recover {
            channel,
            offset,
            epoch,
        } => recover::run(state, &conn, channel.as_deref(), offset, epoch.as_deref()).await,
        Action::Presence => presence::run(state, &conn).await,
        Action::Ping => Ok(()),
        Action::Unknown { name } => match &state.settings.webhook_url {
            Some(url) => webhook::run(state, url, &conn, route, &name, body).await,
            None => Err(refuse(state, &conn, AppError::UnknownAction).await),
        },
    }
}

/// Tells the client why its action was refused, then returns the error for the HTTP answer. If even the
/// error reply cannot be queued, the queue failure is what is returned.
pub(crate) async fn refuse(state: &AppState, conn: &Connection, error: AppError) -> AppError {
    match outbox::reply_error(state, &conn.id, &error.to_string()).await {
        Ok(_) => error,
        Err(queue_error) => queue_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Action {
        let body = body.as_object().unwrap().clone();
        let name = body["action"].as_str().unwrap().to_owned();
        Action::parse(&name, &body)
    }

    #[test]
    fn parses_known_and_unknown_actions() {
        assert_eq!(
            parse(json!({"action":"change_channel","channel":"x"})),
            Action::ChangeChannel {
                channel: Some("x".into())
            }
        );
        assert_eq!(
            parse(json!({"action":"change_channel","channel":5})),
            Action::ChangeChannel { channel: None }
        );
        assert_eq!(
            parse(json!({"action":"fetch_history"})),
            Action::FetchHistory
        );
        assert_eq!(
            parse(json!({"action":"chat_message","message":"hi"})),
            Action::ChatMessage {
                message: Some("hi".into())
            }
        );
        assert_eq!(
            parse(json!({"action":"recover","channel":"c","offset":4,"epoch":"e"})),
            Action::Recover {
                channel: Some("c".into()),
                offset: Some(4),
                epoch: Some("e".into())
            }
        );
        assert_eq!(
            parse(json!({"action":"recover","offset":"4"})),
            Action::Recover {
                channel: None,
                offset: None,
                epoch: None
            }
        );
        assert_eq!(parse(json!({"action":"presence"})), Action::Presence);
        assert_eq!(parse(json!({"action":"ping"})), Action::Ping);
        assert_eq!(
            parse(json!({"action":"dance"})),
            Action::Unknown {
                name: "dance".into()
            }
        );
    }
}
