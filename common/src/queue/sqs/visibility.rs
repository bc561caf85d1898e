//! Visibility on SQS is SQS's own: a received message stays hidden for the visibility timeout its receive
//! asked for (see [`super`]) unless deleted, and `ChangeMessageVisibility` moves
//! that deadline: `extend` to a new length from now, `release` to zero. Durations are rounded up to whole
//! seconds, so a message never reappears early.

use super::SqsQueue;
use super::transport::sdk_error;
use crate::queue::{QueueError, Receipt};
use std::time::Duration;

/// Longest visibility timeout SQS allows (12 hours).
pub(super) const MAX_VISIBILITY_SECONDS: u64 = 43_200;

impl SqsQueue {
    /// Keeps a received message hidden for `visibility` from now.
    pub(super) async fn extend_visibility(
        &self,
        receipt: &Receipt,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        let seconds = ceil_seconds(visibility).min(MAX_VISIBILITY_SECONDS) as i32;
        self.change_visibility(receipt, seconds).await
    }

    /// `ChangeMessageVisibility` to `seconds` from now.
    pub(super) async fn change_visibility(
        &self,
        receipt: &Receipt,
        seconds: i32,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| sdk_error("ChangeMessageVisibility", e))?;
        Ok(())
    }
}

/// Whole seconds, rounded up.
pub(super) fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_seconds(Duration::ZERO), 0);
        assert_eq!(ceil_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ceil_seconds(Duration::from_secs(2)), 2);
        assert_eq!(ceil_seconds(Duration::from_millis(2001)), 3);
    }
}
