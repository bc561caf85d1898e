//! Ordered channels, the publishing side: a message to an ordered channel is not a job of its own on the
//! queue but an entry in the channel's backlog (`ordq:{channel}`, a Redis list in publish order), and the
//! queue carries one drain job per channel ([`Action::Drain`]) while the backlog has messages.
//!
//! The backlog and its "scheduled" mark (`ords:{channel}`) are written by one script, so a publish either
//! finds a drain already scheduled (and the draining worker will reach its message, since the worker
//! leaves only once it has seen the backlog empty in the same kind of script) or schedules the drain job
//! itself. One worker at a time drains a channel (the worker's `ordered` module), so every recipient gets
//! the channel's messages in the order they were published, across workers and retries; a coalescing
//! channel's worker sends the messages waiting at once as one JSON array per connection.
//!
//! If the queue refuses the drain job, the publish is taken back out of the backlog and the mark cleared,
//! so the caller's error means nothing was sent (a message accepted by another publish in that same
//! moment waits for the channel's next publish to schedule its drain).

use crate::job::{Action, Job, Target};
use crate::keys::Keyspace;
use crate::queue::{Queue, QueueError};
use crate::store::Redis;
use redis::Script;
use std::sync::LazyLock;

/// The most messages an ordered channel's backlog holds; a publish beyond it is refused
/// ([`PublishError::BacklogFull`]) rather than letting a channel nobody drains grow Redis without bound.
pub const BACKLOG_LIMIT: u64 = 10_000;

/// Appends the job (`ARGV[1]`) unless the backlog is full (-1); schedules a drain when none is (1),
/// else 0.
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
redis.call('RPUSH', KEYS[1], ARGV[1])
if redis.call('SET', KEYS[2], '1', 'NX') then return 1 end
return 0
",
    )
});

/// Takes the job back out of the backlog and clears the mark: its drain job never reached the queue.
static TAKE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('DEL', KEYS[2])
return 1
",
    )
});

/// Why a message could not be published to an ordered channel. Nothing of it was kept.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the channel's ordered backlog is full ({BACKLOG_LIMIT} messages)")]
    BacklogFull,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

/// The drain job of `channel`, on `job`'s lane: what a worker receives to deliver the backlog.
pub fn drain_job(channel: &str, coalesce: bool, like: &Job) -> Job {
    Job::new(
        Target::Channel {
            channel: channel.to_owned(),
        },
        Action::Drain { coalesce },
    )
    .in_lane(like.lane)
}

/// Appends `job` (a post to `channel`) to the channel's backlog and, when no drain is scheduled, puts a
/// drain job (see [`drain_job`]) on `queue`.
pub async fn publish(
    redis: &Redis,
    keys: &Keyspace,
    queue: &dyn Queue,
    channel: &str,
    job: &Job,
    coalesce: bool,
) -> Result<(), PublishError> {
    let backlog = keys.ordered_backlog(channel);
    let scheduled = keys.ordered_scheduled(channel);
    let entry = job.encode();
    let pushed: i64 = PUSH
        .key(&backlog)
        .key(&scheduled)
        .arg(&entry)
        .arg(BACKLOG_LIMIT)
        .invoke_async(&mut redis.clone())
        .await?;
    match pushed {
        -1 => Err(PublishError::BacklogFull),
        1 => {
            let drain = drain_job(channel, coalesce, job);
            if let Err(e) = queue.send_batch(std::slice::from_ref(&drain)).await {
                if let Err(undo) = TAKE_BACK
                    .key(&backlog)
                    .key(&scheduled)
                    .arg(&entry)
                    .invoke_async::<i64>(&mut redis.clone())
                    .await
                {
                    tracing::error!(error = %undo, "could not take an unscheduled message back out of an ordered channel's backlog");
                }
                return Err(e.into());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
