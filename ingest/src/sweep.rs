//! The stale-connection sweep: finds connections whose record (`conn:{id}`) expired without a
//! `$disconnect` (API Gateway sends it at most once, best-effort) and takes them out of every set they
//! were in: their channel and its presence (with the same leave script as `$disconnect`, so a leave event
//! is sent once, whoever removes the connection first), their subject's set and their `all:{n}` bucket.
//!
//! Every replica runs [`run`]; per interval and bucket one of them sweeps: the one that takes the bucket's
//! lease (`sweep:{n}`, `SET NX PX` for one interval, not released, so the fleet sweeps each bucket at most
//! once an interval). The sweep walks the bucket's location hash (`loc:{n}`, id → channel and subject,
//! the only place a connection's sets can still be found once its record is gone) with `HSCAN` in pages
//! of `FANOUT_SWEEP_BATCH`, checks the records of a page in one round (`EXISTS`), removes the stale ones in
//! two more, and extends its lease before the next page; a sweeper that lost its lease stops. Connections
//! swept are counted in `fanout_connections_swept_total`.

use crate::lifecycle::{self, Gone};
use crate::membership::{self, Left};
use crate::state::AppState;
use common::keys::ALL_BUCKETS;
use common::names::{ChannelName, Subject};
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

/// What one pass over the buckets did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Buckets this replica held the lease of and walked.
    pub buckets: u32,
    /// Location entries checked.
    pub checked: u64,
    /// Stale connections removed by this replica.
    pub removed: u64,
}

impl std::ops::AddAssign for Swept {
    fn add_assign(&mut self, other: Self) {
        self.buckets += other.buckets;
        self.checked += other.checked;
        self.removed += other.removed;
    }
}

/// Sweeps every interval until `shutdown` resolves. The first sweep comes after a random part of an
/// interval, so replicas started together do not race for the same leases.
pub async fn run(state: AppState, shutdown: impl Future<Output = ()>) {
    let interval = state.settings.sweep_interval;
    let first = interval.mul_f64(0.25 + rand::random::<f64>() * 0.75);
    let sweeps = async {
        tokio::time::sleep(first).await;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match once(&state).await {
                Ok(swept) if swept.removed > 0 => tracing::info!(
                    buckets = swept.buckets,
                    checked = swept.checked,
                    removed = swept.removed,
                    "stale connections swept"
                ),
                Ok(swept) => tracing::debug!(
                    buckets = swept.buckets,
                    checked = swept.checked,
                    "stale-connection sweep found nothing"
                ),
                // The next interval tries again; nothing was lost.
                Err(e) => {
                    state.metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "stale-connection sweep interrupted");
                }
            }
        }
    };
    tokio::select! {
        () = sweeps => {}
        () = shutdown => {}
    }
}

/// One pass: every bucket whose lease this replica takes is walked.
pub async fn once(state: &AppState) -> Result<Swept, redis::RedisError> {
    let owner = uuid::Uuid::new_v4().to_string();
    let mut total = Swept::default();
    for bucket in 0..ALL_BUCKETS {
        if take_lease(state, bucket, &owner).await? {
            total += walk(state, bucket, Some(&owner)).await?;
        }
    }
    Ok(total)
}

/// Walks bucket `bucket`'s location hash and removes the connections without a record. With `owner`,
/// stops when the lease is no longer that owner's; without, walks the whole hash (for tests and tools:
/// correctness never depends on the lease, only the work saved does).
pub async fn walk(
    state: &AppState,
    bucket: u32,
    owner: Option<&str>,
) -> Result<Swept, redis::RedisError> {
    let location = state.keys.location_bucket(bucket);
    let mut swept = Swept {
        buckets: 1,
        ..Swept::default()
    };
    let mut cursor: u64 = 0;
    loop {
        let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(&location)
            .arg(cursor)
            .arg("COUNT")
            .arg(state.settings.sweep_batch)
            .query_async(&mut state.conn())
            .await?;
        let entries: Vec<(String, String)> = flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        swept.checked += entries.len() as u64;
        let stale = without_record(state, entries).await?;
        swept.removed += remove_stale(state, bucket, &stale).await?;
        if next == 0 {
            break;
        }
        cursor = next;
        if let Some(owner) = owner
            && !extend_lease(state, bucket, owner).await?
        {
            tracing::warn!(
                bucket,
                "sweep lease lost (a page took longer than an interval); another replica continues"
            );
            break;
        }
    }
    Ok(swept)
}

/// The entries of a page whose connection has no record, in one round of `EXISTS`.
async fn without_record(
    state: &AppState,
    entries: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, redis::RedisError> {
    if entries.is_empty() {
        return Ok(entries);
    }
    let checks = entries
        .iter()
        .map(|(id, _)| {
            redis::cmd("EXISTS")
                .arg(state.keys.connection(id))
                .to_owned()
        })
        .collect();
    let exists = state.redis.batch(checks).await?;
    Ok(entries
        .into_iter()
        .zip(exists)
        .filter(|(_, e)| matches!(redis::from_redis_value::<i64>(e.clone()), Ok(0)))
        .map(|(entry, _)| entry)
        .collect())
}

/// Deletes location entry `ARGV[1]` of hash `KEYS[1]` if it still says `ARGV[2]` (what the sweep read),
/// with the id's `all:{n}` bucket membership (`KEYS[2]`, same slot); answers 1 if it did.
const FORGET_LOCATION: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
";

/// Takes stale connections out of their channel (and its presence), subject and bucket sets, then forgets
/// their location, in that order: a failure half-way leaves the location for the next sweep. Reports
/// each connection this call removed from its channel to [`lifecycle`] (a presence leave event), and
/// answers how many location entries it deleted.
async fn remove_stale(
    state: &AppState,
    bucket: u32,
    stale: &[(String, String)],
) -> Result<u64, redis::RedisError> {
    if stale.is_empty() {
        return Ok(0);
    }
    let places: Vec<Option<(ChannelName, Option<Subject>)>> = stale
        .iter()
        .map(|(_, location)| membership::parse_location(location))
        .collect();
    let mut cmds = Vec::new();
    for ((id, _), place) in stale.iter().zip(&places) {
        if let Some((channel, subject)) = place {
            cmds.push(membership::leave_channel(state, id, channel));
            if let Some(subject) = subject {
                cmds.push(
                    redis::cmd("SREM")
                        .arg(state.keys.subject(subject.as_str()))
                        .arg(id)
                        .to_owned(),
                );
            }
        }
    }
    let mut answers = state.redis.batch(cmds).await?.into_iter();
    let mut left = Vec::with_capacity(stale.len());
    for place in &places {
        left.push(match place {
            Some((_, subject)) => {
                let l = Left::from_reply(answers.next())?;
                if subject.is_some() {
                    answers.next();
                }
                l
            }
            None => Left::default(),
        });
    }
    let location = state.keys.location_bucket(bucket);
    let all = state.keys.all_bucket(bucket);
    let forget = stale
        .iter()
        .map(|(id, value)| {
            redis::cmd("EVAL")
                .arg(FORGET_LOCATION)
                .arg(2)
                .arg(&location)
                .arg(&all)
                .arg(id)
                .arg(value)
                .to_owned()
        })
        .collect();
    let removed: u64 = state
        .redis
        .batch(forget)
        .await?
        .into_iter()
        .filter_map(|v| redis::from_redis_value::<u64>(v).ok())
        .sum();
    state.metrics.connections_swept.inc_by(removed);
    // Reported by whichever call took each one out of its channel: the sweep only when no
    // `$disconnect`, kick or other sweeper did first.
    for ((id, _), (place, left)) in stale.iter().zip(places.iter().zip(&left)) {
        if let Some((channel, _)) = place
            && (left.removed || left.presence.is_some())
        {
            lifecycle::gone(state, id, channel, left, Gone::Expired).await;
        }
    }
    Ok(removed)
}

/// Takes bucket `bucket`'s lease for one interval if nobody holds it.
async fn take_lease(state: &AppState, bucket: u32, owner: &str) -> Result<bool, redis::RedisError> {
    let taken: Option<String> = redis::cmd("SET")
        .arg(state.keys.sweep_lease(bucket))
        .arg(owner)
        .arg("NX")
        .arg("PX")
        .arg(lease_ms(state.settings.sweep_interval))
        .query_async(&mut state.conn())
        .await?;
    Ok(taken.is_some())
}

static EXTEND_LEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        return redis.call('PEXPIRE', KEYS[1], ARGV[2])
        ",
    )
});

/// Extends the lease by an interval if `owner` still holds it.
async fn extend_lease(
    state: &AppState,
    bucket: u32,
    owner: &str,
) -> Result<bool, redis::RedisError> {
    let kept: i64 = EXTEND_LEASE
        .key(state.keys.sweep_lease(bucket))
        .arg(owner)
        .arg(lease_ms(state.settings.sweep_interval))
        .invoke_async(&mut state.conn())
        .await?;
    Ok(kept == 1)
}

fn lease_ms(interval: Duration) -> u64 {
    interval.as_millis().max(1) as u64
}
