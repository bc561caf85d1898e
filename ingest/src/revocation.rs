//! Revocation that bites: kicking connections and revoking a user.
//!
//! A kick marks each connection revoked (`revoked:{id}`, kept longer than API Gateway keeps any
//! connection), so every callback from it is refused with 403 at once, before the gateway has closed it;
//! takes it out of every channel, subject and broadcast set, so no message reaches it; and queues a
//! `disconnect` job, with which a worker calls `DeleteConnection`. The record itself stays a few minutes
//! so that worker can find the connection's endpoint.
//!
//! Revoking a user (logout, role change) kicks every live connection of the subject and raises the
//! subject's token generation (`usergen:{subject}`): tokens carry the generation they were minted in, and
//! `$connect` refuses one minted before the last revoke, so tokens already handed out cannot be used.

use crate::error::AppError;
use crate::membership::{self, Connection};
use crate::outbox;
use crate::state::AppState;
use common::job::{Action, Job, Target};
use common::names::ConnectionId;
use std::time::Duration;

/// How long a revocation mark lives: longer than API Gateway's 2-hour maximum connection and than the
/// connection record's own TTL, so a kicked connection can never be believed again.
pub fn mark_ttl(state: &AppState) -> Duration {
    state.settings.connection_ttl.max(Duration::from_secs(7200)) + Duration::from_secs(600)
}

/// How long a subject's token generation is kept after the last token was minted or the last revoke:
/// longer than any token lives (tokens last at most an hour).
pub const GENERATION_TTL: Duration = Duration::from_secs(3600 + 300);

/// Connection ids per `disconnect` job, so one job stays far below a queue message's size limit.
const IDS_PER_JOB: usize = 500;

/// What a kick did.
#[derive(Debug, Default)]
pub struct Kicked {
    /// Connections marked revoked and detached.
    pub connections: usize,
    /// The `disconnect` jobs queued.
    pub job_ids: Vec<String>,
}

/// Kicks `conns` (records already read). The close is queued first: if the queue is down nothing has
/// changed and the caller can retry.
pub async fn kick(state: &AppState, conns: &[Connection]) -> Result<Kicked, AppError> {
    let mut kicked = Kicked::default();
    for chunk in conns.chunks(IDS_PER_JOB) {
        let ids = chunk.iter().map(|c| c.id.as_str().to_owned()).collect();
        let job = Job::new(Target::Connections { ids }, Action::Disconnect);
        kicked.job_ids.push(outbox::enqueue(state, job).await?);
        let ttl = mark_ttl(state).as_millis() as u64;
        let marks = chunk
            .iter()
            .map(|c| {
                redis::cmd("SET")
                    .arg(state.keys.revoked(c.id.as_str()))
                    .arg(1)
                    .arg("PX")
                    .arg(ttl)
                    .to_owned()
            })
            .collect();
        state.redis.batch(marks).await?;
        for conn in chunk {
            let left = membership::detach(state, conn).await?;
            crate::lifecycle::gone_of(state, conn, &left, crate::lifecycle::Gone::Kicked).await;
        }
        kicked.connections += chunk.len();
    }
    tracing::info!(
        connections = kicked.connections,
        "connections kicked and revoked"
    );
    Ok(kicked)
}

/// The records of the connections in a set (a channel's or a subject's); ids without a record are
/// skipped (they are already gone).
pub async fn members(state: &AppState, set: &str) -> Result<Vec<Connection>, AppError> {
    let ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(set)
        .query_async(&mut state.conn())
        .await?;
    let mut conns = Vec::with_capacity(ids.len());
    for id in ids.iter().filter_map(|id| ConnectionId::parse(id).ok()) {
        if let Some(conn) = membership::peek(state, &id).await? {
            conns.push(conn);
        }
    }
    Ok(conns)
}

/// Raises the subject's token generation, so every token minted for it so far is refused at `$connect`.
pub async fn bump_generation(state: &AppState, subject: &str) -> Result<u64, AppError> {
    let key = state.keys.token_generation(subject);
    let (generation, _): (u64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg(&key)
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(GENERATION_TTL.as_millis() as u64)
        .query_async(&mut state.conn())
        .await?;
    Ok(generation)
}
