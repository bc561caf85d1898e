//! Ingest's configuration: command-line flags with environment-variable equivalents (`FANOUT_*`; the
//! settings every process shares come from [`common::config::SharedArgs`]),
//! validated once at start-up into [`Settings`], with messages that say which setting is wrong and how
//! to fix it. Run `ingest --help` for the full list with defaults. Long because every flag, its check and
//! its test read best side by side: one table of settings, not one file per group.

use clap::Parser;
use common::config::{SharedArgs, SharedConfigError};
use common::gateways::Gateways;
use common::names::{ChannelName, ChannelPattern};
use common::secret::{Secret, SecretSet};
use common::telemetry::LogFormat;
use std::net::SocketAddr;
use std::time::Duration;

/// The ingest service: answers API Gateway's WebSocket callbacks and the application's API.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ingest",
    version,
    about = "Answers API Gateway WebSocket callbacks ($connect, $disconnect, messages) and the application API.",
    long_about = "Answers API Gateway WebSocket callbacks ($connect, $disconnect and messages, as HTTP_PROXY POSTs \
to /ws/{route}) and the application API (/v1: connect tokens, publishing, kicks, channel stats). State lives in Redis; \
every message to a browser becomes a job on the queue for the fan-out workers.\n\nEvery flag can also be set through \
the environment variable shown; lists are comma-separated."
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "FANOUT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub shared: SharedArgs,

    /// Accepted values of the X-Ws-Gateway-Secret header that API Gateway adds to every callback (list the
    /// new and the old value while rotating). Each at least 32 characters of [A-Za-z0-9._~+/=-].
    /// Required, unless --insecure-dev is given.
    #[arg(
        long = "gateway-secret",
        env = "FANOUT_GATEWAY_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub gateway_secrets: Vec<String>,

    /// API keys accepted by the application API (/v1), sent as `Authorization: Bearer KEY` or `X-Api-Key`.
    /// Each at least 32 characters. At least one.
    #[arg(
        long = "api-key",
        env = "FANOUT_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true,
        required = true
    )]
    pub api_keys: Vec<String>,

    /// Browser origins allowed to open a connection, e.g. https://app.example.com or
    /// https://*.example.com (sub-domains only); scheme, host and port must match. `*` allows any origin.
    /// Empty: every browser page is refused (clients that send no Origin, which browsers always do, pass).
    #[arg(
        long = "allowed-origin",
        env = "FANOUT_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Proxies (addresses or CIDR blocks like 10.0.0.0/8) whose X-Forwarded-For is believed, for callbacks
    /// that do not carry X-Ws-Source-Ip. Empty: X-Forwarded-For is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "FANOUT_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// Client addresses (or CIDR blocks) whose connects skip the per-IP connect limit, e.g. 127.0.0.0/8
    /// for load tests on one machine (`./dev start` sets loopback). Empty by default: every address is
    /// limited. The per-subject limit still applies.
    #[arg(
        long = "connect-limit-exempt",
        env = "FANOUT_CONNECT_LIMIT_EXEMPT",
        value_delimiter = ','
    )]
    pub connect_limit_exempt: Vec<String>,

    /// LOCAL DEVELOPMENT ONLY: start without a gateway secret, so anyone who can reach ingest can forge
    /// callbacks. A warning is logged at start and every minute.
    #[arg(long, env = "FANOUT_INSECURE_DEV")]
    pub insecure_dev: bool,

    /// How long a client may take to send a request's headers, and how long a keep-alive connection may
    /// sit idle between requests, in milliseconds. Slow or idle connections are closed.
    #[arg(long, env = "FANOUT_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// How long reading a request's body and answering it may take, in milliseconds (408 past that).
    #[arg(long, env = "FANOUT_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Channel a connection joins when its URL names none.
    #[arg(long, env = "FANOUT_DEFAULT_CHANNEL", default_value = "default")]
    pub default_channel: String,

    /// Channels (names or prefix patterns like `lobby-*`, or `*`) that may be joined without a connect
    /// token; such connections are anonymous and their chat messages show as "Anonymous".
    #[arg(
        long = "public-channel",
        env = "FANOUT_PUBLIC_CHANNELS",
        value_delimiter = ','
    )]
    pub public_channels: Vec<String>,

    /// Channels (names or patterns) on which browsers may publish `chat_message`s themselves. Empty:
    /// browsers cannot publish; only the application API can.
    #[arg(
        long = "chat-channel",
        env = "FANOUT_CHAT_CHANNELS",
        value_delimiter = ','
    )]
    pub chat_channels: Vec<String>,

    /// Channels (names or patterns like `room-*`, or `*`) with presence: their members can be listed
    /// (`GET /v1/channels/{name}/presence`, the `presence` action) and are told when someone joins or
    /// leaves. Empty: no channel has presence.
    #[arg(
        long = "presence-channel",
        env = "FANOUT_PRESENCE_CHANNELS",
        value_delimiter = ','
    )]
    pub presence_channels: Vec<String>,

    /// Ordered channels (names or patterns like `room-*`, or `*`): every connection receives their
    /// messages in the order they were published, across workers and retries. One worker at a time
    /// delivers an ordered channel, one message after another. Empty: no channel is ordered.
    #[arg(
        long = "ordered-channel",
        env = "FANOUT_ORDERED_CHANNELS",
        value_delimiter = ','
    )]
    pub ordered_channels: Vec<String>,

    /// Coalescing channels (names or patterns): ordered, and when messages wait for delivery (more offered
    /// than the send budget carries) a connection gets all those waiting in one post, a JSON array of
    /// them in publish order (at most 128 KiB). Payloads published to them must be JSON objects.
    #[arg(
        long = "coalesced-channel",
        env = "FANOUT_COALESCED_CHANNELS",
        value_delimiter = ','
    )]
    pub coalesced_channels: Vec<String>,

    /// Default lifetime of a connect token, in seconds (1 to 3600).
    #[arg(long, env = "FANOUT_TOKEN_TTL_SECS", default_value_t = 60)]
    pub token_ttl_secs: u64,

    /// Connect tokens one subject may be issued per minute.
    #[arg(
        long,
        env = "FANOUT_TOKEN_ISSUE_LIMIT_PER_MINUTE",
        default_value_t = 20
    )]
    pub token_issue_limit_per_minute: u32,

    /// `$connect` attempts allowed per minute from one client IP, and separately per subject.
    #[arg(long, env = "FANOUT_CONNECT_LIMIT_PER_MINUTE", default_value_t = 20)]
    pub connect_limit_per_minute: u32,

    /// Client messages one connection may send per second, on average (a token bucket per connection).
    /// Messages over the limit are refused (the client gets one error frame) and not fanned out.
    #[arg(long, env = "FANOUT_MESSAGE_RATE_PER_SEC", default_value_t = 10)]
    pub message_rate_per_sec: u32,

    /// How many client messages a connection may send at once before the per-second rate applies.
    #[arg(long, env = "FANOUT_MESSAGE_BURST", default_value_t = 20)]
    pub message_burst: u32,

    /// Messages kept per channel for `fetch_history` (1 to 1000; a reply holds the newest that fit in
    /// 128 KiB).
    #[arg(long, env = "FANOUT_HISTORY_SIZE", default_value_t = 50)]
    pub history_size: u32,

    /// Longest `chat_message` text a browser may send, in characters.
    #[arg(long, env = "FANOUT_CHAT_MESSAGE_MAX_CHARS", default_value_t = 4000)]
    pub chat_message_max_chars: usize,

    /// Application webhook that receives unknown actions (POST, JSON). Unset: the client gets an error.
    #[arg(long, env = "FANOUT_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Sent to the webhook as `Authorization: Bearer SECRET`, so it can tell the call came from ingest.
    #[arg(long, env = "FANOUT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// How long a webhook call may take, in milliseconds.
    #[arg(long, env = "FANOUT_WEBHOOK_TIMEOUT_MS", default_value_t = 5000)]
    pub webhook_timeout_ms: u64,

    #[command(flatten)]
    pub lifecycle_webhook: crate::webhooks::config::LifecycleArgs,

    /// How long a connection's record lives without activity, in seconds. A little over API Gateway's
    /// 2-hour maximum, because `$disconnect` is best-effort.
    #[arg(long, env = "FANOUT_CONNECTION_TTL_SECS", default_value_t = 7500)]
    pub connection_ttl_secs: u64,

    /// How often the stale-connection sweep runs, in milliseconds (1000 to 3600000). Each interval one
    /// replica takes each bucket's lease and removes the connections whose record expired without a
    /// `$disconnect` from every set (and presence, with a leave event).
    #[arg(long, env = "FANOUT_SWEEP_INTERVAL_MS", default_value_t = 60_000)]
    pub sweep_interval_ms: u64,

    /// Connections the sweep checks per Redis round trip (10 to 10000).
    #[arg(long, env = "FANOUT_SWEEP_BATCH", default_value_t = 500)]
    pub sweep_batch: u32,

    /// Write connection records under the longer field names of earlier versions (`channel`, `api_id`,
    /// ...) with the full token hash: for an upgrade from such a version, while its ingest replicas and
    /// workers still run (they read only those names). Records of either shape are always read. Default
    /// off: the short names (about 100 bytes less per connection).
    #[arg(long, env = "FANOUT_LEGACY_RECORD_FIELDS", default_value_t = false)]
    pub legacy_record_fields: bool,

    /// LOCAL DEMO ONLY: the WebSocket URL of the local gateway. When set, ingest serves the chat page at
    /// /demo/ and lets anyone mint tokens at POST /demo/token. Never set it in production.
    #[arg(long, env = "FANOUT_DEMO_WS_URL")]
    pub demo_ws_url: Option<String>,
}

/// Validated settings, ready to use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub redis_url: String,
    pub key_prefix: String,
    pub queue_url: String,
    /// The bulk lane's queue (explicit or derived from `queue_url`).
    pub bulk_queue_url: String,
    /// Channels with at least this many members are published on the bulk lane.
    pub bulk_threshold: u64,
    pub gateways: Gateways,
    pub gateway_secrets: SecretSet,
    pub api_keys: SecretSet,
    pub allowed_origins: Vec<crate::origin::AllowedOrigin>,
    pub trusted_proxies: Vec<crate::client_ip::ProxyNet>,
    pub connect_limit_exempt: Vec<crate::client_ip::ProxyNet>,
    /// Started with --insecure-dev: callbacks may come without a gateway secret.
    pub insecure_dev: bool,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub default_channel: ChannelName,
    pub public_channels: Vec<ChannelPattern>,
    pub chat_channels: Vec<ChannelPattern>,
    pub presence_channels: Vec<ChannelPattern>,
    pub ordered_channels: Vec<ChannelPattern>,
    pub coalesced_channels: Vec<ChannelPattern>,
    pub token_ttl: Duration,
    pub token_issue_limit_per_minute: u32,
    pub connect_limit_per_minute: u32,
    pub history_size: u32,
    pub message_rate_per_sec: u32,
    pub message_burst: u32,
    pub chat_message_max_chars: usize,
    pub webhook_url: Option<url::Url>,
    pub webhook_secret: Option<Secret>,
    pub webhook_timeout: Duration,
    /// Lifecycle webhooks, when configured (see [`crate::webhooks`]).
    pub lifecycle_webhook: Option<crate::webhooks::config::LifecycleSettings>,
    pub connection_ttl: Duration,
    /// Stale-connection sweep: how often, and how many connections per round trip.
    pub sweep_interval: Duration,
    pub sweep_batch: u32,
    /// Connection records written under the earlier, longer field names (an upgrade's first step).
    pub legacy_record_fields: bool,
    /// Set only in the local demo: enables the `/demo/` routes.
    pub demo_ws_url: Option<url::Url>,
    pub log_format: LogFormat,
}

/// A setting that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Shared(#[from] SharedConfigError),
    #[error(
        "FANOUT_GATEWAY_SECRETS / --gateway-secret: entry {0} must be at least 32 characters of [A-Za-z0-9._~+/=-] (generate one with `openssl rand -base64 33`)"
    )]
    GatewaySecret(usize),
    #[error(
        "FANOUT_GATEWAY_SECRETS / --gateway-secret: required, so that only your API Gateway can send callbacks (generate one with `openssl rand -base64 33` and map it into the X-Ws-Gateway-Secret header; for local development only, --insecure-dev starts without one)"
    )]
    NoGatewaySecret,
    #[error(
        "FANOUT_TRUSTED_PROXIES / --trusted-proxy: {0:?} is not an IP address or CIDR block like 10.0.0.0/8"
    )]
    TrustedProxy(String),
    #[error(
        "FANOUT_CONNECT_LIMIT_EXEMPT / --connect-limit-exempt: {0:?} is not an IP address or CIDR block like 127.0.0.0/8"
    )]
    ConnectLimitExempt(String),
    #[error(
        "FANOUT_API_KEYS / --api-key: entry {0} must be at least 32 characters without spaces (generate one with `openssl rand -hex 24`)"
    )]
    ApiKey(usize),
    #[error(
        "FANOUT_ALLOWED_ORIGINS / --allowed-origin: {0:?} is not an origin like https://app.example.com or https://*.example.com"
    )]
    Origin(String),
    #[error("FANOUT_DEFAULT_CHANNEL: {0:?} is not a channel name (1 to 128 of A-Z a-z 0-9 _ -)")]
    DefaultChannel(String),
    #[error("{setting}: {value:?} is not a channel name or pattern (like general, room-* or *)")]
    ChannelPattern {
        setting: &'static str,
        value: String,
    },
    #[error("{setting}: {why}")]
    Range {
        setting: &'static str,
        why: &'static str,
    },
    #[error("FANOUT_WEBHOOK_URL: {0:?} is not an http(s) URL")]
    Webhook(String),
    #[error("FANOUT_DEMO_WS_URL: {0:?} is not a ws:// or wss:// URL")]
    DemoWsUrl(String),
    #[error(transparent)]
    LifecycleWebhook(#[from] crate::webhooks::config::LifecycleConfigError),
}

fn patterns(setting: &'static str, values: &[String]) -> Result<Vec<ChannelPattern>, ConfigError> {
    values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| {
            ChannelPattern::parse(v).map_err(|_| ConfigError::ChannelPattern {
                setting,
                value: v.to_owned(),
            })
        })
        .collect()
}

fn nonempty(values: &[String]) -> impl Iterator<Item = &str> {
    values.iter().map(|v| v.trim()).filter(|v| !v.is_empty())
}

impl Config {
    /// Checks every setting and builds [`Settings`].
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let shared = self.shared.validate()?;
        let mut secrets = Vec::new();
        for (i, s) in nonempty(&self.gateway_secrets).enumerate() {
            let ok = s.len() >= 32
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b));
            if !ok {
                return Err(ConfigError::GatewaySecret(i + 1));
            }
            secrets.push(Secret::new(s));
        }
        if secrets.is_empty() && !self.insecure_dev {
            return Err(ConfigError::NoGatewaySecret);
        }
        let mut keys = Vec::new();
        for (i, k) in nonempty(&self.api_keys).enumerate() {
            if k.len() < 32 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::ApiKey(i + 1));
            }
            keys.push(Secret::new(k));
        }
        if keys.is_empty() {
            return Err(ConfigError::ApiKey(1));
        }
        let allowed_origins = nonempty(&self.allowed_origins)
            .map(|o| {
                crate::origin::AllowedOrigin::parse(o)
                    .ok_or_else(|| ConfigError::Origin(o.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let trusted_proxies = nonempty(&self.trusted_proxies)
            .map(|p| {
                crate::client_ip::ProxyNet::parse(p)
                    .ok_or_else(|| ConfigError::TrustedProxy(p.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let connect_limit_exempt = nonempty(&self.connect_limit_exempt)
            .map(|p| {
                crate::client_ip::ProxyNet::parse(p)
                    .ok_or_else(|| ConfigError::ConnectLimitExempt(p.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let default_channel = ChannelName::parse(&self.default_channel)
            .map_err(|_| ConfigError::DefaultChannel(self.default_channel.clone()))?;
        if !(1..=3600).contains(&self.token_ttl_secs) {
            return Err(ConfigError::Range {
                setting: "FANOUT_TOKEN_TTL_SECS",
                why: "must be between 1 and 3600 seconds",
            });
        }
        if self.token_issue_limit_per_minute == 0 || self.connect_limit_per_minute == 0 {
            return Err(ConfigError::Range {
                setting: "FANOUT_*_LIMIT_PER_MINUTE",
                why: "must be at least 1",
            });
        }
        if !(100..=600_000).contains(&self.header_read_timeout_ms)
            || !(100..=600_000).contains(&self.request_timeout_ms)
        {
            return Err(ConfigError::Range {
                setting: "FANOUT_HEADER_READ_TIMEOUT_MS / FANOUT_REQUEST_TIMEOUT_MS",
                why: "must be between 100 and 600000 milliseconds",
            });
        }
        if self.message_rate_per_sec == 0 || self.message_burst == 0 {
            return Err(ConfigError::Range {
                setting: "FANOUT_MESSAGE_RATE_PER_SEC / FANOUT_MESSAGE_BURST",
                why: "must be at least 1",
            });
        }
        if !(1..=1_000).contains(&self.history_size) {
            return Err(ConfigError::Range {
                setting: "FANOUT_HISTORY_SIZE",
                why: "must be between 1 and 1000",
            });
        }
        if self.connection_ttl_secs < 60 {
            return Err(ConfigError::Range {
                setting: "FANOUT_CONNECTION_TTL_SECS",
                why: "must be at least 60 seconds (API Gateway keeps connections up to 7200)",
            });
        }
        if !(1_000..=3_600_000).contains(&self.sweep_interval_ms) {
            return Err(ConfigError::Range {
                setting: "FANOUT_SWEEP_INTERVAL_MS",
                why: "must be between 1000 and 3600000 milliseconds",
            });
        }
        if !(10..=10_000).contains(&self.sweep_batch) {
            return Err(ConfigError::Range {
                setting: "FANOUT_SWEEP_BATCH",
                why: "must be between 10 and 10000",
            });
        }
        if self.chat_message_max_chars == 0 {
            return Err(ConfigError::Range {
                setting: "FANOUT_CHAT_MESSAGE_MAX_CHARS",
                why: "must be at least 1",
            });
        }
        let webhook_url = match self
            .webhook_url
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(u) => match url::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                _ => return Err(ConfigError::Webhook(u.to_owned())),
            },
        };
        let lifecycle_webhook = self.lifecycle_webhook.validate()?;
        let demo_ws_url = match self
            .demo_ws_url
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(u) => match url::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "ws" | "wss") => Some(url),
                _ => return Err(ConfigError::DemoWsUrl(u.to_owned())),
            },
        };
        Ok(Settings {
            listen: self.listen,
            redis_url: shared.redis_url,
            key_prefix: shared.key_prefix,
            queue_url: shared.queue_url,
            bulk_queue_url: shared.bulk_queue_url,
            bulk_threshold: shared.bulk_threshold,
            gateways: shared.gateways,
            gateway_secrets: SecretSet::new(secrets),
            api_keys: SecretSet::new(keys),
            allowed_origins,
            trusted_proxies,
            connect_limit_exempt,
            insecure_dev: self.insecure_dev,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            default_channel,
            public_channels: patterns("FANOUT_PUBLIC_CHANNELS", &self.public_channels)?,
            chat_channels: patterns("FANOUT_CHAT_CHANNELS", &self.chat_channels)?,
            presence_channels: patterns("FANOUT_PRESENCE_CHANNELS", &self.presence_channels)?,
            ordered_channels: patterns("FANOUT_ORDERED_CHANNELS", &self.ordered_channels)?,
            coalesced_channels: patterns("FANOUT_COALESCED_CHANNELS", &self.coalesced_channels)?,
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            token_issue_limit_per_minute: self.token_issue_limit_per_minute,
            connect_limit_per_minute: self.connect_limit_per_minute,
            history_size: self.history_size,
            message_rate_per_sec: self.message_rate_per_sec,
            message_burst: self.message_burst,
            chat_message_max_chars: self.chat_message_max_chars,
            webhook_url,
            webhook_secret: self
                .webhook_secret
                .filter(|s| !s.is_empty())
                .map(Secret::new),
            webhook_timeout: Duration::from_millis(self.webhook_timeout_ms),
            lifecycle_webhook,
            connection_ttl: Duration::from_secs(self.connection_ttl_secs),
            sweep_interval: Duration::from_millis(self.sweep_interval_ms),
            sweep_batch: self.sweep_batch,
            legacy_record_fields: self.legacy_record_fields,
            demo_ws_url,
            log_format: shared.log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[&str]) -> Result<Settings, String> {
        let mut args = vec![
            "ingest",
            "--api-gateway",
            "abc/prod",
            "--api-key",
            "k-0123456789abcdef0123456789abcdef",
            "--gateway-secret",
            "g-0123456789abcdef0123456789abcdef",
        ];
        args.extend_from_slice(extra);
        Config::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid() {
        let s = config(&[]).unwrap();
        assert_eq!(s.token_ttl, Duration::from_secs(60));
        assert_eq!(s.connect_limit_per_minute, 20);
        assert!(!s.insecure_dev);
        assert!(s.allowed_origins.is_empty());
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.default_channel.as_str(), "default");
        assert_eq!(s.sweep_interval, Duration::from_secs(60));
        assert_eq!(s.sweep_batch, 500);
    }

    #[test]
    fn errors_name_the_setting() {
        assert!(
            config(&["--gateway-secret", "short"])
                .unwrap_err()
                .contains("FANOUT_GATEWAY_SECRETS")
        );
        assert!(
            config(&["--token-ttl-secs", "0"])
                .unwrap_err()
                .contains("FANOUT_TOKEN_TTL_SECS")
        );
        assert!(
            config(&["--allowed-origin", "not a url"])
                .unwrap_err()
                .contains("FANOUT_ALLOWED_ORIGINS")
        );
        assert!(
            config(&["--public-channel", "bad name"])
                .unwrap_err()
                .contains("FANOUT_PUBLIC_CHANNELS")
        );
        assert!(
            config(&["--presence-channel", "room-*,bad name"])
                .unwrap_err()
                .contains("FANOUT_PRESENCE_CHANNELS")
        );
        assert!(
            config(&["--ordered-channel", "bad name"])
                .unwrap_err()
                .contains("FANOUT_ORDERED_CHANNELS")
        );
        assert!(
            config(&["--coalesced-channel", "room-*,bad name"])
                .unwrap_err()
                .contains("FANOUT_COALESCED_CHANNELS")
        );
        assert!(
            config(&["--webhook-url", "ftp://x"])
                .unwrap_err()
                .contains("FANOUT_WEBHOOK_URL")
        );
        assert!(
            config(&["--key-prefix", "{x}"])
                .unwrap_err()
                .contains("FANOUT_KEY_PREFIX")
        );
        assert!(
            config(&["--history-size=1001"])
                .unwrap_err()
                .contains("FANOUT_HISTORY_SIZE")
        );
        assert!(
            config(&["--header-read-timeout-ms=0"])
                .unwrap_err()
                .contains("FANOUT_HEADER_READ_TIMEOUT_MS")
        );
        assert!(
            config(&["--message-burst=0"])
                .unwrap_err()
                .contains("FANOUT_MESSAGE_BURST")
        );
        assert!(
            config(&["--sweep-interval-ms=10"])
                .unwrap_err()
                .contains("FANOUT_SWEEP_INTERVAL_MS")
        );
        assert!(
            config(&["--sweep-batch=0"])
                .unwrap_err()
                .contains("FANOUT_SWEEP_BATCH")
        );
        assert!(
            config(&["--api-key", "short"])
                .unwrap_err()
                .contains("FANOUT_API_KEYS")
        );
    }

    #[test]
    fn a_gateway_secret_is_required_unless_insecure_dev() {
        let bare = |extra: &[&str]| {
            let mut args = vec![
                "ingest",
                "--api-gateway",
                "abc/prod",
                "--api-key",
                "k-0123456789abcdef0123456789abcdef",
            ];
            args.extend_from_slice(extra);
            Config::try_parse_from(args).unwrap().validate()
        };
        let refused = bare(&[]).unwrap_err().to_string();
        assert!(refused.contains("FANOUT_GATEWAY_SECRETS"), "{refused}");
        assert!(refused.contains("--insecure-dev"), "{refused}");
        assert!(!refused.contains('\n'), "one line: {refused}");
        let insecure = bare(&["--insecure-dev"]).unwrap();
        assert!(insecure.insecure_dev && insecure.gateway_secrets.is_empty());
        assert!(
            config(&["--trusted-proxy", "10.0.0.0/99"])
                .unwrap_err()
                .contains("FANOUT_TRUSTED_PROXIES")
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = config(&["--gateway-secret=s3cret-s3cret-s3cret-s3cret-s3cret-x"]).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
