//! Lua shared by the Redis scripts of every process. Scripts are composed with `format!`, a prelude first.
//!
//! [`NOW_MS`] reads the Redis server's clock (`TIME`), so every process that writes a time, schedules a
//! delayed job or refills a bucket agrees on "now" whatever its own clock says.
//! [`LEAVE_CHANNEL`] takes a connection out of a channel and its presence (see [`crate::presence`]).

/// Defines `now_us` (microseconds) and `now` (whole milliseconds) from the server's `TIME`. Since Redis 5
/// scripts replicate their effects, not the script, so reading the clock in a script is safe.
pub const NOW_MS: &str = r"
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
";

/// Takes connection `ARGV[1]` out of channel set `KEYS[1]` and presence hash `KEYS[2]`; answers
/// `{removed, vacated, presence entry or ''}`. The entry is answered only by the call that deleted it.
pub const LEAVE_CHANNEL: &str = r"
local removed = redis.call('SREM', KEYS[1], ARGV[1])
local member = redis.call('HGET', KEYS[2], ARGV[1])
if member then redis.call('HDEL', KEYS[2], ARGV[1]) else member = '' end
local vacated = 0
if removed == 1 and redis.call('SCARD', KEYS[1]) == 0 then vacated = 1 end
return {removed, vacated, member}
";

#[cfg(test)]
mod tests {
    use super::NOW_MS;

    #[tokio::test]
    async fn now_is_the_servers_clock_in_milliseconds() {
        let server = test_support::RedisServer::start();
        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let script = redis::Script::new(&format!("{NOW_MS}\nreturn {{now, now_us}}"));
        let (now, now_us): (i64, i64) = script.invoke_async(&mut conn).await.unwrap();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
        let server_ms = secs * 1000 + micros / 1000;
        assert_eq!(now, now_us / 1000);
        assert!((server_ms - now).abs() < 1000, "{now} vs {server_ms}");
        assert!(
            now > 1_700_000_000_000,
            "milliseconds since the epoch: {now}"
        );
    }
}
