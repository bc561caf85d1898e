//! Fixed-window rate limits kept in Redis: one counter per limited party (a client IP, a subject) that
//! expires with its window. One round trip: a script increments the counter and sets the expiry when the
//! window opens. Used for `$connect` attempts (per IP and per subject) and for token issue (per subject).

use crate::state::AppState;
use std::sync::LazyLock;
use std::time::Duration;

static INCR_WINDOW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local n = redis.call('INCR', KEYS[1]) \
         if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
         return n",
    )
});

/// The window every limit uses.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Counts one attempt by `who` under `kind` (`ip`, `sub`, `tok`) and says whether it is within `limit`
/// attempts per window.
pub async fn allow(
    state: &AppState,
    kind: &str,
    who: &str,
    limit: u32,
) -> Result<bool, redis::RedisError> {
    let key = state.keys.rate_limit(kind, who);
    let count: u64 = INCR_WINDOW
        .key(key)
        .arg(WINDOW.as_millis() as u64)
        .invoke_async(&mut state.conn())
        .await?;
    Ok(count <= u64::from(limit))
}
