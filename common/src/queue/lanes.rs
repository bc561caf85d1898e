//! The two lanes' queues: every job travels on the queue of its [`Lane`], so a direct message is never
//! behind a broadcast's chunks on one queue.
//!
//! The interactive lane uses `FANOUT_QUEUE_URL`; the bulk lane uses `FANOUT_BULK_QUEUE_URL`, which, when
//! unset, is derived from the first ([`bulk_url`]): Redis Streams `?queue=jobs` becomes `?queue=jobs-bulk`
//! on the same Redis, and an SQS queue `.../jobs` becomes `.../jobs-bulk` (`.../jobs.fifo` becomes
//! `.../jobs-bulk.fifo`) in the same account and region. A deployment that sets nothing therefore has
//! two lanes on Redis Streams; on SQS the second queue must exist (the deploy templates create it), and
//! start-up says so if it does not.
//!
//! [`Lanes`] holds both queues; [`Lanes::send`] puts each job on its lane's queue.

use super::{QueueError, QueueOptions, QueueUrl, SharedQueue};
use crate::job::{Job, Lane};

/// The suffix that names the bulk lane's queue after the interactive one's.
pub const BULK_SUFFIX: &str = "-bulk";

/// The bulk lane's queue URL derived from the interactive one's (see the module documentation).
pub fn bulk_url(queue_url: &str) -> Result<String, QueueError> {
    match QueueUrl::parse(queue_url)? {
        QueueUrl::RedisStreams { redis_url, name } => {
            // Other query parameters than `queue` are not used by the queue: keep the URL without them.
            Ok(format!("{redis_url}?queue={name}{BULK_SUFFIX}"))
        }
        QueueUrl::Sqs { queue_url, .. } => {
            let (path, query) = match queue_url.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (queue_url.as_str(), None),
            };
            let path = path.trim_end_matches('/');
            let (base, name) = path
                .rsplit_once('/')
                .ok_or_else(|| QueueError::Url("the SQS queue URL has no queue name".into()))?;
            let name = match name.strip_suffix(".fifo") {
                Some(stem) => format!("{stem}{BULK_SUFFIX}.fifo"),
                None => format!("{name}{BULK_SUFFIX}"),
            };
            let mut url = format!("{base}/{name}");
            if let Some(q) = query {
                url = format!("{url}?{q}");
            }
            Ok(url)
        }
    }
}

/// The bulk lane's URL: `explicit` when given (and not empty), else derived by [`bulk_url`]. Refuses a
/// bulk queue that is the interactive one, which would put both lanes back on one queue.
pub fn resolve_bulk_url(queue_url: &str, explicit: Option<&str>) -> Result<String, QueueError> {
    let url = match explicit.filter(|u| !u.is_empty()) {
        Some(url) => {
            QueueUrl::parse(url)?;
            url.to_owned()
        }
        None => bulk_url(queue_url)?,
    };
    if QueueUrl::parse(&url)? == QueueUrl::parse(queue_url)? {
        return Err(QueueError::Url(
            "the bulk lane's queue must differ from FANOUT_QUEUE_URL (leave FANOUT_BULK_QUEUE_URL unset for QUEUE-bulk)".into(),
        ));
    }
    Ok(url)
}

/// Both lanes' queues.
#[derive(Debug, Clone)]
pub struct Lanes {
    pub interactive: SharedQueue,
    pub bulk: SharedQueue,
}

impl Lanes {
    /// Opens both queues with the same options and checks that each exists: a queue that refuses the
    /// check (missing, or not this process's to use) is a configuration error ([`QueueError::Url`], not
    /// retried) that names the setting to fix; one that does not answer yet is left to the first use.
    pub async fn open(
        queue_url: &str,
        bulk_queue_url: &str,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        let lanes = Self {
            interactive: super::open(queue_url, options.clone()).await?,
            bulk: super::open(bulk_queue_url, options).await?,
        };
        for lane in Lane::ALL {
            if let Err(QueueError::Refused(e)) = lanes.get(lane).ping().await {
                let setting = match lane {
                    Lane::Interactive => "FANOUT_QUEUE_URL",
                    Lane::Bulk => {
                        "FANOUT_BULK_QUEUE_URL (default: FANOUT_QUEUE_URL's queue name + \"-bulk\")"
                    }
                };
                return Err(QueueError::Url(format!(
                    "the {} lane's queue refused a call ({e}): create it, or name an existing one in {setting}",
                    lane.label()
                )));
            }
        }
        Ok(lanes)
    }

    /// The queue of `lane`.
    pub fn get(&self, lane: Lane) -> &SharedQueue {
        match lane {
            Lane::Interactive => &self.interactive,
            Lane::Bulk => &self.bulk,
        }
    }

    /// Enqueues every job on its lane's queue, or fails (jobs of the lane that answered may be on it).
    pub async fn send(&self, jobs: &[Job]) -> Result<(), QueueError> {
        if jobs.iter().all(|j| j.lane == jobs[0].lane) {
            if let Some(first) = jobs.first() {
                self.get(first.lane).send_batch(jobs).await?;
            }
            return Ok(());
        }
        for lane in Lane::ALL {
            let these: Vec<Job> = jobs.iter().filter(|j| j.lane == lane).cloned().collect();
            if !these.is_empty() {
                self.get(lane).send_batch(&these).await?;
            }
        }
        Ok(())
    }

    /// Checks that both queues answer.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let (a, b) = tokio::join!(self.interactive.ping(), self.bulk.ping());
        a.and(b)
    }

    /// Jobs waiting on both queues.
    pub async fn depth(&self) -> Result<u64, QueueError> {
        let (a, b) = tokio::join!(self.interactive.depth(), self.bulk.depth());
        Ok(a? + b?)
    }

    /// The backends' name (both lanes use the same kind unless configured otherwise).
    pub fn backend(&self) -> &'static str {
        self.interactive.backend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bulk_queue_is_derived_from_the_interactive_one() {
        for (from, to) in [
            (
                "redis://127.0.0.1:6379/0?queue=jobs",
                "redis://127.0.0.1:6379/0?queue=jobs-bulk",
            ),
            ("redis://h:1", "redis://h:1?queue=jobs-bulk"),
            (
                "redis+cluster://a:1,b:2?queue=q",
                "redis+cluster://a:1,b:2?queue=q-bulk",
            ),
            (
                "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs-bulk",
            ),
            (
                "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs-bulk.fifo",
            ),
            (
                "http://127.0.0.1:5055/123456789012/q1/",
                "http://127.0.0.1:5055/123456789012/q1-bulk",
            ),
        ] {
            assert_eq!(bulk_url(from).unwrap(), to, "{from}");
            assert_eq!(resolve_bulk_url(from, None).unwrap(), to, "{from}");
            assert_eq!(resolve_bulk_url(from, Some("")).unwrap(), to, "{from}");
        }
        assert!(bulk_url("amqp://x").is_err());
    }

    #[test]
    fn an_explicit_bulk_queue_wins_and_must_be_another_queue() {
        let q = "redis://127.0.0.1:6379/0?queue=jobs";
        assert_eq!(
            resolve_bulk_url(q, Some("redis://127.0.0.1:6379/0?queue=big")).unwrap(),
            "redis://127.0.0.1:6379/0?queue=big"
        );
        let same = resolve_bulk_url(q, Some("redis://127.0.0.1:6379/0")).unwrap_err();
        assert!(same.to_string().contains("must differ"), "{same}");
        assert!(resolve_bulk_url(q, Some("amqp://x")).is_err());
    }
}
