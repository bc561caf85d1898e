//! Calls from ingest to the application: what both webhooks share, and the lifecycle webhook.
//!
//! Two webhooks reach the application. The message webhook (`FANOUT_WEBHOOK_URL`, see
//! [`crate::actions::webhook`]) gets unknown client actions one call at a time and may answer the
//! client. The lifecycle webhook (`FANOUT_LIFECYCLE_WEBHOOK_URL`) gets connection and channel events
//! in signed batches and answers nothing. Both go through [`client`] (no redirects followed, a deadline
//! on every call) and read replies through [`read_capped`] (at most [`MAX_REPLY_BYTES`]).
//!
//! Read in this order:
//! - [`config`]: the lifecycle webhook's flags, validated into [`config::LifecycleSettings`].
//! - [`events`]: [`events::LifecycleEvent`], what the application receives, and the event filter.
//! - [`signing`]: the HMAC-SHA256 signature and timestamp headers, and [`signing::verify`].
//! - [`dispatch`]: [`dispatch::Emitter`], which callbacks hand events to without waiting, and the
//!   task that batches, signs, sends and retries them.

pub mod config;
pub mod dispatch;
pub mod events;
pub mod signing;

use std::time::Duration;

/// The largest webhook reply read; a longer one is refused.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// The HTTP client for calls to the application. Redirects are not followed (a redirect is a failed
/// call, so a webhook cannot bounce ingest's requests, with their secrets, somewhere else), and every
/// call, body included, has a deadline.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the HTTP client's TLS set-up cannot fail with static settings")
}

/// Reads a reply body up to [`MAX_REPLY_BYTES`]; `None` past it (or when the body fails mid-way).
/// Reading stops at the cap, so a huge reply costs no memory.
pub async fn read_capped(mut response: reqwest::Response) -> Option<Vec<u8>> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_REPLY_BYTES as u64)
    {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}
