//! Delayed jobs: a sorted set scored by each job's due time in the Redis server's clock (milliseconds).
//! `send_delayed` adds to it; every `receive` first moves the due ones into the stream with a script.
//! Both scripts read the server's `TIME`, so clients' clocks do not matter.

use super::StreamQueue;
use super::codec::JOB_FIELD;
use super::millis;
use crate::job::Job;
use crate::lua::NOW_MS;
use crate::queue::QueueError;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// Most delayed jobs moved into the stream by one `receive`.
const MOVE_BATCH: u32 = 100;

/// Longest delay a job may have (SQS's limit, kept for both backends).
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// Moves due delayed jobs into the stream. Members are `<uuid>:<body>` (the uuid keeps equal bodies
/// apart in the set); the body is what follows the first `:`. Returns milliseconds until the next delayed
/// job is due, or -1 if there is none left.
static MOVE_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NOW_MS}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local sep = string.find(member, ':', 1, true)
  local body = member
  if sep then body = string.sub(member, sep + 1) end
  redis.call('XADD', KEYS[2], '*', ARGV[2], body)
  redis.call('ZREM', KEYS[1], member)
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #next == 0 then return -1 end
return math.max(0, math.ceil(tonumber(next[2]) - now))
",
    ))
});

/// Adds a member to the delayed set, due `ARGV[1]` milliseconds from now by the server's clock.
static SEND_DELAYED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NOW_MS}
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
",
    ))
});

impl StreamQueue {
    /// Adds `job` to the delayed set, due after `delay` (at most 15 minutes, rounded up to the
    /// millisecond: a job must never become visible before its delay).
    pub(super) async fn add_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        let member = format!("{}:{}", uuid::Uuid::new_v4().simple(), job.encode());
        let delay = delay.min(MAX_DELAY);
        let mut conn = self.redis.clone();
        SEND_DELAYED
            .key(&self.keys.delayed)
            .arg(millis(delay) + u64::from(!delay.subsec_nanos().is_multiple_of(1_000_000)))
            .arg(member)
            .invoke_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Moves due delayed jobs into the stream; returns the time until the next one is due.
    pub(super) async fn move_due(&self) -> Result<Option<Duration>, QueueError> {
        let mut conn = self.redis.clone();
        let next_ms: i64 = MOVE_DUE
            .key(&self.keys.delayed)
            .key(&self.keys.stream)
            .arg(MOVE_BATCH)
            .arg(JOB_FIELD)
            .invoke_async(&mut conn)
            .await?;
        Ok(u64::try_from(next_ms).ok().map(Duration::from_millis))
    }
}
