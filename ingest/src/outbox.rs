//! Puts jobs on the queue for the workers, counting them. Ingest never calls the Management API itself:
//! a reply to one connection is a job like a broadcast to a million. A job is reported as enqueued only
//! once the queue has accepted it.

use crate::error::AppError;
use crate::state::AppState;
use common::job::{Job, Target};
use common::names::{ChannelName, ConnectionId};
use serde_json::value::RawValue;

/// Enqueues one job and returns its id.
pub async fn enqueue(state: &AppState, job: Job) -> Result<String, AppError> {
    let kind = job.target_kind();
    match state.queue.send_batch(std::slice::from_ref(&job)).await {
        Ok(()) => {
            state.metrics.jobs_enqueued.with_label_values(&[kind]).inc();
            Ok(job.id)
        }
        Err(e) => {
            state.metrics.enqueue_failures.inc();
            Err(AppError::Queue(e))
        }
    }
}

/// Enqueues a reply to one connection.
pub async fn reply(
    state: &AppState,
    to: &ConnectionId,
    payload: Box<RawValue>,
) -> Result<String, AppError> {
    enqueue(
        state,
        Job::post(
            Target::Connections {
                ids: vec![to.as_str().to_owned()],
            },
            payload,
        ),
    )
    .await
}

/// Enqueues `{"type":"error","error":message}` to one connection.
pub async fn reply_error(
    state: &AppState,
    to: &ConnectionId,
    message: &str,
) -> Result<String, AppError> {
    reply(
        state,
        to,
        common::job::payload_of(&serde_json::json!({ "type": "error", "error": message })),
    )
    .await
}

/// Publishes `payload` to a channel and keeps it in the channel's history, stamped with the channel's
/// `offset` and `epoch` (see [`crate::recovery`]); recipients get the stamped message. History is written
/// first and taken back if the queue refuses the job, so history never holds a message nobody was sent.
pub async fn enqueue_kept(
    state: &AppState,
    channel: &ChannelName,
    payload: &RawValue,
) -> Result<String, AppError> {
    enqueue_kept_as(state, channel, payload, None).await
}

/// [`enqueue_kept`] with the job id chosen by the caller (an idempotent publish reuses the id it claimed).
pub async fn enqueue_kept_as(
    state: &AppState,
    channel: &ChannelName,
    payload: &RawValue,
    job_id: Option<String>,
) -> Result<String, AppError> {
    let members = crate::recovery::members_of(payload).map_err(|e| match e {
        crate::recovery::StampError::NotAnObject => {
            AppError::BadRequest("a payload kept in history must be a JSON object")
        }
        crate::recovery::StampError::ReservedField => {
            AppError::BadRequest("a payload kept in history cannot have `offset` or `epoch` fields")
        }
    })?;
    let stamped = crate::recovery::append(state, channel, members).await?;
    let entry = stamped.get().to_owned();
    let mut job = Job::post(
        Target::Channel {
            channel: channel.as_str().to_owned(),
        },
        stamped,
    );
    if let Some(id) = job_id {
        job.id = id;
    }
    let result = enqueue(state, job).await;
    if result.is_err()
        && let Err(undo) = crate::history::remove(state, channel, &entry).await
    {
        tracing::error!(error = %undo, "could not take an unsent message back out of history");
    }
    result
}
