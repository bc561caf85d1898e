//! Faults of the Management API on demand, for fault tests (the chaos suite): for a given time, every
//! `@connections` call either gets no answer (a stall) or is answered 500 `InternalServerErrorException`
//! without being delivered. The WebSocket front, `/metrics` and the `/_emulator` routes keep working.
//!
//! - `PUT /_emulator/faults/management` `{"fault": "stall" | "error", "seconds": S}` starts one (replacing
//!   any other); for a stall, `"deliver_late": true` delivers each held call when the stall ends (the case
//!   of a call that timed out at the caller but reached the connection), otherwise a held call is
//!   answered 504 when the stall ends and delivers nothing.
//! - `DELETE /_emulator/faults/management` ends it now (held calls go on as at the planned end).
//! - `GET /_emulator/faults` `{"management": {"fault", "remaining_secs", "deliver_late"} | null, "held",
//!   "delivered_late", "failed"}`: the fault now, and how many calls stalls have held (and of those,
//!   delivered late) and errors have answered since start.

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The longest fault one request may start.
const MAX_SECONDS: f64 = 3600.0;

/// What the Management API does meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// No answer until the fault ends.
    Stall,
    /// 500 at once, nothing delivered.
    Error,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    kind: Kind,
    until: Instant,
    deliver_late: bool,
}

/// What a Management API call does under the current fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go on as usual.
    Pass,
    /// Answer 500 and deliver nothing.
    Error,
    /// The call was held through a stall: answer 504 and deliver nothing.
    TimedOut,
}

/// The fault switch shared by the handlers.
#[derive(Debug)]
pub struct Faults {
    current: Mutex<Option<Active>>,
    /// Bumped whenever a fault starts or ends early, so held calls look again.
    changed: watch::Sender<u64>,
    held: AtomicU64,
    delivered_late: AtomicU64,
    failed: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            current: Mutex::new(None),
            changed: watch::channel(0).0,
            held: AtomicU64::new(0),
            delivered_late: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

impl Faults {
    fn active(&self) -> Option<Active> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.filter(|a| a.until > Instant::now())
    }

    fn set(&self, fault: Option<Active>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = fault;
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits out a stall, if one is on; says what the call does.
    pub async fn gate(&self) -> Gate {
        let Some(first) = self.active() else {
            return Gate::Pass;
        };
        if first.kind == Kind::Error {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Gate::Error;
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        let mut changed = self.changed.subscribe();
        let mut deliver_late = first.deliver_late;
        loop {
            match self.active() {
                Some(a) if a.kind == Kind::Stall => {
                    deliver_late = a.deliver_late;
                    tokio::select! {
                        _ = tokio::time::sleep_until(a.until) => {}
                        _ = changed.changed() => {}
                    }
                }
                _ => break,
            }
        }
        if deliver_late {
            self.delivered_late.fetch_add(1, Ordering::Relaxed);
            Gate::Pass
        } else {
            Gate::TimedOut
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_emulator/faults", get(show))
        .route("/_emulator/faults/management", put(start).delete(end))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    fault: Kind,
    seconds: f64,
    #[serde(default)]
    deliver_late: bool,
}

#[derive(Debug, Serialize)]
struct Current {
    fault: Kind,
    remaining_secs: f64,
    deliver_late: bool,
}

#[derive(Debug, Serialize)]
struct Status {
    management: Option<Current>,
    held: u64,
    delivered_late: u64,
    failed: u64,
}

async fn start(
    State(state): State<AppState>,
    body: Result<axum::Json<StartRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(axum::Json(request)) => request,
        Err(e) => return bad_request(e.body_text()),
    };
    if !(request.seconds > 0.0 && request.seconds <= MAX_SECONDS) {
        return bad_request(format!(
            "`seconds` must be above 0 and at most {MAX_SECONDS}"
        ));
    }
    if request.deliver_late && request.fault != Kind::Stall {
        return bad_request("`deliver_late` applies to a stall only".to_owned());
    }
    state.faults.set(Some(Active {
        kind: request.fault,
        until: Instant::now() + Duration::from_secs_f64(request.seconds),
        deliver_late: request.deliver_late,
    }));
    tracing::warn!(fault = ?request.fault, seconds = request.seconds, "Management API fault started (/_emulator/faults)");
    show(State(state)).await
}

async fn end(State(state): State<AppState>) -> StatusCode {
    state.faults.set(None);
    tracing::info!("Management API fault ended (/_emulator/faults)");
    StatusCode::NO_CONTENT
}

async fn show(State(state): State<AppState>) -> Response {
    let faults = &state.faults;
    let now = Instant::now();
    axum::Json(Status {
        management: faults.active().map(|a| Current {
            fault: a.kind,
            remaining_secs: a.until.saturating_duration_since(now).as_secs_f64(),
            deliver_late: a.deliver_late,
        }),
        held: faults.held.load(Ordering::Relaxed),
        delivered_late: faults.delivered_late.load(Ordering::Relaxed),
        failed: faults.failed.load(Ordering::Relaxed),
    })
    .into_response()
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}
