//! The emulator's configuration: command-line flags with environment-variable equivalents
//! (`EMULATOR_*`), validated once at start-up into [`Settings`], with messages that say which setting is
//! wrong and how to fix it. Run `local-gateway --help` for the full list with defaults.

use crate::routes::{RouteTable, RouteTableError};
use clap::Parser;
use common::secret::Secret;
use common::telemetry::LogFormat;
use std::net::SocketAddr;
use std::time::Duration;

/// API Gateway WebSockets on one machine.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "local-gateway",
    version,
    about = "Plays AWS API Gateway WebSockets on one machine: WebSocket front, HTTP_PROXY integration calls, @connections Management API.",
    long_about = "Plays AWS API Gateway WebSockets on one machine, so demos, end-to-end tests and load tests run without AWS.\n\n\
Browsers connect to ws://WS_LISTEN/STAGE (or ws://WS_LISTEN/). Every connection goes through the $connect integration \
(an HTTP POST to INTEGRATION_BASE/connect with the query string; a non-2xx answer refuses the handshake with that status); \
client frames go to the route selected by the route selection expression (custom routes, else INTEGRATION_BASE/default); \
$disconnect follows every close. The Management API (POST|GET|DELETE /STAGE/@connections/ID, what the AWS SDK calls \
with endpoint URL http://MANAGEMENT_LISTEN/STAGE), Prometheus metrics (/metrics) and the virtual-connection admin API \
(/_emulator/virtual) are served on MANAGEMENT_LISTEN.\n\n\
Every flag can also be set through the environment variable shown; lists are comma-separated."
)]
pub struct Config {
    /// Address of the WebSocket front, where browsers, k6 and tests connect (ws://ADDR/STAGE or ws://ADDR/).
    #[arg(long, env = "EMULATOR_WS_LISTEN", default_value = "127.0.0.1:4001")]
    pub ws_listen: SocketAddr,

    /// Address of the Management API (/STAGE/@connections/ID), /metrics and the /_emulator admin API.
    /// The Management API endpoint URL to give the AWS SDK and ingest is http://ADDR/STAGE.
    #[arg(
        long,
        env = "EMULATOR_MANAGEMENT_LISTEN",
        default_value = "127.0.0.1:4000"
    )]
    pub management_listen: SocketAddr,

    /// Base URL of the HTTP_PROXY integrations: $connect POSTs to BASE/connect, $disconnect to
    /// BASE/disconnect and $default to BASE/default, as django-aws-api-gateway-websockets wires them.
    #[arg(
        long,
        env = "EMULATOR_INTEGRATION_BASE",
        default_value = "http://127.0.0.1:8080/ws"
    )]
    pub integration_base: String,

    /// A custom route as ROUTE_KEY=URL (repeat the flag, or comma-separate in the variable), e.g.
    /// `sendmessage=http://127.0.0.1:8080/ws/sendmessage`. `$connect`, `$disconnect` and `$default` may be
    /// given too, to override the URL derived from the integration base.
    #[arg(long = "route", env = "EMULATOR_ROUTES", value_delimiter = ',')]
    pub routes: Vec<String>,

    /// Route selection expression: `$request.body.FIELD`, or a dotted path into nested objects
    /// (`$request.body.meta.action`). JSON object frames whose field matches a route key go to that route;
    /// everything else goes to `$default`.
    #[arg(
        long,
        env = "EMULATOR_ROUTE_SELECTION_EXPRESSION",
        default_value = "$request.body.action"
    )]
    pub route_selection_expression: String,

    /// API id sent in `X-Amzn-Apigateway-Api-Id` (ingest must list it: `API_ID=http://MANAGEMENT_LISTEN/STAGE`).
    #[arg(long, env = "EMULATOR_API_ID", default_value = "local")]
    pub api_id: String,

    /// Stage name: the WebSocket path and the Management API path prefix.
    #[arg(long, env = "EMULATOR_STAGE", default_value = "local")]
    pub stage: String,

    /// Value of the `X-Ws-Gateway-Secret` header added to every integration call (a static mapping in the
    /// real wiring). Unset: the header is not sent.
    #[arg(long, env = "EMULATOR_GATEWAY_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub gateway_secret: Option<Secret>,

    /// The `User-Agent` sent to the integration: the browser's (`client`), or API Gateway's own
    /// `AmazonAPIGateway_<api id>` (`gateway`).
    #[arg(
        long,
        env = "EMULATOR_INTEGRATION_USER_AGENT",
        value_enum,
        default_value = "client"
    )]
    pub integration_user_agent: UserAgentMode,

    /// How long an integration call may take, in milliseconds (API Gateway allows 50 to 29000).
    #[arg(
        long,
        env = "EMULATOR_INTEGRATION_TIMEOUT_MS",
        default_value_t = 29_000
    )]
    pub integration_timeout_ms: u64,

    /// Time between a `$connect` answered 2xx and the connection opening, in milliseconds; posts to it
    /// get 410 meanwhile, as at AWS until the handshake completes. A fault for tests: 0 (the default)
    /// opens at once.
    #[arg(long, env = "EMULATOR_OPEN_DELAY_MS", default_value_t = 0)]
    pub open_delay_ms: u64,

    /// Largest message, in bytes, in either direction: a larger PostToConnection gets 413, a larger
    /// (fragmented) client message closes the socket with 1009. API Gateway's is 128 KiB.
    #[arg(long, env = "EMULATOR_MAX_PAYLOAD_BYTES", default_value_t = common::names::MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,

    /// Largest client frame, in bytes; a larger one closes the socket with 1009. API Gateway's is 32 KB.
    #[arg(long, env = "EMULATOR_MAX_FRAME_BYTES", default_value_t = 32_768)]
    pub max_frame_bytes: usize,

    /// Seconds without a frame from the client before the socket is closed with 1001 (fractions allowed).
    #[arg(long, env = "EMULATOR_IDLE_TIMEOUT_SECS", default_value_t = 600.0)]
    pub idle_timeout_secs: f64,

    /// Seconds a socket may stay open at all before it is closed with 1001 (fractions allowed).
    #[arg(long, env = "EMULATOR_MAX_DURATION_SECS", default_value_t = 7200.0)]
    pub max_duration_secs: f64,

    /// Account throttle on the Management API, in requests per second (a token bucket shared by POST, GET
    /// and DELETE; over it: 429 LimitExceededException). Unset: no throttle. AWS's default is 10000.
    #[arg(long, env = "EMULATOR_MGMT_RATE")]
    pub mgmt_rate: Option<f64>,

    /// Bucket capacity of the Management API throttle, in requests. Default: half the rate (AWS: 5000).
    #[arg(long, env = "EMULATOR_MGMT_BURST", requires = "mgmt_rate")]
    pub mgmt_burst: Option<u32>,

    /// New connections allowed per second (over it: 429 on the handshake, before `$connect`). Unset: no
    /// limit. AWS's default account quota is 500.
    #[arg(long, env = "EMULATOR_CONNECT_RATE")]
    pub connect_rate: Option<f64>,

    /// Bucket capacity of the new-connection limit. Default: the rate, rounded up.
    #[arg(long, env = "EMULATOR_CONNECT_BURST", requires = "connect_rate")]
    pub connect_burst: Option<u32>,

    /// Frames accepted by the Management API but not yet written to a socket, per connection. When a client
    /// reads too slowly and its buffer is full, PostToConnection gets 429 LimitExceededException, as at AWS.
    #[arg(long, env = "EMULATOR_CLIENT_BUFFER_FRAMES", default_value_t = 1024)]
    pub client_buffer_frames: usize,

    /// Verify SigV4 signatures on the Management API, as API Gateway does for IAM-authorized callers:
    /// ACCESS_KEY_ID:SECRET_ACCESS_KEY of the one caller accepted. A missing, malformed, wrongly signed
    /// or stale (more than 15 minutes off) request gets 403 ForbiddenException. Unset: no checking.
    #[arg(long, env = "EMULATOR_VERIFY_SIGV4", hide_env_values = true, value_parser = parse_secret)]
    pub verify_sigv4: Option<Secret>,

    /// With --verify-sigv4: the region requests must be signed for (the credential scope's region).
    #[arg(
        long,
        env = "EMULATOR_VERIFY_SIGV4_REGION",
        default_value = "us-east-1"
    )]
    pub verify_sigv4_region: String,

    /// Log format.
    #[arg(long, env = "EMULATOR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Which `User-Agent` the integration sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UserAgentMode {
    /// The browser's, from the handshake.
    Client,
    /// `AmazonAPIGateway_<api id>`, what API Gateway itself sends.
    Gateway,
}

/// A token bucket's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Bucket capacity.
    pub burst: u32,
}

/// The caller the Management API accepts when signatures are verified. `Debug` hides the secret.
#[derive(Debug, Clone)]
pub struct SigV4Check {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub region: String,
}

impl SigV4Check {
    /// The verifier for these credentials and region.
    pub fn verifier(&self) -> mgmt_client::Verifier {
        let credentials = mgmt_client::SigningCredentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose(),
            None,
        )
        .expect("checked when the settings were validated");
        mgmt_client::Verifier::new(credentials, Some(self.region.clone()))
    }
}

/// Validated settings, ready to use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ws_listen: SocketAddr,
    pub management_listen: SocketAddr,
    pub routes: RouteTable,
    pub api_id: String,
    pub stage: String,
    pub gateway_secret: Option<Secret>,
    pub integration_user_agent: UserAgentMode,
    pub integration_timeout: Duration,
    pub open_delay: Duration,
    pub max_payload_bytes: usize,
    pub max_frame_bytes: usize,
    pub idle_timeout: Duration,
    pub max_duration: Duration,
    pub mgmt_limit: Option<RateLimit>,
    pub connect_limit: Option<RateLimit>,
    pub client_buffer_frames: usize,
    /// Signature verification on the Management API, when configured.
    pub verify_sigv4: Option<SigV4Check>,
    pub log_format: LogFormat,
}

/// A setting that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Routes(#[from] RouteTableError),
    #[error("--{flag} {value:?}: use 1 to 64 letters, digits, - or _")]
    Name { flag: &'static str, value: String },
    #[error(
        "--stage {0:?} is reserved (it is a path on the management listener); choose another stage name"
    )]
    ReservedStage(String),
    #[error("--integration-timeout-ms {0}: API Gateway allows 50 to 29000 milliseconds")]
    IntegrationTimeout(u64),
    #[error(
        "--open-delay-ms {0}: use at most 29000 milliseconds (API Gateway's integration timeout)"
    )]
    OpenDelay(u64),
    #[error("--{flag} must be at least 1")]
    Zero { flag: &'static str },
    #[error("--{flag} {value}: use a positive number of seconds")]
    Seconds { flag: &'static str, value: f64 },
    #[error("--{flag} {value}: use a positive number of requests per second")]
    Rate { flag: &'static str, value: f64 },
    #[error("--gateway-secret must not be empty and must be a valid header value")]
    Secret,
    #[error(
        "--verify-sigv4 / EMULATOR_VERIFY_SIGV4: {0} (expected ACCESS_KEY_ID:SECRET_ACCESS_KEY)"
    )]
    VerifySigV4(&'static str),
    #[error("--verify-sigv4-region {0:?}: use an AWS region name such as eu-west-1")]
    VerifySigV4Region(String),
}

impl Config {
    /// Checks every setting and builds [`Settings`].
    pub fn validate(self) -> Result<Settings, ConfigError> {
        for (flag, value) in [("api-id", &self.api_id), ("stage", &self.stage)] {
            if !valid_name(value) {
                return Err(ConfigError::Name {
                    flag,
                    value: value.clone(),
                });
            }
        }
        if matches!(self.stage.as_str(), "metrics" | "_emulator") {
            return Err(ConfigError::ReservedStage(self.stage));
        }
        if !(50..=29_000).contains(&self.integration_timeout_ms) {
            return Err(ConfigError::IntegrationTimeout(self.integration_timeout_ms));
        }
        if self.open_delay_ms > 29_000 {
            return Err(ConfigError::OpenDelay(self.open_delay_ms));
        }
        for (flag, value) in [
            ("max-payload-bytes", self.max_payload_bytes),
            ("max-frame-bytes", self.max_frame_bytes),
            ("client-buffer-frames", self.client_buffer_frames),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { flag });
            }
        }
        if let Some(secret) = &self.gateway_secret
            && (secret.expose().is_empty() || http::HeaderValue::from_str(secret.expose()).is_err())
        {
            return Err(ConfigError::Secret);
        }
        let verify_sigv4 = match &self.verify_sigv4 {
            None => None,
            Some(value) => {
                let (access_key_id, secret) =
                    value
                        .expose()
                        .split_once(':')
                        .ok_or(ConfigError::VerifySigV4(
                            "no ':' between the key id and the secret",
                        ))?;
                mgmt_client::SigningCredentials::new(access_key_id, secret, None).map_err(
                    |_| ConfigError::VerifySigV4("the key id or the secret is empty or unusable"),
                )?;
                if !mgmt_client::signer::is_valid_region(&self.verify_sigv4_region) {
                    return Err(ConfigError::VerifySigV4Region(self.verify_sigv4_region));
                }
                Some(SigV4Check {
                    access_key_id: access_key_id.to_owned(),
                    secret_access_key: Secret::new(secret),
                    region: self.verify_sigv4_region.clone(),
                })
            }
        };
        let routes = RouteTable::parse(
            &self.integration_base,
            &self.routes,
            &self.route_selection_expression,
        )?;
        Ok(Settings {
            ws_listen: self.ws_listen,
            management_listen: self.management_listen,
            routes,
            api_id: self.api_id,
            stage: self.stage,
            gateway_secret: self.gateway_secret,
            integration_user_agent: self.integration_user_agent,
            integration_timeout: Duration::from_millis(self.integration_timeout_ms),
            open_delay: Duration::from_millis(self.open_delay_ms),
            max_payload_bytes: self.max_payload_bytes,
            max_frame_bytes: self.max_frame_bytes,
            idle_timeout: seconds("idle-timeout-secs", self.idle_timeout_secs)?,
            max_duration: seconds("max-duration-secs", self.max_duration_secs)?,
            mgmt_limit: rate_limit("mgmt-rate", self.mgmt_rate, self.mgmt_burst, 0.5)?,
            connect_limit: rate_limit("connect-rate", self.connect_rate, self.connect_burst, 1.0)?,
            client_buffer_frames: self.client_buffer_frames,
            verify_sigv4,
            log_format: self.log_format,
        })
    }
}

/// Keeps the secret out of `Config`'s `Debug` from the moment it is parsed.
fn parse_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn seconds(flag: &'static str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(ConfigError::Seconds { flag, value })
}

/// `burst_per_rate` gives the default capacity as a fraction of the rate (AWS: 5000 for 10000/s).
fn rate_limit(
    flag: &'static str,
    rate: Option<f64>,
    burst: Option<u32>,
    burst_per_rate: f64,
) -> Result<Option<RateLimit>, ConfigError> {
    let Some(per_sec) = rate else {
        return Ok(None);
    };
    if !(per_sec.is_finite() && per_sec > 0.0) {
        return Err(ConfigError::Rate {
            flag,
            value: per_sec,
        });
    }
    let burst =
        burst.unwrap_or_else(|| (per_sec * burst_per_rate).ceil().min(u32::MAX as f64) as u32);
    if burst == 0 {
        return Err(ConfigError::Zero {
            flag: if flag == "mgmt-rate" {
                "mgmt-burst"
            } else {
                "connect-burst"
            },
        });
    }
    Ok(Some(RateLimit { per_sec, burst }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let config =
            Config::try_parse_from(std::iter::once("local-gateway").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_mirror_api_gateway() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.max_payload_bytes, 131_072);
        assert_eq!(s.max_frame_bytes, 32_768);
        assert_eq!(s.idle_timeout, Duration::from_secs(600));
        assert_eq!(s.max_duration, Duration::from_secs(7200));
        assert_eq!(s.integration_timeout, Duration::from_secs(29));
        assert_eq!(s.open_delay, Duration::ZERO);
        let s = parse(&["--open-delay-ms", "29000"]).unwrap();
        assert_eq!(s.open_delay, Duration::from_secs(29));
        assert_eq!(s.mgmt_limit, None);
        assert_eq!((s.api_id.as_str(), s.stage.as_str()), ("local", "local"));
    }

    #[test]
    fn throttle_burst_defaults_to_half_the_rate() {
        let s = parse(&["--mgmt-rate", "10000"]).unwrap();
        assert_eq!(
            s.mgmt_limit,
            Some(RateLimit {
                per_sec: 10_000.0,
                burst: 5000
            })
        );
        let s = parse(&["--mgmt-rate", "10", "--mgmt-burst", "3"]).unwrap();
        assert_eq!(s.mgmt_limit.unwrap().burst, 3);
    }

    #[test]
    fn the_secret_never_prints() {
        let config =
            Config::try_parse_from(["local-gateway", "--gateway-secret", "hunter2-hunter2"])
                .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        let settings = config.validate().unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(settings.gateway_secret.unwrap().expose(), "hunter2-hunter2");
    }

    #[test]
    fn sigv4_verification_is_off_by_default_and_its_secret_never_prints() {
        assert!(parse(&[]).unwrap().verify_sigv4.is_none());
        let config = Config::try_parse_from([
            "local-gateway",
            "--verify-sigv4",
            "AKIDEXAMPLE:s3cr3t-s3cr3t",
            "--verify-sigv4-region",
            "eu-west-1",
        ])
        .unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let settings = config.validate().unwrap();
        assert!(!format!("{settings:?}").contains("s3cr3t"));
        let check = settings.verify_sigv4.unwrap();
        assert_eq!(check.access_key_id, "AKIDEXAMPLE");
        assert_eq!(check.secret_access_key.expose(), "s3cr3t-s3cr3t");
        assert_eq!(check.region, "eu-west-1");
        for (args, needle) in [
            (&["--verify-sigv4", "no-colon"][..], "--verify-sigv4"),
            (&["--verify-sigv4", ":secret"][..], "--verify-sigv4"),
            (&["--verify-sigv4", "AKID:"][..], "--verify-sigv4"),
            (
                &[
                    "--verify-sigv4",
                    "AKID:x",
                    "--verify-sigv4-region",
                    "EU West",
                ][..],
                "--verify-sigv4-region",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(
                !err.contains("secret") || needle == "--verify-sigv4",
                "{err}"
            );
        }
    }

    #[test]
    fn refusals_name_the_flag() {
        for (args, needle) in [
            (&["--stage", "a/b"][..], "--stage"),
            (&["--stage", "metrics"][..], "reserved"),
            (&["--integration-timeout-ms", "40000"][..], "29000"),
            (&["--open-delay-ms", "29001"][..], "--open-delay-ms"),
            (&["--idle-timeout-secs", "0"][..], "--idle-timeout-secs"),
            (&["--mgmt-rate=-1"][..], "--mgmt-rate"),
            (&["--mgmt-burst", "5"][..], "--mgmt-rate"),
            (&["--max-frame-bytes", "0"][..], "--max-frame-bytes"),
            (&["--integration-base", "ftp://x/ws"][..], "http"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
