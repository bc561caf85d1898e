//! Reading new entries: `XREADGROUP ... >` in the group, which puts each entry in the pending entries list
//! (PEL) under this consumer with a delivery count of 1.
//!
//! `XREADGROUP BLOCK` holds the connection it runs on until it returns, and a [`Redis`] handle is one
//! multiplexed connection shared by every task of the process. So a blocking read needs a connection of
//! its own: [`StreamQueue::connect`] (or [`StreamQueue::with_blocking_reader`]) gives the queue a
//! dedicated reader used for nothing else, and each `BLOCK` lasts at most [`BLOCK_SLICE`], well under the
//! reader's response timeout ([`COMMAND_TIMEOUT`]). A queue made with [`StreamQueue::new`] alone never
//! blocks: it polls with a non-blocking `XREADGROUP` every [`POLL_INTERVAL`] instead.

use super::codec::received;
use super::{GROUP, StreamQueue, millis};
use crate::queue::{QueueError, Received};
use crate::store::{COMMAND_TIMEOUT, Redis};
use redis::streams::StreamReadReply;
use std::time::Duration;

/// Longest single `XREADGROUP BLOCK`. Between slices `receive` moves due delayed jobs and takes over
/// expired ones, so these are late by at most this much while a consumer waits; and a slice must end
/// well within the reader's response timeout.
pub const BLOCK_SLICE: Duration = Duration::from_secs(1);
const _: () = assert!(BLOCK_SLICE.as_millis() + 500 < COMMAND_TIMEOUT.as_millis());

/// How often a queue without a dedicated reader looks for new jobs while it waits.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

impl StreamQueue {
    /// Reads up to `max` new entries, waiting up to `wait` for some (0: do not wait).
    pub(super) async fn read_new(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let block_ms = millis(wait);
        if block_ms == 0 {
            return self.xreadgroup(&self.redis, max, None).await;
        }
        let Some(reader) = &self.reader else {
            // No connection to block on: poll.
            let found = self.xreadgroup(&self.redis, max, None).await?;
            if found.is_empty() {
                tokio::time::sleep(wait.min(POLL_INTERVAL)).await;
            }
            return Ok(found);
        };
        // Another receive on this queue is blocking on the reader: wait for it, but no longer than asked.
        let Ok(reader) = tokio::time::timeout(wait, reader.lock()).await else {
            return Ok(Vec::new());
        };
        self.xreadgroup(&reader, max, Some(block_ms)).await
    }

    /// `XREADGROUP GROUP workers <consumer> COUNT <max> [BLOCK <ms>] STREAMS <stream> >`.
    async fn xreadgroup(
        &self,
        conn: &Redis,
        max: usize,
        block_ms: Option<u64>,
    ) -> Result<Vec<Received>, QueueError> {
        let reply: Option<StreamReadReply> = self
            .with_group(|| {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(max);
                if let Some(ms) = block_ms {
                    cmd.arg("BLOCK").arg(ms);
                }
                cmd.arg("STREAMS").arg(&self.keys.stream).arg(">");
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            // A first delivery: XREADGROUP with `>` only returns entries never delivered to the group.
            .map(|entry| received(&entry, 1))
            .collect())
    }
}
