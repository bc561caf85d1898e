//! Forgetting connections that no longer exist: those API Gateway answered 410 `GoneException` for, and
//! stale set members without a record. Batched per job: one round takes every gone connection out of
//! every set it is in (its channel and the channel's presence with the leave script every process shares,
//! [`common::presence::leave_channel`], its subject's set and its `all:{n}` bucket), then one deletes the
//! location entries and the records, in that order so that on Redis Cluster a partial failure leaves at
//! most a set member without a record, or a location entry the stale-connection sweep clears (see
//! ARCHITECTURE.md, "Invariants"). A connection this removed from a presence channel is announced to the
//! channel's members as a leave event, one job on the queue; the script answers the presence entry to one
//! caller only, so a `$disconnect` or a sweep racing the worker never makes it two. A leave event takes
//! the lane ingest would give a publish to its channel (bulk from `FANOUT_BULK_THRESHOLD` members). Gone
//! connections are never retried.

use crate::recipients::Recipient;
use common::job::{Job, Lane, Target};
use common::keys::Keyspace;
use common::presence::{Event, Left, Member};
use common::queue::Lanes;
use common::store::Redis;

/// Removes gone connections from every set and deletes their locations and records, then queues a
/// presence leave event for each one this call took out of a presence channel, on its channel's lane
/// (`bulk_threshold` members or more: bulk). A leave event the queue refuses is logged, not returned: the
/// removal it announces has happened.
pub async fn remove(
    redis: &Redis,
    keys: &Keyspace,
    lanes: &Lanes,
    bulk_threshold: u64,
    gone: &[Recipient],
) -> Result<(), redis::RedisError> {
    if gone.is_empty() {
        return Ok(());
    }
    let mut srems = Vec::with_capacity(gone.len() * 3);
    for r in gone {
        if let Some(channel) = &r.channel {
            srems.push(common::presence::leave_channel(keys, &r.id, channel));
        }
        srems.push(
            redis::cmd("SREM")
                .arg(keys.all_bucket_of(&r.id))
                .arg(&r.id)
                .to_owned(),
        );
        if let Some(subject) = &r.subject {
            srems.push(
                redis::cmd("SREM")
                    .arg(keys.subject(subject))
                    .arg(&r.id)
                    .to_owned(),
            );
        }
    }
    let mut answers = redis.batch(srems).await?.into_iter();
    let mut leaves = Vec::new();
    for r in gone {
        if let Some(channel) = &r.channel {
            let left = Left::from_reply(answers.next())?;
            if let Some(entry) = left.presence {
                let member = Member::from_stored(&r.id, &entry);
                leaves.push(Job::post(
                    Target::Channel {
                        channel: channel.clone(),
                    },
                    common::presence::event_payload(channel, Event::Leave, &member),
                ));
            }
        }
        answers.next();
        if r.subject.is_some() {
            answers.next();
        }
    }
    let mut dels = Vec::with_capacity(gone.len() * 2);
    for r in gone {
        dels.push(
            redis::cmd("HDEL")
                .arg(keys.location_of(&r.id))
                .arg(&r.id)
                .to_owned(),
        );
        dels.push(redis::cmd("DEL").arg(keys.connection(&r.id)).to_owned());
    }
    redis.batch(dels).await?;
    if leaves.is_empty() {
        return Ok(());
    }
    let counts = leaves
        .iter()
        .map(|job| match &job.target {
            Target::Channel { channel } => {
                redis::cmd("SCARD").arg(keys.channel(channel)).to_owned()
            }
            _ => unreachable!("leave events are channel jobs"),
        })
        .collect();
    let counts = redis.batch(counts).await?;
    let leaves: Vec<Job> = leaves
        .into_iter()
        .zip(counts)
        .map(|(job, members)| {
            let members = redis::from_redis_value::<u64>(members).unwrap_or(0);
            let lane = Lane::for_target(&job.target, members, bulk_threshold);
            job.in_lane(lane)
        })
        .collect();
    if let Err(e) = lanes.send(&leaves).await {
        tracing::warn!(error = %e, events = leaves.len(), "presence leave events not queued");
    }
    Ok(())
}

/// Takes stale ids out of their `all:{n}` bucket and, when known, the set the job read them from.
pub async fn drop_stale(
    redis: &Redis,
    keys: &Keyspace,
    stale: &[String],
    source: Option<&str>,
) -> Result<(), redis::RedisError> {
    if stale.is_empty() {
        return Ok(());
    }
    let mut cmds: Vec<redis::Cmd> = stale
        .iter()
        .map(|id| {
            redis::cmd("SREM")
                .arg(keys.all_bucket_of(id))
                .arg(id)
                .to_owned()
        })
        .collect();
    if let Some(set) = source {
        cmds.push(redis::cmd("SREM").arg(set).arg(stale).to_owned());
    }
    redis.batch(cmds).await.map(drop)
}
