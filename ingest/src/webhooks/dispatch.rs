//! The lifecycle webhook's delivery: [`Emitter`] takes events from callbacks without ever waiting, and
//! one task per process batches, signs, sends and retries them, in order.
//!
//! Events wait in a bounded in-memory buffer (`FANOUT_LIFECYCLE_WEBHOOK_BUFFER_EVENTS`). A batch is
//! sent when it holds `FANOUT_LIFECYCLE_WEBHOOK_BATCH_MAX_EVENTS` events or its first event has waited
//! `FANOUT_LIFECYCLE_WEBHOOK_FLUSH_INTERVAL_MS`, whichever comes first, as
//! `POST {"events":[...]}` with the signature and timestamp headers of [`super::signing`] and an
//! `X-Fanout-Batch-Id` that stays the same across a batch's retries (so a receiver can tell a retry of
//! a batch it already processed). Batches go one at a time, so the application sees events in the order
//! ingest emitted them. A connection error, a timeout, a 408, 429 or 5xx is retried with jittered
//! exponential backoff up to `FANOUT_LIFECYCLE_WEBHOOK_MAX_ATTEMPTS`; any other answer (a redirect
//! included) fails the batch at once. While a batch is being sent new events fill the buffer; when it is
//! full they are dropped and counted, and the callback that emitted them carries on as if nothing
//! happened. Metrics: `fanout_lifecycle_batches_total{outcome}`, `fanout_lifecycle_retries_total`,
//! `fanout_lifecycle_events_dropped_total{reason}` (`buffer_full`, `failed`, `shutdown`).
//!
//! At shutdown [`Emitter::drain`] sends what is buffered, within a deadline.

use super::config::LifecycleSettings;
use super::events::{EventFilter, EventKind, LifecycleEvent};
use super::signing::{SIGNATURE_HEADER, Signer, TIMESTAMP_HEADER};
use crate::membership::{Connection, Joined, Left};
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use common::metrics::IngestMetrics;
use common::names::ChannelName;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The same for every attempt at one batch.
pub const BATCH_ID_HEADER: &str = "x-fanout-batch-id";

/// The longest wait between two attempts at a batch.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Where callbacks hand lifecycle events. Cheap to clone; a disabled one (no URL configured) does
/// nothing.
#[derive(Debug, Clone, Default)]
pub struct Emitter {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<LifecycleEvent>,
    filter: EventFilter,
    metrics: IngestMetrics,
    /// Set while events are being dropped, so the warning is logged once per episode.
    overflowing: AtomicBool,
    closing: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Emitter {
    /// Starts the delivery task (on the current Tokio runtime).
    pub fn start(
        settings: &LifecycleSettings,
        http: reqwest::Client,
        metrics: IngestMetrics,
    ) -> Self {
        let (tx, rx) = mpsc::channel(settings.buffer_events);
        let (closing, closing_rx) = watch::channel(false);
        let sender = Sender {
            url: settings.url.clone(),
            signer: Signer::new(&settings.secrets),
            http,
            metrics: metrics.clone(),
            batch_max_events: settings.batch_max_events,
            flush_interval: settings.flush_interval,
            max_attempts: settings.max_attempts,
            retry_min_delay: settings.retry_min_delay,
        };
        let task = tokio::spawn(sender.run(rx, closing_rx));
        // The host only: a URL's path or query may carry a token of the application's.
        tracing::info!(
            host = settings.url.host_str().unwrap_or_default(),
            "lifecycle webhook enabled"
        );
        Self {
            inner: Some(Arc::new(Inner {
                tx,
                filter: settings.events,
                metrics,
                overflowing: AtomicBool::new(false),
                closing,
                task: std::sync::Mutex::new(Some(task)),
            })),
        }
    }

    /// An emitter that sends nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    fn emit(
        &self,
        kind: EventKind,
        connection_id: &str,
        user_id: Option<&str>,
        channel: &ChannelName,
        reason: Option<&'static str>,
    ) {
        let Some(inner) = &self.inner else { return };
        if !inner.filter.allows(kind) {
            return;
        }
        let event = LifecycleEvent {
            kind,
            time_ms: common::job::now_ms(),
            connection_id: connection_id.to_owned(),
            user_id: user_id.map(str::to_owned),
            channel: channel.as_str().to_owned(),
            reason,
        };
        match inner.tx.try_send(event) {
            Ok(()) => {
                if inner.overflowing.load(Ordering::Relaxed) {
                    inner.overflowing.store(false, Ordering::Relaxed);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                inner
                    .metrics
                    .lifecycle_events_dropped
                    .with_label_values(&["buffer_full"])
                    .inc();
                if !inner.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        buffer_events = inner.tx.max_capacity(),
                        "lifecycle webhook buffer full: events are being dropped until the webhook catches up"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                inner
                    .metrics
                    .lifecycle_events_dropped
                    .with_label_values(&["shutdown"])
                    .inc();
            }
        }
    }

    /// `conn` was registered: `connect`, then `channel_occupied` and `join` as they apply.
    pub fn connected(&self, conn: &Connection, joined: Joined) {
        let user = conn.subject.as_ref().map(|s| s.as_str());
        self.emit(
            EventKind::Connect,
            conn.id.as_str(),
            user,
            &conn.channel,
            None,
        );
        self.arrived(conn, joined);
    }

    /// `conn` moved from `from` to `conn.channel`.
    pub fn moved(&self, conn: &Connection, from: &ChannelName, left: &Left, joined: Joined) {
        let user = conn.subject.as_ref().map(|s| s.as_str());
        self.departed(conn.id.as_str(), user, from, left);
        self.arrived(conn, joined);
    }

    /// A connection left `channel` for good (`reason`: disconnected, kicked, expired): `leave` and
    /// `channel_vacated` as they apply, then `disconnect` if this call took it out of its channel (the
    /// `$disconnect` that follows a kick finds it already out, and says nothing more).
    pub fn gone(
        &self,
        connection_id: &str,
        user_id: Option<&str>,
        channel: &ChannelName,
        left: &Left,
        reason: &'static str,
    ) {
        self.departed(connection_id, user_id, channel, left);
        if !left.removed {
            return;
        }
        self.emit(
            EventKind::Disconnect,
            connection_id,
            user_id,
            channel,
            Some(reason),
        );
    }

    fn arrived(&self, conn: &Connection, joined: Joined) {
        let user = conn.subject.as_ref().map(|s| s.as_str());
        if joined.occupied {
            self.emit(
                EventKind::ChannelOccupied,
                conn.id.as_str(),
                user,
                &conn.channel,
                None,
            );
        }
        if joined.presence {
            self.emit(EventKind::Join, conn.id.as_str(), user, &conn.channel, None);
        }
    }

    fn departed(
        &self,
        connection_id: &str,
        user: Option<&str>,
        channel: &ChannelName,
        left: &Left,
    ) {
        if left.presence.is_some() {
            self.emit(EventKind::Leave, connection_id, user, channel, None);
        }
        if left.vacated {
            self.emit(
                EventKind::ChannelVacated,
                connection_id,
                user,
                channel,
                None,
            );
        }
    }

    /// Sends what is buffered and stops the task, waiting at most `limit`; what is still unsent then
    /// is dropped and counted (`reason="shutdown"`).
    pub async fn drain(&self, limit: Duration) {
        let Some(inner) = &self.inner else { return };
        let Some(task) = inner.task.lock().expect("not poisoned").take() else {
            return;
        };
        let _ = inner.closing.send(true);
        let abort = task.abort_handle();
        if tokio::time::timeout(limit, task).await.is_err() {
            abort.abort();
            let unsent = inner.tx.max_capacity() - inner.tx.capacity();
            inner
                .metrics
                .lifecycle_events_dropped
                .with_label_values(&["shutdown"])
                .inc_by(unsent as u64);
            tracing::error!(
                unsent,
                "lifecycle webhook events not delivered before shutdown"
            );
        }
    }
}

/// Why an attempt at a batch failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Transport(reqwest::Error),
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
}

impl Failure {
    /// Worth another attempt: the receiver was unreachable, slow, overloaded or broken for a while.
    fn retryable(&self) -> bool {
        match self {
            Failure::Transport(_) => true,
            Failure::Status(s) => {
                s.is_server_error()
                    || *s == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || *s == reqwest::StatusCode::REQUEST_TIMEOUT
            }
        }
    }
}

/// The delivery task's side.
struct Sender {
    url: url::Url,
    signer: Signer,
    http: reqwest::Client,
    metrics: IngestMetrics,
    batch_max_events: usize,
    flush_interval: Duration,
    max_attempts: usize,
    retry_min_delay: Duration,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<LifecycleEvent>, mut closing: watch::Receiver<bool>) {
        let max = self.batch_max_events;
        let mut batch = Vec::with_capacity(max);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, max) => if n == 0 { break },
                _ = closing.wait_for(|c| *c) => break,
            }
            let deadline = tokio::time::Instant::now() + self.flush_interval;
            while batch.len() < max {
                let room = max - batch.len();
                tokio::select! {
                    n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                    () = tokio::time::sleep_until(deadline) => break,
                    _ = closing.wait_for(|c| *c) => break,
                }
            }
            self.send(std::mem::take(&mut batch)).await;
        }
        // Shutting down: what is buffered goes out in full batches, without waiting for more.
        rx.close();
        while rx.recv_many(&mut batch, max).await > 0 {
            self.send(std::mem::take(&mut batch)).await;
        }
    }

    async fn send(&self, events: Vec<LifecycleEvent>) {
        let body = Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "events": events })).expect("events serialise"),
        );
        let batch_id = uuid::Uuid::new_v4().to_string();
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.retry_min_delay)
            .with_max_delay(MAX_RETRY_DELAY)
            .with_max_times(self.max_attempts - 1);
        let outcome = (|| self.attempt(&body, &batch_id))
            .retry(backoff)
            .when(Failure::retryable)
            .notify(|e, wait| {
                self.metrics.lifecycle_retries.inc();
                tracing::warn!(error = %e, ?wait, events = events.len(), "lifecycle webhook batch failed; retrying");
            })
            .await;
        match outcome {
            Ok(()) => {
                self.metrics
                    .lifecycle_batches
                    .with_label_values(&["sent"])
                    .inc();
                tracing::debug!(events = events.len(), "lifecycle webhook batch sent");
            }
            Err(e) => {
                self.metrics
                    .lifecycle_batches
                    .with_label_values(&["failed"])
                    .inc();
                self.metrics
                    .lifecycle_events_dropped
                    .with_label_values(&["failed"])
                    .inc_by(events.len() as u64);
                tracing::error!(error = %e, events = events.len(), "lifecycle webhook batch dropped");
            }
        }
    }

    async fn attempt(&self, body: &Bytes, batch_id: &str) -> Result<(), Failure> {
        let timestamp = common::job::now_ms() / 1000;
        let response = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, self.signer.sign(timestamp, body))
            .header(BATCH_ID_HEADER, batch_id)
            .body(body.clone())
            .send()
            .await
            .map_err(|e| Failure::Transport(e.without_url()))?;
        let status = response.status();
        // The reply means nothing; it is read (up to the cap) so the connection can be reused.
        let _ = super::read_capped(response).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status))
        }
    }
}
