//! The derived SigV4 signing key (`HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service),
//! "aws4_request")`), computed once per (UTC day, region, secret key) and kept ready as an HMAC key
//! for the rest of the day. A handful of entries live side by side, so yesterday's key survives a
//! request signed just before midnight and several regions or rotated secrets do not thrash.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::hmac;

/// Entries kept; the oldest day goes first.
const CAPACITY: usize = 8;

struct Entry {
    day: u64,
    region: Box<str>,
    secret: Box<str>,
    key: Arc<hmac::Key>,
}

/// A small, thread-safe cache of derived signing keys.
pub(crate) struct KeyCache {
    service: &'static str,
    entries: Mutex<Vec<Entry>>,
    derivations: AtomicU64,
}

impl KeyCache {
    pub(crate) fn new(service: &'static str) -> Self {
        KeyCache {
            service,
            entries: Mutex::new(Vec::with_capacity(CAPACITY)),
            derivations: AtomicU64::new(0),
        }
    }

    /// How many keys have been derived since this cache was made.
    pub(crate) fn derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }

    /// The signing key for `day` (days since the epoch, with `date` its `YYYYMMDD`).
    pub(crate) fn get(&self, day: u64, date: &[u8], region: &str, secret: &str) -> Arc<hmac::Key> {
        let mut entries = match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(entry) = entries
            .iter()
            .find(|e| e.day == day && *e.region == *region && *e.secret == *secret)
        {
            return entry.key.clone();
        }
        let key = Arc::new(derive(secret, date, region, self.service));
        self.derivations.fetch_add(1, Ordering::Relaxed);
        if entries.len() >= CAPACITY
            && let Some(oldest) = entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.day)
                .map(|(i, _)| i)
        {
            entries.swap_remove(oldest);
        }
        entries.push(Entry {
            day,
            region: region.into(),
            secret: secret.into(),
            key: key.clone(),
        });
        key
    }
}

/// SigV4's key derivation, returned as a ready HMAC-SHA256 key.
pub(crate) fn derive(secret: &str, date: &[u8], region: &str, service: &str) -> hmac::Key {
    let mut k_secret = Vec::with_capacity(4 + secret.len());
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret.as_bytes());
    let k_date = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k_secret), date);
    let k_region = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, k_date.as_ref()),
        region.as_bytes(),
    );
    let k_service = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, k_region.as_ref()),
        service.as_bytes(),
    );
    let k_signing = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, k_service.as_ref()),
        b"aws4_request",
    );
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}
