//! The worker's configuration: command-line flags with `FANOUT_*` environment variables (the shared ones
//! named as in ingest: `FANOUT_REDIS_URL`, `FANOUT_QUEUE_URL`, `FANOUT_API_GATEWAYS`, `FANOUT_KEY_PREFIX`),
//! validated once at start-up into [`Settings`] with messages that name the variable. Run
//! `fanout-worker --help` for every flag with its default.

use clap::Parser;
use common::config::{SharedArgs, SharedConfigError};
use common::gateways::Gateways;
use common::telemetry::LogFormat;
use std::net::SocketAddr;
use std::time::Duration;

/// The fan-out worker: takes jobs off the queue and delivers them through the Management API.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "fanout-worker",
    version,
    about = "Takes fan-out jobs off the queue and delivers them to API Gateway WebSocket connections.",
    long_about = "Takes fan-out jobs off the queue (SQS or Redis Streams), expands channel, user and broadcast \
targets from Redis into chunk jobs that many workers share, and delivers each payload with the API Gateway \
Management API (PostToConnection, DeleteConnection). Every worker of a fleet takes its send budget from one \
token bucket in Redis, so adding workers never turns into a storm of 429s.\n\nEvery flag can also be set through \
the environment variable shown; lists are comma-separated. AWS credentials come from the usual AWS chain \
(environment, profile, container or instance role).",
    subcommand_negates_reqs = true
)]
pub struct Config {
    #[command(flatten)]
    pub shared: SharedArgs,

    /// An operator command instead of running the worker.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// SQS only: the dead-letter queue's URL. Default: read from the queue's redrive policy.
    #[arg(long, env = "FANOUT_DEAD_LETTER_QUEUE_URL")]
    pub dead_letter_queue_url: Option<String>,

    /// Address of the operations listener (/metrics, /healthz).
    #[arg(long, env = "FANOUT_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,

    /// Concurrent receive loops on each lane's queue (interactive and bulk).
    #[arg(long, env = "FANOUT_POLLERS", default_value_t = 2)]
    pub pollers: usize,

    /// Most jobs held at once (received and not finished). Pollers receive only while below it.
    #[arg(long, env = "FANOUT_MAX_JOBS_IN_HAND", default_value_t = 16)]
    pub max_jobs_in_hand: usize,

    /// Most Management API calls in flight at once, over all jobs. By Little's law, the account's
    /// 10,000 requests/s at a 30 ms round trip need about 300 in flight fleet-wide.
    #[arg(long, env = "FANOUT_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,

    /// Share of FANOUT_MAX_JOBS_IN_HAND and of FANOUT_MAX_IN_FLIGHT that only the interactive lane may use,
    /// in percent (rounded up, always leaving the bulk lane at least one): the bulk lane (broadcasts and
    /// their chunks) never holds more than the rest, so a direct message never waits for room behind a
    /// broadcast; the interactive lane may use everything the bulk lane does not. Default 10: 2 of 16
    /// jobs and 26 of 256 calls, about 860 interactive calls/s at a 30 ms round trip, while bulk keeps 90 %.
    /// 0 to 90.
    #[arg(
        long,
        env = "FANOUT_INTERACTIVE_RESERVED_PERCENT",
        default_value_t = 10
    )]
    pub interactive_reserved_percent: u32,

    /// Longest wait of one receive call (SQS long polling is at most 20 s). Shutdown waits for a receive
    /// in progress (and releases what it brings), so this also bounds that wait.
    #[arg(long, env = "FANOUT_RECEIVE_WAIT_SECS", default_value_t = 10)]
    pub receive_wait_secs: u64,

    /// How long a received job stays hidden from other workers, in seconds (default 5); a heartbeat
    /// extends it every third of this while the job runs, so this is also how soon the jobs of a worker
    /// that died come back (within this, plus one receive). A heartbeat that cannot extend for four fifths
    /// of it stops the job. Applied to every receive, on SQS too (whatever the queue's own default).
    #[arg(long, env = "FANOUT_VISIBILITY_TIMEOUT_SECS", default_value_t = 5)]
    pub visibility_timeout_secs: u64,

    /// Connection ids per chunk job when a target is split; targets up to this size are delivered by
    /// the job that names them. 1 to 1000 (a chunk must fit SQS's 256 KiB with a full payload).
    #[arg(long, env = "FANOUT_CHUNK_SIZE", default_value_t = 500)]
    pub chunk_size: usize,

    /// Timeout of one Management API call, in milliseconds (SDK calls have been seen to hang).
    #[arg(long, env = "FANOUT_CALL_TIMEOUT_MS", default_value_t = 5000)]
    pub call_timeout_ms: u64,

    /// Which Management API client delivers: `lean` (default) signs SigV4 itself with a signing key cached
    /// per day and region, on a pooled hyper/rustls client (HTTP/1.1 keep-alive, HTTP/2 where offered),
    /// at about the CPU cost of a plain HTTP POST (a seventh of the SDK's); `sdk` uses
    /// aws-sdk-apigatewaymanagement, the reference implementation. Both read credentials from the default
    /// AWS chain, sign for the region of the gateway entry (API_ID/STAGE@REGION) or AWS_REGION, use the
    /// same timeout and classify answers the same way.
    #[arg(
        long,
        env = "FANOUT_DELIVERY_CLIENT",
        value_enum,
        default_value = "lean"
    )]
    pub delivery_client: DeliveryClient,

    /// Retries of one call within a job (429, 5xx, timeouts), with jittered exponential backoff.
    #[arg(long, env = "FANOUT_RETRIES", default_value_t = 4)]
    pub retries: usize,

    /// First retry delay, in milliseconds; doubles on each retry, with jitter.
    #[arg(long, env = "FANOUT_RETRY_MIN_DELAY_MS", default_value_t = 50)]
    pub retry_min_delay_ms: u64,

    /// Longest retry delay, in milliseconds.
    #[arg(long, env = "FANOUT_RETRY_MAX_DELAY_MS", default_value_t = 2000)]
    pub retry_max_delay_ms: u64,

    /// How long after its `$connect` a connection that answers 410 is retried rather than forgotten, in
    /// milliseconds. API Gateway answers 410 until the `$connect` integration has returned, so a message
    /// published meanwhile (the connection's own presence join, say) would otherwise remove it. Retries
    /// in that window follow the retry delays. Must cover ingest's `$connect` time; 0 turns it off.
    #[arg(long, env = "FANOUT_CONNECT_GRACE_MS", default_value_t = 10_000)]
    pub connect_grace_ms: u64,

    /// Attempts of a job (each one a queue round trip with the recipients still undelivered) before its
    /// leftovers go to the dead-letter queue.
    #[arg(long, env = "FANOUT_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,

    /// Delay before a requeued job's first new attempt, in milliseconds; doubles per attempt, at most
    /// 15 minutes (SQS rounds up to whole seconds).
    #[arg(long, env = "FANOUT_REQUEUE_DELAY_MS", default_value_t = 2000)]
    pub requeue_delay_ms: u64,

    /// Receives of one queue message after which it is dead-lettered unread (a job that keeps killing
    /// workers, or keeps failing before its outcome can be recorded).
    #[arg(long, env = "FANOUT_MAX_RECEIVES", default_value_t = 10)]
    pub max_receives: u32,

    /// The account's Management API budget, in requests per second, shared by every worker (API Gateway's
    /// default is 10,000 per account and region; 2,500 in the smaller regions).
    #[arg(long, env = "FANOUT_ACCOUNT_RATE_PER_SEC", default_value_t = 10_000)]
    pub account_rate_per_sec: u32,

    /// The account's burst (API Gateway's bucket holds 5,000 requests; 1,250 in the smaller regions).
    #[arg(long, env = "FANOUT_ACCOUNT_BURST", default_value_t = 5_000)]
    pub account_burst: u32,

    /// Share of the configured budget and burst the fleet never uses, in percent. The governor learns the
    /// budget the gateway really grants (other APIs of the account spend from it too) from its 429s, so
    /// this only keeps a configured budget that is exactly right from drawing 429s on timing jitter.
    #[arg(long, env = "FANOUT_RATE_HEADROOM_PERCENT", default_value_t = 2)]
    pub rate_headroom_percent: u32,

    /// Name of the shared token bucket: workers serving the same account and region use the same name.
    #[arg(long, env = "FANOUT_RATE_BUCKET", default_value = "default")]
    pub rate_bucket: String,

    /// How long a broadcast's delivery report is kept, in seconds.
    #[arg(long, env = "FANOUT_REPORT_TTL_SECS", default_value_t = 86_400)]
    pub report_ttl_secs: u64,

    /// On SIGTERM: how long jobs in hand may run before what is left is put back on the queue, in seconds.
    #[arg(long, env = "FANOUT_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
}

/// Operator commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// The dead-letter queue: list, show or redrive its jobs (the queue and, for SQS, its dead-letter
    /// queue come from the same settings as the worker's).
    Dlq {
        /// Which lane's queue (and its dead-letter queue): interactive (FANOUT_QUEUE_URL) or bulk
        /// (FANOUT_BULK_QUEUE_URL).
        #[arg(long, value_enum, default_value = "interactive")]
        lane: LaneArg,
        #[command(subcommand)]
        action: DlqAction,
    },
}

/// A lane named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LaneArg {
    Interactive,
    Bulk,
}

impl From<LaneArg> for common::job::Lane {
    fn from(lane: LaneArg) -> Self {
        match lane {
            LaneArg::Interactive => common::job::Lane::Interactive,
            LaneArg::Bulk => common::job::Lane::Bulk,
        }
    }
}

/// What `fanout-worker dlq` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqAction {
    /// One line per dead letter: job id, target, recipients, reason.
    List {
        /// Most dead letters listed.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// One dead-lettered job in full (its queue message) and its reason.
    Show {
        /// The job id.
        #[arg(long)]
        job: String,
    },
    /// Puts dead-lettered jobs back on the queue, as new jobs, and removes them from the dead-letter queue.
    Redrive {
        /// Only this job.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        job: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// The Management API client behind [`crate::delivery::Deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeliveryClient {
    /// [`crate::delivery::LeanDeliver`]: mgmt-client's SigV4 signer on a pooled hyper/rustls client.
    Lean,
    /// [`crate::delivery::SdkDeliver`]: aws-sdk-apigatewaymanagement, the reference.
    Sdk,
}

/// Validated settings, ready to use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub redis_url: String,
    pub key_prefix: String,
    pub queue_url: String,
    /// The bulk lane's queue (explicit or derived from `queue_url`).
    pub bulk_queue_url: String,
    /// Channels with at least this many members are on the bulk lane (presence leave events).
    pub bulk_threshold: u64,
    pub dead_letter_queue_url: Option<String>,
    pub gateways: Gateways,
    pub aws_region: String,
    pub metrics_listen: SocketAddr,
    pub pollers: usize,
    pub max_jobs_in_hand: usize,
    pub max_in_flight: usize,
    /// Jobs in hand only the interactive lane may hold (the bulk lane holds at most the rest).
    pub interactive_reserved_jobs: usize,
    /// Calls in flight only the interactive lane may make.
    pub interactive_reserved_in_flight: usize,
    pub receive_wait: Duration,
    pub visibility_timeout: Duration,
    pub chunk_size: usize,
    pub call_timeout: Duration,
    pub delivery_client: DeliveryClient,
    pub retries: usize,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
    pub connect_grace: Duration,
    pub max_attempts: u32,
    pub requeue_delay: Duration,
    pub max_receives: u32,
    /// The fleet's send rate after headroom, requests per second.
    pub rate_per_sec: u32,
    /// The fleet's burst after headroom.
    pub burst: u32,
    pub rate_bucket: String,
    pub report_ttl: Duration,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
}

/// A setting that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Shared(#[from] SharedConfigError),
    #[error("{setting}: {why}")]
    Range {
        setting: &'static str,
        why: &'static str,
    },
    #[error("FANOUT_RATE_BUCKET: use 1 to 64 letters, digits, - or _")]
    RateBucket,
}

/// The interactive lane's reserved part of `total`: `percent` of it rounded up, leaving the bulk lane at
/// least one (so with a total of 1 nothing is reserved and both lanes share it).
pub fn reserved(total: usize, percent: u32) -> usize {
    (total * percent as usize)
        .div_ceil(100)
        .min(total.saturating_sub(1))
}

fn range(ok: bool, setting: &'static str, why: &'static str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Range { setting, why })
    }
}

impl Config {
    /// Checks every setting and builds [`Settings`].
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let shared = self.shared.validate()?;
        if self.rate_bucket.is_empty()
            || self.rate_bucket.len() > 64
            || !self
                .rate_bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::RateBucket);
        }
        range(
            (1..=64).contains(&self.pollers),
            "FANOUT_POLLERS",
            "must be between 1 and 64",
        )?;
        range(
            (1..=10_000).contains(&self.max_jobs_in_hand),
            "FANOUT_MAX_JOBS_IN_HAND",
            "must be between 1 and 10000",
        )?;
        range(
            (1..=100_000).contains(&self.max_in_flight),
            "FANOUT_MAX_IN_FLIGHT",
            "must be between 1 and 100000",
        )?;
        range(
            self.interactive_reserved_percent <= 90,
            "FANOUT_INTERACTIVE_RESERVED_PERCENT",
            "must be between 0 and 90 (the bulk lane must keep a share)",
        )?;
        range(
            self.receive_wait_secs <= 20,
            "FANOUT_RECEIVE_WAIT_SECS",
            "must be at most 20 (SQS's longest long poll)",
        )?;
        range(
            (1..=43_200).contains(&self.visibility_timeout_secs),
            "FANOUT_VISIBILITY_TIMEOUT_SECS",
            "must be between 1 and 43200 (SQS's 12 hours)",
        )?;
        range(
            (1..=1000).contains(&self.chunk_size),
            "FANOUT_CHUNK_SIZE",
            "must be between 1 and 1000 (a chunk job must fit in 256 KiB with a full payload)",
        )?;
        range(
            (10..=120_000).contains(&self.call_timeout_ms),
            "FANOUT_CALL_TIMEOUT_MS",
            "must be between 10 and 120000 milliseconds",
        )?;
        range(self.retries <= 20, "FANOUT_RETRIES", "must be at most 20")?;
        range(
            self.retry_min_delay_ms >= 1 && self.retry_min_delay_ms <= self.retry_max_delay_ms,
            "FANOUT_RETRY_MIN_DELAY_MS",
            "must be at least 1 and at most FANOUT_RETRY_MAX_DELAY_MS",
        )?;
        range(
            self.connect_grace_ms <= 60_000,
            "FANOUT_CONNECT_GRACE_MS",
            "must be at most 60000 (API Gateway's integration timeout is 29 seconds)",
        )?;
        range(
            (1..=100).contains(&self.max_attempts),
            "FANOUT_MAX_ATTEMPTS",
            "must be between 1 and 100",
        )?;
        range(
            self.requeue_delay_ms <= 900_000,
            "FANOUT_REQUEUE_DELAY_MS",
            "must be at most 900000 (SQS's 15-minute delay limit)",
        )?;
        range(
            self.max_receives >= 2,
            "FANOUT_MAX_RECEIVES",
            "must be at least 2 (a job killed once must be able to run again)",
        )?;
        range(
            self.account_rate_per_sec >= 1 && self.account_burst >= 1,
            "FANOUT_ACCOUNT_RATE_PER_SEC / FANOUT_ACCOUNT_BURST",
            "must be at least 1",
        )?;
        range(
            self.rate_headroom_percent < 100,
            "FANOUT_RATE_HEADROOM_PERCENT",
            "must be below 100",
        )?;
        range(
            self.report_ttl_secs >= 60,
            "FANOUT_REPORT_TTL_SECS",
            "must be at least 60 seconds",
        )?;
        let keep = |n: u32| {
            ((u64::from(n) * u64::from(100 - self.rate_headroom_percent)) / 100).max(1) as u32
        };
        Ok(Settings {
            redis_url: shared.redis_url,
            key_prefix: shared.key_prefix,
            queue_url: shared.queue_url,
            bulk_queue_url: shared.bulk_queue_url,
            bulk_threshold: shared.bulk_threshold,
            dead_letter_queue_url: self.dead_letter_queue_url.filter(|u| !u.is_empty()),
            gateways: shared.gateways,
            aws_region: shared.aws_region,
            metrics_listen: self.metrics_listen,
            pollers: self.pollers,
            max_jobs_in_hand: self.max_jobs_in_hand,
            max_in_flight: self.max_in_flight,
            interactive_reserved_jobs: reserved(
                self.max_jobs_in_hand,
                self.interactive_reserved_percent,
            ),
            interactive_reserved_in_flight: reserved(
                self.max_in_flight,
                self.interactive_reserved_percent,
            ),
            receive_wait: Duration::from_secs(self.receive_wait_secs),
            visibility_timeout: Duration::from_secs(self.visibility_timeout_secs),
            chunk_size: self.chunk_size,
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            delivery_client: self.delivery_client,
            retries: self.retries,
            retry_min_delay: Duration::from_millis(self.retry_min_delay_ms),
            retry_max_delay: Duration::from_millis(self.retry_max_delay_ms),
            connect_grace: Duration::from_millis(self.connect_grace_ms),
            max_attempts: self.max_attempts,
            requeue_delay: Duration::from_millis(self.requeue_delay_ms),
            max_receives: self.max_receives,
            rate_per_sec: keep(self.account_rate_per_sec),
            burst: keep(self.account_burst),
            rate_bucket: self.rate_bucket,
            report_ttl: Duration::from_secs(self.report_ttl_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            log_format: shared.log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[&str]) -> Result<Settings, String> {
        let mut args = vec!["fanout-worker", "--api-gateway", "abc/prod"];
        args.extend_from_slice(extra);
        Config::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_keep_headroom() {
        let s = config(&[]).unwrap();
        assert_eq!(s.rate_per_sec, 9_800);
        assert_eq!(s.burst, 4_900);
        assert_eq!(s.chunk_size, 500);
        assert_eq!(s.visibility_timeout, Duration::from_secs(5));
        let s = config(&["--rate-headroom-percent", "0"]).unwrap();
        assert_eq!((s.rate_per_sec, s.burst), (10_000, 5_000));
        assert_eq!(config(&[]).unwrap().connect_grace, Duration::from_secs(10));
        let s = config(&["--connect-grace-ms", "60000"]).unwrap();
        assert_eq!(s.connect_grace, Duration::from_secs(60));
    }

    #[test]
    fn the_interactive_lane_keeps_a_share_and_bulk_never_loses_all() {
        let s = config(&[]).unwrap();
        assert_eq!(
            (
                s.interactive_reserved_jobs,
                s.interactive_reserved_in_flight
            ),
            (2, 26)
        );
        assert_eq!(s.bulk_queue_url, "redis://127.0.0.1:6379/0?queue=jobs-bulk");
        let s = config(&["--max-jobs-in-hand=1", "--max-in-flight=2"]).unwrap();
        assert_eq!(
            (
                s.interactive_reserved_jobs,
                s.interactive_reserved_in_flight
            ),
            (0, 1)
        );
        let s = config(&["--interactive-reserved-percent=0"]).unwrap();
        assert_eq!(
            (
                s.interactive_reserved_jobs,
                s.interactive_reserved_in_flight
            ),
            (0, 0)
        );
        let s = config(&["--interactive-reserved-percent=90", "--max-jobs-in-hand=4"]).unwrap();
        assert_eq!(s.interactive_reserved_jobs, 3);
        assert_eq!(reserved(10, 90), 9);
        assert_eq!(reserved(100, 25), 25);
        assert_eq!(reserved(0, 25), 0);
        let help = Config::try_parse_from(["fanout-worker", "--help"])
            .unwrap_err()
            .to_string();
        for name in [
            "FANOUT_INTERACTIVE_RESERVED_PERCENT",
            "FANOUT_BULK_QUEUE_URL",
            "FANOUT_BULK_THRESHOLD",
        ] {
            assert!(help.contains(name), "{name}: {help}");
        }
    }

    #[test]
    fn dlq_commands_name_a_lane_interactive_by_default() {
        let lane_of = |args: &[&str]| {
            let mut argv = vec!["fanout-worker", "--api-gateway", "abc/prod", "dlq"];
            argv.extend_from_slice(args);
            match Config::try_parse_from(argv).unwrap().command {
                Some(Command::Dlq { lane, .. }) => lane,
                None => panic!("a dlq command"),
            }
        };
        assert_eq!(lane_of(&["list"]), LaneArg::Interactive);
        assert_eq!(lane_of(&["--lane", "bulk", "list"]), LaneArg::Bulk);
        assert_eq!(
            common::job::Lane::from(lane_of(&["--lane", "bulk", "redrive", "--all"])),
            common::job::Lane::Bulk
        );
        assert!(
            Config::try_parse_from([
                "fanout-worker",
                "--api-gateway",
                "a/b",
                "dlq",
                "--lane",
                "x",
                "list"
            ])
            .is_err()
        );
    }

    #[test]
    fn the_lean_client_is_the_default_and_sdk_selectable() {
        assert_eq!(config(&[]).unwrap().delivery_client, DeliveryClient::Lean);
        let s = config(&["--delivery-client", "sdk"]).unwrap();
        assert_eq!(s.delivery_client, DeliveryClient::Sdk);
        let err = config(&["--delivery-client", "curl"]).unwrap_err();
        assert!(err.contains("lean") && err.contains("sdk"), "{err}");
        let help = Config::try_parse_from(["fanout-worker", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("FANOUT_DELIVERY_CLIENT"), "{help}");
    }

    #[test]
    fn errors_name_the_setting() {
        for (flags, setting) in [
            (&["--chunk-size", "0"][..], "FANOUT_CHUNK_SIZE"),
            (&["--chunk-size", "5000"], "FANOUT_CHUNK_SIZE"),
            (&["--max-receives", "1"], "FANOUT_MAX_RECEIVES"),
            (&["--receive-wait-secs", "30"], "FANOUT_RECEIVE_WAIT_SECS"),
            (
                &["--rate-headroom-percent", "100"],
                "FANOUT_RATE_HEADROOM_PERCENT",
            ),
            (&["--key-prefix", "{x}"], "FANOUT_KEY_PREFIX"),
            (&["--rate-bucket", "a b"], "FANOUT_RATE_BUCKET"),
            (
                &["--retry-min-delay-ms", "5000"],
                "FANOUT_RETRY_MIN_DELAY_MS",
            ),
            (&["--api-gateway", "nope"], "FANOUT_API_GATEWAYS"),
            (&["--connect-grace-ms", "60001"], "FANOUT_CONNECT_GRACE_MS"),
            (
                &["--interactive-reserved-percent", "91"],
                "FANOUT_INTERACTIVE_RESERVED_PERCENT",
            ),
            (
                &["--bulk-queue-url", "redis://127.0.0.1:6379/0?queue=jobs"],
                "FANOUT_BULK_QUEUE_URL",
            ),
        ] {
            let err = config(flags).unwrap_err();
            assert!(err.contains(setting), "{flags:?}: {err}");
        }
    }
}
