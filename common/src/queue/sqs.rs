//! Amazon SQS backend of [`super::Queue`]: a standard queue, its dead-letter queue, and the AWS SDK.
//!
//! Mapping of the trait onto SQS:
//!
//! - `send_batch` is `SendMessageBatch`, in groups of at most [`SEND_BATCH_MAX`] messages and at most
//!   [`BATCH_BYTES_MAX`] of bodies (SQS refuses larger batches). A batch in which any entry fails is an
//!   error; entries that failed through no fault of the request are retried once first. Groups sent before
//!   a failing one stay sent, so a caller that retries may enqueue those jobs twice (at-least-once).
//! - `send_delayed` is `SendMessage` with `DelaySeconds` (rounded up to whole seconds, at most 900).
//! - `receive` is a long-polling `ReceiveMessage` (`WaitTimeSeconds` at most 20) that asks for the
//!   `ApproximateReceiveCount` system attribute, which becomes [`Received::receive_count`].
//! - Visibility is SQS's own: `extend` and `release` are `ChangeMessageVisibility` (release sets 0); a
//!   received message that is neither deleted nor released comes back after the queue's visibility timeout
//!   (a queue attribute, set where the queue is created: [`QueueOptions::visibility_timeout`] is not
//!   applied to an SQS queue).
//! - `ack` is `DeleteMessageBatch`; `dead_letter` sends the body to the dead-letter queue with a `reason`
//!   message attribute and then deletes it from this queue (two calls: if the delete fails the message comes
//!   back and may be dead-lettered twice). The dead-letter queue is [`QueueOptions::dead_letter_url`], or
//!   the target of this queue's `RedrivePolicy`, looked up at connect (and again on first use if that
//!   lookup could not be made, e.g. a role allowed to send but not to read queue attributes).
//!
//! The SDK keeps its standard retries (3 attempts with backoff) and every call has a timeout: a call
//! attempt is bounded by [`ATTEMPT_TIMEOUT`], except a long poll, whose bound is its wait plus
//! [`RECEIVE_MARGIN`]. Errors map to [`QueueError::Unavailable`] (connection, timeout, throttling, 5xx) or
//! [`QueueError::Refused`] (4xx, such as a missing queue or a denied action); their messages carry the
//! operation, the SQS error code and message, never credentials.

use super::{DeadLetter, Job, Queue, QueueError, QueueOptions, Receipt, Received, SEND_BATCH_MAX};
use async_trait::async_trait;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{
    BehaviorVersion, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The region used when neither the caller nor the AWS environment names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Most bytes of message bodies one `SendMessageBatch` may carry (SQS's limit on a batch's total payload).
pub const BATCH_BYTES_MAX: usize = 256 * 1024;

/// Longest long poll SQS allows.
const MAX_WAIT_SECONDS: u64 = 20;
/// Longest `DelaySeconds` SQS allows (15 minutes).
const MAX_DELAY_SECONDS: u64 = 900;
/// Longest visibility timeout SQS allows (12 hours).
const MAX_VISIBILITY_SECONDS: u64 = 43_200;

/// Time to open a TCP (and TLS) connection to SQS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time one attempt of an ordinary call may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one ordinary call may take, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// What a long poll's attempt may take beyond its wait.
pub const RECEIVE_MARGIN: Duration = Duration::from_secs(10);

/// The message attribute that carries a dead letter's reason.
pub const REASON_ATTRIBUTE: &str = "reason";

/// An SQS queue.
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    /// The dead-letter queue's URL once known: `Some(None)` means "looked, there is none".
    dead_letter_url: OnceCell<Option<String>>,
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
        let region = RegionProviderChain::first_try(region.map(|r| Region::new(r.to_owned())))
            .or_default_provider()
            .or_else(Region::from_static(DEFAULT_REGION));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(RetryConfig::standard())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let config = loader.load().await;
        let queue = SqsQueue {
            client: Client::new(&config),
            queue_url: queue_url.to_owned(),
            dead_letter_url: OnceCell::new(),
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

    /// The dead-letter queue's URL (`None` if the queue has none), looking it up once if not yet known.
    pub async fn dead_letter_url(&self) -> Result<Option<&str>, QueueError> {
        let url = self
            .dead_letter_url
            .get_or_try_init(|| self.discover_dead_letter_url())
            .await?;
        Ok(url.as_deref())
    }

    /// The dead-letter queue's URL or a refusal that says how to configure one.
    async fn require_dead_letter_url(&self) -> Result<&str, QueueError> {
        self.dead_letter_url().await?.ok_or_else(|| {
            QueueError::Refused(format!(
                "the queue {} has no dead-letter queue: give it a redrive policy, or configure the dead-letter queue URL",
                self.queue_url
            ))
        })
    }

    /// Reads the queue's `RedrivePolicy` and resolves its `deadLetterTargetArn` to a URL.
    async fn discover_dead_letter_url(&self) -> Result<Option<String>, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| sdk_error("GetQueueAttributes", e))?;
        let Some(policy) = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        else {
            return Ok(None);
        };
        let (account, name) = dead_letter_target(policy)?;
        let out = self
            .client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| sdk_error("GetQueueUrl", e))?;
        match out.queue_url() {
            Some(url) => Ok(Some(url.to_owned())),
            None => Err(QueueError::Unavailable(
                "GetQueueUrl answered without a queue URL".into(),
            )),
        }
    }

    /// Sends one group of bodies (at most 10, within [`BATCH_BYTES_MAX`]) with `SendMessageBatch`. Entries
    /// that fail through no fault of the request (`SenderFault` false) are sent once more; any entry still
    /// failing makes the call an error.
    async fn send_group(&self, bodies: &[String]) -> Result<(), QueueError> {
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
    async fn delete_group(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
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

    /// `ChangeMessageVisibility` to `seconds` from now.
    async fn change_visibility(&self, receipt: &Receipt, seconds: i32) -> Result<(), QueueError> {
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

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(&self, jobs: &[Job]) -> Result<(), QueueError> {
        let bodies: Vec<String> = jobs.iter().map(Job::encode).collect();
        for group in batch_groups(&bodies) {
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
        let seconds = ceil_seconds(visibility).min(MAX_VISIBILITY_SECONDS) as i32;
        self.change_visibility(receipt, seconds).await
    }

    async fn release(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.change_visibility(receipt, 0).await
    }

    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError> {
        let dead_letter_url = self.require_dead_letter_url().await?;
        let reason = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(attribute_text(reason))
            .build()
            .map_err(|e| QueueError::Refused(format!("SendMessage: {e}")))?;
        self.client
            .send_message()
            .queue_url(dead_letter_url)
            .message_body(&message.body)
            .message_attributes(REASON_ATTRIBUTE, reason)
            .send()
            .await
            .map_err(|e| sdk_error("SendMessage (dead-letter queue)", e))?;
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(&message.receipt.0)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteMessage", e))?;
        Ok(())
    }

    /// Messages that SQS moved to the dead-letter queue by itself (after the redrive policy's
    /// `maxReceiveCount`) have no reason attribute: their reason reads as empty.
    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let dead_letter_url = self.require_dead_letter_url().await?;
        let mut seen = HashSet::new();
        let mut letters = Vec::new();
        // Receiving with visibility 0 leaves the messages where they are, so the same ones may come back on
        // the next call: stop when a call brings nothing new. (Each receive does count towards the
        // messages' ApproximateReceiveCount in the dead-letter queue.) Bounded, whatever the server answers.
        for _ in 0..max.div_ceil(10) + 2 {
            let want = max.saturating_sub(letters.len()).min(10);
            if want == 0 {
                break;
            }
            let out = self
                .client
                .receive_message()
                .queue_url(dead_letter_url)
                .max_number_of_messages(want as i32)
                .visibility_timeout(0)
                // A short long poll, so that SQS looks on all its servers rather than a sample.
                .wait_time_seconds(1)
                .message_attribute_names(REASON_ATTRIBUTE)
                .send()
                .await
                .map_err(|e| sdk_error("ReceiveMessage (dead-letter queue)", e))?;
            let mut new = 0;
            for message in out.messages() {
                let id = message
                    .message_id()
                    .or(message.receipt_handle())
                    .unwrap_or_default();
                if !seen.insert(id.to_owned()) || letters.len() >= max {
                    continue;
                }
                new += 1;
                letters.push(DeadLetter {
                    body: message.body().unwrap_or_default().to_owned(),
                    reason: message
                        .message_attributes()
                        .and_then(|a| a.get(REASON_ATTRIBUTE))
                        .and_then(|v| v.string_value())
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
            if new == 0 {
                break;
            }
        }
        Ok(letters)
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

/// Splits bodies into consecutive groups of at most [`SEND_BATCH_MAX`] messages and at most
/// [`BATCH_BYTES_MAX`] bytes. A body larger than the limit travels alone (and SQS refuses it).
fn batch_groups(bodies: &[String]) -> Vec<Range<usize>> {
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

/// Whole seconds, rounded up.
fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Attempt and operation timeouts for a long poll of `wait_seconds`: the attempt must outlive the wait.
fn long_poll_timeouts(wait_seconds: u64) -> TimeoutConfig {
    let wait = Duration::from_secs(wait_seconds);
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(wait + RECEIVE_MARGIN)
        .operation_timeout(wait + RECEIVE_MARGIN + OPERATION_TIMEOUT)
        .build()
}

/// Most characters of a dead letter's reason that are kept: the attribute counts towards the message size.
const REASON_MAX_CHARS: usize = 1024;

/// Text acceptable as an SQS `String` attribute value: not empty, at most [`REASON_MAX_CHARS`] characters,
/// and only the characters SQS allows (XML characters: tab, newline, carriage return, and from U+0020 up,
/// without the non-characters U+FFFE and U+FFFF); others become U+FFFD.
fn attribute_text(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .take(REASON_MAX_CHARS)
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
            _ => c,
        })
        .collect();
    if cleaned.is_empty() {
        "(no reason given)".to_owned()
    } else {
        cleaned
    }
}

/// The account and queue name of the dead-letter target in a redrive policy
/// (`{"deadLetterTargetArn":"arn:aws:sqs:<region>:<account>:<name>","maxReceiveCount":5}`).
fn dead_letter_target(policy: &str) -> Result<(String, String), QueueError> {
    let bad = |why: &str| QueueError::Refused(format!("the queue's RedrivePolicy {why}: {policy}"));
    let value: serde_json::Value = serde_json::from_str(policy).map_err(|_| bad("is not JSON"))?;
    let arn = value
        .get("deadLetterTargetArn")
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad("has no deadLetterTargetArn"))?;
    // arn:<partition>:sqs:<region>:<account>:<name>
    match arn.split(':').collect::<Vec<_>>()[..] {
        ["arn", _, "sqs", _, account, name] if !account.is_empty() && !name.is_empty() => {
            Ok((account.to_owned(), name.to_owned()))
        }
        _ => Err(bad(
            "names a dead-letter target that is not an SQS queue ARN",
        )),
    }
}

/// Maps an SDK error to a queue error. Service errors keep SQS's code and message (which name the problem,
/// never the caller's credentials); transport errors say what failed to connect or timed out.
fn sdk_error<E>(operation: &str, err: SdkError<E>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = context.err().code().unwrap_or("unknown error");
            let message = format!(
                "{operation}: {code}: {} (HTTP {status})",
                context.err().message().unwrap_or("no message")
            );
            if status >= 500 || status == 429 || is_throttling(code) {
                QueueError::Unavailable(message)
            } else {
                QueueError::Refused(message)
            }
        }
        SdkError::TimeoutError(_) => QueueError::Unavailable(format!("{operation}: timed out")),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            QueueError::Unavailable(format!("{operation}: {}", DisplayErrorContext(&err)))
        }
        // The request could not be built or signed: a configuration problem (no credentials found, an
        // invalid endpoint) rather than an outage.
        _ => QueueError::Refused(format!("{operation}: {}", DisplayErrorContext(&err))),
    }
}

/// SQS error codes that mean "slow down", which SQS sends with a 4xx status.
fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "RequestThrottled"
            | "ThrottlingException"
            | "Throttling"
            | "KmsThrottled"
            | "AWS.SimpleQueueService.RequestThrottled"
    )
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

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_seconds(Duration::ZERO), 0);
        assert_eq!(ceil_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ceil_seconds(Duration::from_secs(2)), 2);
        assert_eq!(ceil_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn reads_the_redrive_policy() {
        assert_eq!(
            dead_letter_target(
                r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:123456789012:jobs-dlq","maxReceiveCount":5}"#
            )
            .unwrap(),
            ("123456789012".to_owned(), "jobs-dlq".to_owned())
        );
        assert!(dead_letter_target("{}").is_err());
        assert!(dead_letter_target("nope").is_err());
        assert!(
            dead_letter_target(r#"{"deadLetterTargetArn":"arn:aws:sns:eu-west-1:1:topic"}"#)
                .is_err()
        );
    }

    #[test]
    fn reasons_become_valid_attributes() {
        assert_eq!(attribute_text(""), "(no reason given)");
        assert_eq!(attribute_text("bad\u{0}job\n"), "bad\u{fffd}job\n");
        assert_eq!(attribute_text(&"é".repeat(5000)).chars().count(), 1024);
    }
}
