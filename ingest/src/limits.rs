//! Rate limits kept in Redis, each one round trip.
//!
//! - Fixed windows: one counter per limited party (a client IP, a subject) that expires with its window;
//!   a script increments it and sets the expiry when the window opens. Used for `$connect` attempts (per
//!   IP and per subject) and for token issue (per subject). The per-subject ones also read the subject's
//!   token generation (see [`crate::revocation`]) in the same script, since both keys share a slot.
//! - A token bucket per connection for client messages, applied inside the message gate
//!   ([`crate::membership::gate`]).

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

/// The window counter plus the subject's token generation; when `ARGV[2]` is not `0` (a token is being
/// minted) the generation's expiry is pushed back, so it outlives every token minted in it.
static INCR_WINDOW_WITH_GENERATION: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local n = redis.call('INCR', KEYS[1]) \
         if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
         local g = tonumber(redis.call('GET', KEYS[2]) or '0') \
         if ARGV[2] ~= '0' and g > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end \
         return {n, g}",
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

/// [`allow`] for a subject (`sub` on `$connect`, `tok` when minting), also returning the subject's
/// current token generation. `minting` keeps the generation alive as long as the new token can be used.
pub async fn allow_subject(
    state: &AppState,
    kind: &str,
    subject: &str,
    limit: u32,
    minting: bool,
) -> Result<(bool, u64), redis::RedisError> {
    let keep = if minting {
        crate::revocation::GENERATION_TTL.as_millis() as u64
    } else {
        0
    };
    let (count, generation): (u64, u64) = INCR_WINDOW_WITH_GENERATION
        .key(state.keys.rate_limit(kind, subject))
        .key(state.keys.token_generation(subject))
        .arg(WINDOW.as_millis() as u64)
        .arg(keep)
        .invoke_async(&mut state.conn())
        .await?;
    Ok((count <= u64::from(limit), generation))
}
