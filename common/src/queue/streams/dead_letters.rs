//! The dead-letter stream: entries with the job's body, the reason and the time (ms since the epoch).
//! Moving a message there, acknowledging it and deleting it from the queue's stream is one transaction;
//! so is moving it back (a redrive: `XADD` to the queue's stream, `XDEL` from the dead one).

use super::GROUP;
use super::StreamQueue;
use super::codec::{AT_FIELD, JOB_FIELD, REASON_FIELD, entry_id, text_field};
use crate::queue::{DeadLetter, QueueError, Received, SelectLetter};
use redis::streams::StreamId;
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

    /// Moves the dead letters `select` accepts (at most `max`) back onto the queue's stream, oldest first.
    pub(super) async fn redrive_dead_letters(
        &self,
        select: &SelectLetter,
        max: usize,
    ) -> Result<usize, QueueError> {
        let mut moved = 0;
        let mut start = "-".to_owned();
        let mut conn = self.redis.clone();
        while moved < max {
            let reply: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.keys.dead)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(100)
                .query_async(&mut conn)
                .await?;
            let Some(last) = reply.ids.last() else {
                break;
            };
            start = format!("({}", last.id);
            let chosen: Vec<&StreamId> = reply
                .ids
                .iter()
                .filter(|e| {
                    select(&DeadLetter {
                        body: text_field(e, JOB_FIELD),
                        reason: text_field(e, REASON_FIELD),
                    })
                })
                .take(max - moved)
                .collect();
            for entry in chosen {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("XADD")
                    .arg(&self.keys.stream)
                    .arg("*")
                    .arg(JOB_FIELD)
                    .arg(text_field(entry, JOB_FIELD))
                    .ignore()
                    .cmd("XDEL")
                    .arg(&self.keys.dead)
                    .arg(&entry.id)
                    .ignore();
                pipe.query_async::<()>(&mut conn).await?;
                moved += 1;
            }
            if reply.ids.len() < 100 {
                break;
            }
        }
        Ok(moved)
    }
}
