//! Connect tokens: minted for a subject through the API, presented once as `?ws_token=` on `$connect`.
//!
//! A token is 32 random bytes as 64 hex characters (the Django package's shape). Redis keeps only its
//! SHA-256 (see `Keyspace::token`) with the claims and a TTL; consuming it is a single `GETDEL`, so a
//! token opens at most one connection even when two `$connect`s race with it. A token also records the
//! subject's token generation when it was minted; revoking the subject raises the generation, which
//! makes every older token useless (see [`crate::revocation`]).

use crate::state::AppState;
use common::names::{ChannelName, ChannelPattern, Subject};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

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

    pub fn may_join(&self, channel: &ChannelName) -> bool {
        self.channel_patterns()
            .is_none_or(|patterns| ChannelPattern::any_matches(&patterns, channel))
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
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let claims = Claims {
        sub: subject.as_str().to_owned(),
        ch: channels.map(|c| c.iter().map(|p| p.as_str().to_owned()).collect()),
        generation,
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
