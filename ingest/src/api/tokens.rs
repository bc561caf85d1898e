//! `POST /v1/tokens` `{"subject": ..., "channels": [names]?, "ttl": seconds?, "info": {...}?}` mints a single-use connect
//! token and answers `{"token": ..., "expires_in": seconds}`, the Django package's token view shape, so
//! browser code written for it keeps working. The body is read as JSON whatever its content type, so a
//! plain `curl -d '{...}'` works. A subject may be issued a limited number of tokens a minute. `info` is
//! client info shown to other members in presence (a JSON object of at most 1 KiB).

use super::ApiKey;
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;
use crate::{limits, tokens};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use common::names::{ChannelName, Subject};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use utoipa::ToSchema;

/// The body of `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The user the connection will belong to: 1 to 256 printable characters without spaces or braces.
    #[schema(example = "user-42")]
    subject: String,
    /// The channels the token may join (channel names, no patterns); any public channel when absent.
    #[serde(default)]
    channels: Option<Vec<String>>,
    /// Seconds until the token expires unused, 1 to 3600 (the configured default when absent).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600)]
    ttl: Option<u64>,
    /// Client info other members see in presence: a JSON object of at most 1 KiB.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    info: Option<Value>,
}

/// A minted connect token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenIssued {
    /// Single use: pass it as `?token=` when opening the WebSocket.
    pub token: String,
    /// Seconds until it expires unused.
    pub expires_in: u64,
}

/// A token request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidTokenRequest {
    pub subject: Subject,
    pub channels: Option<Vec<ChannelName>>,
    pub ttl: Option<Duration>,
    pub info: Option<serde_json::Map<String, Value>>,
}

const TOKEN_SHAPE: &str = "the body must be JSON: {\"subject\": string, \"channels\"?: [string], \"ttl\"?: seconds, \"info\"?: object}";

impl TokenRequest {
    /// Decodes and validates a `POST /v1/tokens` body.
    pub fn decode(body: &[u8]) -> Result<ValidTokenRequest, AppError> {
        if !crate::json::depth_within(body, crate::json::MAX_DEPTH) {
            return Err(AppError::BadRequest(TOKEN_SHAPE));
        }
        let request: TokenRequest =
            serde_json::from_slice(body).map_err(|_| AppError::BadRequest(TOKEN_SHAPE))?;
        let subject = Subject::parse(&request.subject).map_err(|_| {
            AppError::BadRequest(
                "subject must be 1 to 256 printable characters without spaces or braces",
            )
        })?;
        let channels = match request.channels {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|c| ChannelName::parse(c))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        AppError::BadRequest(
                            "channels must be channel names: 1 to 128 of A-Z a-z 0-9 _ - (no patterns)",
                        )
                    })?,
            ),
        };
        let ttl = match request.ttl {
            None => None,
            Some(secs @ 1..=3600) => Some(Duration::from_secs(secs)),
            Some(_) => {
                return Err(AppError::BadRequest(
                    "ttl must be between 1 and 3600 seconds",
                ));
            }
        };
        let info = match request.info {
            None => None,
            Some(info) => Some(tokens::validate_info(info).map_err(|e| match e {
                tokens::InfoError::NotAnObject => {
                    AppError::BadRequest("info must be a JSON object")
                }
                tokens::InfoError::TooLarge => {
                    AppError::BadRequest("info must be at most 1024 bytes as compact JSON")
                }
            })?),
        };
        Ok(ValidTokenRequest {
            subject,
            channels,
            ttl,
            info,
        })
    }
}

/// Mints a single-use connect token.
#[utoipa::path(post, path = "/v1/tokens", operation_id = "issue_token", tag = "tokens",
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The token", body = TokenIssued),
        (status = 400, description = "An invalid field; the message says which", body = ErrorBody),
        (status = 401, description = "No or a wrong API key", body = ErrorBody),
        (status = 429, description = "Too many tokens for this subject this minute", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    ))]
pub async fn issue(
    _: ApiKey,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<TokenIssued>, AppError> {
    let ValidTokenRequest {
        subject,
        channels,
        ttl,
        info,
    } = TokenRequest::decode(&body)?;
    let ttl = ttl.unwrap_or(state.settings.token_ttl);
    let (allowed, generation) = limits::allow_subject(
        &state,
        "tok",
        subject.as_str(),
        state.settings.token_issue_limit_per_minute,
        true,
    )
    .await?;
    if !allowed {
        state
            .metrics
            .tokens_refused
            .with_label_values(&["rate_limited"])
            .inc();
        return Err(AppError::TokenRateLimited);
    }
    let token = tokens::issue_with_info(&state, &subject, channels, generation, ttl, info).await?;
    state.metrics.tokens_issued.inc();
    Ok(Json(TokenIssued {
        token,
        expires_in: ttl.as_secs(),
    }))
}
