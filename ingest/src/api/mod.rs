//! The application API under `/v1`, for the application's backend (never for browsers). Every request
//! carries an API key (`Authorization: Bearer KEY` or `X-Api-Key: KEY`), checked in constant time against
//! every configured key. JSON in and out; errors are `{"error": {"code": code, "message": text}}`.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/tokens` | mint a connect token ([`tokens`]) |
//! | `POST /v1/channels/{channel}/publish` | send the body to every connection in a channel ([`publish`]) |
//! | `POST /v1/users/{subject}/publish` | send the body to every connection of a subject |
//! | `POST /v1/connections/{id}/publish` | send the body to one connection |
//! | `POST /v1/broadcast` | send the body to every connection |
//! | `DELETE /v1/connections/{id}` | kick one connection: revoked, detached, closed by a worker ([`connections`]) |
//! | `POST /v1/kick` | kick a connection, a user's connections or a channel's members ([`kicks`]) |
//! | `POST /v1/users/{subject}/revoke` | kick a user and invalidate the tokens minted for it ([`kicks`]) |
//! | `GET /v1/channels/{channel}` | channel stats: connections and distinct subjects ([`channels`]) |
//! | `GET /v1/channels/{channel}/presence` | a presence channel's members, paged, and their count ([`presence`]) |
//! | `GET /v1/channels/{channel}/history[?limit=N]` | a channel's kept messages, oldest first, with its epoch and offset ([`history`]) |
//! | `GET /v1/broadcasts/{id}` | a broadcast's delivery report, kept by the workers ([`broadcasts`]) |
//! | `GET /v1/openapi.json` | this API as an OpenAPI 3.1 document, no key needed ([`openapi`]) |

mod broadcasts;
mod channels;
mod connections;
mod history;
mod idempotency;
pub mod kicks;
pub mod openapi;
pub mod presence;
pub mod publish;
pub mod tokens;

use crate::error::AppError;
use crate::state::AppState;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{delete, get, post};

/// The `/v1` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tokens", post(tokens::issue))
        .route("/channels/{channel}/publish", post(publish::to_channel))
        .route("/users/{subject}/publish", post(publish::to_subject))
        .route("/connections/{id}/publish", post(publish::to_connection))
        .route("/broadcast", post(publish::to_everyone))
        .route("/connections/{id}", delete(connections::kick))
        .route("/kick", post(kicks::kick))
        .route("/users/{subject}/revoke", post(kicks::revoke_user))
        .route("/channels/{channel}", get(channels::stats))
        .route("/channels/{channel}/presence", get(presence::members))
        .route("/channels/{channel}/history", get(history::read))
        .route("/broadcasts/{id}", get(broadcasts::report))
        .route("/openapi.json", get(openapi::document))
}

/// Proof that the request carried a valid API key. Add it as an argument to protect a handler.
#[derive(Debug)]
pub struct ApiKey {
    /// A short hash of the key presented, naming its caller (its idempotency keys are its own).
    pub scope: String,
}

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).map(|v| v.as_bytes());
        let presented = header("authorization")
            .and_then(|v| v.strip_prefix(b"Bearer ".as_slice()))
            .or_else(|| header("x-api-key"))
            .ok_or(AppError::Unauthorized)?;
        if state.settings.api_keys.accepts(presented) {
            let hash = common::keys::token_hash(&String::from_utf8_lossy(presented));
            Ok(ApiKey {
                scope: hash[..16].to_owned(),
            })
        } else {
            Err(AppError::Unauthorized)
        }
    }
}
