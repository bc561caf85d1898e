//! The counters the local gateway keeps over its virtual connections ([`VirtualStats`]): posts received,
//! repeated posts (a payload a tracking connection had already received), first and last post times, connections created, and the source addresses handed out. The shared state
//! owns one; the `/_emulator/virtual` routes (`virtual_conns`) read and reset it.

use chrono::{DateTime, SecondsFormat, Utc};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Counters over every virtual connection.
#[derive(Debug)]
pub struct VirtualStats {
    pub(crate) origin: Instant,
    pub(crate) origin_wall: DateTime<Utc>,
    pub(crate) received: AtomicU64,
    /// Posts of a payload the (tracking) connection had already received.
    pub(crate) repeats: AtomicU64,
    /// Nanoseconds since `origin`, plus one; 0 means "none yet".
    pub(crate) first_ns: AtomicU64,
    pub(crate) last_ns: AtomicU64,
    pub(crate) created: AtomicU64,
    pub(crate) next_ip: AtomicU32,
}

impl VirtualStats {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            origin_wall: Utc::now(),
            received: AtomicU64::new(0),
            repeats: AtomicU64::new(0),
            first_ns: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            created: AtomicU64::new(0),
            next_ip: AtomicU32::new(0),
        }
    }

    /// Counts one post to a virtual connection (`repeat`: of a payload it had already received).
    pub fn record(&self, repeat: bool) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if repeat {
            self.repeats.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.origin.elapsed().as_nanos() as u64 + 1;
        if self.first_ns.load(Ordering::Relaxed) == 0 {
            let _ = self
                .first_ns
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        self.last_ns.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn reset(&self) {
        self.received.store(0, Ordering::Relaxed);
        self.repeats.store(0, Ordering::Relaxed);
        self.first_ns.store(0, Ordering::Relaxed);
        self.last_ns.store(0, Ordering::Relaxed);
    }

    pub(crate) fn wall(&self, ns_plus_one: u64) -> Option<String> {
        let ns = ns_plus_one.checked_sub(1)?;
        let t = self.origin_wall + chrono::Duration::nanoseconds(ns as i64);
        Some(t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    /// A distinct client address for each virtual connection: 10.0.0.1, 10.0.0.2, ...
    pub(crate) fn next_source_ip(&self) -> IpAddr {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed) % 0x00ff_fffe + 1;
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
    }
}

impl Default for VirtualStats {
    fn default() -> Self {
        Self::new()
    }
}
