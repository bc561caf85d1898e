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

/// Enqueues a channel job whose payload is also kept in the channel's history. History is written first
/// and taken back if the queue refuses the job, so history never holds a message nobody was sent.
pub async fn enqueue_kept(
    state: &AppState,
    channel: &ChannelName,
    job: Job,
) -> Result<String, AppError> {
    let entry = job
        .payload()
        .map(|p| p.get().to_owned())
        .unwrap_or_default();
    crate::history::append(state, channel, &entry).await?;
    let result = enqueue(state, job).await;
    if result.is_err()
        && let Err(undo) = crate::history::remove(state, channel, &entry).await
    {
        tracing::error!(error = %undo, "could not take an unsent message back out of history");
    }
    result
}
