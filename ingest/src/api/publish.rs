//! Publishing: the request body is the payload, sent verbatim to every recipient. It must be JSON of at
//! most 128 KiB (API Gateway's message limit, so a worker never finds out later). The answer is
//! `202 {"job_id": ...}` once the job is on the queue, and 503 if the queue cannot take it: plain when
//! the job is known not to be enqueued, with `"status": "unknown"` and the `job_id` when the queue did
//! not answer and may have taken it. An `Idempotency-Key` header makes a retry safe ([`idempotency`]).
//! `?history=true` on a channel publish also keeps the message in the channel's history; the payload must
//! then be a JSON object, and recipients get it with the channel's `offset` and `epoch` added.

use super::ApiKey;
use super::idempotency::{self, Claim};
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;
use crate::{membership, outbox};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use common::job::{Job, Target};
use common::names::{ChannelName, ConnectionId, MAX_PAYLOAD_BYTES, Subject};
use common::queue::QueueError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, IntoResponses, ToSchema};

type Accepted = (StatusCode, Json<JobAccepted>);

/// A publish on the queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobAccepted {
    /// The job's id; for a channel, user or everyone publish also its broadcast's (`GET /v1/broadcasts/{id}`).
    pub job_id: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PublishOptions {
    /// Also keep the message in the channel's history (the payload must then be a JSON object, and
    /// recipients get it with the channel's `offset` and `epoch`).
    #[serde(default)]
    history: bool,
}

/// What a publish answers.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes the answers for the OpenAPI document
enum PublishAnswers {
    #[response(status = 202, description = "On the queue")]
    Accepted(JobAccepted),
    #[response(
        status = 400,
        description = "Not JSON, nested deeper than 64, an invalid name, or not a JSON object for a coalescing channel"
    )]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No or a wrong API key")]
    Unauthorized(ErrorBody),
    #[response(
        status = 404,
        description = "Unknown connection (a publish to one connection)"
    )]
    NotFound(ErrorBody),
    #[response(
        status = 409,
        description = "A request with this Idempotency-Key is in progress"
    )]
    Conflict(ErrorBody),
    #[response(
        status = 413,
        description = "Larger than 131072 bytes (API Gateway's message limit)"
    )]
    TooLarge(ErrorBody),
    #[response(
        status = 422,
        description = "This Idempotency-Key was used for a different request"
    )]
    KeyReused(ErrorBody),
    #[response(
        status = 429,
        description = "An ordered channel has 10,000 messages waiting (`channel_backlog_full`)"
    )]
    BacklogFull(ErrorBody),
    #[response(
        status = 503,
        description = "Not enqueued; or, with `status: unknown` and `job_id`, maybe enqueued: retry with the same Idempotency-Key"
    )]
    Unavailable(ErrorBody),
}

/// Checks the body: at most 128 KiB of JSON, nested at most [`crate::json::MAX_DEPTH`] deep.
pub fn payload(body: Result<Bytes, BytesRejection>) -> Result<Box<RawValue>, AppError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else {
            AppError::BadRequest("the body could not be read")
        }
    })?;
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(AppError::PayloadTooLarge);
    }
    if !crate::json::depth_within(&body, crate::json::MAX_DEPTH) {
        return Err(AppError::BadRequest(
            "the payload nests deeper than 64 levels",
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| AppError::BadRequest("the payload must be UTF-8 JSON"))?;
    RawValue::from_string(text.trim().to_owned())
        .map_err(|_| AppError::BadRequest("the payload must be JSON"))
}

/// Enqueues `job` (keeping it in `history`'s channel when given) under the request's idempotency key,
/// if it has one. `what` names the route and target, for the key's fingerprint.
async fn accept(
    state: &AppState,
    key: &ApiKey,
    headers: &HeaderMap,
    what: &str,
    job: Job,
    history: Option<&ChannelName>,
) -> Result<Accepted, AppError> {
    // Its own task: a caller that gives up (a client timeout closes the connection, which drops this
    // handler) must not leave an idempotency key claimed and its outcome unrecorded, which would refuse
    // the caller's retry with 409 until the claim expired.
    let (state, scope, headers, what) = (
        state.clone(),
        key.scope.clone(),
        headers.clone(),
        what.to_owned(),
    );
    let history = history.cloned();
    tokio::spawn(async move {
        enqueue_once(&state, &scope, &headers, &what, job, history.as_ref()).await
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

async fn enqueue_once(
    state: &AppState,
    scope: &str,
    headers: &HeaderMap,
    what: &str,
    mut job: Job,
    history: Option<&ChannelName>,
) -> Result<Accepted, AppError> {
    let payload = job.payload().map(|p| p.get()).unwrap_or_default();
    let fingerprint = format!("{what}\n{}\n{payload}", history.is_some());
    let claim = idempotency::claim(state, headers, scope, &fingerprint, &job.id).await?;
    match &claim {
        Claim::Done { job_id } => {
            return Ok(accepted(job_id.clone()));
        }
        Claim::Enqueue { job_id, .. } => job.id = job_id.clone(),
        Claim::None => {}
    }
    let job_id = job.id.clone();
    let result = match history {
        Some(channel) => {
            let payload = job
                .payload()
                .ok_or(AppError::BadRequest("nothing to publish"))?;
            outbox::enqueue_kept_as(state, channel, payload, Some(job.id.clone())).await
        }
        None => outbox::enqueue(state, job).await,
    };
    claim.settle(state, result.is_ok()).await;
    match result {
        Ok(id) => Ok(accepted(id)),
        // No answer from the queue: the job may be on it.
        Err(AppError::Queue(source @ QueueError::Unavailable(_))) => {
            Err(AppError::EnqueueUnknown { job_id, source })
        }
        Err(e) => Err(e),
    }
}

fn accepted(job_id: String) -> Accepted {
    (StatusCode::ACCEPTED, Json(JobAccepted { job_id }))
}

/// Sends the body to every connection in a channel.
#[utoipa::path(post, path = "/v1/channels/{channel}/publish", operation_id = "publish_to_channel", tag = "publish",
    params(("channel" = String, Path, description = "A channel name: 1 to 128 of A-Z a-z 0-9 _ -"), PublishOptions, ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key (per API key, kept 24 h) answers the same job id and enqueues once")),
    request_body(content = serde_json::Value, description = "The payload, sent verbatim: any JSON of at most 128 KiB", content_type = "application/json"),
    responses(PublishAnswers))]
pub async fn to_channel(
    key: ApiKey,
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Query(options): Query<PublishOptions>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, AppError> {
    let channel = ChannelName::parse(&channel).map_err(|_| AppError::Channel)?;
    let payload = payload(body)?;
    let job = Job::post(
        Target::Channel {
            channel: channel.as_str().to_owned(),
        },
        payload,
    );
    let what = format!("channel\n{}", channel.as_str());
    let history = options.history.then_some(&channel);
    accept(&state, &key, &headers, &what, job, history).await
}

/// Sends the body to every connection of a user.
#[utoipa::path(post, path = "/v1/users/{subject}/publish", operation_id = "publish_to_user", tag = "publish",
    params(("subject" = String, Path, description = "The user (token subject)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key (per API key, kept 24 h) answers the same job id and enqueues once")),
    request_body(content = serde_json::Value, description = "The payload, sent verbatim: any JSON of at most 128 KiB", content_type = "application/json"),
    responses(PublishAnswers))]
pub async fn to_subject(
    key: ApiKey,
    State(state): State<AppState>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, AppError> {
    let subject = Subject::parse(&subject).map_err(|_| AppError::BadRequest("invalid subject"))?;
    let payload = payload(body)?;
    let what = format!("subject\n{}", subject.as_str());
    let job = Job::post(
        Target::Subject {
            subject: subject.as_str().to_owned(),
        },
        payload,
    );
    accept(&state, &key, &headers, &what, job, None).await
}

/// Sends the body to one connection.
#[utoipa::path(post, path = "/v1/connections/{id}/publish", operation_id = "publish_to_connection", tag = "publish",
    params(("id" = String, Path, description = "An API Gateway connection id"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key (per API key, kept 24 h) answers the same job id and enqueues once")),
    request_body(content = serde_json::Value, description = "The payload, sent verbatim: any JSON of at most 128 KiB", content_type = "application/json"),
    responses(PublishAnswers))]
pub async fn to_connection(
    key: ApiKey,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, AppError> {
    let id = ConnectionId::parse(&id).map_err(|_| AppError::ConnectionId)?;
    let payload = payload(body)?;
    membership::peek(&state, &id)
        .await?
        .ok_or(AppError::UnknownConnection)?;
    let what = format!("connection\n{}", id.as_str());
    let job = Job::post(
        Target::Connections {
            ids: vec![id.as_str().to_owned()],
        },
        payload,
    );
    accept(&state, &key, &headers, &what, job, None).await
}

/// Sends the body to every connection.
#[utoipa::path(post, path = "/v1/broadcast", operation_id = "publish_to_everyone", tag = "publish",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key (per API key, kept 24 h) answers the same job id and enqueues once")),
    request_body(content = serde_json::Value, description = "The payload, sent verbatim: any JSON of at most 128 KiB", content_type = "application/json"),
    responses(PublishAnswers))]
pub async fn to_everyone(
    key: ApiKey,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, AppError> {
    let payload = payload(body)?;
    let job = Job::post(Target::All, payload);
    accept(&state, &key, &headers, "everyone", job, None).await
}
