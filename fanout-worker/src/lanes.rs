//! The two lanes inside a worker: interactive work (a reply, a direct message, a small channel) never
//! waits behind bulk work (a broadcast's chunks) for room, for a call slot or for a token.
//!
//! - [`Shares`]: a pool (jobs in hand, calls in flight) of which the bulk lane may hold at most
//!   `total - reserved`; the interactive lane may use all of it. So the interactive lane always finds
//!   `reserved` free places, and the bulk lane uses whatever the interactive lane leaves, never less
//!   than `total - reserved` (it never starves).
//! - [`TokenGate`]: calls take their governor token one at a time, interactive ones first: a bulk call
//!   waits while an interactive one is waiting. The governor hands out tokens at the fleet's rate, so
//!   an interactive call waits for at most the grant being waited for, not for every bulk call queued
//!   before it. Bulk is never starved: the interactive lane holds few calls (its jobs are small), and
//!   between them every token goes to bulk.
//! - The gate's reserve: while the budget is spent by a broadcast, the grant an interactive call waits
//!   for is up to one grant interval away (40 ms). So the gate keeps [`RESERVE`] tokens taken for the
//!   interactive lane: an interactive call takes one without waiting, and a task takes its replacement
//!   through the gate, first in line. A reserved token older than [`RESERVE_MAX_AGE`] is dropped unspent
//!   (the gateway may have cut the budget since), so the reserve is refilled only while interactive
//!   calls come, and costs at most [`RESERVE`] tokens per burst of them.

use crate::governor::{Governor, Ticket};
use common::job::Lane;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Tokens the gate keeps for interactive calls.
pub const RESERVE: usize = 2;

/// How long a reserved token may wait for an interactive call.
pub const RESERVE_MAX_AGE: Duration = Duration::from_secs(1);

/// A pool with a part reserved for the interactive lane.
#[derive(Debug, Clone)]
pub struct Shares {
    /// How many places there are.
    total: usize,
    /// Every place.
    all: Arc<Semaphore>,
    /// The places the bulk lane may take (`total - reserved`); a bulk holder takes one here and one in
    /// `all`.
    bulk: Arc<Semaphore>,
}

/// A place taken in [`Shares`]; given back when dropped.
#[derive(Debug)]
pub struct Place {
    _all: OwnedSemaphorePermit,
    _bulk: Option<OwnedSemaphorePermit>,
}

impl Shares {
    /// `total` places, of which the bulk lane may hold `total - reserved` (`reserved` below `total`, or
    /// 0).
    pub fn new(total: usize, reserved: usize) -> Self {
        let reserved = reserved.min(total.saturating_sub(1));
        Self {
            total,
            all: Arc::new(Semaphore::new(total)),
            bulk: Arc::new(Semaphore::new(total - reserved)),
        }
    }

    /// Waits for a place for `lane`.
    pub async fn acquire(&self, lane: Lane) -> Place {
        let bulk = match lane {
            Lane::Bulk => Some(
                self.bulk
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the shares are never closed"),
            ),
            Lane::Interactive => None,
        };
        let all = self
            .all
            .clone()
            .acquire_owned()
            .await
            .expect("the shares are never closed");
        Place {
            _all: all,
            _bulk: bulk,
        }
    }

    /// A place for `lane` if one is free now.
    pub fn try_acquire(&self, lane: Lane) -> Option<Place> {
        let bulk = match lane {
            Lane::Bulk => Some(self.bulk.clone().try_acquire_owned().ok()?),
            Lane::Interactive => None,
        };
        let all = self.all.clone().try_acquire_owned().ok()?;
        Some(Place {
            _all: all,
            _bulk: bulk,
        })
    }

    /// How many places there are, taken or not.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Places free now, for either lane: `(interactive, bulk)`.
    pub fn available(&self) -> (usize, usize) {
        let all = self.all.available_permits();
        (all, all.min(self.bulk.available_permits()))
    }
}

/// One holder at a time, interactive waiters first, each lane in arrival order; and a small reserve of
/// tokens for interactive calls.
#[derive(Debug, Default)]
pub struct TokenGate {
    state: Mutex<GateState>,
    reserve: Mutex<Reserve>,
}

#[derive(Debug, Default)]
struct Reserve {
    held: VecDeque<(Instant, Ticket)>,
    /// A task is taking replacements.
    filling: bool,
}

#[derive(Debug, Default)]
struct GateState {
    busy: bool,
    interactive: VecDeque<oneshot::Sender<()>>,
    bulk: VecDeque<oneshot::Sender<()>>,
}

/// The gate's one turn; passed on when dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    gate: &'a TokenGate,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.gate.pass_on();
    }
}

/// A waiter that was dropped (its call stopped) after being handed the turn passes it on.
struct Waiting<'a> {
    gate: &'a TokenGate,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.pass_on();
            }
        }
    }
}

impl TokenGate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the turn; `lane` decides the place in line. Cancel-safe: a waiter dropped before or
    /// after it was handed the turn never keeps it.
    pub async fn turn(&self, lane: Lane) -> Turn<'_> {
        let rx = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !state.busy {
                state.busy = true;
                return Turn { gate: self };
            }
            let (tx, rx) = oneshot::channel();
            match lane {
                Lane::Interactive => state.interactive.push_back(tx),
                Lane::Bulk => state.bulk.push_back(tx),
            }
            rx
        };
        let mut waiting = Waiting {
            gate: self,
            rx: Some(rx),
        };
        let handed = waiting.rx.as_mut().expect("set above").await;
        waiting.rx = None;
        debug_assert!(
            handed.is_ok(),
            "a waiter's sender is only dropped by sending"
        );
        Turn { gate: self }
    }

    /// Hands the turn to the first interactive waiter still waiting, else the first bulk one, else
    /// frees the gate.
    fn pass_on(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let next = match state.interactive.pop_front() {
                Some(tx) => tx,
                None => match state.bulk.pop_front() {
                    Some(tx) => tx,
                    None => {
                        state.busy = false;
                        return;
                    }
                },
            };
            if next.send(()).is_ok() {
                return;
            }
        }
    }

    /// A governor token for a call on `lane`: an interactive call takes a reserved one if there is one,
    /// else waits for the turn (before every bulk call) and asks the governor; either way the reserve is
    /// then topped up.
    pub async fn ticket(self: &Arc<Self>, lane: Lane, governor: &Arc<Governor>) -> Ticket {
        if lane == Lane::Interactive
            && let Some(ticket) = self.take_reserved()
        {
            self.top_up(governor);
            return ticket;
        }
        let ticket = {
            let _turn = self.turn(lane).await;
            governor.acquire().await
        };
        if lane == Lane::Interactive {
            self.top_up(governor);
        }
        ticket
    }

    /// A reserved token young enough to spend; older ones are dropped.
    fn take_reserved(&self) -> Option<Ticket> {
        let mut reserve = self.reserve.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((at, ticket)) = reserve.held.pop_front() {
            if at.elapsed() <= RESERVE_MAX_AGE {
                return Some(ticket);
            }
        }
        None
    }

    /// Starts taking tokens until the reserve holds [`RESERVE`]: one task at a time, which takes them
    /// one after the other (not a task per token, which would be a spawn per interactive call).
    fn top_up(self: &Arc<Self>, governor: &Arc<Governor>) {
        {
            let mut reserve = self.reserve.lock().unwrap_or_else(PoisonError::into_inner);
            if reserve.filling || reserve.held.len() >= RESERVE {
                return;
            }
            reserve.filling = true;
        }
        let (gate, governor) = (self.clone(), governor.clone());
        tokio::spawn(async move {
            loop {
                let ticket = {
                    let _turn = gate.turn(Lane::Interactive).await;
                    governor.acquire().await
                };
                let mut reserve = gate.reserve.lock().unwrap_or_else(PoisonError::into_inner);
                reserve.held.push_back((Instant::now(), ticket));
                if reserve.held.len() >= RESERVE {
                    reserve.filling = false;
                    return;
                }
            }
        });
    }

    /// Tokens in the reserve now.
    pub fn reserved(&self) -> usize {
        self.reserve
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
            .len()
    }

    /// Waiters in line: `(interactive, bulk)`.
    pub fn waiting(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.interactive.len(), state.bulk.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bulk_holds_at_most_the_unreserved_part_and_interactive_everything() {
        let shares = Shares::new(4, 1);
        let bulk: Vec<Place> = (0..3)
            .map(|_| shares.try_acquire(Lane::Bulk).unwrap())
            .collect();
        assert!(shares.try_acquire(Lane::Bulk).is_none());
        assert_eq!(shares.available(), (1, 0));
        let interactive = shares.try_acquire(Lane::Interactive).unwrap();
        assert!(shares.try_acquire(Lane::Interactive).is_none());
        drop(bulk);
        // Interactive may use what bulk does not.
        let more: Vec<Place> = (0..3)
            .map(|_| shares.try_acquire(Lane::Interactive).unwrap())
            .collect();
        assert!(shares.try_acquire(Lane::Bulk).is_none());
        drop((interactive, more));
        assert_eq!(shares.available(), (4, 3));
        // A total of one reserves nothing: both lanes share it.
        let one = Shares::new(1, 1);
        assert!(one.try_acquire(Lane::Bulk).is_some());
    }

    #[tokio::test]
    async fn a_bulk_waiter_gets_its_place_when_one_is_given_back() {
        let shares = Shares::new(2, 1);
        let held = shares.acquire(Lane::Bulk).await;
        let waiter = tokio::spawn({
            let shares = shares.clone();
            async move { shares.acquire(Lane::Bulk).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter got the place")
            .unwrap();
    }

    #[tokio::test]
    async fn interactive_waiters_go_first_and_bulk_follows_in_order() {
        let gate = Arc::new(TokenGate::new());
        let first = gate.turn(Lane::Bulk).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, lane) in [
            ("bulk-1", Lane::Bulk),
            ("bulk-2", Lane::Bulk),
            ("interactive-1", Lane::Interactive),
            ("interactive-2", Lane::Interactive),
        ] {
            let (in_line, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = in_line.turn(lane).await;
                order.lock().unwrap().push(name);
            }));
            // Each in line before the next arrives.
            while {
                let (i, b) = gate.waiting();
                i + b < tasks.len()
            } {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["interactive-1", "interactive-2", "bulk-1", "bulk-2"]
        );
        // The gate is free again.
        drop(gate.turn(Lane::Bulk).await);
    }

    /// An interactive call with the reserve filled gets a token while a bulk call holds the turn (the
    /// governor's grant it waits for could be a grant interval away), and the reserve refills.
    #[tokio::test]
    async fn an_interactive_call_takes_a_reserved_token_without_waiting_for_the_turn() {
        let server = test_support::RedisServer::start();
        let redis = common::store::Redis::connect(&server.url()).await.unwrap();
        let governor = Arc::new(Governor::new(
            redis,
            &common::keys::Keyspace::new("t:"),
            "reserve",
            100_000,
            10_000,
            common::metrics::WorkerMetrics::new(),
        ));
        let gate = Arc::new(TokenGate::new());
        // The first interactive call goes through the turn, and starts the reserve.
        gate.ticket(Lane::Interactive, &governor).await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while gate.reserved() < RESERVE {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the reserve fills");
        let bulk_holds_the_turn = gate.turn(Lane::Bulk).await;
        for _ in 0..RESERVE {
            tokio::time::timeout(
                Duration::from_secs(1),
                gate.ticket(Lane::Interactive, &governor),
            )
            .await
            .expect("a reserved token, without the turn");
        }
        // The reserve is empty and its replacements wait for the turn: so does the next call.
        assert_eq!(gate.reserved(), 0);
        let next = gate.ticket(Lane::Interactive, &governor);
        tokio::pin!(next);
        assert!(futures::poll!(&mut next).is_pending());
        drop(bulk_holds_the_turn);
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the turn came");
        // A bulk call never takes from the reserve.
        tokio::time::timeout(Duration::from_secs(5), async {
            while gate.reserved() < RESERVE {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the reserve refills");
        gate.ticket(Lane::Bulk, &governor).await;
        assert_eq!(gate.reserved(), RESERVE);
    }

    #[tokio::test]
    async fn a_waiter_dropped_in_line_or_after_being_handed_the_turn_never_keeps_it() {
        let gate = TokenGate::new();
        let held = gate.turn(Lane::Interactive).await;
        // Dropped while in line.
        {
            let wait = gate.turn(Lane::Interactive);
            tokio::pin!(wait);
            assert!(futures::poll!(&mut wait).is_pending());
            assert_eq!(gate.waiting(), (1, 0));
        }
        // Handed the turn, then dropped before it looked.
        {
            let wait = gate.turn(Lane::Bulk);
            tokio::pin!(wait);
            assert!(futures::poll!(&mut wait).is_pending());
            drop(held);
            assert_eq!(gate.waiting(), (0, 0));
        }
        tokio::time::timeout(Duration::from_secs(5), gate.turn(Lane::Bulk))
            .await
            .expect("the turn was passed on, not kept by the dropped waiter");
    }
}
