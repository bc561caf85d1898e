//! Local demo mode only (`--demo-ws-url`): serves the chat room page at `/demo/`, the JS client it uses
//! (`client/fanout.js`) at `/demo/fanout.js`, and mints connect tokens for any name at `POST /demo/token`,
//! so the page can log in without an application backend. Anyone who can reach ingest can mint tokens this way, so the routes exist only when the flag is set, and ingest
//! logs a warning at start. Never enable it in production.

use crate::error::AppError;
use crate::state::AppState;
use crate::{limits, tokens};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Html;
use common::names::Subject;
use serde_json::{Value, json};

/// The chat room page.
pub const CHAT_PAGE: &str = include_str!("../../demo/chat.html");

pub async fn page() -> Html<&'static str> {
    Html(CHAT_PAGE)
}

/// The JS client, as published from `client/`.
pub const CLIENT_MODULE: &str = include_str!("../../client/fanout.js");

pub async fn client_module() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        CLIENT_MODULE,
    )
}

/// `POST /demo/token` `{"name": ...}` → `{"token", "expires_in", "ws_url"}`.
pub async fn token(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, AppError> {
    let request: Value = serde_json::from_slice(&body)
        .map_err(|_| AppError::BadRequest("the body must be JSON: {\"name\": string}"))?;
    let subject = request["name"]
        .as_str()
        .and_then(|n| Subject::parse(n.trim()).ok())
        .ok_or(AppError::BadRequest(
            "name must be 1 to 256 printable characters without spaces or braces",
        ))?;
    let settings = &state.settings;
    let (allowed, generation) = limits::allow_subject(
        &state,
        "tok",
        subject.as_str(),
        settings.token_issue_limit_per_minute,
        true,
    )
    .await?;
    if !allowed {
        return Err(AppError::TokenRateLimited);
    }
    let token = tokens::issue(&state, &subject, None, generation, settings.token_ttl).await?;
    state.metrics.tokens_issued.inc();
    let ws_url = settings
        .demo_ws_url
        .as_ref()
        .map(|u| u.as_str().trim_end_matches('/').to_owned());
    Ok(Json(
        json!({ "token": token, "expires_in": settings.token_ttl.as_secs(), "ws_url": ws_url }),
    ))
}
