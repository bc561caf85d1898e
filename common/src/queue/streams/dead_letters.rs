//! The dead-letter stream: entries with the job's body, the reason and the time (ms since the epoch).
//! Moving a message there, acknowledging it and deleting it from the queue's stream is one transaction.

use super::GROUP;
use super::StreamQueue;
use super::codec::{AT_FIELD, JOB_FIELD, REASON_FIELD, entry_id, text_field};
use crate::queue::{DeadLetter, QueueError, Received};
use redis::streams::StreamRangeReply;

impl StreamQueue {
    /// `XADD` to the dead stream, `XACK` and `XDEL` from the queue's, in one `MULTI`.
    pub(super) async fn move_to_dead_letters(
        &self,
        message: &Received,
        reason: &str,
    ) -> Result<(), QueueError> {
        let id = entry_id(&message.receipt)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(&self.keys.dead)
            .arg("*")
            .arg(JOB_FIELD)
            .arg(&message.body)
            .arg(REASON_FIELD)
            .arg(reason)
            .arg(AT_FIELD)
            .arg(crate::job::now_ms())
            .ignore()
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(id)
            .ignore();
        let mut conn = self.redis.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The first `max` dead letters, oldest first, left where they are.
    pub(super) async fn read_dead_letters(
        &self,
        max: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.redis.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.keys.dead)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .iter()
            .map(|entry| DeadLetter {
                body: text_field(entry, JOB_FIELD),
                reason: text_field(entry, REASON_FIELD),
            })
            .collect())
    }
}
