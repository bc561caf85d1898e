//! [`AppError`]: every way a callback or an API request can fail, each with a stable HTTP status and a
//! short `error` code for the caller. Bodies are JSON (`{"error": {"code": code, "message": text}}`) and
//! never carry secrets, header lists or internal details; those are logged once, here.
//!
//! [`json_rejections`] gives the framework's own refusals (an unknown path, a wrong method, a query or
//! path that does not parse) the same shape, so every error a caller sees is JSON.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::queue::QueueError;
use serde::Serialize;
use utoipa::ToSchema;

/// The error code of a response, kept as a response extension so the metrics layer can count outcomes.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// `"unknown"` on the one 503 after which the job may still have been enqueued (see `job_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// The job that may have been enqueued, with `status: "unknown"`: retry with the same
    /// `Idempotency-Key` to make sure it is sent once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// What went wrong: a stable code and a text for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs (`invalid_channel`, `unauthorized`, `queue_unavailable`, ...).
    #[schema(example = "invalid_channel")]
    pub code: &'static str,
    #[schema(example = "Invalid channel")]
    pub message: String,
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The gateway secret header is missing or wrong.
    #[error("Invalid request")]
    GatewaySecret,
    /// A header API Gateway always sends is missing, or the API id is not configured.
    #[error("Invalid request headers")]
    Headers,
    #[error("Invalid connection ID")]
    ConnectionId,
    #[error("Too many connection attempts")]
    ConnectRateLimited,
    #[error("Origin not allowed")]
    Origin,
    #[error("Invalid channel")]
    Channel,
    #[error("Invalid or expired token")]
    Token,
    #[error("Permission Denied")]
    PermissionDenied,
    /// The connection was kicked: every callback from it is refused until the gateway has closed it.
    #[error("Connection revoked")]
    ConnectionRevoked,
    /// A connection sent messages faster than its token bucket allows.
    #[error("Too many messages; slow down.")]
    MessageRateLimited,
    /// A message body that is not a JSON object naming a `handler` or an `action`.
    #[error("Invalid request format (1)")]
    Format,
    #[error("Payload too large: the limit is 131072 bytes")]
    PayloadTooLarge,
    #[error("Unknown WebSocket action.")]
    UnknownAction,
    #[error("The application webhook failed")]
    Webhook,
    /// The application API key is missing or wrong.
    #[error("Unauthorized")]
    Unauthorized,
    #[error("Too many tokens issued for this subject; try again in a minute")]
    TokenRateLimited,
    /// An API request with an invalid field; the text says which.
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("Unknown connection")]
    UnknownConnection,
    #[error("Unknown broadcast")]
    UnknownBroadcast,
    /// Presence asked for on a channel configuration does not give it (`FANOUT_PRESENCE_CHANNELS`).
    #[error("Presence is not enabled on this channel.")]
    PresenceDisabled,
    /// A request the framework refused before a handler ran (the status says why).
    #[error("{}", rejection_message(*.0))]
    Rejected(StatusCode),
    /// The request (headers and body) was not read within the request timeout.
    #[error("Request timeout")]
    Timeout,
    #[error("Service unavailable")]
    Redis(#[from] redis::RedisError),
    #[error("Service unavailable")]
    Queue(#[from] QueueError),
    /// The queue did not confirm the job, and may have taken it: the answer says so, with the job id.
    #[error("Service unavailable")]
    EnqueueUnknown { job_id: String, source: QueueError },
    /// An ordered channel's backlog is full: its messages are not being delivered as fast as they come.
    #[error("This channel has too many messages waiting; retry later")]
    ChannelBacklogFull,
    #[error("A request with this Idempotency-Key is in progress; retry shortly")]
    IdempotencyKeyInUse,
    #[error("This Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        use AppError::*;
        match self {
            GatewaySecret | PermissionDenied | ConnectionRevoked => StatusCode::FORBIDDEN,
            MessageRateLimited | ChannelBacklogFull => StatusCode::TOO_MANY_REQUESTS,
            Headers | ConnectionId | ConnectRateLimited | Origin | Channel | Token | Format
            | UnknownAction | BadRequest(_) => StatusCode::BAD_REQUEST,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Webhook => StatusCode::BAD_GATEWAY,
            Unauthorized => StatusCode::UNAUTHORIZED,
            TokenRateLimited => StatusCode::TOO_MANY_REQUESTS,
            UnknownConnection | UnknownBroadcast | PresenceDisabled => StatusCode::NOT_FOUND,
            Rejected(status) => *status,
            Timeout => StatusCode::REQUEST_TIMEOUT,
            Redis(_) | Queue(_) | EnqueueUnknown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            IdempotencyKeyInUse => StatusCode::CONFLICT,
            IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The stable code clients and metrics see.
    pub fn code(&self) -> &'static str {
        use AppError::*;
        match self {
            GatewaySecret => "invalid_request",
            Headers => "invalid_request_headers",
            ConnectionId => "invalid_connection_id",
            ConnectRateLimited => "too_many_connection_attempts",
            Origin => "origin_not_allowed",
            Channel => "invalid_channel",
            Token => "invalid_or_expired_token",
            PermissionDenied => "permission_denied",
            ConnectionRevoked => "connection_revoked",
            MessageRateLimited => "message_rate_limited",
            Format => "invalid_request_format",
            PayloadTooLarge => "payload_too_large",
            UnknownAction => "unknown_action",
            Webhook => "webhook_failed",
            Unauthorized => "unauthorized",
            TokenRateLimited => "rate_limited",
            BadRequest(_) => "bad_request",
            UnknownConnection => "unknown_connection",
            UnknownBroadcast => "unknown_broadcast",
            PresenceDisabled => "presence_not_enabled",
            Rejected(status) => rejection_code(*status),
            Timeout => "request_timeout",
            Redis(_) => "redis_unavailable",
            Queue(_) | EnqueueUnknown { .. } => "queue_unavailable",
            ChannelBacklogFull => "channel_backlog_full",
            IdempotencyKeyInUse => "idempotency_key_in_use",
            IdempotencyKeyReused => "idempotency_key_reused",
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            AppError::Redis(e) => tracing::error!(error = %e, "Redis command failed"),
            AppError::Queue(e) | AppError::EnqueueUnknown { source: e, .. } => {
                tracing::error!(error = %e, "queue request failed")
            }
            AppError::GatewaySecret => {
                tracing::warn!("callback with a missing or wrong gateway secret")
            }
            _ => tracing::debug!(code = self.code(), "request refused"),
        }
        let code = self.code();
        let message = match &self {
            // One generic message for both, so a caller cannot tell which dependency is down.
            AppError::Redis(_) | AppError::Queue(_) | AppError::EnqueueUnknown { .. } => {
                "Service unavailable".to_owned()
            }
            other => other.to_string(),
        };
        let error = ErrorDetail { code, message };
        let body = match &self {
            // The one failure that may have enqueued the job: say so, and name the job.
            AppError::EnqueueUnknown { job_id, .. } => ErrorBody {
                error,
                status: Some("unknown"),
                job_id: Some(job_id.clone()),
            },
            _ => ErrorBody {
                error,
                status: None,
                job_id: None,
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(code));
        response
    }
}

fn rejection_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        _ => "bad_request",
    }
}

fn rejection_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "No such route",
        StatusCode::METHOD_NOT_ALLOWED => "Method not allowed on this route",
        StatusCode::PAYLOAD_TOO_LARGE => "Payload too large: the limit is 131072 bytes",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported content type",
        StatusCode::REQUEST_TIMEOUT => "Request timeout",
        _ => "Malformed request",
    }
}

/// Middleware: a 4xx answer that did not come from [`AppError`] (the framework's own 404, 405 and
/// extractor rejections, in plain text or empty) is replaced by the same answer in the JSON error shape.
/// Its text is not passed on: it may describe internals.
pub async fn json_rejections(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() && response.extensions().get::<ErrorCode>().is_none() {
        return AppError::Rejected(status).into_response();
    }
    response
}
