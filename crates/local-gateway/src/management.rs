//! The `@connections` Management API (`apigatewaymanagementapi` 2018-11-29) under the stage path, so the
//! AWS SDK and CLI work with endpoint URL `http://host:port/{stage}`:
//!
//! - `POST /{stage}/@connections/{id}`: the body goes to the client as one frame (text when it is UTF-8);
//!   200 with an empty body.
//! - `GET`: 200 `{"connectedAt", "identity": {"sourceIp", "userAgent"}, "lastActiveAt"}` (ISO 8601).
//! - `DELETE`: 204; the socket is closed and `$disconnect` follows.
//!
//! Errors carry `x-amzn-ErrorType`, which the SDKs map to typed errors: 410 `GoneException` (unknown or
//! closed id), 413 `PayloadTooLargeException` (over the payload limit), 429 `LimitExceededException` (the
//! account throttle, or a client whose buffer is full), 403 `ForbiddenException` (a wrong stage or path,
//! which is what API Gateway answers a caller configured with the wrong endpoint). Ids arrive
//! percent-encoded (`%3D` for `=`, and sometimes `%40connections`); path extraction decodes both.
//!
//! The listener also serves `GET /metrics` and the virtual-connection admin API ([`crate::virtual_conns`]).

use crate::metrics::Operation;
use crate::registry::{CloseReason, Delivery};
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::SecondsFormat;
use http::{HeaderValue, StatusCode, header};

/// A Management API error, as API Gateway reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Forbidden")]
    Forbidden,
    #[error("Gone")]
    Gone,
    #[error("Payload too large")]
    PayloadTooLarge,
    #[error("Limit exceeded")]
    LimitExceeded,
    #[error("Bad request")]
    BadRequest,
}

impl ApiError {
    pub fn status(self) -> StatusCode {
        match self {
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Gone => StatusCode::GONE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadRequest => StatusCode::BAD_REQUEST,
        }
    }

    /// The `x-amzn-ErrorType` header value.
    pub fn error_type(self) -> &'static str {
        match self {
            ApiError::Forbidden => "ForbiddenException",
            ApiError::Gone => "GoneException",
            ApiError::PayloadTooLarge => "PayloadTooLargeException",
            ApiError::LimitExceeded => "LimitExceededException",
            ApiError::BadRequest => "BadRequestException",
        }
    }

    fn body(self) -> &'static str {
        match self {
            ApiError::Forbidden => r#"{"message":"Forbidden"}"#,
            ApiError::Gone => r#"{"message":"Gone"}"#,
            ApiError::PayloadTooLarge => r#"{"message":"Payload too large"}"#,
            ApiError::LimitExceeded => r#"{"message":"Limit Exceeded"}"#,
            ApiError::BadRequest => r#"{"message":"Bad request"}"#,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            [
                (
                    http::HeaderName::from_static("x-amzn-errortype"),
                    HeaderValue::from_static(self.error_type()),
                ),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
            ],
            self.body(),
        )
            .into_response()
    }
}

/// The management listener's routes.
pub fn router(state: AppState) -> Router {
    let payload_limit = state.settings.max_payload_bytes;
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/{stage}/{collection}/{id}",
            post(post_to_connection)
                .get(get_connection)
                .delete(delete_connection)
                .layer(DefaultBodyLimit::max(payload_limit)),
        )
        .merge(crate::virtual_conns::router())
        .fallback(|| async { ApiError::Forbidden })
        .with_state(state)
}

type IdPath = Result<Path<(String, String, String)>, PathRejection>;

/// Checks the stage and the account throttle; returns the decoded connection id.
fn admit_call(state: &AppState, path: IdPath) -> Result<String, ApiError> {
    let Path((stage, collection, id)) = path.map_err(|_| ApiError::Forbidden)?;
    if stage != state.settings.stage || collection != "@connections" {
        return Err(ApiError::Forbidden);
    }
    if let Some(limiter) = &state.mgmt_limiter
        && !limiter.try_acquire()
    {
        return Err(ApiError::LimitExceeded);
    }
    Ok(id)
}

fn respond(state: &AppState, op: Operation, result: Result<Response, ApiError>) -> Response {
    let response = result.unwrap_or_else(IntoResponse::into_response);
    state.metrics.management_call(op, response.status());
    response
}

async fn post_to_connection(
    State(state): State<AppState>,
    path: IdPath,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = (|| {
        let id = admit_call(&state, path)?;
        let data = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest
            }
        })?;
        if data.len() > state.settings.max_payload_bytes {
            return Err(ApiError::PayloadTooLarge);
        }
        match state.registry.deliver(&id, data) {
            Delivery::Queued => Ok(()),
            Delivery::Counted => {
                state.virtual_stats.record();
                Ok(())
            }
            Delivery::BufferFull => Err(ApiError::LimitExceeded),
            Delivery::Gone => Err(ApiError::Gone),
        }
    })();
    respond(
        &state,
        Operation::Post,
        result.map(|()| Response::new(Body::empty())),
    )
}

/// `GetConnection`'s answer.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionInfo {
    connected_at: String,
    identity: Identity,
    last_active_at: String,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    source_ip: String,
    user_agent: Option<String>,
}

async fn get_connection(State(state): State<AppState>, path: IdPath) -> Response {
    let result = admit_call(&state, path).and_then(|id| {
        let conn = state.registry.get(&id).ok_or(ApiError::Gone)?;
        let iso = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let info = ConnectionInfo {
            connected_at: iso(conn.connected_at()),
            identity: Identity {
                source_ip: conn.source_ip().to_string(),
                user_agent: conn.user_agent().map(str::to_owned),
            },
            last_active_at: iso(conn.last_active_at()),
        };
        Ok(axum::Json(info).into_response())
    });
    respond(&state, Operation::Get, result)
}

async fn delete_connection(State(state): State<AppState>, path: IdPath) -> Response {
    let result = admit_call(&state, path).and_then(|id| {
        let conn = state.registry.remove(&id).ok_or(ApiError::Gone)?;
        if conn.is_virtual() {
            let state = state.clone();
            tokio::spawn(async move { state.release_virtual(&conn).await });
        } else {
            // The socket's task closes it and sends `$disconnect`.
            conn.request_close(CloseReason::Deleted);
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    });
    respond(&state, Operation::Delete, result)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
}
