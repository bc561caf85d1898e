//! The job: the one message that travels on the queue, from ingest (or a planning worker) to the workers.
//!
//! A job names its target (a channel, a subject's connections, a list of connection ids, or everyone),
//! says what to do (post a payload, or close the connections) and carries the payload exactly as the
//! clients will receive it. The payload is embedded as raw JSON, never as an escaped string, so a
//! 128 KiB payload stays 128 KiB on the queue and a full chunk job still fits SQS's 256 KiB limit.
//!
//! The schema is versioned (`v`); a worker refuses (dead-letters) a version it does not know instead of
//! guessing.
//!
//! A job also names its [`Lane`]: `interactive` (a few recipients, latency matters) or `bulk` (a large
//! broadcast and its chunks). Each lane has a queue of its own, so a direct message never waits behind a
//! million-recipient broadcast. The field is left out for `interactive` and read as `interactive` when
//! absent, so jobs written before lanes existed still read (the version stays 1).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::time::{SystemTime, UNIX_EPOCH};

/// The schema version this build writes and reads.
pub const JOB_VERSION: u32 = 1;

/// One unit of fan-out work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Schema version, [`JOB_VERSION`].
    pub v: u32,
    /// Unique id (UUID v7, so ids sort by creation time). Chunk jobs of one broadcast have their own ids
    /// and name the broadcast in [`Job::broadcast`].
    pub id: String,
    /// When the originating request was accepted, in milliseconds since the Unix epoch. Chunk and retry
    /// jobs keep the original value, so end-to-end latency is measured from the first enqueue.
    pub enqueued_at_ms: u64,
    /// How many times this work has been attempted and put back (0 for a new job).
    #[serde(default)]
    pub attempt: u32,
    /// Who receives it.
    pub target: Target,
    /// What to do for each recipient.
    pub action: Action,
    /// Set on chunk jobs: the broadcast this chunk belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<BroadcastRef>,
    /// The lane (and so the queue) the job travels on. Decided where the job is made (ingest's publish,
    /// the planner for chunk jobs, which take their broadcast's lane) and kept by its retries.
    #[serde(default, skip_serializing_if = "Lane::is_interactive")]
    pub lane: Lane,
}

/// Which of the two queues a job travels on, and which share of a worker it may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Few recipients (one connection, a user's connections, a small channel): latency matters. Workers
    /// keep a share of their jobs in hand and of their calls in flight for it, and its calls take their
    /// tokens from the send budget before bulk ones.
    #[default]
    Interactive,
    /// Everyone, a large channel, and every chunk planned from them: throughput matters.
    Bulk,
}

impl Lane {
    /// Both lanes, interactive first.
    pub const ALL: [Lane; 2] = [Lane::Interactive, Lane::Bulk];

    /// The lane's name, also its metric label.
    pub fn label(self) -> &'static str {
        match self {
            Lane::Interactive => "interactive",
            Lane::Bulk => "bulk",
        }
    }

    pub fn is_interactive(&self) -> bool {
        *self == Lane::Interactive
    }

    /// The lane of a new job for `target`, given the number of members of a channel target
    /// (`channel_members`; ignored for other kinds) and the size from which a channel is bulk.
    /// Connection ids and a user's connections are interactive, everyone is bulk.
    pub fn for_target(target: &Target, channel_members: u64, bulk_threshold: u64) -> Lane {
        match target {
            Target::Connections { .. } | Target::Subject { .. } => Lane::Interactive,
            Target::Channel { .. } if channel_members < bulk_threshold => Lane::Interactive,
            Target::Channel { .. } | Target::All => Lane::Bulk,
        }
    }
}

/// The recipients of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// Every connection in a channel.
    Channel { channel: String },
    /// Every connection of one subject (user).
    Subject { subject: String },
    /// These connection ids.
    Connections { ids: Vec<String> },
    /// Every connection.
    All,
}

/// What a job does to each recipient. Externally tagged (`{"post":{"payload":...}}` or `"disconnect"`):
/// serde buffers internally tagged enums in a way that cannot hold a raw JSON payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `PostToConnection` with this payload (JSON, at most 128 KiB).
    Post { payload: Box<RawValue> },
    /// `DeleteConnection`: close the socket (a kick).
    Disconnect,
    /// Deliver an ordered channel's backlog ([`crate::ordered`]), oldest first, one message (or, with
    /// `coalesce`, one batch of the messages waiting) at a time. The target is the channel.
    Drain {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        coalesce: bool,
    },
}

/// The broadcast a chunk job belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastRef {
    pub id: String,
    pub index: u32,
}

/// Why a queue message could not be read as a job.
#[derive(Debug, thiserror::Error)]
pub enum JobDecodeError {
    #[error("not a job: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported job version {0}")]
    Version(u32),
}

impl Job {
    /// A new job (attempt 0, a fresh id, enqueued now).
    pub fn new(target: Target, action: Action) -> Self {
        Self {
            v: JOB_VERSION,
            id: uuid::Uuid::now_v7().to_string(),
            enqueued_at_ms: now_ms(),
            attempt: 0,
            target,
            action,
            broadcast: None,
            lane: Lane::Interactive,
        }
    }

    /// A job that posts `payload` to `target`.
    pub fn post(target: Target, payload: Box<RawValue>) -> Self {
        Self::new(target, Action::Post { payload })
    }

    /// This job on `lane`.
    pub fn in_lane(mut self, lane: Lane) -> Self {
        self.lane = lane;
        self
    }

    /// The job as queue message text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a job always serialises")
    }

    /// Reads queue message text, refusing versions this build does not know.
    pub fn decode(text: &str) -> Result<Self, JobDecodeError> {
        let job: Job = serde_json::from_str(text)?;
        if job.v != JOB_VERSION {
            return Err(JobDecodeError::Version(job.v));
        }
        Ok(job)
    }

    /// The payload of a `Post` job.
    pub fn payload(&self) -> Option<&RawValue> {
        match &self.action {
            Action::Post { payload } => Some(payload),
            Action::Disconnect | Action::Drain { .. } => None,
        }
    }

    /// A short label for metrics: the target kind.
    pub fn target_kind(&self) -> &'static str {
        match self.target {
            Target::Channel { .. } => "channel",
            Target::Subject { .. } => "subject",
            Target::Connections { .. } => "connections",
            Target::All => "all",
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Serialises a value as a raw JSON payload.
pub fn payload_of<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("payload values always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_payload_bytes() {
        let payload =
            RawValue::from_string(r#"{"type":"system","message":"hi \"there\""}"#.into()).unwrap();
        let job = Job::post(
            Target::Channel {
                channel: "general".into(),
            },
            payload,
        );
        let text = job.encode();
        assert!(
            text.contains(r#""payload":{"type":"system","message":"hi \"there\""}"#),
            "{text}"
        );
        let back = Job::decode(&text).unwrap();
        assert_eq!(
            back.payload().unwrap().get(),
            r#"{"type":"system","message":"hi \"there\""}"#
        );
        assert_eq!(
            back.target,
            Target::Channel {
                channel: "general".into()
            }
        );
        assert_eq!(back.id, job.id);
    }

    #[test]
    fn wire_shape_is_stable() {
        let mut job = Job::new(
            Target::Connections {
                ids: vec!["a=".into()],
            },
            Action::Disconnect,
        );
        job.id = "j1".into();
        job.enqueued_at_ms = 5;
        assert_eq!(
            job.encode(),
            r#"{"v":1,"id":"j1","enqueued_at_ms":5,"attempt":0,"target":{"kind":"connections","ids":["a="]},"action":"disconnect"}"#
        );
    }

    #[test]
    fn a_new_job_is_attempt_zero_of_this_version_enqueued_now() {
        let before = now_ms();
        let job = Job::new(Target::All, Action::Disconnect);
        let after = now_ms();
        assert_eq!((job.v, job.attempt, job.broadcast), (JOB_VERSION, 0, None));
        assert!((before..=after).contains(&job.enqueued_at_ms));
        // A real clock: later than 2025-01-01, and ids are fresh.
        assert!(before > 1_735_689_600_000, "{before}");
        assert_ne!(job.id, Job::new(Target::All, Action::Disconnect).id);
    }

    #[test]
    fn target_kinds_and_payloads() {
        let post = |target| Job::post(target, payload_of(&serde_json::json!({"n": 1})));
        let channel = post(Target::Channel {
            channel: "general".into(),
        });
        assert_eq!(channel.target_kind(), "channel");
        assert_eq!(channel.payload().unwrap().get(), r#"{"n":1}"#);
        let subject = post(Target::Subject {
            subject: "u1".into(),
        });
        assert_eq!(subject.target_kind(), "subject");
        let ids = post(Target::Connections { ids: vec![] });
        assert_eq!(ids.target_kind(), "connections");
        assert_eq!(post(Target::All).target_kind(), "all");
        assert!(
            Job::new(Target::All, Action::Disconnect)
                .payload()
                .is_none()
        );
    }

    #[test]
    fn the_lane_is_written_only_for_bulk_and_read_as_interactive_when_absent() {
        let mut job = Job::new(Target::All, Action::Disconnect).in_lane(Lane::Bulk);
        job.id = "j1".into();
        job.enqueued_at_ms = 5;
        let text = job.encode();
        assert_eq!(
            text,
            r#"{"v":1,"id":"j1","enqueued_at_ms":5,"attempt":0,"target":{"kind":"all"},"action":"disconnect","lane":"bulk"}"#
        );
        assert_eq!(Job::decode(&text).unwrap().lane, Lane::Bulk);
        // A job written before lanes existed.
        let old =
            r#"{"v":1,"id":"j1","enqueued_at_ms":5,"target":{"kind":"all"},"action":"disconnect"}"#;
        assert_eq!(Job::decode(old).unwrap().lane, Lane::Interactive);
        assert!(Job::decode(&old.replace("}", r#","lane":"fast"}"#)).is_err());
    }

    #[test]
    fn lanes_by_target_kind_and_the_threshold_edge() {
        let channel = Target::Channel {
            channel: "room".into(),
        };
        assert_eq!(Lane::for_target(&channel, 0, 500), Lane::Interactive);
        assert_eq!(Lane::for_target(&channel, 499, 500), Lane::Interactive);
        assert_eq!(Lane::for_target(&channel, 500, 500), Lane::Bulk);
        assert_eq!(Lane::for_target(&Target::All, 0, 500), Lane::Bulk);
        let subject = Target::Subject {
            subject: "ada".into(),
        };
        assert_eq!(Lane::for_target(&subject, 10_000, 500), Lane::Interactive);
        let ids = Target::Connections {
            ids: vec!["a".into()],
        };
        assert_eq!(Lane::for_target(&ids, 10_000, 500), Lane::Interactive);
        assert_eq!(
            Lane::ALL.map(Lane::label),
            ["interactive", "bulk"],
            "metric labels"
        );
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        let text =
            r#"{"v":2,"id":"x","enqueued_at_ms":1,"target":{"kind":"all"},"action":"disconnect"}"#;
        assert!(matches!(Job::decode(text), Err(JobDecodeError::Version(2))));
        assert!(matches!(
            Job::decode("nope"),
            Err(JobDecodeError::Malformed(_))
        ));
    }

    #[test]
    fn full_payload_does_not_inflate() {
        // A payload made of characters that a string encoding would escape: embedding it raw keeps the job
        // within a few hundred bytes of the payload.
        let quotes = "\\\"".repeat(60_000);
        let payload = RawValue::from_string(format!("{{\"m\":\"{quotes}\"}}")).unwrap();
        let len = payload.get().len();
        let job = Job::post(Target::All, payload);
        assert!(job.encode().len() < len + 300);
    }
}
