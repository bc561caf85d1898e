//! Batched sends and deletes: `SendMessageBatch` and `DeleteMessageBatch`, their size limits, and what
//! happens when some entries of a batch fail.
//!
//! A send is split into groups of at most [`SEND_BATCH_MAX`] messages and at most [`BATCH_BYTES_MAX`] of
//! bodies ([`batch_groups`]; SQS refuses larger batches). A batch in which any entry fails is an error;
//! entries that failed through no fault of the request are sent once more first. Groups sent before a
//! failing one stay sent, so a caller that retries may enqueue those jobs twice (at-least-once).

use super::SqsQueue;
use super::transport::sdk_error;
use crate::queue::{QueueError, Receipt, SEND_BATCH_MAX};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use std::collections::HashSet;
use std::ops::Range;

/// Most bytes of message bodies one `SendMessageBatch` may carry (SQS's limit on a batch's total payload).
pub const BATCH_BYTES_MAX: usize = 256 * 1024;

impl SqsQueue {
    /// Sends one group of bodies (at most 10, within [`BATCH_BYTES_MAX`]) with `SendMessageBatch`. Entries
    /// that fail through no fault of the request (`SenderFault` false) are sent once more; any entry still
    /// failing makes the call an error.
    pub(super) async fn send_group(&self, bodies: &[String]) -> Result<(), QueueError> {
        // Entry ids are the bodies' indexes in this group.
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        let mut retried = false;
        loop {
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&bodies[i])
                        .build()
                        .map_err(|e| QueueError::Refused(format!("SendMessageBatch: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error("SendMessageBatch", e))?;
            if let Some(f) = out.failed().iter().find(|f| f.sender_fault()) {
                // The request itself is wrong for this message (too large, invalid characters...): sending
                // it again cannot help.
                return Err(QueueError::Refused(format!(
                    "SendMessageBatch: message {} of the batch was refused: {}: {}",
                    f.id(),
                    f.code(),
                    f.message().unwrap_or("")
                )));
            }
            // Whatever is not reported as sent has failed, listed in `failed` or not.
            let sent: HashSet<&str> = out.successful().iter().map(|e| e.id()).collect();
            let failed: Vec<usize> = pending
                .iter()
                .copied()
                .filter(|i| !sent.contains(i.to_string().as_str()))
                .collect();
            if failed.is_empty() {
                return Ok(());
            }
            if retried {
                let detail = out
                    .failed()
                    .first()
                    .map(|f| format!(": {}: {}", f.code(), f.message().unwrap_or("")))
                    .unwrap_or_default();
                return Err(QueueError::Unavailable(format!(
                    "SendMessageBatch: {} of {} messages were not sent{detail}",
                    failed.len(),
                    bodies.len()
                )));
            }
            tracing::debug!(
                failed = failed.len(),
                "SendMessageBatch: sending the failed entries again"
            );
            retried = true;
            pending = failed;
        }
    }

    /// Deletes one group of at most 10 receipts with `DeleteMessageBatch`; any failed entry is an error.
    pub(super) async fn delete_group(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&r.0)
                    .build()
                    .map_err(|e| QueueError::Refused(format!("DeleteMessageBatch: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteMessageBatch", e))?;
        let Some(first) = out.failed().first() else {
            return Ok(());
        };
        let message = format!(
            "DeleteMessageBatch: {} of {} messages were not deleted: {}: {}",
            out.failed().len(),
            receipts.len(),
            first.code(),
            first.message().unwrap_or("")
        );
        Err(if out.failed().iter().any(|f| f.sender_fault()) {
            QueueError::Refused(message)
        } else {
            QueueError::Unavailable(message)
        })
    }
}

/// Splits bodies into consecutive groups of at most [`SEND_BATCH_MAX`] messages and at most
/// [`BATCH_BYTES_MAX`] bytes. A body larger than the limit travels alone (and SQS refuses it).
pub(super) fn batch_groups(bodies: &[String]) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, body) in bodies.iter().enumerate() {
        let full = i - start == SEND_BATCH_MAX || bytes + body.len() > BATCH_BYTES_MAX;
        if i > start && full {
            groups.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        groups.push(start..bodies.len());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_respect_count_and_size() {
        let small: Vec<String> = (0..25).map(|i| format!("job {i}")).collect();
        assert_eq!(batch_groups(&small), vec![0..10, 10..20, 20..25]);
        assert!(batch_groups(&[]).is_empty());

        // 100 KiB bodies: two fit in 256 KiB, a third does not.
        let big: Vec<String> = (0..5).map(|_| "x".repeat(100 * 1024)).collect();
        assert_eq!(batch_groups(&big), vec![0..2, 2..4, 4..5]);

        // A body over the limit goes alone, between groups of the others.
        let mixed = vec![
            "a".to_owned(),
            "x".repeat(BATCH_BYTES_MAX + 1),
            "b".to_owned(),
        ];
        assert_eq!(batch_groups(&mixed), vec![0..1, 1..2, 2..3]);
    }
}
