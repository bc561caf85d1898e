//! Forgetting connections that no longer exist: those API Gateway answered 410 `GoneException` for, and
//! stale set members without a record. Batched per job: one round of `SREM`s for every set a connection
//! is in (channel, subject, its `all:{n}` bucket), then one of `DEL`s for the records, in that order so
//! that on Redis Cluster a partial failure leaves at most a set member without a record (see
//! ARCHITECTURE.md, "Invariants"). Gone connections are never retried.

use crate::recipients::Recipient;
use common::keys::Keyspace;
use common::store::Redis;

/// Removes gone connections from every set and deletes their records.
pub async fn remove(
    redis: &Redis,
    keys: &Keyspace,
    gone: &[Recipient],
) -> Result<(), redis::RedisError> {
    if gone.is_empty() {
        return Ok(());
    }
    let mut srems = Vec::with_capacity(gone.len() * 3);
    for r in gone {
        srems.push(
            redis::cmd("SREM")
                .arg(keys.all_bucket_of(&r.id))
                .arg(&r.id)
                .to_owned(),
        );
        if let Some(channel) = &r.channel {
            srems.push(
                redis::cmd("SREM")
                    .arg(keys.channel(channel))
                    .arg(&r.id)
                    .to_owned(),
            );
        }
        if let Some(subject) = &r.subject {
            srems.push(
                redis::cmd("SREM")
                    .arg(keys.subject(subject))
                    .arg(&r.id)
                    .to_owned(),
            );
        }
    }
    redis.batch(srems).await?;
    let dels = gone
        .iter()
        .map(|r| redis::cmd("DEL").arg(keys.connection(&r.id)).to_owned())
        .collect();
    redis.batch(dels).await?;
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
