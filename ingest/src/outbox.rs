//! Puts jobs on the queue for the workers, counting them. Ingest never calls the Management API itself:
//! a reply to one connection is a job like a broadcast to a million. A job is reported as enqueued only
//! once the queue has accepted it.
//!
//! Every job is given its lane here ([`lane_of`]): connections and users go on the interactive lane,
//! everyone on the bulk lane, and a channel on the bulk lane from `FANOUT_BULK_THRESHOLD` members
//! (one `SCARD`), so a reply or a direct message never waits behind a broadcast's chunks.
//!
//! A post to an ordered or coalescing channel (`FANOUT_ORDERED_CHANNELS`, `FANOUT_COALESCED_CHANNELS`)
//! goes into the channel's backlog instead, with one drain job per channel on the queue
//! ([`common::ordered`]).

use crate::error::AppError;
use crate::state::AppState;
use common::job::{Action, Job, Lane, Target};
use common::names::{ChannelName, ChannelPattern, ConnectionId};
use common::ordered::PublishError;
use serde_json::value::RawValue;

/// The lane of a new job: see [`Lane::for_target`]; a channel's members are counted with `SCARD`. If
/// Redis cannot answer, a channel goes on the bulk lane (a small channel is then only slower; a large one
/// never crowds the interactive lane), so a publish that needs nothing else from Redis is still accepted.
pub async fn lane_of(state: &AppState, target: &Target) -> Lane {
    let members = match target {
        Target::Channel { channel } => {
            let mut conn = state.conn();
            let counted = redis::cmd("SCARD")
                .arg(state.keys.channel(channel))
                .query_async::<u64>(&mut conn)
                .await;
            match counted {
                Ok(n) => n,
                Err(e) => {
                    state.metrics.redis_errors.inc();
                    tracing::debug!(error = %e, "could not count a channel's members; publishing on the bulk lane");
                    return Lane::Bulk;
                }
            }
        }
        _ => 0,
    };
    Lane::for_target(target, members, state.settings.bulk_threshold)
}

/// How a channel's messages are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    /// Each message is a job of its own, delivered in parallel with the others.
    Unordered,
    /// In publish order, one message at a time.
    Ordered,
    /// In publish order, the messages waiting sent together.
    Coalesced,
}

/// The [`ChannelOrder`] configuration gives `channel`; coalescing includes ordering.
pub fn ordering_of(state: &AppState, channel: &str) -> ChannelOrder {
    let settings = &state.settings;
    let Ok(channel) = ChannelName::parse(channel) else {
        return ChannelOrder::Unordered;
    };
    let channel = &channel;
    if ChannelPattern::any_matches(&settings.coalesced_channels, channel) {
        ChannelOrder::Coalesced
    } else if ChannelPattern::any_matches(&settings.ordered_channels, channel) {
        ChannelOrder::Ordered
    } else {
        ChannelOrder::Unordered
    }
}

/// Refuses a payload a coalescing channel cannot carry: its batches are JSON arrays of messages, so a
/// message must be a JSON object for a client to tell a batch from a message.
pub fn check_payload(state: &AppState, channel: &str, payload: &RawValue) -> Result<(), AppError> {
    if ordering_of(state, channel) == ChannelOrder::Coalesced && !payload.get().starts_with('{') {
        return Err(AppError::BadRequest(
            "a payload published to a coalescing channel must be a JSON object",
        ));
    }
    Ok(())
}

/// Gives the job its lane and enqueues it on that lane's queue (or, for a post to an ordered channel,
/// in the channel's backlog); returns its id.
pub async fn enqueue(state: &AppState, job: Job) -> Result<String, AppError> {
    let kind = job.target_kind();
    let lane = lane_of(state, &job.target).await;
    let job = job.in_lane(lane);
    let ordering = match (&job.target, &job.action) {
        (Target::Channel { channel }, Action::Post { payload }) => {
            check_payload(state, channel, payload)?;
            Some((channel, ordering_of(state, channel)))
        }
        _ => None,
    };
    let sent = match ordering {
        Some((channel, order @ (ChannelOrder::Ordered | ChannelOrder::Coalesced))) => {
            let queue = state.queue.get(lane);
            common::ordered::publish(
                &state.redis,
                &state.keys,
                queue.as_ref(),
                channel,
                &job,
                order == ChannelOrder::Coalesced,
            )
            .await
            .map_err(|e| match e {
                PublishError::BacklogFull => AppError::ChannelBacklogFull,
                PublishError::Redis(e) => AppError::Redis(e),
                PublishError::Queue(e) => AppError::Queue(e),
            })
        }
        _ => state
            .queue
            .get(lane)
            .send_batch(std::slice::from_ref(&job))
            .await
            .map_err(AppError::Queue),
    };
    match sent {
        Ok(()) => {
            state.metrics.jobs_enqueued.with_label_values(&[kind]).inc();
            state
                .metrics
                .lane_jobs_enqueued
                .with_label_values(&[lane.label()])
                .inc();
            Ok(job.id)
        }
        Err(e) => {
            if matches!(e, AppError::Queue(_)) {
                state.metrics.enqueue_failures.inc();
            }
            Err(e)
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
