//! The lifecycle webhook's settings: the `FANOUT_LIFECYCLE_WEBHOOK_*` flags, flattened into ingest's
//! [`Config`](crate::config::Config), and their validation into [`LifecycleSettings`] with messages that
//! name the setting. Unset URL: the feature is off and nothing else here is read.

use super::events::{EventFilter, EventKind};
use common::secret::Secret;
use std::net::IpAddr;
use std::time::Duration;

/// Lifecycle webhooks: connection and channel events POSTed in signed batches to the application.
#[derive(Debug, Clone, clap::Args)]
pub struct LifecycleArgs {
    /// Where lifecycle events (connect, disconnect, join, leave, channel_occupied, channel_vacated) are
    /// POSTed in batches, e.g. https://app.example.com/fanout/events. Unset (the default): no lifecycle
    /// webhooks. http:// is refused for a host other than loopback unless
    /// --lifecycle-webhook-allow-http is given.
    #[arg(long, env = "FANOUT_LIFECYCLE_WEBHOOK_URL")]
    pub lifecycle_webhook_url: Option<String>,

    /// Keys for the HMAC-SHA256 signature on every batch (X-Fanout-Signature), each at least 32
    /// characters; list the new and the old key while rotating (each signs, the receiver accepts either).
    /// Required with --lifecycle-webhook-url.
    #[arg(
        long = "lifecycle-webhook-secret",
        env = "FANOUT_LIFECYCLE_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub lifecycle_webhook_secrets: Vec<String>,

    /// Which events to send (connect, disconnect, join, leave, channel_occupied, channel_vacated).
    /// Empty (the default): all of them.
    #[arg(
        long = "lifecycle-webhook-event",
        env = "FANOUT_LIFECYCLE_WEBHOOK_EVENTS",
        value_delimiter = ','
    )]
    pub lifecycle_webhook_events: Vec<String>,

    /// INSECURE: allow an http:// lifecycle webhook URL on a host other than loopback (events and their
    /// signatures then cross the network in clear).
    #[arg(long, env = "FANOUT_LIFECYCLE_WEBHOOK_ALLOW_HTTP")]
    pub lifecycle_webhook_allow_http: bool,

    /// Most events in one batch (1 to 1000).
    #[arg(
        long,
        env = "FANOUT_LIFECYCLE_WEBHOOK_BATCH_MAX_EVENTS",
        default_value_t = 100
    )]
    pub lifecycle_webhook_batch_max_events: usize,

    /// How long the first event of a batch waits for others before the batch is sent, in milliseconds
    /// (10 to 60000).
    #[arg(
        long,
        env = "FANOUT_LIFECYCLE_WEBHOOK_FLUSH_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub lifecycle_webhook_flush_interval_ms: u64,

    /// Events held in memory while batches are being sent (1 to 1000000); events past it are dropped
    /// and counted (`fanout_lifecycle_events_dropped_total{reason="buffer_full"}`), never waited for.
    #[arg(
        long,
        env = "FANOUT_LIFECYCLE_WEBHOOK_BUFFER_EVENTS",
        default_value_t = 10_000
    )]
    pub lifecycle_webhook_buffer_events: usize,

    /// Attempts per batch, the first included (1 to 20); retries wait with jittered exponential
    /// backoff. A batch still refused after the last is dropped and counted.
    #[arg(
        long,
        env = "FANOUT_LIFECYCLE_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub lifecycle_webhook_max_attempts: usize,

    /// The first retry's wait, in milliseconds (1 to 60000); each next one about doubles, up to 30 s.
    #[arg(
        long,
        env = "FANOUT_LIFECYCLE_WEBHOOK_RETRY_MIN_DELAY_MS",
        default_value_t = 500
    )]
    pub lifecycle_webhook_retry_min_delay_ms: u64,
}

/// Validated lifecycle webhook settings. Calls share the application webhook's HTTP client, so
/// `FANOUT_WEBHOOK_TIMEOUT_MS` bounds each attempt.
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    pub url: url::Url,
    /// Every key signs each batch (one `v1=` entry each).
    pub secrets: Vec<Secret>,
    pub events: EventFilter,
    pub batch_max_events: usize,
    pub flush_interval: Duration,
    pub buffer_events: usize,
    pub max_attempts: usize,
    pub retry_min_delay: Duration,
}

/// A lifecycle webhook setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleConfigError {
    #[error("FANOUT_LIFECYCLE_WEBHOOK_URL: {0:?} is not an http(s) URL")]
    Url(String),
    #[error(
        "FANOUT_LIFECYCLE_WEBHOOK_URL: {0:?} is http:// on a host other than loopback, so events and signatures would cross the network in clear; use https://, or set FANOUT_LIFECYCLE_WEBHOOK_ALLOW_HTTP=true if the network is trusted"
    )]
    Insecure(String),
    #[error(
        "FANOUT_LIFECYCLE_WEBHOOK_SECRETS / --lifecycle-webhook-secret: required with FANOUT_LIFECYCLE_WEBHOOK_URL, so the application can tell events come from ingest (generate one with `openssl rand -base64 33`)"
    )]
    NoSecret,
    #[error(
        "FANOUT_LIFECYCLE_WEBHOOK_SECRETS / --lifecycle-webhook-secret: entry {0} must be at least 32 characters without spaces (generate one with `openssl rand -base64 33`)"
    )]
    Secret(usize),
    #[error(
        "FANOUT_LIFECYCLE_WEBHOOK_EVENTS / --lifecycle-webhook-event: {0:?} is not one of connect, disconnect, join, leave, channel_occupied, channel_vacated"
    )]
    Event(String),
    #[error("{setting}: must be between {min} and {max}")]
    Range {
        setting: &'static str,
        min: u64,
        max: u64,
    },
}

fn within(
    setting: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<(), LifecycleConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(LifecycleConfigError::Range { setting, min, max })
    }
}

/// True for `localhost` and loopback addresses, where plain http:// never leaves the machine.
fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

impl LifecycleArgs {
    /// `None` when no URL is configured (the feature is off).
    pub fn validate(self) -> Result<Option<LifecycleSettings>, LifecycleConfigError> {
        let Some(raw) = self
            .lifecycle_webhook_url
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let url = match url::Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
            _ => return Err(LifecycleConfigError::Url(raw.to_owned())),
        };
        if url.scheme() == "http" && !loopback(&url) && !self.lifecycle_webhook_allow_http {
            return Err(LifecycleConfigError::Insecure(raw.to_owned()));
        }
        let mut secrets = Vec::new();
        for (i, s) in self
            .lifecycle_webhook_secrets
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            if s.len() < 32 || !s.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(LifecycleConfigError::Secret(i + 1));
            }
            secrets.push(Secret::new(s));
        }
        if secrets.is_empty() {
            return Err(LifecycleConfigError::NoSecret);
        }
        let mut kinds = Vec::new();
        for name in self
            .lifecycle_webhook_events
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            kinds.push(
                EventKind::parse(name)
                    .ok_or_else(|| LifecycleConfigError::Event(name.to_owned()))?,
            );
        }
        within(
            "FANOUT_LIFECYCLE_WEBHOOK_BATCH_MAX_EVENTS",
            self.lifecycle_webhook_batch_max_events as u64,
            1,
            1000,
        )?;
        within(
            "FANOUT_LIFECYCLE_WEBHOOK_FLUSH_INTERVAL_MS",
            self.lifecycle_webhook_flush_interval_ms,
            10,
            60_000,
        )?;
        within(
            "FANOUT_LIFECYCLE_WEBHOOK_BUFFER_EVENTS",
            self.lifecycle_webhook_buffer_events as u64,
            1,
            1_000_000,
        )?;
        within(
            "FANOUT_LIFECYCLE_WEBHOOK_MAX_ATTEMPTS",
            self.lifecycle_webhook_max_attempts as u64,
            1,
            20,
        )?;
        within(
            "FANOUT_LIFECYCLE_WEBHOOK_RETRY_MIN_DELAY_MS",
            self.lifecycle_webhook_retry_min_delay_ms,
            1,
            60_000,
        )?;
        Ok(Some(LifecycleSettings {
            url,
            secrets,
            events: EventFilter::only(&kinds),
            batch_max_events: self.lifecycle_webhook_batch_max_events,
            flush_interval: Duration::from_millis(self.lifecycle_webhook_flush_interval_ms),
            buffer_events: self.lifecycle_webhook_buffer_events,
            max_attempts: self.lifecycle_webhook_max_attempts,
            retry_min_delay: Duration::from_millis(self.lifecycle_webhook_retry_min_delay_ms),
        }))
    }
}
