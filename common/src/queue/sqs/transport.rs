//! How the SQS backend talks to SQS: the SDK client with its retries and timeouts, and the mapping of
//! SDK errors to [`QueueError`].
//!
//! The SDK keeps its standard retries (3 attempts with backoff) and every call has a timeout: a call
//! attempt is bounded by [`ATTEMPT_TIMEOUT`], except a long poll, whose bound is its wait plus
//! [`RECEIVE_MARGIN`] ([`long_poll_timeouts`]). Errors map to [`QueueError::Unavailable`] (connection,
//! timeout, throttling, 5xx) or [`QueueError::Refused`] (4xx, such as a missing queue or a denied action);
//! their messages carry the operation, the SQS error code and message, never credentials.

use super::super::QueueError;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{
    BehaviorVersion, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::time::Duration;

/// The region used when neither the caller nor the AWS environment names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Time to open a TCP (and TLS) connection to SQS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time one attempt of an ordinary call may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one ordinary call may take, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// What a long poll's attempt may take beyond its wait.
pub const RECEIVE_MARGIN: Duration = Duration::from_secs(10);

/// An SDK client for `endpoint` (or AWS's own), in `region` (or the environment's, or
/// [`DEFAULT_REGION`]), with `credentials` (or the AWS environment's chain).
pub(super) async fn client(
    endpoint: Option<&str>,
    region: Option<&str>,
    credentials: Option<Credentials>,
) -> Client {
    let region = RegionProviderChain::first_try(region.map(|r| Region::new(r.to_owned())))
        .or_default_provider()
        .or_else(Region::from_static(DEFAULT_REGION));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(RetryConfig::standard())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    Client::new(&loader.load().await)
}

/// Attempt and operation timeouts for a long poll of `wait_seconds`: the attempt must outlive the wait.
pub(super) fn long_poll_timeouts(wait_seconds: u64) -> TimeoutConfig {
    let wait = Duration::from_secs(wait_seconds);
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(wait + RECEIVE_MARGIN)
        .operation_timeout(wait + RECEIVE_MARGIN + OPERATION_TIMEOUT)
        .build()
}

/// Maps an SDK error to a queue error. Service errors keep SQS's code and message (which name the problem,
/// never the caller's credentials); transport errors say what failed to connect or timed out.
pub(super) fn sdk_error<E>(operation: &str, err: SdkError<E>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = context.err().code().unwrap_or("unknown error");
            let message = format!(
                "{operation}: {code}: {} (HTTP {status})",
                context.err().message().unwrap_or("no message")
            );
            if status >= 500 || status == 429 || is_throttling(code) {
                QueueError::Unavailable(message)
            } else {
                QueueError::Refused(message)
            }
        }
        SdkError::TimeoutError(_) => QueueError::Unavailable(format!("{operation}: timed out")),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            QueueError::Unavailable(format!("{operation}: {}", DisplayErrorContext(&err)))
        }
        // The request could not be built or signed: a configuration problem (no credentials found, an
        // invalid endpoint) rather than an outage.
        _ => QueueError::Refused(format!("{operation}: {}", DisplayErrorContext(&err))),
    }
}

/// SQS error codes that mean "slow down", which SQS sends with a 4xx status.
fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "RequestThrottled"
            | "ThrottlingException"
            | "Throttling"
            | "KmsThrottled"
            | "AWS.SimpleQueueService.RequestThrottled"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_recognised() {
        assert!(is_throttling("RequestThrottled"));
        assert!(is_throttling("AWS.SimpleQueueService.RequestThrottled"));
        assert!(!is_throttling("AWS.SimpleQueueService.NonExistentQueue"));
    }
}
