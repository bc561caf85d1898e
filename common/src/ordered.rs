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

#[cfg(test)]
mod tests {
    //! Against a real redis-server, with the Redis Streams queue.

    use super::*;
    use crate::job::payload_of;
    use crate::queue::QueueOptions;
    use crate::queue::streams::StreamQueue;
    use serde_json::json;
    use std::time::Duration;
    use test_support::RedisServer;

    fn message(n: u64) -> Job {
        Job::post(
            Target::Channel {
                channel: "room".into(),
            },
            payload_of(&json!({ "n": n })),
        )
    }

    async fn backlog(redis: &Redis, keys: &Keyspace) -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(keys.ordered_backlog("room"))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis.clone())
            .await
            .unwrap()
    }

    async fn scheduled(redis: &Redis, keys: &Keyspace) -> bool {
        redis::cmd("EXISTS")
            .arg(keys.ordered_scheduled("room"))
            .query_async(&mut redis.clone())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_first_publish_schedules_one_drain_and_the_rest_wait_in_order() {
        let server = RedisServer::start();
        let redis = Redis::connect(&server.url()).await.unwrap();
        let keys = Keyspace::default();
        let queue = StreamQueue::new(redis.clone(), "jobs", QueueOptions::default())
            .await
            .unwrap();
        let sent: Vec<Job> = (0..3)
            .map(|n| message(n).in_lane(crate::job::Lane::Interactive))
            .collect();
        for job in &sent {
            publish(&redis, &keys, &queue, "room", job, true)
                .await
                .unwrap();
        }
        let waiting = backlog(&redis, &keys).await;
        assert_eq!(waiting, sent.iter().map(Job::encode).collect::<Vec<_>>());
        assert!(scheduled(&redis, &keys).await);
        let received = queue.receive(10, Duration::from_millis(50)).await.unwrap();
        assert_eq!(received.len(), 1, "one drain job for three messages");
        let drain = received[0].job().unwrap();
        assert_eq!(
            drain.target,
            Target::Channel {
                channel: "room".into()
            }
        );
        assert!(matches!(drain.action, Action::Drain { coalesce: true }));
        // The drain job is on the messages' lane.
        let bulk = message(9).in_lane(crate::job::Lane::Bulk);
        assert_eq!(drain_job("room", false, &bulk).lane, crate::job::Lane::Bulk);
    }

    #[tokio::test]
    async fn a_full_backlog_refuses_and_a_refused_drain_job_takes_the_publish_back() {
        let server = RedisServer::start();
        let redis = Redis::connect(&server.url()).await.unwrap();
        let keys = Keyspace::default();
        // The queue lives on a Redis of its own, which then goes away.
        let mut queue_server = RedisServer::start();
        let queue_redis = Redis::connect(&queue_server.url()).await.unwrap();
        let queue = StreamQueue::new(queue_redis, "jobs", QueueOptions::default())
            .await
            .unwrap();
        queue_server.stop();
        let refused = publish(&redis, &keys, &queue, "room", &message(1), false).await;
        assert!(
            matches!(refused, Err(PublishError::Queue(_))),
            "{refused:?}"
        );
        assert!(backlog(&redis, &keys).await.is_empty(), "taken back");
        assert!(
            !scheduled(&redis, &keys).await,
            "the next publish schedules"
        );
        // With a drain scheduled, a publish needs no queue.
        redis::cmd("SET")
            .arg(keys.ordered_scheduled("room"))
            .arg("1")
            .query_async::<()>(&mut redis.clone())
            .await
            .unwrap();
        publish(&redis, &keys, &queue, "room", &message(2), false)
            .await
            .unwrap();
        assert_eq!(backlog(&redis, &keys).await.len(), 1);
        // A full backlog refuses and keeps what it has.
        let mut pipe = redis::pipe();
        for _ in 1..BACKLOG_LIMIT {
            pipe.cmd("RPUSH")
                .arg(keys.ordered_backlog("room"))
                .arg("{}")
                .ignore();
        }
        pipe.query_async::<()>(&mut redis.clone()).await.unwrap();
        let full = publish(&redis, &keys, &queue, "room", &message(3), false).await;
        assert!(matches!(full, Err(PublishError::BacklogFull)), "{full:?}");
        assert_eq!(backlog(&redis, &keys).await.len() as u64, BACKLOG_LIMIT);
    }
}
