//! The fleet's shared token bucket in Redis, and the budget discovery that lives in it.
//!
//! One hash (`gov:{name}`) updated by one Lua script ([`SCRIPT`]), by the Redis server's clock, so that
//! every worker of a fleet sees the same state:
//! - **Refill** at the current `rate` (at most the configured one), capped at a burst scaled like the rate.
//!   A grant may run ahead of the bucket by up to a second of the rate: the tokens are granted at once
//!   with the time to wait before spending them, so a paced worker makes one call per grant and sleeps.
//! - **Discovery.** A cut (an account-wide 429) sets the rate to the budget the gateway is seen to accept:
//!   the rate tokens were granted at since the measurement window began, times the share of answers that
//!   were not 429 (the worker's count, for calls made under the current epoch). While the gateway
//!   is congested that product is its refill rate, as a congestion controller like BBR reads the bottleneck
//!   rate from the delivery rate. The rate is then set just under it ([`BETA`]), and never under what a
//!   blind cut would give. Without a usable measurement (a window shorter than [`CUT_GAP_MS`], as when a
//!   burst meets a budget far below the configured one) a cut quarters the rate ([`CUT_FACTOR`]); the next
//!   cut, one gap later, measures.
//! - **The gateway's burst.** A window that began at a full bucket (the first cut of a broadcast) also saw
//!   the gateway spend its own burst, which a rate must not be measured with: the gateway's burst is taken
//!   to last as long as the configured one does (API Gateway's 5,000 at 10,000/s: half a second), and that
//!   time is added to the window.
//! - **A cut soon after a cut** (within [`RECUT_MS`]) means the last measurement was too high (answers
//!   early in a short window come from the gateway's refill while the fleet waited): it cuts at least to
//!   [`RECUT_FACTOR`] of the rate, so a fleet converges in a few cuts whatever its measurements.
//! - **Probing.** While the bucket limits the fleet (it is not full), the rate grows multiplicatively,
//!   `GROWTH + ACCEL × t` per second where `t` is the time spent growing since the last cut: gentle near the
//!   budget just found, and a raised budget is found within a few seconds. An idle bucket does not grow,
//!   and restarts the measurement window.
//! - **Epochs.** Every cut starts an epoch; grants carry it, so answers to calls granted before a cut do
//!   not count against the rate chosen after it. A cut is also published (`PUBLISH gov:{name}:cuts
//!   "EPOCH RATE"`): workers that listen ([`super::Governor::listen`]) drop the tokens they hold from
//!   before it at once, not at their next grant.
//! - **Live workers.** Workers add themselves to a sorted set (`gov:{name}:workers`) about once a second
//!   while busy and every [`super::KEEP_ALIVE_EVERY`] while idle, and leave it when they stop; the script
//!   counts those seen in the last [`LIVE_MS`]. A grant is at most one grant interval of the rate divided
//!   by them, so the fleet's grants in hand at once are one interval of its rate however many workers it
//!   has (and a worker that has not heard of a cut yet holds little of the old rate), and every busy
//!   worker gets an even share. The same count is the divisor of a worker's honest share when Redis is
//!   unreachable.

use common::lua::NOW_MS;
use common::store::Redis;
use redis::Script;
use std::sync::LazyLock;

/// What a cut multiplies the rate by when the budget cannot be measured yet (the first 429s of a burst
/// into a budget far below the configured one): low, so the 50 ms until the next cut measures cost few 429s.
pub const CUT_FACTOR: f64 = 0.25;
/// The rate set after a cut, as a share of the measured budget.
pub const BETA: f64 = 0.97;
/// The lowest rate, as a share of the configured one.
pub const MIN_FACTOR: f64 = 0.01;
/// Least time between two cuts, and the shortest window a budget is measured over, in milliseconds.
pub const CUT_GAP_MS: u64 = 50;
/// Growth per second right after a cut.
pub const GROWTH: f64 = 0.05;
/// How fast growth speeds up, per second of growing.
pub const ACCEL: f64 = 0.4;
/// How long a worker counts as live after its last heartbeat, in milliseconds.
pub const LIVE_MS: u64 = 10_000;
/// A cut within this long of the previous one, in milliseconds, cuts at least to [`RECUT_FACTOR`].
pub const RECUT_MS: u64 = 250;
/// The least a cut soon after a cut multiplies the rate by.
pub const RECUT_FACTOR: f64 = 0.7;

/// `KEYS`: the bucket hash, the live-worker set. `ARGV`: configured rate, configured burst, tokens wanted,
/// mode (0 take, 1 cut), the worker's share of answers that were not 429 in the current epoch (0..1; -1
/// when unknown), the worker's epoch, worker id, heartbeat (1 to be counted live), then [`CUT_FACTOR`],
/// [`BETA`], [`MIN_FACTOR`], [`CUT_GAP_MS`], [`GROWTH`], [`ACCEL`], [`LIVE_MS`], the grant interval in ms
/// (a grant is at most that much of the current rate), the least grant
/// ([`super::pacing::MIN_GRANT`]), [`RECUT_MS`], [`RECUT_FACTOR`].
/// Returns `{granted, wait_ms, rate, estimate, epoch, live}`.
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[NOW_MS, BUCKET].concat()));

/// The bucket script after the clock prelude.
const BUCKET: &str = r"
-- Fractional milliseconds: the refill arithmetic wants the server's clock to the microsecond.
now = now_us / 1000
local max_rate = tonumber(ARGV[1])
local max_burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local mode = tonumber(ARGV[4])
local share = tonumber(ARGV[5])
local their_epoch = tonumber(ARGV[6])
local cut_factor, beta, min_factor = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local gap, growth, accel, live_ms = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local min_grant, recut_ms, recut_factor = tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[19])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'rate', 'est', 'epoch', 'epoch_at', 'granted', 'cut_at', 'calm',
  'fresh')
local rate = math.min(max_rate, tonumber(h[3]) or max_rate)
local burst = math.max(1, max_burst * rate / max_rate)
local tokens = tonumber(h[1]) or burst
local ts = tonumber(h[2]) or now
local est = tonumber(h[4]) or max_rate
local epoch = tonumber(h[5]) or 0
local epoch_at = tonumber(h[6]) or now
local granted_e = tonumber(h[7]) or 0
local cut_at = tonumber(h[8]) or -1e18
local calm = tonumber(h[9]) or 0
-- 1 while the measurement window began at a full bucket (it includes the gateway's burst).
local fresh = tonumber(h[10]) or 1
local floor = math.max(1, max_rate * min_factor)
local dt = math.max(0, now - ts) / 1000
if dt > 0 and tokens < burst then
  -- Grow only for the time the bucket limited the fleet (until it would have been full).
  local busy = math.min(dt, (burst - tokens) / rate)
  local g = growth + accel * (calm + busy / 2)
  rate = math.min(max_rate, rate * math.exp(g * busy))
  calm = calm + busy
  burst = math.max(1, max_burst * rate / max_rate)
end
tokens = math.min(burst, tokens + rate * dt)
if tokens >= burst then
  epoch_at = now
  granted_e = 0
  fresh = 1
end
if ARGV[8] == '1' then
  redis.call('ZADD', KEYS[2], now, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - live_ms)
  redis.call('PEXPIRE', KEYS[2], 600000)
end
local live = redis.call('ZCARD', KEYS[2])
local granted = 0
local wait = 0
local was_cut = false
if mode == 1 then
  if now - cut_at >= gap and their_epoch == epoch then
    local w = now - epoch_at
    local before = rate
    if share >= 0 and w >= gap then
      -- Tokens granted ahead of the bucket (negative tokens) are not yet due: not counted. A window
      -- that began at a full bucket also lasted the gateway's burst.
      local span = w / 1000
      if fresh == 1 then span = span + max_burst / max_rate end
      local measured = (granted_e + math.min(tokens, 0)) / span * share
      est = math.min(measured, rate)
      -- One measurement never cuts deeper than a guess would.
      rate = math.max(floor, est * beta, rate * cut_factor)
    else
      rate = math.max(floor, rate * cut_factor)
      est = rate
    end
    if now - cut_at < recut_ms then
      -- The last cut was not deep enough.
      rate = math.max(floor, math.min(rate, before * recut_factor))
      est = math.min(est, rate)
    end
    -- Tokens granted ahead are forgiven: workers drop tokens of an ended epoch.
    tokens = 0
    epoch = epoch + 1
    epoch_at = now
    granted_e = 0
    cut_at = now
    calm = 0
    fresh = 0
    was_cut = true
  end
else
  -- At most one grant interval of the current rate, shared by the live workers: the fleet's grants in
  -- hand at once are one interval of its rate however many workers it has, and a worker that has not
  -- heard of a cut yet holds little of the old rate.
  want = math.min(want, math.max(1, math.floor(burst)),
    math.max(min_grant, math.floor(rate * tonumber(ARGV[16]) / 1000 / math.max(1, live))))
  if want > 0 then
    if tokens - want >= -rate then
      -- Granted now, to be spent once the bucket has them: the caller sleeps until then.
      granted = want
      if tokens < want then wait = math.ceil((want - tokens) * 1000 / rate) end
      tokens = tokens - want
      granted_e = granted_e + want
    else
      wait = math.ceil((want - rate - tokens) * 1000 / rate)
    end
  end
end
if rate > est then est = rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now), 'rate', tostring(rate),
  'est', tostring(est), 'epoch', epoch, 'epoch_at', tostring(epoch_at), 'granted', granted_e,
  'cut_at', tostring(cut_at), 'calm', tostring(calm), 'fresh', fresh)
redis.call('PEXPIRE', KEYS[1], 600000)
if was_cut then redis.call('PUBLISH', KEYS[1] .. ':cuts', epoch .. ' ' .. math.floor(rate)) end
return {granted, wait, math.floor(rate), math.floor(est), epoch, live}
";

/// What the bucket answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Tokens granted (0 when the caller must ask again after `wait_ms`, or cut).
    pub granted: u32,
    /// How long to wait before spending the tokens granted, or before asking again when none were, in
    /// milliseconds.
    pub wait_ms: u64,
    /// The fleet's rate now, per second.
    pub rate: u32,
    /// The budget the gateway is believed to accept, per second.
    pub estimate: u32,
    /// The current epoch (one more per cut).
    pub epoch: u64,
    /// Workers seen in the last [`LIVE_MS`].
    pub live: u32,
}

/// One call's arguments.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub rate: u32,
    pub burst: u32,
    pub want: u32,
    pub cut: bool,
    /// Share of answers that were not 429, when known.
    pub admitted: Option<f64>,
    pub epoch: u64,
    pub worker: &'a str,
    pub heartbeat: bool,
}

/// Runs the script on `keys` (the bucket, the worker set).
pub async fn call(
    redis: &Redis,
    keys: (&str, &str),
    c: Call<'_>,
) -> Result<Answer, redis::RedisError> {
    let mut conn = redis.clone();
    let (granted, wait_ms, rate, estimate, epoch, live): (u32, u64, u32, u32, u64, u32) = SCRIPT
        .key(keys.0)
        .key(keys.1)
        .arg(c.rate)
        .arg(c.burst)
        .arg(c.want)
        .arg(u8::from(c.cut))
        .arg(c.admitted.unwrap_or(-1.0))
        .arg(c.epoch)
        .arg(c.worker)
        .arg(u8::from(c.heartbeat))
        .arg(CUT_FACTOR)
        .arg(BETA)
        .arg(MIN_FACTOR)
        .arg(CUT_GAP_MS)
        .arg(GROWTH)
        .arg(ACCEL)
        .arg(LIVE_MS)
        .arg(super::pacing::GRANT_INTERVAL.as_millis() as u64)
        .arg(super::pacing::MIN_GRANT)
        .arg(RECUT_MS)
        .arg(RECUT_FACTOR)
        .invoke_async(&mut conn)
        .await?;
    Ok(Answer {
        granted,
        wait_ms,
        rate,
        estimate,
        epoch,
        live,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use test_support::RedisServer;

    #[tokio::test]
    async fn a_cut_without_a_measured_share_is_a_blind_cut() {
        let server = RedisServer::start();
        let redis = Redis::connect(&server.url()).await.unwrap();
        let keys = ("t:gov:{blind}", "t:gov:{blind}:workers");
        let at = |want, cut, admitted| Call {
            rate: 10_000,
            burst: 5_000,
            want,
            cut,
            admitted,
            epoch: 0,
            worker: "w",
            heartbeat: true,
        };
        // 4,000 tokens granted from a full bucket: measured with every answer admitted, a window of them
        // would read as more than the blind cut.
        let mut granted = 0;
        while granted < 4_000 {
            granted += call(&redis, keys, at(1_000, false, None))
                .await
                .unwrap()
                .granted;
        }
        // A window long enough to measure (real time passing, not a synchronisation).
        tokio::time::sleep(Duration::from_millis(2 * CUT_GAP_MS)).await;
        let cut = call(&redis, keys, at(0, true, None)).await.unwrap();
        assert_eq!(cut.epoch, 1);
        // The configured rate (the bucket never grows past it) times CUT_FACTOR.
        assert_eq!(cut.rate, 2_500, "{cut:?}");
        assert_eq!(cut.estimate, 2_500, "{cut:?}");
    }
}
