//! Live connections: what a connection id refers to, from the moment `$connect` accepted it until it is
//! deleted or its socket closes.
//!
//! A [`Connection`] is either a real socket (frames for it go through a bounded queue to the task that
//! owns the socket, and a close signal tells that task to close with a given code) or a virtual
//! connection for scale tests (no socket: a delivery only bumps a counter). The [`Registry`] maps ids to
//! connections in shards, so the Management API's lookups and inserts from many handshakes do not contend
//! on one lock. Ids look like API Gateway's: 16 base64 characters ending in `=`.

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus::IntGauge;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio::sync::{mpsc, watch};

/// A fresh connection id in API Gateway's shape: 11 random bytes in URL-safe base64, 15 characters and
/// one `=` of padding (e.g. `L0SM9cOFvHcCIhw=`). Every character is one ingest accepts.
pub fn new_connection_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: [u8; 11] = rand::random();
    let mut id = String::with_capacity(16);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            id.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    id.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    id.push('=');
    id
}

/// Why a socket was closed, and the close frame it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame (the codec answers it).
    ClientClosed,
    /// The TCP connection ended or failed without a close handshake.
    TransportClosed,
    /// `DELETE @connections/{id}`.
    Deleted,
    IdleTimeout,
    MaxDuration,
    /// A client frame or message over the limit.
    TooLarge,
    /// A client frame that breaks the WebSocket protocol.
    ProtocolError,
    /// The emulator is shutting down.
    Shutdown,
}

impl CloseReason {
    /// The close frame to send (code, reason), if one is sent at all.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            CloseReason::ClientClosed | CloseReason::TransportClosed => None,
            CloseReason::Deleted => Some((1000, "")),
            CloseReason::IdleTimeout | CloseReason::MaxDuration | CloseReason::Shutdown => {
                Some((1001, "Going away"))
            }
            CloseReason::TooLarge => Some((1009, "Message too big")),
            CloseReason::ProtocolError => Some((1002, "Protocol error")),
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client",
            CloseReason::TransportClosed => "transport",
            CloseReason::Deleted => "deleted",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxDuration => "max_duration",
            CloseReason::TooLarge => "too_large",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// The socket side of a connection, held by the registry.
#[derive(Debug)]
pub struct SocketLink {
    outbound: mpsc::Sender<Message>,
    close: watch::Sender<Option<CloseReason>>,
}

/// A virtual connection's own counters. With payload tracking on, it also keeps a 64-bit digest of every
/// distinct payload it was posted, so a second post of the same bytes is told apart (a duplicate).
#[derive(Debug, Default)]
pub struct VirtualInbox {
    received: AtomicU64,
    payloads: Option<Mutex<HashSet<u64>>>,
}

/// What kind of connection an id refers to.
#[derive(Debug)]
pub enum Kind {
    Socket(SocketLink),
    Virtual(VirtualInbox),
}

/// One live connection.
#[derive(Debug)]
pub struct Connection {
    id: String,
    connected_at: DateTime<Utc>,
    source_ip: IpAddr,
    user_agent: Option<String>,
    /// Milliseconds since the Unix epoch of the last frame from the client.
    last_active_ms: AtomicI64,
    kind: Kind,
}

/// The socket task's ends of a [`SocketLink`].
#[derive(Debug)]
pub struct SocketEnds {
    /// Frames to write to the client.
    pub outbound: mpsc::Receiver<Message>,
    /// Becomes `Some` once, when something decides the socket must close.
    pub close: watch::Receiver<Option<CloseReason>>,
}

/// The outcome of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the socket's writer.
    Queued,
    /// Counted by a virtual connection; `repeat` when it tracks payloads and had already received these
    /// bytes.
    Counted { repeat: bool },
    /// The client is not reading fast enough: its queue is full.
    BufferFull,
    /// No such connection (any more), or it is closing.
    Gone,
}

impl Connection {
    /// A socket connection whose writer queue holds `buffer_frames` frames.
    pub fn new_socket(
        id: String,
        source_ip: IpAddr,
        user_agent: Option<String>,
        buffer_frames: usize,
    ) -> (Arc<Self>, SocketEnds) {
        let (outbound, outbound_rx) = mpsc::channel(buffer_frames);
        let (close, close_rx) = watch::channel(None);
        let conn = Self::new(
            id,
            source_ip,
            user_agent,
            Kind::Socket(SocketLink { outbound, close }),
        );
        (
            conn,
            SocketEnds {
                outbound: outbound_rx,
                close: close_rx,
            },
        )
    }

    /// A virtual connection: no socket, deliveries are counted (and, with `track_payloads`, told apart by
    /// their payload's digest).
    pub fn new_virtual(
        id: String,
        source_ip: IpAddr,
        user_agent: Option<String>,
        track_payloads: bool,
    ) -> Arc<Self> {
        let inbox = VirtualInbox {
            received: AtomicU64::new(0),
            payloads: track_payloads.then(Mutex::default),
        };
        Self::new(id, source_ip, user_agent, Kind::Virtual(inbox))
    }

    fn new(id: String, source_ip: IpAddr, user_agent: Option<String>, kind: Kind) -> Arc<Self> {
        let now = Utc::now();
        Arc::new(Self {
            id,
            connected_at: now,
            source_ip,
            user_agent,
            last_active_ms: AtomicI64::new(now.timestamp_millis()),
            kind,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn connected_at(&self) -> DateTime<Utc> {
        self.connected_at
    }

    pub fn last_active_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.last_active_ms.load(Ordering::Relaxed))
            .unwrap_or(self.connected_at)
    }

    /// Records client activity (a frame from the client).
    pub fn touch(&self) {
        self.last_active_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    pub fn source_ip(&self) -> IpAddr {
        self.source_ip
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    pub fn is_virtual(&self) -> bool {
        matches!(self.kind, Kind::Virtual(_))
    }

    /// Deliveries a virtual connection has counted (0 for sockets).
    pub fn received(&self) -> u64 {
        match &self.kind {
            Kind::Virtual(inbox) => inbox.received.load(Ordering::Relaxed),
            Kind::Socket(_) => 0,
        }
    }

    /// Distinct payloads a virtual connection that tracks payloads has received (0 otherwise).
    pub fn distinct_received(&self) -> u64 {
        match &self.kind {
            Kind::Virtual(VirtualInbox {
                payloads: Some(seen),
                ..
            }) => seen.lock().unwrap_or_else(PoisonError::into_inner).len() as u64,
            _ => 0,
        }
    }

    /// Zeroes a virtual connection's counters (and forgets the payloads it has seen).
    pub fn reset_received(&self) {
        if let Kind::Virtual(inbox) = &self.kind {
            inbox.received.store(0, Ordering::Relaxed);
            if let Some(seen) = &inbox.payloads {
                seen.lock().unwrap_or_else(PoisonError::into_inner).clear();
            }
        }
    }

    /// Asks the socket to close with `reason`. The first reason wins; later calls change nothing and return
    /// false. Virtual connections have nothing to close.
    pub fn request_close(&self, reason: CloseReason) -> bool {
        match &self.kind {
            Kind::Socket(link) => link.close.send_if_modified(|current| {
                if current.is_none() {
                    *current = Some(reason);
                    true
                } else {
                    false
                }
            }),
            Kind::Virtual(_) => false,
        }
    }

    /// Hands `data` to the connection: a text frame when it is UTF-8, else a binary frame.
    pub fn deliver(&self, data: Bytes) -> Delivery {
        match &self.kind {
            Kind::Virtual(inbox) => {
                inbox.received.fetch_add(1, Ordering::Relaxed);
                let repeat = inbox.payloads.as_ref().is_some_and(|seen| {
                    let digest = payload_digest(&data);
                    !seen
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(digest)
                });
                Delivery::Counted { repeat }
            }
            Kind::Socket(link) => {
                if link.close.borrow().is_some() {
                    return Delivery::Gone;
                }
                let frame = Utf8Bytes::try_from(data.clone())
                    .map(Message::Text)
                    .unwrap_or(Message::Binary(data));
                match link.outbound.try_send(frame) {
                    Ok(()) => Delivery::Queued,
                    Err(mpsc::error::TrySendError::Full(_)) => Delivery::BufferFull,
                    Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
                }
            }
        }
    }
}

/// A fixed-key 64-bit digest of a payload (the same bytes give the same digest in every run).
fn payload_digest(data: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    data.hash(&mut hasher);
    hasher.finish()
}

const SHARDS: usize = 64;

type Shard = RwLock<HashMap<String, Arc<Connection>>>;

/// Every live connection, by id.
#[derive(Debug)]
pub struct Registry {
    shards: Box<[Shard]>,
    hasher: RandomState,
    sockets_open: IntGauge,
    virtual_open: IntGauge,
}

impl Registry {
    /// The gauges are kept equal to the number of connections of each kind.
    pub fn new(sockets_open: IntGauge, virtual_open: IntGauge) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
            sockets_open,
            virtual_open,
        }
    }

    fn shard(&self, id: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    fn gauge(&self, conn: &Connection) -> &IntGauge {
        if conn.is_virtual() {
            &self.virtual_open
        } else {
            &self.sockets_open
        }
    }

    pub fn insert(&self, conn: Arc<Connection>) {
        self.gauge(&conn).inc();
        let previous = self
            .shard(conn.id())
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(conn.id().to_owned(), conn);
        if let Some(previous) = previous {
            // Only a 1-in-2^88 id collision gets here; the old connection is no longer reachable.
            self.gauge(&previous).dec();
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Connection>> {
        self.shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Removes and returns the connection; `None` when it was already gone.
    pub fn remove(&self, id: &str) -> Option<Arc<Connection>> {
        let removed = self
            .shard(id)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(conn) = &removed {
            self.gauge(conn).dec();
        }
        removed
    }

    /// Delivers `data` to the connection `id` without taking a reference to it.
    pub fn deliver(&self, id: &str, data: Bytes) -> Delivery {
        match self
            .shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            Some(conn) => conn.deliver(data),
            None => Delivery::Gone,
        }
    }

    /// A snapshot of every virtual connection.
    pub fn virtual_connections(&self) -> Vec<Arc<Connection>> {
        let mut all = Vec::with_capacity(self.virtual_open.get().max(0) as usize);
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            all.extend(shard.values().filter(|c| c.is_virtual()).cloned());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::names::ConnectionId;

    #[test]
    fn ids_look_like_api_gateway_ids() {
        for _ in 0..1000 {
            let id = new_connection_id();
            assert_eq!(id.len(), 16, "{id}");
            assert!(id.ends_with('='), "{id}");
            assert!(ConnectionId::parse(&id).is_ok(), "{id}");
        }
        assert_ne!(new_connection_id(), new_connection_id());
    }

    #[test]
    fn the_first_close_reason_wins() {
        let (conn, ends) = Connection::new_socket("a=".into(), [127, 0, 0, 1].into(), None, 4);
        assert!(conn.request_close(CloseReason::Deleted));
        assert!(!conn.request_close(CloseReason::IdleTimeout));
        assert_eq!(*ends.close.borrow(), Some(CloseReason::Deleted));
        assert_eq!(conn.deliver(Bytes::from_static(b"x")), Delivery::Gone);
    }

    #[test]
    fn a_full_queue_is_reported_not_waited_on() {
        let (conn, mut ends) = Connection::new_socket("b=".into(), [127, 0, 0, 1].into(), None, 1);
        assert_eq!(conn.deliver(Bytes::from_static(b"one")), Delivery::Queued);
        assert_eq!(
            conn.deliver(Bytes::from_static(b"two")),
            Delivery::BufferFull
        );
        assert!(matches!(ends.outbound.try_recv(), Ok(Message::Text(t)) if t.as_str() == "one"));
        assert_eq!(
            conn.deliver(Bytes::from_static(&[0xff, 0xfe])),
            Delivery::Queued
        );
        assert!(matches!(ends.outbound.try_recv(), Ok(Message::Binary(_))));
    }

    #[test]
    fn a_tracking_virtual_connection_tells_a_repeated_payload_apart() {
        let v = Connection::new_virtual("t=".into(), [10, 0, 0, 2].into(), None, true);
        let post = |bytes: &'static [u8]| v.deliver(Bytes::from_static(bytes));
        assert_eq!(post(b"one"), Delivery::Counted { repeat: false });
        assert_eq!(post(b"two"), Delivery::Counted { repeat: false });
        assert_eq!(post(b"one"), Delivery::Counted { repeat: true });
        assert_eq!((v.received(), v.distinct_received()), (3, 2));
        v.reset_received();
        assert_eq!(post(b"one"), Delivery::Counted { repeat: false });
        assert_eq!((v.received(), v.distinct_received()), (1, 1));
    }

    #[test]
    fn registry_counts_by_kind() {
        let m = crate::metrics::Metrics::new();
        let registry = Registry::new(m.sockets_open.clone(), m.virtual_open.clone());
        let v = Connection::new_virtual("v=".into(), [10, 0, 0, 1].into(), None, false);
        registry.insert(v.clone());
        let (s, _ends) = Connection::new_socket("s=".into(), [127, 0, 0, 1].into(), None, 4);
        registry.insert(s);
        assert_eq!((m.sockets_open.get(), m.virtual_open.get()), (1, 1));
        assert_eq!(
            registry.deliver("v=", Bytes::new()),
            Delivery::Counted { repeat: false }
        );
        assert_eq!(registry.deliver("nope", Bytes::new()), Delivery::Gone);
        assert_eq!(v.received(), 1);
        assert_eq!(registry.virtual_connections().len(), 1);
        assert!(registry.remove("s=").is_some());
        assert!(registry.remove("s=").is_none());
        assert_eq!(m.sockets_open.get(), 0);
    }
}
