//! `$connect`: decides whether a browser may open a connection, and registers it.
//!
//! Order (the first failure wins, and the token is spent only once everything before it has passed):
//! connect rate limit per client IP, connection id format, Origin, channel name, then the token (or a
//! public channel, for anonymous connections), the per-subject connect rate limit, the token's generation
//! (a token minted before its subject was revoked is refused), and the channel permission. A repeated `$connect` for a connection already registered with the same token succeeds
//! again without needing the (spent) token.
//!
//! Redis is asked twice on a single node: one script counts the IP's attempt and spends the token, one
//! counts the subject's attempt, checks the token's generation and registers the connection (see
//! [`membership::admit`]).

use super::Callback;
use crate::error::AppError;
use crate::membership::{self, Admitted, Connection, SubjectCheck};
use crate::state::AppState;
use crate::{origin, tokens};
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
    // The checks that need no Redis run first, but their verdict waits for the per-IP limit's: every
    // attempt counts against the limit, and the token is only spent once all of them have passed.
    let request = parse_request(state, cb, query, origin);
    let token = request.as_ref().ok().and_then(|r| r.token.as_deref());
    let (within, claims) = tokens::consume_within_limit(
        state,
        (!exempt).then_some(cb.source_ip.as_str()),
        settings.connect_limit_per_minute,
        token,
    )
    .await?;
    if !within {
        refused("rate_limited");
        return Err(AppError::ConnectRateLimited);
    }
    let Request { id, channel, token } = request.map_err(|(error, reason)| {
        if let Some(reason) = reason {
            refused(reason);
        }
        error
    })?;

    let (subject, allowed, token_hash, generation, info) = match token.as_deref() {
        Some(token) => match claims {
            Some(claims) => {
                let subject = Subject::parse(&claims.sub).map_err(|_| AppError::Token)?;
                (
                    Some(subject),
                    claims.channel_patterns(),
                    Some(if settings.legacy_record_fields {
                        common::keys::token_hash(token)
                    } else {
                        common::keys::record_token_hash(token)
                    }),
                    claims.generation,
                    claims
                        .info
                        .map(|i| serde_json::Value::Object(i).to_string()),
                )
            }
            None => {
                if let Some(existing) = membership::peek(state, &id).await?
                    && existing
                        .token_hash
                        .as_deref()
                        .is_some_and(|h| common::keys::token_hash_matches(h, token))
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

    let may_join = membership::may_join(state, subject.as_ref(), allowed.as_deref(), &channel);
    let conn = Connection {
        id,
        channel,
        subject,
        allowed: allowed.as_deref().map(membership::Allowed::new),
        api_id: cb.api.api_id.clone(),
        stage: cb.api.stage.clone(),
        connected_at_ms: common::job::now_ms(),
        source_ip: cb.source_ip.clone(),
        token_hash,
        info,
    };
    let check = SubjectCheck {
        limit: settings.connect_limit_per_minute,
        generation,
    };
    let joined = match membership::admit(state, &conn, Some(check), may_join).await? {
        Admitted::Joined(joined) => joined,
        Admitted::RateLimited => {
            refused("rate_limited");
            return Err(AppError::ConnectRateLimited);
        }
        Admitted::Revoked => {
            // Minted before the subject was revoked.
            refused("revoked_token");
            state
                .metrics
                .tokens_refused
                .with_label_values(&["revoked"])
                .inc();
            return Err(AppError::Token);
        }
        Admitted::Denied => {
            refused("permission_denied");
            return Err(AppError::PermissionDenied);
        }
    };
    tracing::debug!(connection_id = %conn.id, channel = %conn.channel, "connected");
    crate::lifecycle::connected(state, &conn, joined).await;
    Ok(())
}

/// What a `$connect` asks for, once its id, Origin and channel have passed.
struct Request {
    id: ConnectionId,
    channel: ChannelName,
    /// The `ws_token` parameter, when not empty.
    token: Option<String>,
}

/// The checks of a `$connect` that need no Redis, in order: connection id format, Origin, channel name.
/// A refusal carries the `connects_refused` reason it counts as, if any.
fn parse_request(
    state: &AppState,
    cb: &Callback<'_>,
    query: Option<&str>,
    origin: Option<&str>,
) -> Result<Request, (AppError, Option<&'static str>)> {
    let settings = &state.settings;
    let id = ConnectionId::parse(cb.connection_id).map_err(|_| (AppError::ConnectionId, None))?;
    if !origin::origin_allowed(&settings.allowed_origins, origin) {
        return Err((AppError::Origin, Some("origin")));
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
        Some(c) => {
            ChannelName::parse(c).map_err(|_| (AppError::Channel, Some("invalid_channel")))?
        }
    };
    Ok(Request {
        id,
        channel,
        token: token.filter(|t| !t.is_empty()),
    })
}
