//! `$connect`: decides whether a browser may open a connection, and registers it.
//!
//! Order (the first failure wins, and the token is spent only once everything before it has passed):
//! connect rate limit per client IP, connection id format, Origin, channel name, then the token (or a
//! public channel, for anonymous connections), the per-subject connect rate limit, the token's generation
//! (a token minted before its subject was revoked is refused), and the channel permission. A repeated `$connect` for a connection already registered with the same token succeeds
//! again without needing the (spent) token.

use super::Callback;
use crate::error::AppError;
use crate::membership::{self, Connection};
use crate::state::AppState;
use crate::{limits, origin, tokens};
use common::names::{ChannelName, ChannelPattern, ConnectionId, Subject};

pub async fn handle(
    state: &AppState,
    cb: &Callback<'_>,
    query: Option<&str>,
    origin: Option<&str>,
) -> Result<(), AppError> {
    let settings = &state.settings;
    let refused = |reason: &str| {
        state
            .metrics
            .connects_refused
            .with_label_values(&[reason])
            .inc()
    };

    let exempt = cb
        .source_ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| settings.connect_limit_exempt.iter().any(|n| n.contains(ip)));
    if !exempt
        && !limits::allow(
            state,
            "ip",
            &cb.source_ip,
            settings.connect_limit_per_minute,
        )
        .await?
    {
        refused("rate_limited");
        return Err(AppError::ConnectRateLimited);
    }
    let id = ConnectionId::parse(cb.connection_id).map_err(|_| AppError::ConnectionId)?;
    if !origin::origin_allowed(&settings.allowed_origins, origin) {
        refused("origin");
        return Err(AppError::Origin);
    }
    let (mut channel_param, mut token) = (None, None);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "channel" => channel_param = Some(value.into_owned()),
            "ws_token" => token = Some(value.into_owned()),
            _ => {}
        }
    }
    let channel = match channel_param.as_deref().filter(|c| !c.is_empty()) {
        None => settings.default_channel.clone(),
        Some(c) => ChannelName::parse(c).map_err(|_| {
            refused("invalid_channel");
            AppError::Channel
        })?,
    };

    let (subject, allowed, token_hash, generation, info) =
        match token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => match tokens::consume(state, token).await? {
                Some(claims) => {
                    let subject = Subject::parse(&claims.sub).map_err(|_| AppError::Token)?;
                    (
                        Some(subject),
                        claims.channel_patterns(),
                        Some(common::keys::token_hash(token)),
                        claims.generation,
                        claims
                            .info
                            .map(|i| serde_json::Value::Object(i).to_string()),
                    )
                }
                None => {
                    let hash = common::keys::token_hash(token);
                    if let Some(existing) = membership::peek(state, &id).await?
                        && existing.token_hash.as_deref() == Some(hash.as_str())
                    {
                        return Ok(()); // the same $connect again: already registered
                    }
                    refused("invalid_token");
                    state
                        .metrics
                        .tokens_refused
                        .with_label_values(&["invalid_or_expired"])
                        .inc();
                    return Err(AppError::Token);
                }
            },
            None if ChannelPattern::any_matches(&settings.public_channels, &channel) => {
                (None, None, None, 0, None)
            }
            None => {
                refused("missing_token");
                state
                    .metrics
                    .tokens_refused
                    .with_label_values(&["missing"])
                    .inc();
                return Err(AppError::Token);
            }
        };

    if let Some(subject) = &subject {
        let (allowed, current) = limits::allow_subject(
            state,
            "sub",
            subject.as_str(),
            settings.connect_limit_per_minute,
            false,
        )
        .await?;
        if !allowed {
            refused("rate_limited");
            return Err(AppError::ConnectRateLimited);
        }
        if generation < current {
            // Minted before the subject was revoked.
            refused("revoked_token");
            state
                .metrics
                .tokens_refused
                .with_label_values(&["revoked"])
                .inc();
            return Err(AppError::Token);
        }
    }
    if !membership::may_join(state, subject.as_ref(), allowed.as_deref(), &channel) {
        refused("permission_denied");
        return Err(AppError::PermissionDenied);
    }
    let conn = Connection {
        id,
        channel,
        subject,
        allowed,
        api_id: cb.api.api_id.clone(),
        stage: cb.api.stage.clone(),
        connected_at_ms: common::job::now_ms(),
        source_ip: cb.source_ip.clone(),
        token_hash,
        info,
    };
    let joined = membership::register(state, &conn).await?;
    tracing::debug!(connection_id = %conn.id, channel = %conn.channel, "connected");
    crate::lifecycle::connected(state, &conn, joined).await;
    Ok(())
}
