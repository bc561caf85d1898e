//! Leftovers: what a job could not deliver goes back on the queue, never silently away.
//!
//! - Recipients still throttled or failing after their retries, or refused with 403, go back as a smaller
//!   job (`Target::Connections` with only them) with `attempt + 1`, delayed by [`crate::retry::requeue_delay`].
//! - Past `FANOUT_MAX_ATTEMPTS`, and at once for a payload API Gateway refuses as too large, they go to the
//!   dead-letter queue as a job of their own, with a reason that says how many and why.
//! - Recipients not reached because the worker is shutting down go back at once, attempt unchanged.
//!
//! [`send`] puts the new jobs on the queue; [`finish`] then acknowledges the original message, or moves
//! it to the dead-letter queue with the dead leftovers as its body (one operation that also removes the
//! original). The caller records the outcome in between: acknowledged only after it is recorded.

use crate::dispatch::Why;
use crate::retry::requeue_delay;
use common::job::{BroadcastRef, Job, Target};
use common::queue::{Queue, QueueError, Received};
use std::collections::BTreeMap;
use std::time::Duration;

/// A job's leftovers, sorted into what happens to them.
#[derive(Debug, Default)]
pub struct Settlement {
    /// Retried later, with `attempt + 1`.
    pub retry: Option<Job>,
    /// Put back at once (shutdown), same attempt.
    pub resume: Option<Job>,
    /// Dead-lettered: the job, its reason text and a metric label.
    pub dead: Option<(Job, String, &'static str)>,
}

impl Settlement {
    /// Recipients handed on to a later job.
    pub fn handed_on(&self) -> usize {
        [&self.retry, &self.resume]
            .into_iter()
            .flatten()
            .map(ids_len)
            .sum()
    }

    /// Recipients dead-lettered.
    pub fn dead_count(&self) -> usize {
        self.dead.as_ref().map_or(0, |(job, _, _)| ids_len(job))
    }
}

fn ids_len(job: &Job) -> usize {
    match &job.target {
        Target::Connections { ids } => ids.len(),
        _ => 0,
    }
}

/// A job for `ids` that continues `job`, in the same broadcast (`report` names it when `job` is a
/// broadcast that delivered directly).
fn continuation(job: &Job, ids: Vec<String>, attempt: u32, report: Option<&str>) -> Job {
    let mut next = Job::new(Target::Connections { ids }, job.action.clone());
    next.enqueued_at_ms = job.enqueued_at_ms;
    next.attempt = attempt;
    next.lane = job.lane;
    next.broadcast = job.broadcast.clone().or_else(|| {
        report.map(|id| BroadcastRef {
            id: id.to_owned(),
            index: 0,
        })
    });
    next
}

/// Sorts leftovers.
pub fn split(
    job: &Job,
    leftovers: Vec<(String, Why)>,
    max_attempts: u32,
    report: Option<&str>,
) -> Settlement {
    let mut retry = Vec::new();
    let mut resume = Vec::new();
    let mut dead: BTreeMap<Why, Vec<String>> = BTreeMap::new();
    let exhausted = job.attempt + 1 >= max_attempts;
    for (id, why) in leftovers {
        if why == Why::Shutdown {
            resume.push(id);
        } else if why.is_permanent() || exhausted {
            dead.entry(why).or_default().push(id);
        } else {
            retry.push(id);
        }
    }
    let mut s = Settlement::default();
    if !retry.is_empty() {
        s.retry = Some(continuation(job, retry, job.attempt + 1, report));
    }
    if !resume.is_empty() {
        s.resume = Some(continuation(job, resume, job.attempt, report));
    }
    if !dead.is_empty() {
        let label = dead
            .iter()
            .max_by_key(|(_, ids)| ids.len())
            .map(|(why, _)| why.label())
            .unwrap_or("failed");
        let parts: Vec<String> = dead
            .iter()
            .map(|(why, ids)| format!("{} connection(s) {}", ids.len(), explain(*why)))
            .collect();
        let reason = format!(
            "undelivered after attempt {} of {max_attempts}: {}",
            job.attempt + 1,
            parts.join("; ")
        );
        let ids = dead.into_values().flatten().collect();
        s.dead = Some((continuation(job, ids, job.attempt, report), reason, label));
    }
    s
}

fn explain(why: Why) -> &'static str {
    match why {
        Why::Throttled => "still answered 429 LimitExceededException",
        Why::Failed(_) => "still failed (5xx, timeout or network)",
        Why::Forbidden => {
            "answered 403 ForbiddenException (check the endpoint, stage, region and execute-api:ManageConnections)"
        }
        Why::Unroutable => "belong to an API id missing from FANOUT_API_GATEWAYS",
        Why::PayloadTooLarge => "refused the payload as too large (413)",
        Why::Shutdown => "were not reached before shutdown",
    }
}

/// Runs a queue operation up to three times, with a short backoff.
async fn patiently<T, F, Fut>(op: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    use backon::{ExponentialBuilder, Retryable};
    op.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_times(2)
            .with_jitter(),
    )
    .await
}

/// Puts the retry and resume jobs on the queue.
pub async fn send(
    queue: &dyn Queue,
    settlement: &Settlement,
    base_delay: Duration,
) -> Result<(), QueueError> {
    if let Some(job) = &settlement.retry {
        let delay = requeue_delay(base_delay, job.attempt);
        patiently(|| queue.send_delayed(job, delay)).await?;
    }
    if let Some(job) = &settlement.resume {
        patiently(|| queue.send_batch(std::slice::from_ref(job))).await?;
    }
    Ok(())
}

/// Acknowledges `message`, or dead-letters it with the dead leftovers as its body.
pub async fn finish(
    queue: &dyn Queue,
    message: &Received,
    settlement: &Settlement,
) -> Result<(), QueueError> {
    match &settlement.dead {
        None => patiently(|| queue.ack(std::slice::from_ref(&message.receipt))).await,
        Some((job, reason, _)) => {
            let letter = Received {
                body: job.encode(),
                receipt: message.receipt.clone(),
                receive_count: message.receive_count,
            };
            patiently(|| queue.dead_letter(&letter, reason)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::RetryReason;

    fn job(attempt: u32) -> Job {
        let mut j = Job::new(
            Target::Connections {
                ids: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            },
            common::job::Action::Disconnect,
        );
        j.attempt = attempt;
        j
    }

    #[test]
    fn leftovers_are_sorted_by_what_can_help() {
        let left = vec![
            ("a".to_owned(), Why::Throttled),
            ("b".to_owned(), Why::PayloadTooLarge),
            ("c".to_owned(), Why::Shutdown),
            ("d".to_owned(), Why::Failed(RetryReason::Timeout)),
        ];
        let s = split(&job(0), left, 3, Some("bcast-1"));
        let retry = s.retry.as_ref().unwrap();
        assert_eq!(retry.attempt, 1);
        assert_eq!(
            retry.target,
            Target::Connections {
                ids: vec!["a".into(), "d".into()]
            }
        );
        assert_eq!(retry.broadcast.as_ref().unwrap().id, "bcast-1");
        assert_eq!(s.resume.as_ref().unwrap().attempt, 0);
        let (dead, reason, label) = s.dead.as_ref().unwrap();
        assert_eq!(ids_len(dead), 1);
        assert_eq!(*label, "payload_too_large");
        assert!(reason.contains("413"), "{reason}");
        assert_eq!((s.handed_on(), s.dead_count()), (3, 1));
    }

    #[test]
    fn the_last_attempt_dead_letters_everything_but_shutdown() {
        let left = vec![
            ("a".to_owned(), Why::Forbidden),
            ("b".to_owned(), Why::Forbidden),
            ("c".to_owned(), Why::Throttled),
        ];
        let s = split(&job(2), left, 3, None);
        assert!(s.retry.is_none());
        let (dead, reason, label) = s.dead.as_ref().unwrap();
        assert_eq!(ids_len(dead), 3);
        assert_eq!(*label, "forbidden");
        assert!(reason.contains("attempt 3 of 3"), "{reason}");
        assert!(reason.contains("2 connection(s) answered 403"), "{reason}");
        assert!(dead.broadcast.is_none());
    }
}
