//! `Idempotency-Key` on the publish routes: a retry with the same key (per API key, for
//! [`KEPT`]) gets the same job id and is delivered once, also when the first attempt timed out or got a
//! 503 whose `"status"` was `"unknown"`.
//!
//! The key's record (`{p}idem:{scope}:{key}` hash: job id, state, request fingerprint, time) is claimed
//! with one script before the enqueue:
//!
//! - no record: the request is new; it is enqueued under a fresh job id (state `pending`, then `queued`
//!   once the queue accepted it, or `failed` if it did not).
//! - `queued`: answered 202 with the recorded job id; nothing is enqueued.
//! - `failed`, or `pending` for longer than [`IN_FLIGHT`] (the first attempt's process died): enqueued
//!   again under the recorded job id. If the first attempt did reach the queue after all, the two
//!   messages carry one job id, and the workers deliver a job id once (its lease and progress set).
//! - `pending` and recent: another request with this key is in progress: 409.
//! - a different request (route, target or body) under a used key: 422.
//!
//! A claim records its request as the owner. When the claim gets no answer (Redis paused or slow past
//! the command timeout: the caller gets 503), a paused Redis still runs it later and the record would say
//! `pending` for [`IN_FLIGHT`], refusing the caller's retry with 409; so the request then releases its
//! own late claim (`pending` back to `failed`) in the background once Redis answers again.

use crate::error::AppError;
use crate::state::AppState;
use axum::http::HeaderMap;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// How long a key is remembered.
pub const KEPT: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a `pending` record means "another request is enqueueing this right now".
pub const IN_FLIGHT: Duration = Duration::from_secs(30);
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// `KEYS[1]`: the record. `ARGV`: new job id, fingerprint, ttl ms, in-flight ms. Returns
/// `{verdict, job id}` with verdict `new`, `retry`, `done`, `busy` or `mismatch`.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'job', 'state', 'fp', 'at')
if not h[1] then
  redis.call('HSET', KEYS[1], 'job', ARGV[1], 'state', 'pending', 'fp', ARGV[2], 'at', now, 'owner', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'new', ARGV[1]}
end
if h[3] ~= ARGV[2] then return {'mismatch', h[1]} end
if h[2] == 'queued' then return {'done', h[1]} end
if h[2] == 'pending' and now - (tonumber(h[4]) or 0) < tonumber(ARGV[4]) then return {'busy', h[1]} end
redis.call('HSET', KEYS[1], 'state', 'pending', 'at', now, 'owner', ARGV[1])
return {'retry', h[1]}
",
    )
});

/// `KEYS[1]`: the record. `ARGV[1]`: the owner (the new job id the claim was made with). A `pending`
/// claim of that owner becomes `failed`, which a retry may take over at once. Returns 1 if it did.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.call('HMGET', KEYS[1], 'owner', 'state')
if h[1] == ARGV[1] and h[2] == 'pending' then
  redis.call('HSET', KEYS[1], 'state', 'failed')
  return 1
end
return 0
",
    )
});

/// A claimed key: enqueue under `job_id` (unless [`Claim::Done`]), then [`Claim::settle`] it.
#[derive(Debug)]
pub enum Claim {
    /// No key on the request: enqueue as usual.
    None,
    /// Enqueue under this job id, then record the outcome.
    Enqueue { record: String, job_id: String },
    /// Already enqueued: answer with this job id.
    Done { job_id: String },
}

/// Reads the header and claims its record for this request (`fingerprint` names the route, target and
/// body), giving the job id to use. Fails with 400 (a bad key), 409 (in progress) or 422 (reused).
pub async fn claim(
    state: &AppState,
    headers: &HeaderMap,
    scope: &str,
    fingerprint: &str,
    new_job_id: &str,
) -> Result<Claim, AppError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(Claim::None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or(AppError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ))?;
    let record = state.keys.idempotency(scope, key);
    let claimed: Result<(String, String), redis::RedisError> = CLAIM
        .key(&record)
        .arg(new_job_id)
        .arg(common::keys::token_hash(fingerprint))
        .arg(KEPT.as_millis() as u64)
        .arg(IN_FLIGHT.as_millis() as u64)
        .invoke_async(&mut state.conn())
        .await;
    let (verdict, job_id) = match claimed {
        Ok(answer) => answer,
        Err(e) => {
            // A claim that timed out was sent and may still run; one refused at connect never left.
            if e.is_timeout() {
                tokio::spawn(release_late_claim(
                    state.clone(),
                    record,
                    new_job_id.to_owned(),
                ));
            }
            return Err(e.into());
        }
    };
    match verdict.as_str() {
        "new" | "retry" => Ok(Claim::Enqueue { record, job_id }),
        "done" => Ok(Claim::Done { job_id }),
        "busy" => Err(AppError::IdempotencyKeyInUse),
        _ => Err(AppError::IdempotencyKeyReused),
    }
}

/// Releases a claim that got no answer but may still run: tries until Redis answers, then once more a
/// second later (a reconnected client can answer before the old connection's claim has run). At most two
/// answered calls per request, so an outage does not turn into a storm of releases afterwards.
async fn release_late_claim(state: AppState, record: String, owner: String) {
    use backon::{ExponentialBuilder, Retryable};
    let release = || async {
        RELEASE
            .key(&record)
            .arg(&owner)
            .invoke_async::<i64>(&mut state.conn())
            .await
    };
    let patience = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_total_delay(Some(IN_FLIGHT))
        .without_max_times()
        .with_jitter();
    for _ in 0..2 {
        match release.retry(patience).await {
            Ok(1) => {
                tracing::info!("released an idempotency claim Redis ran after its caller gave up");
                return;
            }
            Ok(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            // Past IN_FLIGHT the claim has expired as in progress anyway.
            Err(e) => {
                tracing::debug!(error = %e, "could not release a late idempotency claim");
                return;
            }
        }
    }
}

impl Claim {
    /// Records whether the queue accepted the job (`queued`) or not (`failed`: a retry enqueues it
    /// again under the same id). A failure to record is logged: a `pending` record turns retryable after
    /// [`IN_FLIGHT`].
    pub async fn settle(&self, state: &AppState, queued: bool) {
        let Claim::Enqueue { record, .. } = self else {
            return;
        };
        let written: Result<(), redis::RedisError> = redis::cmd("HSET")
            .arg(record)
            .arg("state")
            .arg(if queued { "queued" } else { "failed" })
            .query_async(&mut state.conn())
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not record an idempotency key's outcome");
        }
    }
}
