//! Visibility on a stream. An entry is "in flight" while it is in the group's pending entries list (PEL).
//! Its PEL idle time (time since it was last delivered or claimed) plays the part of SQS's visibility
//! clock: once it exceeds the visibility timeout, any consumer's next `receive` takes it over with
//! `XAUTOCLAIM` ([`StreamQueue::claim_expired`]), which raises its delivery count: that count is
//! [`Received::receive_count`]. `extend` resets the idle time (`XCLAIM ... JUSTID`, which does not count
//! as a delivery); `release` sets it to the visibility timeout, so that the next `XAUTOCLAIM` takes the
//! entry at once. Both refuse when this consumer no longer holds the entry ([`RECLAIM_IF_HELD`]).

use super::codec::{entry_id, received};
use super::{GROUP, StreamQueue, millis};
use crate::queue::{QueueError, Receipt, Received};
use redis::Script;
use redis::streams::{StreamAutoClaimReply, StreamPendingCountReply};
use std::sync::LazyLock;
use std::time::Duration;

/// Sets the PEL idle time of an entry to `ARGV[4]` ms, if this consumer (`ARGV[2]`) still holds it.
/// Returns 0 when it does not: the entry was acknowledged, or its visibility timeout passed and another
/// consumer took it over (a plain `XCLAIM` would then steal it back). `JUSTID` keeps the delivery count.
static RECLAIM_IF_HELD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
return 1
",
    )
});

impl StreamQueue {
    /// Takes over up to `max` entries whose visibility timeout has passed (PEL idle time at least the
    /// visibility timeout), whoever held them: these are redeliveries.
    pub(super) async fn claim_expired(&self, max: usize) -> Result<Vec<Received>, QueueError> {
        let start = self.cursor().clone();
        let reply: StreamAutoClaimReply = self
            .with_group(|| {
                let mut conn = self.redis.clone();
                let start = start.clone();
                async move {
                    redis::cmd("XAUTOCLAIM")
                        .arg(&self.keys.stream)
                        .arg(GROUP)
                        .arg(&self.consumer)
                        .arg(millis(self.visibility))
                        .arg(start)
                        .arg("COUNT")
                        .arg(max)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        *self.cursor() = reply.next_stream_id;
        if reply.claimed.is_empty() {
            return Ok(Vec::new());
        }
        // XAUTOCLAIM has raised each entry's delivery count; read it back for receive_count. (Nobody else
        // can take these entries before this runs: their idle time was just reset.)
        let mut pipe = redis::pipe();
        for entry in &reply.claimed {
            pipe.cmd("XPENDING")
                .arg(&self.keys.stream)
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
        let mut conn = self.redis.clone();
        let pending: Vec<StreamPendingCountReply> = pipe.query_async(&mut conn).await?;
        Ok(reply
            .claimed
            .iter()
            .zip(pending)
            .map(|(entry, p)| {
                let count = p
                    .ids
                    .first()
                    .map(|p| u32::try_from(p.times_delivered).unwrap_or(u32::MAX))
                    .unwrap_or(2);
                received(entry, count)
            })
            .collect())
    }

    /// Sets a held entry's PEL idle time, or refuses if this consumer no longer holds it.
    pub(super) async fn reclaim(
        &self,
        receipt: &Receipt,
        idle: Duration,
    ) -> Result<(), QueueError> {
        let id = entry_id(receipt)?;
        let mut conn = self.redis.clone();
        let held: i64 = RECLAIM_IF_HELD
            .key(&self.keys.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(id)
            .arg(millis(idle))
            .invoke_async(&mut conn)
            .await?;
        if held == 0 {
            return Err(QueueError::Refused(format!(
                "job {id} is no longer held by consumer {}: it was acknowledged, or its visibility timeout passed and it was delivered again",
                self.consumer
            )));
        }
        Ok(())
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, String> {
        // A poisoned cursor is still a valid start id.
        self.claim_cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
