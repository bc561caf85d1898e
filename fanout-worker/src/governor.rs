//! The rate governor: every worker of a fleet takes its `PostToConnection` budget from one token bucket
//! in Redis, so that adding workers never turns into a storm of 429s; and it tells an account-wide
//! throttle apart from one slow client.
//!
//! - **Shared bucket.** One hash (`gov:{name}`) updated by one Lua script ([`BUCKET`]): refill at the
//!   configured rate (the account's budget minus headroom), capped at the burst, by the Redis server's
//!   clock. Workers take tokens in small batches ([`Governor::batch`], about 5 ms of the fleet's rate) and
//!   spend them locally, so the script runs a few hundred times a second fleet-wide, not once per call.
//! - **AIMD, fleet-wide.** The bucket also holds a `factor` (0.05 to 1) that scales its refill. A 429
//!   classified as account-wide halves it (at most once per [`CUT_COOLDOWN`], so a burst of 429s seen by
//!   every worker at once counts as one signal) and empties the bucket; it grows back additively while no
//!   cut happens ([`RECOVERY_PER_SEC`] of the full rate per second). Keeping the factor in the shared bucket
//!   means the whole fleet slows down together, instead of one worker backing off while the others take
//!   up its share.
//! - **Slow clients.** API Gateway answers 429 both when the account's budget is spent and when one
//!   client's buffer is full. [`Governor::classify`] looks at the 429s of the last second: spread over
//!   [`SPREAD`] or more connections, it is the account; concentrated on fewer, it is those connections,
//!   which then back off alone (the caller's per-connection retry schedule) without touching the rate.

use common::keys::Keyspace;
use common::metrics::WorkerMetrics;
use common::store::Redis;
use redis::Script;
use std::collections::VecDeque;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Least time between two cuts of the shared rate.
pub const CUT_COOLDOWN: Duration = Duration::from_secs(1);
/// Share of the full rate regained per second after a cut.
pub const RECOVERY_PER_SEC: f64 = 0.1;
/// What a cut multiplies the rate by, and the floor it cannot go below.
pub const CUT_FACTOR: f64 = 0.5;
pub const MIN_FACTOR: f64 = 0.05;
/// Distinct connections throttled within [`WINDOW`] from which a 429 counts as account-wide.
pub const SPREAD: usize = 3;
/// How far back [`Governor::classify`] looks.
pub const WINDOW: Duration = Duration::from_secs(1);

/// `KEYS[1]` the bucket; `ARGV`: rate per second, burst, tokens wanted (0 to cut instead), cut factor,
/// floor, recovery per second, cooldown ms. Returns `{granted, wait_ms, factor × 1000}`.
static BUCKET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'factor', 'cut_at')
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tokens = tonumber(h[1]) or burst
local ts = tonumber(h[2]) or now
local factor = tonumber(h[3]) or 1
local cut_at = tonumber(h[4]) or 0
local dt = math.max(0, now - ts)
factor = math.min(1, factor + tonumber(ARGV[6]) * dt / 1000)
tokens = math.min(burst, tokens + rate * factor * dt / 1000)
local granted = 0
local wait = 0
if want == 0 then
  if now - cut_at >= tonumber(ARGV[7]) then
    factor = math.max(tonumber(ARGV[5]), factor * tonumber(ARGV[4]))
    cut_at = now
    if tokens > 0 then tokens = 0 end
  end
else
  granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
  if granted == 0 then wait = math.ceil((1 - tokens) * 1000 / (rate * factor)) end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now, 'factor', tostring(factor), 'cut_at', cut_at)
redis.call('PEXPIRE', KEYS[1], 600000)
return {granted, wait, math.floor(factor * 1000)}
",
    )
});

/// Which kind of throttle a 429 is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleKind {
    /// Spread over many connections: the account's budget.
    Account,
    /// Concentrated on few connections: their buffers are full.
    Connection,
}

impl ThrottleKind {
    pub fn label(self) -> &'static str {
        match self {
            ThrottleKind::Account => "account",
            ThrottleKind::Connection => "connection",
        }
    }
}

/// One worker's handle on the shared bucket.
#[derive(Debug)]
pub struct Governor {
    redis: Redis,
    key: String,
    rate: u32,
    burst: u32,
    batch: u32,
    /// Tokens taken from the bucket and not spent yet. A tokio mutex: callers queue for tokens in order.
    local: tokio::sync::Mutex<u32>,
    recent: std::sync::Mutex<VecDeque<(Instant, u64)>>,
    metrics: WorkerMetrics,
}

impl Governor {
    /// A handle on bucket `name`, refilled at `rate` per second up to `burst`.
    pub fn new(
        redis: Redis,
        keys: &Keyspace,
        name: &str,
        rate: u32,
        burst: u32,
        metrics: WorkerMetrics,
    ) -> Self {
        metrics.send_rate.set(i64::from(rate));
        Self {
            redis,
            key: keys.governor(name),
            rate: rate.max(1),
            burst: burst.max(1),
            batch: Self::batch(rate, burst),
            local: tokio::sync::Mutex::new(0),
            recent: std::sync::Mutex::new(VecDeque::new()),
            metrics,
        }
    }

    /// Tokens taken per round trip: about 5 ms of the rate, between 1 and 100, and never more than a
    /// tenth of the burst.
    pub fn batch(rate: u32, burst: u32) -> u32 {
        (rate / 200).clamp(1, 100).min((burst / 10).max(1))
    }

    /// Waits for one token.
    pub async fn acquire(&self) {
        let mut local = self.local.lock().await;
        if *local > 0 {
            *local -= 1;
            return;
        }
        loop {
            match self.call(self.batch).await {
                Ok((granted, _)) if granted > 0 => {
                    *local = granted - 1;
                    return;
                }
                Ok((_, wait_ms)) => {
                    tokio::time::sleep(Duration::from_millis(wait_ms.clamp(1, 100))).await;
                }
                Err(e) => {
                    // Without Redis there is no shared budget: go on at this worker's guess of a fair
                    // share (a tenth of the fleet's rate), rather than stop delivering.
                    self.metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "the shared rate bucket is unreachable; pacing locally");
                    let pause = Duration::from_secs_f64(
                        f64::from(self.batch) * 10.0 / f64::from(self.rate),
                    );
                    tokio::time::sleep(pause.min(Duration::from_secs(1))).await;
                    *local = self.batch - 1;
                    return;
                }
            }
        }
    }

    /// Cuts the shared rate after an account-wide 429 (at most once per [`CUT_COOLDOWN`] fleet-wide).
    pub async fn cut(&self) {
        if let Err(e) = self.call(0).await {
            self.metrics.redis_errors.inc();
            tracing::warn!(error = %e, "could not cut the shared rate");
        }
    }

    /// Records a 429 for `connection_id` and says which kind it is.
    pub fn classify(&self, connection_id: &str) -> ThrottleKind {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let id = BuildHasherDefault::<DefaultHasher>::default().hash_one(connection_id);
        let now = Instant::now();
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            recent.pop_front();
        }
        if recent.len() >= 1024 {
            recent.pop_front();
        }
        recent.push_back((now, id));
        let mut distinct: Vec<u64> = Vec::with_capacity(SPREAD);
        for (_, other) in recent.iter().rev() {
            if !distinct.contains(other) {
                distinct.push(*other);
                if distinct.len() >= SPREAD {
                    return ThrottleKind::Account;
                }
            }
        }
        ThrottleKind::Connection
    }

    /// Runs the bucket script; `want == 0` cuts. Returns (granted, wait ms).
    async fn call(&self, want: u32) -> Result<(u32, u64), redis::RedisError> {
        let mut conn = self.redis.clone();
        let (granted, wait, factor_milli): (u32, u64, i64) = BUCKET
            .key(&self.key)
            .arg(self.rate)
            .arg(self.burst)
            .arg(want)
            .arg(CUT_FACTOR)
            .arg(MIN_FACTOR)
            .arg(RECOVERY_PER_SEC)
            .arg(CUT_COOLDOWN.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        self.metrics
            .send_rate
            .set(i64::from(self.rate) * factor_milli / 1000);
        Ok((granted, wait))
    }
}
