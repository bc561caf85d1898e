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
//! With `--verify-sigv4` every call's SigV4 signature is checked first, as API Gateway checks an
//! IAM-authorized caller's (`mgmt_client::Verifier`: `host` and `x-amz-date` signed, the scope's key,
//! region and `execute-api`, 15 minutes of clock skew, the signature over the method, path, signed
//! headers and body). A refusal is 403 `ForbiddenException` with a `{"message"}` that says why but never
//! echoes the signature, counted in `fanout_emulator_signatures_refused_total{reason}`. A POST body over
//! the payload limit is answered 413 before the check, because it is never read.
//!
//! The listener also serves `GET /metrics`, the virtual-connection admin API ([`crate::virtual_conns`]) and
//! the fault switch ([`crate::faults`]: a stall, or 500s, on demand).

use crate::faults::Gate;
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
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use mgmt_client::VerifyError;

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
    /// SigV4 verification refused the call; the message says why (never the signature).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// An injected fault ([`crate::faults`]): the service failed.
    #[error("Internal server error")]
    Internal,
    /// An injected stall ([`crate::faults`]) held the call until it ended; nothing was delivered.
    #[error("Gateway timeout")]
    TimedOut,
}

impl ApiError {
    pub fn status(self) -> StatusCode {
        match self {
            ApiError::Forbidden | ApiError::Unauthenticated(_) => StatusCode::FORBIDDEN,
            ApiError::Gone => StatusCode::GONE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadRequest => StatusCode::BAD_REQUEST,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `x-amzn-ErrorType` header value.
    pub fn error_type(self) -> &'static str {
        match self {
            ApiError::Forbidden | ApiError::Unauthenticated(_) => "ForbiddenException",
            ApiError::Gone => "GoneException",
            ApiError::PayloadTooLarge => "PayloadTooLargeException",
            ApiError::LimitExceeded => "LimitExceededException",
            ApiError::BadRequest => "BadRequestException",
            ApiError::Internal | ApiError::TimedOut => "InternalServerErrorException",
        }
    }

    fn body(self) -> String {
        let fixed = match self {
            ApiError::Forbidden => r#"{"message":"Forbidden"}"#,
            ApiError::Gone => r#"{"message":"Gone"}"#,
            ApiError::PayloadTooLarge => r#"{"message":"Payload too large"}"#,
            ApiError::LimitExceeded => r#"{"message":"Limit Exceeded"}"#,
            ApiError::BadRequest => r#"{"message":"Bad request"}"#,
            ApiError::Internal => r#"{"message":"Internal server error"}"#,
            ApiError::TimedOut => r#"{"message":"Endpoint request timed out"}"#,
            ApiError::Unauthenticated(message) => {
                return serde_json::json!({ "message": message }).to_string();
            }
        };
        fixed.to_owned()
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
        .merge(crate::faults::router())
        .fallback(|| async { ApiError::Forbidden })
        .with_state(state)
}

type IdPath = Result<Path<(String, String, String)>, PathRejection>;

/// What a signature covers.
struct Signed<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

/// The metric label and the message of a refusal, as API Gateway words them.
fn refusal(error: &VerifyError) -> (&'static str, &'static str) {
    match error {
        VerifyError::MissingHeader(h) if h == "authorization" => {
            ("missing_header", "Missing Authentication Token")
        }
        VerifyError::MissingHeader(_) => (
            "missing_header",
            "A header listed in SignedHeaders is missing from the request.",
        ),
        VerifyError::Malformed(_) => (
            "malformed",
            "Authorization header is not a valid AWS4-HMAC-SHA256 signature.",
        ),
        VerifyError::UnsignedHeader(_) => (
            "unsigned_header",
            "The host and x-amz-date headers must be signed.",
        ),
        VerifyError::UnknownAccessKey | VerifyError::SessionToken => (
            "unknown_credentials",
            "The security token included in the request is invalid.",
        ),
        VerifyError::WrongScope(_) => (
            "wrong_scope",
            "Credential should be scoped to a valid region and the execute-api service.",
        ),
        VerifyError::Stale { .. } => (
            "stale",
            "Signature expired: the request time is more than 15 minutes from the server's time.",
        ),
        VerifyError::BadSignature => (
            "bad_signature",
            "The request signature we calculated does not match the signature you provided. \
Check your AWS Secret Access Key and signing method.",
        ),
    }
}

/// Checks the signature (when verification is on), the stage and the account throttle; returns the
/// decoded connection id.
fn admit_call(state: &AppState, path: IdPath, signed: Signed<'_>) -> Result<String, ApiError> {
    if let Some(verifier) = &state.verifier
        && let Err(error) = verifier.verify(
            signed.method,
            signed.uri,
            signed.headers,
            signed.body,
            std::time::SystemTime::now(),
        )
    {
        let (reason, message) = refusal(&error);
        state.metrics.signature_refused(reason);
        tracing::warn!(%error, path = %signed.uri.path(), "Management API call refused: signature");
        return Err(ApiError::Unauthenticated(message));
    }
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

/// The answer an injected fault ([`crate::faults`]) gives instead of handling the call, after waiting
/// out a stall.
async fn faulted(state: &AppState, op: Operation) -> Option<Response> {
    let error = match state.faults.gate().await {
        Gate::Pass => return None,
        Gate::Error => ApiError::Internal,
        Gate::TimedOut => ApiError::TimedOut,
    };
    Some(respond(state, op, Err(error)))
}

fn respond(state: &AppState, op: Operation, result: Result<Response, ApiError>) -> Response {
    let response = result.unwrap_or_else(IntoResponse::into_response);
    state.metrics.management_call(op, response.status());
    response
}

async fn post_to_connection(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: IdPath,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(answer) = faulted(&state, Operation::Post).await {
        return answer;
    }
    let result = (|| {
        let data = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest
            }
        })?;
        let signed = Signed {
            method: &method,
            uri: &uri,
            headers: &headers,
            body: &data,
        };
        let id = admit_call(&state, path, signed)?;
        if data.len() > state.settings.max_payload_bytes {
            return Err(ApiError::PayloadTooLarge);
        }
        match state.registry.deliver(&id, data) {
            Delivery::Queued => Ok(()),
            Delivery::Counted { repeat } => {
                state.virtual_stats.record(repeat);
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

async fn get_connection(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: IdPath,
    body: Bytes,
) -> Response {
    if let Some(answer) = faulted(&state, Operation::Get).await {
        return answer;
    }
    let signed = Signed {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
    };
    let result = admit_call(&state, path, signed).and_then(|id| {
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

async fn delete_connection(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: IdPath,
    body: Bytes,
) -> Response {
    if let Some(answer) = faulted(&state, Operation::Delete).await {
        return answer;
    }
    let signed = Signed {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
    };
    let result = admit_call(&state, path, signed).and_then(|id| {
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
