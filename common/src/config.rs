//! The settings every process of a deployment shares, defined once: where Redis and the queue are, the
//! key prefix, the WebSocket APIs served, the default AWS region and the log format. Each binary flattens
//! [`SharedArgs`] into its own clap configuration, so the flags (`--redis-url`, ...) and environment
//! variables (`FANOUT_REDIS_URL`, ...) are spelled the same everywhere, and validates them into [`Shared`].

use crate::gateways::{GatewayParseError, Gateways};
use crate::telemetry::LogFormat;

/// The shared flags. Every flag can also be set through the environment variable shown.
#[derive(Debug, Clone, clap::Args)]
pub struct SharedArgs {
    /// Redis holding connections, channels, tokens and history: redis://host:port/db, rediss:// for TLS,
    /// or redis+cluster://host:port,host:port for Redis Cluster.
    #[arg(
        long,
        env = "FANOUT_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Prefix of every Redis key, so several deployments can share one Redis. The same in every process.
    #[arg(long, env = "FANOUT_KEY_PREFIX", default_value = "fo:")]
    pub key_prefix: String,

    /// The job queue: an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, or any http(s) URL
    /// of an SQS-compatible endpoint) or Redis Streams (redis://host:port/db?queue=NAME).
    #[arg(
        long,
        env = "FANOUT_QUEUE_URL",
        default_value = "redis://127.0.0.1:6379/0?queue=jobs",
        hide_env_values = true
    )]
    pub queue_url: String,

    /// The bulk lane's job queue (everyone, large channels and their chunks), in the same forms as
    /// FANOUT_QUEUE_URL, which then carries the interactive lane (connections, users, small channels).
    /// Default: derived from FANOUT_QUEUE_URL, the queue named NAME-bulk (Redis Streams ?queue=jobs ->
    /// jobs-bulk on the same Redis; SQS .../jobs -> .../jobs-bulk, .../jobs.fifo -> .../jobs-bulk.fifo,
    /// which must exist). Must differ from FANOUT_QUEUE_URL.
    #[arg(long, env = "FANOUT_BULK_QUEUE_URL", hide_env_values = true)]
    pub bulk_queue_url: Option<String>,

    /// Channels with at least this many members are published on the bulk lane; smaller ones, users and
    /// connections on the interactive lane (everyone is always bulk). Default 500: the default
    /// FANOUT_CHUNK_SIZE, so an interactive job is at most one chunk, 50 ms of the default 10,000/s
    /// account budget. 1 to 10,000,000.
    #[arg(long, env = "FANOUT_BULK_THRESHOLD", default_value_t = 500)]
    pub bulk_threshold: u64,

    /// The WebSocket APIs served: API_ID/STAGE, API_ID/STAGE@REGION, or API_ID=http://endpoint/STAGE (an
    /// emulator or a custom domain). At least one; the same list in every process.
    #[arg(
        long = "api-gateway",
        env = "FANOUT_API_GATEWAYS",
        value_delimiter = ',',
        required = true
    )]
    pub api_gateways: Vec<String>,

    /// Region for API_ID/STAGE entries that name none, and for signing calls to explicit endpoints.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,

    /// Log format: text for people, json for log pipelines.
    #[arg(long, env = "FANOUT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The shared settings, validated.
#[derive(Debug, Clone)]
pub struct Shared {
    pub redis_url: String,
    pub key_prefix: String,
    pub queue_url: String,
    /// The bulk lane's queue, explicit or derived.
    pub bulk_queue_url: String,
    pub bulk_threshold: u64,
    pub gateways: Gateways,
    pub aws_region: String,
    pub log_format: LogFormat,
}

/// A shared setting that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SharedConfigError {
    #[error("FANOUT_API_GATEWAYS / --api-gateway: {0}")]
    Gateway(#[from] GatewayParseError),
    #[error("FANOUT_API_GATEWAYS / --api-gateway: list at least one API (API_ID/STAGE)")]
    NoGateway,
    #[error(
        "FANOUT_KEY_PREFIX: use letters, digits and : . _ - only (no braces, which Redis Cluster reads as a hash tag)"
    )]
    KeyPrefix,
    #[error("FANOUT_QUEUE_URL: {0}")]
    QueueUrl(String),
    #[error("FANOUT_BULK_QUEUE_URL: {0}")]
    BulkQueueUrl(String),
    #[error("FANOUT_BULK_THRESHOLD: must be between 1 and 10000000 channel members")]
    BulkThreshold,
    #[error("AWS_REGION: {0:?} does not look like a region (e.g. eu-west-1)")]
    Region(String),
}

/// The exit status of a process refused at start because of its configuration (the status clap uses for
/// usage errors too).
pub const CONFIG_EXIT_STATUS: i32 = 2;

/// The one line a refused configuration prints: the program, then what to fix, on a single line.
pub fn config_error_line(program: &str, error: &dyn std::fmt::Display) -> String {
    let reason = error.to_string().replace(['\n', '\r'], " ");
    format!("{program}: configuration error: {reason}")
}

/// Unwraps validated settings, or prints [`config_error_line`] to stderr and exits with
/// [`CONFIG_EXIT_STATUS`]: no backtrace, no log noise, just what to change.
pub fn or_exit<T, E: std::fmt::Display>(program: &str, validated: Result<T, E>) -> T {
    validated.unwrap_or_else(|e| {
        eprintln!("{}", config_error_line(program, &e));
        std::process::exit(CONFIG_EXIT_STATUS)
    })
}

impl SharedArgs {
    pub fn validate(self) -> Result<Shared, SharedConfigError> {
        let region_ok = !self.aws_region.is_empty()
            && self
                .aws_region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(SharedConfigError::Region(self.aws_region));
        }
        let gateways = Gateways::parse(&self.api_gateways, &self.aws_region)?;
        if gateways.is_empty() {
            return Err(SharedConfigError::NoGateway);
        }
        if !self
            .key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":._-".contains(&b))
        {
            return Err(SharedConfigError::KeyPrefix);
        }
        crate::queue::QueueUrl::parse(&self.queue_url)
            .map_err(|e| SharedConfigError::QueueUrl(e.to_string()))?;
        let bulk_queue_url =
            crate::queue::lanes::resolve_bulk_url(&self.queue_url, self.bulk_queue_url.as_deref())
                .map_err(|e| SharedConfigError::BulkQueueUrl(e.to_string()))?;
        if !(1..=10_000_000).contains(&self.bulk_threshold) {
            return Err(SharedConfigError::BulkThreshold);
        }
        Ok(Shared {
            redis_url: self.redis_url,
            key_prefix: self.key_prefix,
            queue_url: self.queue_url,
            bulk_queue_url,
            bulk_threshold: self.bulk_threshold,
            gateways,
            aws_region: self.aws_region,
            log_format: self.log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        shared: SharedArgs,
    }

    fn shared(args: &[&str]) -> Result<Shared, String> {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .shared
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_refusal_is_one_line_naming_the_program() {
        let error = shared(&["--api-gateway", "a/b", "--aws-region", "EU"]).unwrap_err();
        let line = config_error_line("ingest", &error);
        assert!(
            line.starts_with("ingest: configuration error: AWS_REGION"),
            "{line}"
        );
        let multi_line = config_error_line("ingest", &"first\nsecond\r\nthird");
        assert_eq!(
            multi_line,
            "ingest: configuration error: first second  third"
        );
    }

    #[test]
    fn urls_that_may_carry_a_password_are_hidden_from_help() {
        use clap::CommandFactory;
        let command = Cli::command();
        for id in ["redis_url", "queue_url", "bulk_queue_url"] {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert!(
                arg.is_hide_env_values_set(),
                "--help would print {id}'s value"
            );
        }
    }

    #[test]
    fn defaults_and_errors_that_name_the_variable() {
        let s = shared(&["--api-gateway", "abc/prod"]).unwrap();
        assert_eq!(
            (s.key_prefix.as_str(), s.aws_region.as_str()),
            ("fo:", "us-east-1")
        );
        assert!(shared(&[]).unwrap_err().contains("--api-gateway"));
        assert!(
            shared(&["--api-gateway", "abc"])
                .unwrap_err()
                .contains("FANOUT_API_GATEWAYS")
        );
        assert!(
            shared(&["--api-gateway", "a/b", "--key-prefix", "{x}"])
                .unwrap_err()
                .contains("FANOUT_KEY_PREFIX")
        );
        assert!(
            shared(&["--api-gateway", "a/b", "--queue-url", "amqp://x"])
                .unwrap_err()
                .contains("FANOUT_QUEUE_URL")
        );
        assert!(
            shared(&["--api-gateway", "a/b", "--aws-region", "EU"])
                .unwrap_err()
                .contains("AWS_REGION")
        );
    }

    #[test]
    fn the_bulk_lane_is_derived_or_given_and_checked() {
        let s = shared(&["--api-gateway", "a/b"]).unwrap();
        assert_eq!(
            (s.bulk_queue_url.as_str(), s.bulk_threshold),
            ("redis://127.0.0.1:6379/0?queue=jobs-bulk", 500)
        );
        let s = shared(&[
            "--api-gateway",
            "a/b",
            "--queue-url",
            "https://sqs.eu-west-1.amazonaws.com/1/fanout",
        ])
        .unwrap();
        assert_eq!(
            s.bulk_queue_url,
            "https://sqs.eu-west-1.amazonaws.com/1/fanout-bulk"
        );
        let s = shared(&[
            "--api-gateway",
            "a/b",
            "--bulk-queue-url",
            "redis://127.0.0.1:6379/0?queue=big",
            "--bulk-threshold",
            "1",
        ])
        .unwrap();
        assert_eq!(
            (s.bulk_queue_url.as_str(), s.bulk_threshold),
            ("redis://127.0.0.1:6379/0?queue=big", 1)
        );
        for (flags, says) in [
            (
                &["--bulk-queue-url", "redis://127.0.0.1:6379/0?queue=jobs"][..],
                "the bulk lane's queue must differ from FANOUT_QUEUE_URL",
            ),
            (&["--bulk-queue-url", "amqp://x"], "FANOUT_BULK_QUEUE_URL"),
            (&["--bulk-threshold", "0"], "FANOUT_BULK_THRESHOLD"),
            (&["--bulk-threshold", "10000001"], "FANOUT_BULK_THRESHOLD"),
        ] {
            let mut args = vec!["--api-gateway", "a/b"];
            args.extend_from_slice(flags);
            let err = shared(&args).unwrap_err();
            assert!(err.contains(says), "{flags:?}: {err}");
        }
    }
}
