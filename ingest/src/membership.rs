//! Who is connected and where: the connection record (`conn:{id}` hash) and the sets that index it
//! (`chan:{name}`, `user:{subject}`, the `all:{n}` buckets), the location hash (`loc:{n}`, where each
//! connection is, so the stale-connection sweep can clean up after an expired record) and, on presence
//! channels, the channel's presence hash (`pres:{name}`). Long because these writes share their scripts
//! and read both generations of the record's field names.
//!
//! Joining and leaving a channel is one script on the channel's slot (the channel set and its presence
//! hash share a hash tag): it says whether the connection was really added or removed (so presence
//! events and webhooks fire once, even when two callbacks race) and whether the channel became occupied
//! or vacated.
//!
//! Writes go through [`Redis::batch`](common::store::Redis::batch): one transaction on a single node.
//! On Redis Cluster the keys live in different slots, so the record is written first and removed last:
//! a failure half-way leaves at most a set member without a record, which the worker drops when it finds
//! no record (or API Gateway answers `GoneException`), never a record missing from its sets for long.

use crate::state::AppState;
use common::keys::conn_field as f;
use common::names::{ChannelName, ChannelPattern, ConnectionId, Subject};
use std::collections::HashMap;
use std::sync::LazyLock;

/// One live connection, as stored in its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: ConnectionId,
    pub channel: ChannelName,
    /// `None` for an anonymous connection on a public channel.
    pub subject: Option<Subject>,
    /// Channel patterns the connection may move to; `None` means any (a token without a channel list).
    pub allowed: Option<Allowed>,
    pub api_id: String,
    pub stage: String,
    pub connected_at_ms: u64,
    pub source_ip: String,
    /// The token used on `$connect`, hashed ([`common::keys::record_token_hash`]), to recognise a
    /// repeated `$connect`.
    pub token_hash: Option<String>,
    /// Client info from the token (a JSON object as compact text), shown in presence.
    pub info: Option<String>,
}

impl Connection {
    /// The name shown to other clients for this connection's messages.
    pub fn display_name(&self) -> &str {
        self.subject.as_ref().map_or("Anonymous", |s| s.as_str())
    }

    /// The record's fields and values, under the short names or, with `legacy`, the earlier ones.
    fn fields(&self, legacy: bool) -> Vec<(&'static str, String)> {
        let name = |short: &'static str| name_of(short, legacy);
        let mut fields = vec![
            (name(f::CHANNEL), self.channel.as_str().to_owned()),
            (name(f::API_ID), self.api_id.clone()),
            (name(f::STAGE), self.stage.clone()),
            (name(f::CONNECTED_AT_MS), self.connected_at_ms.to_string()),
            (name(f::SOURCE_IP), self.source_ip.clone()),
        ];
        if let Some(s) = &self.subject {
            fields.push((name(f::SUBJECT), s.as_str().to_owned()));
        }
        if let Some(allowed) = &self.allowed {
            fields.push((name(f::ALLOWED), allowed.0.clone()));
        }
        if let Some(t) = &self.token_hash {
            fields.push((name(f::TOKEN_HASH), t.clone()));
        }
        if let Some(info) = &self.info {
            fields.push((name(f::INFO), info.clone()));
        }
        fields
    }

    /// The value of the connection's entry in its location hash: the channel, and the subject if any.
    pub fn location(&self) -> String {
        location(&self.channel, self.subject.as_ref())
    }

    /// Reads a record back, under its field names or the longer ones of records written before them.
    fn from_fields(id: &ConnectionId, mut map: HashMap<String, String>) -> Option<Self> {
        let mut take = |name: &str, legacy: &str| map.remove(name).or_else(|| map.remove(legacy));
        let channel = ChannelName::parse(&take(f::CHANNEL, f::legacy::CHANNEL)?).ok()?;
        Some(Self {
            id: id.clone(),
            channel,
            subject: take(f::SUBJECT, f::legacy::SUBJECT).and_then(|s| Subject::parse(&s).ok()),
            allowed: take(f::ALLOWED, f::legacy::ALLOWED).map(Allowed),
            api_id: take(f::API_ID, f::legacy::API_ID).unwrap_or_default(),
            stage: take(f::STAGE, f::legacy::STAGE).unwrap_or_default(),
            connected_at_ms: take(f::CONNECTED_AT_MS, f::legacy::CONNECTED_AT_MS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            source_ip: take(f::SOURCE_IP, f::legacy::SOURCE_IP).unwrap_or_default(),
            token_hash: take(f::TOKEN_HASH, f::legacy::TOKEN_HASH),
            info: take(f::INFO, f::legacy::INFO),
        })
    }
}

/// The channel patterns a connection may move to, as its record keeps them (comma-separated). Parsed
/// only when a move asks: every message callback reads the record, and a token may list hundreds of
/// channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed(String);

impl Allowed {
    pub fn new(patterns: &[ChannelPattern]) -> Self {
        Allowed(
            patterns
                .iter()
                .map(ChannelPattern::as_str)
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// The patterns; one that is not a valid pattern (a record edited by hand) allows nothing.
    pub fn patterns(&self) -> Vec<ChannelPattern> {
        self.0
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| ChannelPattern::parse(p).ok())
            .collect()
    }
}

/// The record field `short` under the name this replica writes: itself, or with `legacy` the earlier name.
fn name_of(short: &'static str, legacy: bool) -> &'static str {
    if !legacy {
        return short;
    }
    f::WITH_LEGACY
        .iter()
        .find(|(new, _)| *new == short)
        .map_or(short, |(_, old)| old)
}

/// The other name of record field `short` (the one this replica does not write).
fn other_name_of(short: &'static str, legacy: bool) -> &'static str {
    name_of(short, !legacy)
}

/// A location hash entry: `channel` and, after a newline (which neither may contain), the subject.
fn location(channel: &ChannelName, subject: Option<&Subject>) -> String {
    match subject {
        Some(s) => format!("{}\n{}", channel.as_str(), s.as_str()),
        None => channel.as_str().to_owned(),
    }
}

/// Reads a location hash entry back; `None` if it does not hold a valid channel.
pub fn parse_location(value: &str) -> Option<(ChannelName, Option<Subject>)> {
    let (channel, subject) = match value.split_once('\n') {
        Some((c, s)) => (c, Subject::parse(s).ok()),
        None => (value, None),
    };
    Some((ChannelName::parse(channel).ok()?, subject))
}

/// What joining a channel did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Joined {
    /// The connection was not in the channel before.
    pub added: bool,
    /// It is the channel's first member.
    pub occupied: bool,
    /// It was added to the channel's presence.
    pub presence: bool,
}

pub use common::presence::Left;

/// Lua: `join(set, presence, id, member)` adds connection `id` to channel set `set` (and, when `member` is
/// not empty, to presence hash `presence`); answers `{added, occupied, presence_added}`.
const JOIN_FN: &str = r"
local function join(set, presence, id, member)
  local added = redis.call('SADD', set, id)
  local present = 0
  if member ~= '' then present = redis.call('HSET', presence, id, member) end
  local occupied = 0
  if added == 1 and redis.call('SCARD', set) == 1 then occupied = 1 end
  return {added, occupied, present}
end
";

/// Adds a connection to a channel (and to its presence when `member` is given); answers
/// `{added, occupied, presence_added}`.
static JOIN_CHANNEL: LazyLock<String> =
    LazyLock::new(|| format!("{JOIN_FN}\nreturn join(KEYS[1], KEYS[2], ARGV[1], ARGV[2])"));

/// The script call that joins `conn` to `channel` (a command, so it can be part of a batch).
fn join_channel(state: &AppState, conn: &Connection, channel: &ChannelName) -> redis::Cmd {
    let member = if crate::presence::enabled(state, channel) {
        crate::presence::stored(conn)
    } else {
        String::new()
    };
    redis::cmd("EVAL")
        .arg(JOIN_CHANNEL.as_str())
        .arg(2)
        .arg(state.keys.channel(channel.as_str()))
        .arg(state.keys.presence(channel.as_str()))
        .arg(conn.id.as_str())
        .arg(member)
        .to_owned()
}

/// The script call that takes connection `id` out of `channel` and its presence.
pub(crate) fn leave_channel(state: &AppState, id: &str, channel: &ChannelName) -> redis::Cmd {
    common::presence::leave_channel(&state.keys, id, channel.as_str())
}

fn joined_from(value: Option<redis::Value>) -> Result<Joined, redis::RedisError> {
    let (added, occupied, presence): (i64, i64, i64) = match value {
        Some(v) => redis::from_redis_value(v)?,
        None => (0, 0, 0),
    };
    Ok(Joined {
        added: added == 1,
        occupied: occupied == 1,
        presence: presence == 1,
    })
}

/// Reads the answer of [`leave_channel`].
pub(crate) fn left_from(value: Option<redis::Value>) -> Result<Left, redis::RedisError> {
    Left::from_reply(value)
}

/// Writes the record (with its TTL) and adds the connection to its channel (and its presence), subject
/// and bucket sets and its location. Idempotent: registering the same connection again changes nothing
/// (and answers `added: false`).
pub async fn register(state: &AppState, conn: &Connection) -> Result<Joined, redis::RedisError> {
    match admit(state, conn, None, true).await? {
        Admitted::Joined(joined) => Ok(joined),
        // Without a subject check only `Joined` can come back.
        _ => Ok(Joined::default()),
    }
}

/// The per-subject `$connect` limit and the token's generation, checked by [`admit`].
#[derive(Debug, Clone, Copy)]
pub struct SubjectCheck {
    /// Connects per [`crate::limits::WINDOW`] allowed for the subject.
    pub limit: u32,
    /// The generation the token was minted in; older than the subject's current one means revoked.
    pub generation: u64,
}

/// What [`admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Registered; what joining the channel did.
    Joined(Joined),
    /// The subject is over its connect limit.
    RateLimited,
    /// The token was minted before the subject was revoked.
    Revoked,
    /// Checks passed but the connection may not join its channel: nothing written.
    Denied,
}

/// Registers `conn` after its subject's checks: the per-subject connect limit (counted even when the
/// connect is refused later) and the token's generation, then, when `may_join`, the record and every set
/// (see [`register`]). On a single node this is one script, one round trip; on a cluster the keys are in
/// different slots, so the checks are one script on the subject's slot and the writes follow in order.
pub async fn admit(
    state: &AppState,
    conn: &Connection,
    check: Option<SubjectCheck>,
    may_join: bool,
) -> Result<Admitted, redis::RedisError> {
    let check = check.and_then(|c| conn.subject.as_ref().map(|s| (c, s)));
    if state.redis.is_cluster() {
        if let Some((check, subject)) = check {
            let (allowed, current) =
                crate::limits::allow_subject(state, "sub", subject.as_str(), check.limit, false)
                    .await?;
            if !allowed {
                return Ok(Admitted::RateLimited);
            }
            if check.generation < current {
                return Ok(Admitted::Revoked);
            }
        }
        if !may_join {
            return Ok(Admitted::Denied);
        }
        return register_in_steps(state, conn).await.map(Admitted::Joined);
    }
    let id = conn.id.as_str();
    let channel = conn.channel.as_str();
    let mut call = ADMIT.prepare_invoke();
    call.key(state.keys.connection(id))
        .key(state.keys.channel(channel))
        .key(state.keys.presence(channel))
        .key(state.keys.all_bucket_of(id))
        .key(state.keys.location_of(id));
    let subject = conn.subject.as_ref().map(Subject::as_str);
    if let Some(subject) = subject {
        call.key(state.keys.subject(subject));
    }
    if let Some((_, subject)) = check {
        call.key(state.keys.rate_limit("sub", subject.as_str()))
            .key(state.keys.token_generation(subject.as_str()));
    }
    let member = if crate::presence::enabled(state, &conn.channel) {
        crate::presence::stored(conn)
    } else {
        String::new()
    };
    call.arg(id)
        .arg(state.settings.connection_ttl.as_millis() as u64)
        .arg(member)
        .arg(conn.location())
        .arg(if subject.is_some() { "1" } else { "" });
    match check {
        Some((check, _)) => call
            .arg(crate::limits::WINDOW.as_millis() as u64)
            .arg(check.limit)
            .arg(check.generation),
        None => call.arg("").arg(0).arg(0),
    };
    call.arg(if may_join { "1" } else { "" });
    for (field, value) in conn.fields(state.settings.legacy_record_fields) {
        call.arg(field).arg(value);
    }
    let reply: Vec<i64> = call.invoke_async(&mut state.conn()).await?;
    Ok(match reply.as_slice() {
        [1, ..] => Admitted::RateLimited,
        [2, ..] => Admitted::Revoked,
        [3, ..] => Admitted::Denied,
        [_, added, occupied, presence] => Admitted::Joined(Joined {
            added: *added == 1,
            occupied: *occupied == 1,
            presence: *presence == 1,
        }),
        _ => Admitted::Joined(Joined::default()),
    })
}

/// `$connect`'s writes on a single node, after the subject's checks, in one script.
/// KEYS: record, channel set, presence hash, `all:{n}` bucket, location hash, then the subject's set
/// when ARGV[5] is `1`, then (with a limit) the subject's rate-limit counter and token generation.
/// ARGV: id, record TTL ms, presence member or '', location, `1` if there is a subject, limit window ms
/// ('' for no check), limit, token generation, `1` to register once the checks pass, then the record's
/// fields and values. Answers `{1}` over the limit, `{2}` revoked, `{3}` not registered, or
/// `{0, added, occupied, presence_added}`.
static ADMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r"{JOIN_FN}
local checks = 6
if ARGV[5] == '1' then checks = 7 end
if ARGV[6] ~= '' then
  local n = redis.call('INCR', KEYS[checks])
  if n == 1 then redis.call('PEXPIRE', KEYS[checks], ARGV[6]) end
  if n > tonumber(ARGV[7]) then return {{1}} end
  local g = tonumber(redis.call('GET', KEYS[checks + 1]) or '0')
  if tonumber(ARGV[8]) < g then return {{2}} end
end
if ARGV[9] ~= '1' then return {{3}} end
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local joined = join(KEYS[2], KEYS[3], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[4])
if ARGV[5] == '1' then redis.call('SADD', KEYS[6], ARGV[1]) end
return {{0, joined[1], joined[2], joined[3]}}
"
    ))
});

/// [`register`] on a cluster: the record first, then the sets, each step acknowledged before the next.
async fn register_in_steps(
    state: &AppState,
    conn: &Connection,
) -> Result<Joined, redis::RedisError> {
    let id = conn.id.as_str();
    let key = state.keys.connection(id);
    let mut hset = redis::cmd("HSET");
    hset.arg(&key);
    for (field, value) in conn.fields(state.settings.legacy_record_fields) {
        hset.arg(field).arg(value);
    }
    let record = vec![
        hset,
        redis::cmd("PEXPIRE")
            .arg(&key)
            .arg(state.settings.connection_ttl.as_millis() as u64)
            .to_owned(),
    ];
    let mut sets = vec![
        join_channel(state, conn, &conn.channel),
        redis::cmd("SADD")
            .arg(state.keys.all_bucket_of(id))
            .arg(id)
            .to_owned(),
        redis::cmd("HSET")
            .arg(state.keys.location_of(id))
            .arg(id)
            .arg(conn.location())
            .to_owned(),
    ];
    if let Some(subject) = &conn.subject {
        sets.push(
            redis::cmd("SADD")
                .arg(state.keys.subject(subject.as_str()))
                .arg(id)
                .to_owned(),
        );
    }
    // The record before the sets: a planner that finds the id in a set must find its record, or it
    // takes the connection for a stale one and drops it (on a cluster the two live on different nodes).
    let answers = state.redis.batch_in_order(vec![record, sets]).await?;
    // The join script is the first command after the record's two.
    joined_from(answers.into_iter().nth(2))
}

/// What the message gate found for a connection.
#[derive(Debug)]
pub enum Gate {
    /// Kicked: every callback from it is refused.
    Revoked,
    /// No record: not registered, or already gone.
    Unknown,
    /// Registered; its expiry was pushed back (any message counts as activity).
    Live {
        conn: Box<Connection>,
        /// How the message fared against the connection's token bucket.
        rate: Rate,
    },
}

/// The per-connection token bucket's verdict on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Allowed,
    /// Over the limit, the first refusal since the last allowed message (the client is told once).
    Refused,
    /// Over the limit again.
    RefusedAgain,
}

/// One round trip for every client message: the revocation mark, the record (whose expiry is pushed
/// back), and the connection's token bucket. The three keys share the connection's slot.
static GATE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('EXISTS', KEYS[2]) == 1 then return {1} end
        local h = redis.call('HGETALL', KEYS[1])
        if #h == 0 then return {2} end
        redis.call('PEXPIRE', KEYS[1], ARGV[1])
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local rate = tonumber(ARGV[2])
        local burst = tonumber(ARGV[3])
        local b = redis.call('HMGET', KEYS[3], 'tokens', 'ts', 'refused')
        local tokens = tonumber(b[1]) or burst
        local ts = tonumber(b[2]) or now
        tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
        local verdict = 0
        local refused = '0'
        if tokens >= 1 then
            tokens = tokens - 1
        else
            refused = '1'
            if b[3] == '1' then verdict = 4 else verdict = 3 end
        end
        redis.call('HSET', KEYS[3], 'tokens', tostring(tokens), 'ts', tostring(now), 'refused', refused)
        redis.call('PEXPIRE', KEYS[3], math.ceil(burst * 1000 / rate) + 1000)
        return {verdict, h}
        ",
    )
});

/// Runs the message gate for `id` (see [`Gate`]).
pub async fn gate(state: &AppState, id: &ConnectionId) -> Result<Gate, redis::RedisError> {
    let settings = &state.settings;
    let reply: Vec<redis::Value> = GATE
        .key(state.keys.connection(id.as_str()))
        .key(state.keys.revoked(id.as_str()))
        .key(state.keys.rate_limit("msg", id.as_str()))
        .arg(settings.connection_ttl.as_millis() as u64)
        .arg(settings.message_rate_per_sec)
        .arg(settings.message_burst)
        .invoke_async(&mut state.conn())
        .await?;
    let mut reply = reply.into_iter();
    let verdict: i64 = match reply.next() {
        Some(v) => redis::from_redis_value(v)?,
        None => return Ok(Gate::Unknown),
    };
    let rate = match verdict {
        1 => return Ok(Gate::Revoked),
        2 => return Ok(Gate::Unknown),
        3 => Rate::Refused,
        4 => Rate::RefusedAgain,
        _ => Rate::Allowed,
    };
    let fields: Vec<String> = match reply.next() {
        Some(v) => redis::from_redis_value(v)?,
        None => Vec::new(),
    };
    let mut map = HashMap::with_capacity(fields.len() / 2);
    let mut pairs = fields.into_iter();
    while let (Some(k), Some(v)) = (pairs.next(), pairs.next()) {
        map.insert(k, v);
    }
    Ok(match Connection::from_fields(id, map) {
        Some(conn) => Gate::Live {
            conn: Box::new(conn),
            rate,
        },
        None => Gate::Unknown,
    })
}

/// Reads a connection's record without touching its expiry.
pub async fn peek(
    state: &AppState,
    id: &ConnectionId,
) -> Result<Option<Connection>, redis::RedisError> {
    let map: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(state.keys.connection(id.as_str()))
        .query_async(&mut state.conn())
        .await?;
    Ok(Connection::from_fields(id, map))
}

/// Removes a connection from every set (its presence and location included) and deletes its record.
/// Returns the record it had, if any, and what leaving its channel did.
pub async fn remove(
    state: &AppState,
    id: &ConnectionId,
) -> Result<Option<(Connection, Left)>, redis::RedisError> {
    let Some(conn) = peek(state, id).await? else {
        // No record (already gone, or expired): the stale-connection sweep finds its channel and subject
        // in the location hash; clear the bucket, the one set we can name without it.
        redis::cmd("SREM")
            .arg(state.keys.all_bucket_of(id.as_str()))
            .arg(id.as_str())
            .query_async::<()>(&mut state.conn())
            .await?;
        return Ok(None);
    };
    let mut cmds = leave_sets(state, &conn);
    cmds.push(
        redis::cmd("HDEL")
            .arg(state.keys.location_of(id.as_str()))
            .arg(id.as_str())
            .to_owned(),
    );
    let answers = state.redis.batch(cmds).await?;
    redis::cmd("DEL")
        .arg(state.keys.connection(id.as_str()))
        .query_async::<()>(&mut state.conn())
        .await?;
    // The leave script is the first command.
    let left = left_from(answers.into_iter().next())?;
    Ok(Some((conn, left)))
}

/// The commands that take a connection out of its channel (and its presence; the script comes first),
/// subject and bucket sets.
fn leave_sets(state: &AppState, conn: &Connection) -> Vec<redis::Cmd> {
    let id = conn.id.as_str();
    let mut cmds = vec![
        leave_channel(state, id, &conn.channel),
        redis::cmd("SREM")
            .arg(state.keys.all_bucket_of(id))
            .arg(id)
            .to_owned(),
    ];
    if let Some(subject) = &conn.subject {
        cmds.push(
            redis::cmd("SREM")
                .arg(state.keys.subject(subject.as_str()))
                .arg(id)
                .to_owned(),
        );
    }
    cmds
}

/// How long a kicked connection's record outlives its set memberships: long enough for a worker to read
/// its endpoint and close it, short enough that a lost `$disconnect` does not keep it for hours.
pub const KICKED_RECORD_TTL_MS: u64 = 300_000;

/// Takes a connection out of every set (no broadcast reaches it any more) but keeps its record for a few
/// minutes, so the worker that closes it can still find its endpoint. The `$disconnect` that follows the
/// close deletes the record (and its location entry; or the sweep does, once the record has expired).
pub async fn detach(state: &AppState, conn: &Connection) -> Result<Left, redis::RedisError> {
    let mut cmds = leave_sets(state, conn);
    cmds.push(
        redis::cmd("PEXPIRE")
            .arg(state.keys.connection(conn.id.as_str()))
            .arg(KICKED_RECORD_TTL_MS)
            .to_owned(),
    );
    let answers = state.redis.batch(cmds).await?;
    left_from(answers.into_iter().next())
}

/// Moves a connection to another channel: the record, the new channel (and its presence), the old one,
/// and the location, together. Answers what leaving the old channel and joining the new one did.
pub async fn move_to(
    state: &AppState,
    conn: &mut Connection,
    channel: ChannelName,
) -> Result<(Left, Joined), redis::RedisError> {
    let id = conn.id.as_str();
    let legacy = state.settings.legacy_record_fields;
    let mut cmds = vec![
        redis::cmd("HSET")
            .arg(state.keys.connection(id))
            .arg(name_of(f::CHANNEL, legacy))
            .arg(channel.as_str())
            .to_owned(),
        join_channel(state, conn, &channel),
        leave_channel(state, id, &conn.channel),
        redis::cmd("HSET")
            .arg(state.keys.location_of(id))
            .arg(id)
            .arg(location(&channel, conn.subject.as_ref()))
            .to_owned(),
    ];
    // The channel under the other name too (a record written by a replica of the other shape), or the
    // old channel would win when the record is read back.
    cmds.push(
        redis::cmd("HDEL")
            .arg(state.keys.connection(id))
            .arg(other_name_of(f::CHANNEL, legacy))
            .to_owned(),
    );
    let mut answers = state.redis.batch(cmds).await?.into_iter().skip(1);
    let joined = joined_from(answers.next())?;
    let left = left_from(answers.next())?;
    conn.channel = channel;
    Ok((left, joined))
}

/// Whether a connection may join `channel`: public channels are open to all; otherwise it needs a
/// subject, and the token's channel list (if it had one) must allow it.
pub fn may_join(
    state: &AppState,
    subject: Option<&Subject>,
    allowed: Option<&[ChannelPattern]>,
    channel: &ChannelName,
) -> bool {
    if ChannelPattern::any_matches(&state.settings.public_channels, channel) {
        return true;
    }
    subject.is_some()
        && allowed.is_none_or(|patterns| ChannelPattern::any_matches(patterns, channel))
}

/// Number of connections in a channel, and of distinct subjects among them (anonymous not counted).
pub async fn channel_stats(
    state: &AppState,
    channel: &ChannelName,
) -> Result<(u64, u64), redis::RedisError> {
    let set = state.keys.channel(channel.as_str());
    let mut conn = state.conn();
    let connections: u64 = redis::cmd("SCARD").arg(&set).query_async(&mut conn).await?;
    let mut subjects = std::collections::HashSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(&set)
            .arg(cursor)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await?;
        let cmds = ids
            .iter()
            .map(|id| {
                redis::cmd("HMGET")
                    .arg(state.keys.connection(id))
                    .arg(f::SUBJECT)
                    .arg(f::legacy::SUBJECT)
                    .to_owned()
            })
            .collect();
        for value in state.redis.batch(cmds).await? {
            if let Ok([new, old]) = redis::from_redis_value::<[Option<String>; 2]>(value)
                && let Some(s) = new.or(old)
            {
                subjects.insert(s);
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok((connections, subjects.len() as u64))
}

/// Connections registered, summed over the "every connection" buckets.
pub async fn live_connections(state: &AppState) -> Result<u64, redis::RedisError> {
    let cmds = (0..common::keys::ALL_BUCKETS)
        .map(|b| redis::cmd("SCARD").arg(state.keys.all_bucket(b)).to_owned())
        .collect();
    let counts = state.redis.batch(cmds).await?;
    Ok(counts
        .into_iter()
        .filter_map(|v| redis::from_redis_value::<u64>(v).ok())
        .sum())
}
