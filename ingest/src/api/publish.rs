//! Publishing: the request body is the payload, sent verbatim to every recipient. It must be JSON of at
//! most 128 KiB (API Gateway's message limit, so a worker never finds out later). The answer is
//! `202 {"job_id": ...}` once the job is on the queue, and 503 if the queue cannot take it: plain when
//! the job is known not to be enqueued, with `"status": "unknown"` and the `job_id` when the queue did
//! not answer and may have taken it. An `Idempotency-Key` header makes a retry safe ([`idempotency`]).
//! `?history=true` on a channel publish also keeps the message in the channel's history; the payload must
//! then be a JSON object, and recipients get it with the channel's `offset` and `epoch` added.

use super::ApiKey;
use super::idempotency::{self, Claim};
use crate::error::AppError;
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
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};

type Accepted = (StatusCode, Json<Value>);

#[derive(Debug, Deserialize)]
pub struct PublishOptions {
    #[serde(default)]
    history: bool,
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
    mut job: Job,
    history: Option<&ChannelName>,
) -> Result<Accepted, AppError> {
    let payload = job.payload().map(|p| p.get()).unwrap_or_default();
    let fingerprint = format!("{what}\n{}\n{payload}", history.is_some());
    let claim = idempotency::claim(state, headers, &key.scope, &fingerprint, &job.id).await?;
    match &claim {
        Claim::Done { job_id } => {
            return Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job_id }))));
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
        Ok(id) => Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": id })))),
        // No answer from the queue: the job may be on it.
        Err(AppError::Queue(source @ QueueError::Unavailable(_))) => {
            Err(AppError::EnqueueUnknown { job_id, source })
        }
        Err(e) => Err(e),
    }
}

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
