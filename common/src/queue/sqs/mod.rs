//! Amazon SQS backend of [`super::Queue`]: a standard queue, its dead-letter queue, and the AWS SDK.
//!
//! Mapping of the trait onto SQS, one concern per file:
//!
//! - [`batches`]: `send_batch` is `SendMessageBatch` in groups within SQS's count and size limits, with
//!   partially failed batches retried once; `ack` is `DeleteMessageBatch`.
//! - `send_delayed` is `SendMessage` with `DelaySeconds` (rounded up to whole seconds, at most 900).
//! - `receive` is a long-polling `ReceiveMessage` (`WaitTimeSeconds` at most 20) that asks for the
//!   `ApproximateReceiveCount` system attribute, which becomes [`Received::receive_count`], and sets the
//!   received messages' `VisibilityTimeout` to [`QueueOptions::visibility_timeout`] (so a worker's short
//!   lease applies whatever the queue's own default is).
//! - [`visibility`]: `extend` and `release` are `ChangeMessageVisibility` (release sets 0); a received
//!   message that is neither deleted nor released comes back after its visibility timeout.
//! - [`dead_letters`]: finding the dead-letter queue, `dead_letter` and `peek_dead_letters`.
//! - [`transport`]: the SDK client, its retries and timeouts, and the mapping of its errors.
//! - `depth` reads the queue's approximate message counts.

pub mod batches;
pub mod dead_letters;
pub mod transport;
pub mod visibility;

pub use batches::BATCH_BYTES_MAX;
pub use dead_letters::REASON_ATTRIBUTE;
pub use transport::{
    ATTEMPT_TIMEOUT, CONNECT_TIMEOUT, DEFAULT_REGION, OPERATION_TIMEOUT, RECEIVE_MARGIN,
};

use super::{
    DeadLetter, Job, Queue, QueueError, QueueOptions, Receipt, Received, SEND_BATCH_MAX,
    SelectLetter,
};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use std::time::Duration;
use tokio::sync::OnceCell;
use transport::{long_poll_timeouts, sdk_error};
use visibility::ceil_seconds;

/// Longest long poll SQS allows.
const MAX_WAIT_SECONDS: u64 = 20;
/// Longest `DelaySeconds` SQS allows (15 minutes).
const MAX_DELAY_SECONDS: u64 = 900;

/// An SQS queue.
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    /// The dead-letter queue's URL once known: `Some(None)` means "looked, there is none".
    dead_letter_url: OnceCell<Option<String>>,
    /// The visibility timeout every receive asks for, in whole seconds.
    visibility_seconds: i32,
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the client's configuration is nobody's business in a log line.
        f.debug_struct("SqsQueue")
            .field("queue_url", &self.queue_url)
            .field("dead_letter_url", &self.dead_letter_url.get())
            .finish()
    }
}

impl SqsQueue {
    /// Connects to the queue at `queue_url` with credentials from the AWS environment (variables, profile,
    /// web identity, container or instance role).
    ///
    /// `endpoint` overrides the SQS endpoint (a local SQS-compatible server); `region` is used if given,
    /// else the AWS environment's region, else [`DEFAULT_REGION`]. Nothing is required to answer yet,
    /// except that the dead-letter queue is looked up now when `options.dead_letter_url` is not set (a
    /// failed lookup is logged and retried when a message is first dead-lettered).
    pub async fn connect(
        queue_url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        Self::connect_inner(queue_url, endpoint, region, None, options).await
    }

    /// [`SqsQueue::connect`] with the given credentials instead of the environment's: for local
    /// SQS-compatible servers (which want a signed request but no real account) and tests.
    pub async fn connect_with_credentials(
        queue_url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        credentials: Credentials,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        Self::connect_inner(queue_url, endpoint, region, Some(credentials), options).await
    }

    async fn connect_inner(
        queue_url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        credentials: Option<Credentials>,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        if queue_url.is_empty() {
            return Err(QueueError::Url("the SQS queue URL is empty".into()));
        }
        let queue = SqsQueue {
            client: transport::client(endpoint, region, credentials).await,
            queue_url: queue_url.to_owned(),
            dead_letter_url: OnceCell::new(),
            visibility_seconds: ceil_seconds(options.visibility_timeout)
                .clamp(1, visibility::MAX_VISIBILITY_SECONDS)
                as i32,
        };
        match options.dead_letter_url {
            Some(url) => {
                let _ = queue.dead_letter_url.set(Some(url));
            }
            None => {
                if let Err(e) = queue.dead_letter_url().await {
                    tracing::warn!(
                        queue_url = %queue.queue_url,
                        error = %e,
                        "could not read the queue's redrive policy to find its dead-letter queue; will try again when a message is dead-lettered"
                    );
                }
            }
        }
        Ok(queue)
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(&self, jobs: &[Job]) -> Result<(), QueueError> {
        let bodies: Vec<String> = jobs.iter().map(Job::encode).collect();
        for group in batches::batch_groups(&bodies) {
            self.send_group(&bodies[group]).await?;
        }
        Ok(())
    }

    async fn send_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        // Rounded up: a job must never become visible before its delay.
        let seconds = ceil_seconds(delay).min(MAX_DELAY_SECONDS) as i32;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(job.encode())
            .delay_seconds(seconds)
            .send()
            .await
            .map_err(|e| sdk_error("SendMessage", e))?;
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        // Rounded down: the call must not wait longer than asked (under a second is a short poll).
        let wait_seconds = wait.as_secs().min(MAX_WAIT_SECONDS);
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait_seconds as i32)
            .visibility_timeout(self.visibility_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::new()
                    .timeout_config(long_poll_timeouts(wait_seconds)),
            )
            .send()
            .await
            .map_err(|e| sdk_error("ReceiveMessage", e))?;
        let mut received = Vec::with_capacity(out.messages().len());
        for message in out.messages() {
            let Some(handle) = message.receipt_handle() else {
                // Cannot happen with SQS; without a handle the message could not be acknowledged anyway,
                // and it comes back after the visibility timeout.
                tracing::warn!("ReceiveMessage returned a message without a receipt handle");
                continue;
            };
            // SQS counts receives itself: 1 on the first delivery, one more on every redelivery, including
            // after a release (visibility 0) or a lapsed visibility timeout.
            let receive_count = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(1);
            received.push(Received {
                body: message.body().unwrap_or_default().to_owned(),
                receipt: Receipt(handle.to_owned()),
                receive_count,
            });
        }
        Ok(received)
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        for group in receipts.chunks(SEND_BATCH_MAX) {
            self.delete_group(group).await?;
        }
        Ok(())
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        self.extend_visibility(receipt, visibility).await
    }

    async fn release(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.change_visibility(receipt, 0).await
    }

    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError> {
        self.move_to_dead_letters(message, reason).await
    }

    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.read_dead_letters(max).await
    }

    async fn redrive(&self, select: &SelectLetter, max: usize) -> Result<usize, QueueError> {
        self.redrive_dead_letters(select, max).await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| sdk_error("GetQueueAttributes", e))?;
        Ok(())
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| sdk_error("GetQueueAttributes", e))?;
        // Visible plus delayed; messages in flight (ApproximateNumberOfMessagesNotVisible) are not waiting.
        let mut depth = 0u64;
        for name in [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ] {
            if let Some(value) = out.attributes().and_then(|a| a.get(&name)) {
                depth += value.parse::<u64>().map_err(|_| {
                    QueueError::Unavailable(format!(
                        "GetQueueAttributes: {name} is not a number: {value:?}"
                    ))
                })?;
            }
        }
        Ok(depth)
    }

    fn backend(&self) -> &'static str {
        "sqs"
    }
}
