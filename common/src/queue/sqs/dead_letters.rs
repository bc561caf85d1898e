//! The SQS dead-letter queue: finding it, moving a message into it with a reason, and reading it back.
//!
//! The dead-letter queue is [`QueueOptions::dead_letter_url`](crate::queue::QueueOptions), or the target
//! of this queue's `RedrivePolicy`, looked up at connect (and again on first use if that lookup could not
//! be made, e.g. a role allowed to send but not to read queue attributes). `dead_letter` sends the body
//! there with a [`REASON_ATTRIBUTE`] message attribute and then deletes it from this queue (two calls: if
//! the delete fails the message comes back and may be dead-lettered twice). A redrive is the way back:
//! each selected message is sent to this queue, then deleted from the dead-letter queue; the others are
//! made visible again at once.

use super::SqsQueue;
use super::transport::sdk_error;
use crate::queue::{DeadLetter, QueueError, Received, SelectLetter};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use std::collections::HashSet;

/// The message attribute that carries a dead letter's reason.
pub const REASON_ATTRIBUTE: &str = "reason";

/// Most characters of a dead letter's reason that are kept: the attribute counts towards the message size.
const REASON_MAX_CHARS: usize = 1024;

impl SqsQueue {
    /// The dead-letter queue's URL (`None` if the queue has none), looking it up once if not yet known.
    pub async fn dead_letter_url(&self) -> Result<Option<&str>, QueueError> {
        let url = self
            .dead_letter_url
            .get_or_try_init(|| self.discover_dead_letter_url())
            .await?;
        Ok(url.as_deref())
    }

    /// The dead-letter queue's URL or a refusal that says how to configure one.
    pub(super) async fn require_dead_letter_url(&self) -> Result<&str, QueueError> {
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

    /// Sends the body to the dead-letter queue with its reason, then deletes it from this queue.
    pub(super) async fn move_to_dead_letters(
        &self,
        message: &Received,
        reason: &str,
    ) -> Result<(), QueueError> {
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

    /// Reads back at most `max` dead letters without removing them. Messages that SQS moved to the
    /// dead-letter queue by itself (after the redrive policy's `maxReceiveCount`) have no reason
    /// attribute: their reason reads as empty.
    pub(super) async fn read_dead_letters(
        &self,
        max: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
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
}

impl SqsQueue {
    /// Moves the dead letters `select` accepts (at most `max`) back onto this queue.
    pub(super) async fn redrive_dead_letters(
        &self,
        select: &SelectLetter,
        max: usize,
    ) -> Result<usize, QueueError> {
        let dead_letter_url = self.require_dead_letter_url().await?;
        let mut seen = HashSet::new();
        let mut moved = 0;
        while moved < max {
            let out = self
                .client
                .receive_message()
                .queue_url(dead_letter_url)
                .max_number_of_messages(10)
                // Long enough to move them; the ones left are made visible again at once.
                .visibility_timeout(30)
                .wait_time_seconds(1)
                .message_attribute_names(REASON_ATTRIBUTE)
                .send()
                .await
                .map_err(|e| sdk_error("ReceiveMessage (dead-letter queue)", e))?;
            let mut new = 0;
            for message in out.messages() {
                let (Some(id), Some(handle)) = (message.message_id(), message.receipt_handle())
                else {
                    continue;
                };
                let first_time = seen.insert(id.to_owned());
                new += usize::from(first_time);
                let letter = DeadLetter {
                    body: message.body().unwrap_or_default().to_owned(),
                    reason: message
                        .message_attributes()
                        .and_then(|a| a.get(REASON_ATTRIBUTE))
                        .and_then(|v| v.string_value())
                        .unwrap_or_default()
                        .to_owned(),
                };
                if first_time && moved < max && select(&letter) {
                    self.client
                        .send_message()
                        .queue_url(&self.queue_url)
                        .message_body(&letter.body)
                        .send()
                        .await
                        .map_err(|e| sdk_error("SendMessage", e))?;
                    self.client
                        .delete_message()
                        .queue_url(dead_letter_url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .map_err(|e| sdk_error("DeleteMessage (dead-letter queue)", e))?;
                    moved += 1;
                } else {
                    self.client
                        .change_message_visibility()
                        .queue_url(dead_letter_url)
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .send()
                        .await
                        .map_err(|e| sdk_error("ChangeMessageVisibility (dead-letter queue)", e))?;
                }
            }
            if new == 0 {
                break;
            }
        }
        Ok(moved)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
