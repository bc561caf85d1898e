//! Connect tokens: minted for a subject through the API, presented once as `?ws_token=` on `$connect`.
//!
//! A token is 32 random bytes as 64 hex characters (the Django package's shape). Redis keeps only its
//! SHA-256 (see `Keyspace::token`) with the claims and a TTL; consuming it is a single `GETDEL`, so a
//! token opens at most one connection even when two `$connect`s race with it. A token also records the
//! subject's token generation when it was minted; revoking the subject raises the generation, which
//! makes every older token useless (see [`crate::revocation`]).
//!
//! A token may also carry client `info`: a small JSON object (at most [`MAX_INFO_BYTES`] serialised) the
//! application wants other members to see, such as a display name; it is kept in the connection's record
//! and shown in presence (see [`crate::presence`]).

use crate::state::AppState;
use common::names::{ChannelName, ChannelPattern, Subject};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// The largest client `info` a token may carry, serialised as compact JSON.
pub const MAX_INFO_BYTES: usize = 1024;

/// Why client info was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    #[error("info must be a JSON object")]
    NotAnObject,
    #[error("info must be at most 1024 bytes as compact JSON")]
    TooLarge,
}

/// Checks client info: a JSON object of at most [`MAX_INFO_BYTES`] as compact JSON.
pub fn validate_info(info: Value) -> Result<Map<String, Value>, InfoError> {
    let Value::Object(map) = info else {
        return Err(InfoError::NotAnObject);
    };
    let size = serde_json::to_string(&map).map_or(usize::MAX, |s| s.len());
    if size > MAX_INFO_BYTES {
        return Err(InfoError::TooLarge);
    }
    Ok(map)
}

/// What a token grants, as stored in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The subject (user id) the connection acts as.
    pub sub: String,
    /// Channels the connection may join (names; older tokens may hold patterns); `None` means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ch: Option<Vec<String>>,
    /// The subject's token generation when the token was minted.
    #[serde(default)]
    pub generation: u64,
    /// Client info shown to other members in presence (checked by [`validate_info`] when minted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Map<String, Value>>,
}

impl Claims {
    /// The allowed channel patterns, if the token limits them.
    pub fn channel_patterns(&self) -> Option<Vec<ChannelPattern>> {
        self.ch.as_ref().map(|list| {
            list.iter()
                .filter_map(|p| ChannelPattern::parse(p).ok())
                .collect()
        })
    }
}

/// Mints a token for `subject` (in its current token `generation`) and stores its hash with the claims
/// for `ttl`.
pub async fn issue(
    state: &AppState,
    subject: &Subject,
    channels: Option<Vec<ChannelName>>,
    generation: u64,
    ttl: Duration,
) -> Result<String, redis::RedisError> {
    issue_with_info(state, subject, channels, generation, ttl, None).await
}

/// [`issue`] with client info (already checked by [`validate_info`]).
pub async fn issue_with_info(
    state: &AppState,
    subject: &Subject,
    channels: Option<Vec<ChannelName>>,
    generation: u64,
    ttl: Duration,
    info: Option<Map<String, Value>>,
) -> Result<String, redis::RedisError> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let claims = Claims {
        sub: subject.as_str().to_owned(),
        ch: channels.map(|c| c.iter().map(|p| p.as_str().to_owned()).collect()),
        generation,
        info,
    };
    let value = serde_json::to_string(&claims).expect("claims serialise");
    redis::cmd("SET")
        .arg(state.keys.token(&token))
        .arg(value)
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .arg("NX")
        .query_async::<()>(&mut state.conn())
        .await?;
    Ok(token)
}

/// Consumes a token: returns its claims the first time, `None` if it is unknown, expired or used.
pub async fn consume(state: &AppState, token: &str) -> Result<Option<Claims>, redis::RedisError> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let value: Option<String> = redis::cmd("GETDEL")
        .arg(state.keys.token(token))
        .query_async(&mut state.conn())
        .await?;
    Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
}

/// A token presented on `$connect` and the per-IP connect limit before it: counts one attempt by the
/// client IP (`ip`, or `None` when the address is exempt) and, only if that attempt is within `limit` and
/// `token` is given, consumes the token. Answers whether the attempt was within the limit, and the token's
/// claims as [`consume`] does (`None` also when no token was given). On a single node this is one script
/// (the counter first, so an over-limit attempt never spends a token); on a cluster the two keys are in
/// different slots, so it is the same two steps in the same order.
pub async fn consume_within_limit(
    state: &AppState,
    ip: Option<&str>,
    limit: u32,
    token: Option<&str>,
) -> Result<(bool, Option<Claims>), redis::RedisError> {
    let token = token.filter(|t| !t.is_empty() && t.len() <= 256);
    if state.redis.is_cluster() || ip.is_none() {
        if let Some(ip) = ip
            && !crate::limits::allow(state, "ip", ip, limit).await?
        {
            return Ok((false, None));
        }
        return match token {
            Some(token) => consume(state, token).await.map(|c| (true, c)),
            None => Ok((true, None)),
        };
    }
    let ip = ip.unwrap_or_default();
    let token_key = token.map_or_else(|| state.keys.token("none"), |t| state.keys.token(t));
    let (within, value): (i64, Option<String>) = LIMIT_THEN_CONSUME
        .key(state.keys.rate_limit("ip", ip))
        .key(token_key)
        .arg(crate::limits::WINDOW.as_millis() as u64)
        .arg(limit)
        .arg(if token.is_some() { "1" } else { "" })
        .invoke_async(&mut state.conn())
        .await?;
    Ok((
        within == 1,
        value.and_then(|v| serde_json::from_str(&v).ok()),
    ))
}

/// Counts one attempt in window counter `KEYS[1]` (window `ARGV[1]` ms, limit `ARGV[2]`) and, within the
/// limit and when `ARGV[3]` is `1`, takes token `KEYS[2]` (`GETDEL`). Answers `{within, claims or nil}`.
static LIMIT_THEN_CONSUME: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local n = redis.call('INCR', KEYS[1])
        if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
        if n > tonumber(ARGV[2]) then return {0, false} end
        if ARGV[3] ~= '1' then return {1, false} end
        return {1, redis.call('GETDEL', KEYS[2])}
        ",
    )
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn info_must_be_a_small_object() {
        assert_eq!(
            validate_info(json!({"name": "Ada"})).unwrap()["name"],
            "Ada"
        );
        assert_eq!(validate_info(json!("Ada")), Err(InfoError::NotAnObject));
        assert_eq!(validate_info(json!([1])), Err(InfoError::NotAnObject));
        let big = "x".repeat(MAX_INFO_BYTES);
        assert_eq!(
            validate_info(json!({ "name": big })),
            Err(InfoError::TooLarge)
        );
        let fits = "x".repeat(MAX_INFO_BYTES - r#"{"n":""}"#.len());
        assert!(validate_info(json!({ "n": fits })).is_ok());
    }

    #[test]
    fn claims_without_info_read_as_before() {
        let old: Claims = serde_json::from_str(r#"{"sub":"u","generation":2}"#).unwrap();
        assert_eq!(old.info, None);
        let shown = serde_json::to_string(&old).unwrap();
        assert!(!shown.contains("info"), "{shown}");
    }
}
