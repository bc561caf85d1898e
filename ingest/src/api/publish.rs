//! Publishing: the request body is the payload, sent verbatim to every recipient. It must be JSON of at
//! most 128 KiB (API Gateway's message limit, so a worker never finds out later). The answer is
//! `202 {"job_id": ...}` once the job is on the queue, and 503 if the queue cannot take it.
//! `?history=true` on a channel publish also keeps the message in the channel's history; the payload must
//! then be a JSON object, and recipients get it with the channel's `offset` and `epoch` added.

use super::ApiKey;
use crate::error::AppError;
use crate::state::AppState;
use crate::{membership, outbox};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use common::job::{Job, Target};
use common::names::{ChannelName, ConnectionId, MAX_PAYLOAD_BYTES, Subject};
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};

type Accepted = (StatusCode, Json<Value>);

#[derive(Debug, Deserialize)]
pub struct PublishOptions {
    #[serde(default)]
    history: bool,
}

/// Checks the body: at most 128 KiB of JSON.
fn payload(body: Result<Bytes, BytesRejection>) -> Result<Box<RawValue>, AppError> {
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
    let text = std::str::from_utf8(&body)
        .map_err(|_| AppError::BadRequest("the payload must be UTF-8 JSON"))?;
    RawValue::from_string(text.trim().to_owned())
        .map_err(|_| AppError::BadRequest("the payload must be JSON"))
}

async fn accept(state: &AppState, job: Job) -> Result<Accepted, AppError> {
    let id = outbox::enqueue(state, job).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": id }))))
}

pub async fn to_channel(
    _: ApiKey,
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Query(options): Query<PublishOptions>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, AppError> {
    let channel = ChannelName::parse(&channel).map_err(|_| AppError::Channel)?;
    let payload = payload(body)?;
    let id = if options.history {
        outbox::enqueue_kept(&state, &channel, &payload).await?
    } else {
        let target = Target::Channel {
            channel: channel.as_str().to_owned(),
        };
        outbox::enqueue(&state, Job::post(target, payload)).await?
    };
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": id }))))
}

pub async fn to_subject(
    _: ApiKey,
    State(state): State<AppState>,
    Path(subject): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, AppError> {
    let subject = Subject::parse(&subject).map_err(|_| AppError::BadRequest("invalid subject"))?;
    let payload = payload(body)?;
    accept(
        &state,
        Job::post(
            Target::Subject {
                subject: subject.as_str().to_owned(),
            },
            payload,
        ),
    )
    .await
}

pub async fn to_connection(
    _: ApiKey,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, AppError> {
    let id = ConnectionId::parse(&id).map_err(|_| AppError::ConnectionId)?;
    let payload = payload(body)?;
    membership::peek(&state, &id)
        .await?
        .ok_or(AppError::UnknownConnection)?;
    accept(
        &state,
        Job::post(
            Target::Connections {
                ids: vec![id.as_str().to_owned()],
            },
            payload,
        ),
    )
    .await
}

pub async fn to_everyone(
    _: ApiKey,
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, AppError> {
    let payload = payload(body)?;
    accept(&state, Job::post(Target::All, payload)).await
}
