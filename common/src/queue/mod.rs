//! The job queue between ingest and the workers, behind one trait with two backends:
//!
//! - [`sqs::SqsQueue`]: Amazon SQS (production). `SendMessageBatch`, long-polling `ReceiveMessage`,
//!   `DeleteMessageBatch`, `ChangeMessageVisibility`, and a dead-letter queue.
//! - [`streams::StreamQueue`]: Redis Streams with a consumer group (the embedded default for one machine).
//!   `XADD`, `XREADGROUP`, `XACK`, `XAUTOCLAIM` for redelivery, a sorted set for delayed jobs and a
//!   dead-letter stream.
//!
//! [`open`] picks the backend from the queue URL: `https://sqs.<region>.amazonaws.com/<account>/<name>`
//! (or any `http(s)://` URL of an SQS-compatible endpoint) is SQS; `redis://host:port/db?queue=<name>`
//! (or `redis+cluster://...`) is Redis Streams.
//!
//! [`lanes`] holds the two lanes' queues (interactive and bulk) and derives the bulk lane's URL.
//!
//! Semantics shared by both, and checked by the same test suite against each: at-least-once delivery;
//! a received job is invisible to other consumers until it is acknowledged, released, or its visibility
//! timeout passes, after which it is delivered again with a higher receive count; dead-lettered jobs
//! keep their reason.

pub mod lanes;
pub mod sqs;
pub mod streams;

pub use lanes::Lanes;

use crate::job::{Job, JobDecodeError};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Most jobs one `send_batch` call hands to the backend at once (SQS's batch limit). Larger slices are
/// split by the backend.
pub const SEND_BATCH_MAX: usize = 10;

/// A queue of jobs.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// Enqueues every job, or fails: a job reported as sent is durably on the queue.
    async fn send_batch(&self, jobs: &[Job]) -> Result<(), QueueError>;

    /// Enqueues a job that becomes visible after `delay` (at most 15 minutes).
    async fn send_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError>;

    /// Waits up to `wait` for jobs and returns at most `max` of them (1 to 10). Each stays invisible to
    /// other consumers for the queue's visibility timeout unless acknowledged or released first.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError>;

    /// Removes received jobs for good.
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), QueueError>;

    /// Keeps a received job invisible for `visibility` from now (a long job's heartbeat).
    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError>;

    /// Makes a received job visible to every consumer again at once (used on shutdown).
    async fn release(&self, receipt: &Receipt) -> Result<(), QueueError>;

    /// Moves a received message to the dead-letter queue with a reason, and removes it from this queue.
    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError>;

    /// Reads back dead-lettered messages (body and reason), at most `max`. For operators and tests; it does
    /// not remove them.
    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError>;

    /// Moves dead letters back onto the queue as new messages (and out of the dead-letter queue): those
    /// `select` accepts, at most `max`, oldest first where the backend keeps an order. Returns how many.
    async fn redrive(&self, select: &SelectLetter, max: usize) -> Result<usize, QueueError>;

    /// Checks that the queue answers.
    async fn ping(&self) -> Result<(), QueueError>;

    /// Approximate number of jobs waiting (visible and delayed, not counting those in flight).
    async fn depth(&self) -> Result<u64, QueueError>;

    /// The backend's name for metrics and logs: `sqs` or `redis-streams`.
    fn backend(&self) -> &'static str;
}

/// A shared queue handle.
pub type SharedQueue = Arc<dyn Queue>;

/// A message taken off the queue.
#[derive(Debug, Clone)]
pub struct Received {
    /// The message text as it was sent (normally a [`Job`]).
    pub body: String,
    /// What acknowledges, extends, releases or dead-letters this delivery.
    pub receipt: Receipt,
    /// How many times this message has been received, this time included (1 for the first).
    pub receive_count: u32,
}

impl Received {
    /// Decodes the body as a job.
    pub fn job(&self) -> Result<Job, JobDecodeError> {
        Job::decode(&self.body)
    }
}

/// The backend's handle on one delivery of a message (an SQS receipt handle or a stream entry id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt(pub String);

/// Which dead letters a redrive takes.
pub type SelectLetter = dyn for<'d> Fn(&'d DeadLetter) -> bool + Send + Sync;

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub body: String,
    pub reason: String,
}

/// A queue failure. The message is for logs; callers answer 503 and never report a job as enqueued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("invalid queue URL: {0}")]
    Url(String),
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("queue refused the request: {0}")]
    Refused(String),
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}

/// Settings that apply to either backend.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// How long a received job stays invisible before it is delivered again (a worker's heartbeat
    /// extends it while the job runs).
    pub visibility_timeout: Duration,
    /// SQS only: the dead-letter queue's URL. When absent it is read from the queue's redrive policy.
    pub dead_letter_url: Option<String>,
    /// Redis Streams only: the key prefix (see [`crate::keys::Keyspace`]).
    pub key_prefix: String,
    /// Redis Streams only: this consumer's name in the group (unique per process).
    pub consumer: String,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            dead_letter_url: None,
            key_prefix: "fo:".into(),
            consumer: format!("consumer-{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// Which backend a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueUrl {
    /// An SQS queue URL, and the endpoint to call when it is not AWS's own (a local SQS server).
    Sqs {
        queue_url: String,
        endpoint: Option<String>,
        region: Option<String>,
    },
    /// A Redis URL (without the query) and the queue's name.
    RedisStreams { redis_url: String, name: String },
}

impl QueueUrl {
    pub fn parse(url: &str) -> Result<Self, QueueError> {
        // A cluster URL lists several hosts, which a URL parser refuses: read its query by hand.
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
        if matches!(
            scheme,
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster"
        ) {
            let (redis_url, query) = url.split_once('?').unwrap_or((url, ""));
            let name = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "queue")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| "jobs".to_owned());
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(QueueError::Url(
                    "the queue name must be letters, digits, - or _".into(),
                ));
            }
            let redis_url = redis_url.to_owned();
            return Ok(QueueUrl::RedisStreams { redis_url, name });
        }
        let parsed = url::Url::parse(url).map_err(|e| QueueError::Url(format!("{e}")))?;
        match parsed.scheme() {
            "http" | "https" => {
                let host = parsed
                    .host_str()
                    .ok_or_else(|| QueueError::Url("the URL has no host".into()))?;
                let segments: Vec<&str> = parsed
                    .path_segments()
                    .map(|s| s.filter(|x| !x.is_empty()).collect())
                    .unwrap_or_default();
                if segments.len() != 2 {
                    return Err(QueueError::Url(
                        "an SQS queue URL looks like https://sqs.<region>.amazonaws.com/<account-id>/<queue-name>".into(),
                    ));
                }
                let aws = host.ends_with(".amazonaws.com");
                let region = if aws {
                    host.split('.').nth(1).map(str::to_owned)
                } else {
                    None
                };
                let endpoint = if aws {
                    None
                } else {
                    Some(parsed[..url::Position::BeforePath].to_owned())
                };
                Ok(QueueUrl::Sqs {
                    queue_url: url.to_owned(),
                    endpoint,
                    region,
                })
            }
            other => Err(QueueError::Url(format!(
                "unsupported scheme {other:?}: use https://sqs.<region>.amazonaws.com/... for SQS or redis://host:port/0?queue=jobs for Redis Streams"
            ))),
        }
    }
}

/// Opens the queue a URL names.
pub async fn open(url: &str, options: QueueOptions) -> Result<SharedQueue, QueueError> {
    match QueueUrl::parse(url)? {
        QueueUrl::Sqs {
            queue_url,
            endpoint,
            region,
        } => Ok(Arc::new(
            sqs::SqsQueue::connect(&queue_url, endpoint.as_deref(), region.as_deref(), options)
                .await?,
        )),
        QueueUrl::RedisStreams { redis_url, name } => Ok(Arc::new(
            streams::StreamQueue::connect(&redis_url, &name, options).await?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_backend_from_the_url() {
        assert_eq!(
            QueueUrl::parse("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs").unwrap(),
            QueueUrl::Sqs {
                queue_url: "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs".into(),
                endpoint: None,
                region: Some("eu-west-1".into())
            }
        );
        assert_eq!(
            QueueUrl::parse("http://127.0.0.1:5055/123456789012/q1").unwrap(),
            QueueUrl::Sqs {
                queue_url: "http://127.0.0.1:5055/123456789012/q1".into(),
                endpoint: Some("http://127.0.0.1:5055".into()),
                region: None
            }
        );
        assert_eq!(
            QueueUrl::parse("redis://127.0.0.1:6379/0?queue=fanout").unwrap(),
            QueueUrl::RedisStreams {
                redis_url: "redis://127.0.0.1:6379/0".into(),
                name: "fanout".into()
            }
        );
        assert_eq!(
            QueueUrl::parse("redis://127.0.0.1:6379").unwrap(),
            QueueUrl::RedisStreams {
                redis_url: "redis://127.0.0.1:6379".into(),
                name: "jobs".into()
            }
        );
        assert_eq!(
            QueueUrl::parse("redis+cluster://a:1,b:2?queue=q").unwrap(),
            QueueUrl::RedisStreams {
                redis_url: "redis+cluster://a:1,b:2".into(),
                name: "q".into()
            }
        );
        // The TLS forms the state URL accepts (common::store): a password, a database, several seeds.
        for (url, redis_url) in [
            (
                "rediss://:s3cr%2Ft@master.example.cache.amazonaws.com:6379/0?queue=jobs",
                "rediss://:s3cr%2Ft@master.example.cache.amazonaws.com:6379/0",
            ),
            ("rediss://127.0.0.1:6380", "rediss://127.0.0.1:6380"),
            (
                "rediss+cluster://:t@a:1,b:2?queue=jobs",
                "rediss+cluster://:t@a:1,b:2",
            ),
        ] {
            assert_eq!(
                QueueUrl::parse(url).unwrap(),
                QueueUrl::RedisStreams {
                    redis_url: redis_url.into(),
                    name: "jobs".into()
                },
                "{url}"
            );
        }
        assert!(QueueUrl::parse("amqp://x").is_err());
        assert!(QueueUrl::parse("https://sqs.eu-west-1.amazonaws.com/jobs").is_err());
        assert!(QueueUrl::parse("redis://h?queue=a{b}").is_err());
    }
}
