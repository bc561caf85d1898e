//! How a job looks on a stream: an entry with one field, [`JOB_FIELD`]; a dead letter adds
//! [`REASON_FIELD`] and [`AT_FIELD`]. A receipt is the entry id (`<ms>-<seq>`), checked before it reaches
//! Redis.

use crate::queue::{QueueError, Receipt, Received};
use redis::Value;
use redis::streams::StreamId;

/// Field names of stream entries.
pub const JOB_FIELD: &str = "job";
pub const REASON_FIELD: &str = "reason";
pub const AT_FIELD: &str = "at";

/// A delivered entry as a [`Received`]. An entry without a `job` field (not written by this queue) is
/// delivered with an empty body, so that the worker dead-letters it instead of it circulating unseen.
pub(super) fn received(entry: &StreamId, receive_count: u32) -> Received {
    Received {
        body: text_field(entry, JOB_FIELD),
        receipt: Receipt(entry.id.clone()),
        receive_count,
    }
}

/// A field of an entry as text (lossy if it is not UTF-8; empty if absent).
pub(super) fn text_field(entry: &StreamId, field: &str) -> String {
    match entry.map.get(field) {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(other) => redis::from_redis_value_ref::<String>(other).unwrap_or_default(),
        None => String::new(),
    }
}

/// The stream entry id in a receipt (`<ms>-<seq>`), refusing anything else before it reaches Redis.
pub(super) fn entry_id(receipt: &Receipt) -> Result<&str, QueueError> {
    let id = receipt.0.as_str();
    let valid = id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    });
    if valid {
        Ok(id)
    } else {
        Err(QueueError::Refused(format!(
            "not a Redis Streams receipt: {id:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_must_be_entry_ids() {
        assert_eq!(
            entry_id(&Receipt("1700000000000-0".into())).unwrap(),
            "1700000000000-0"
        );
        for bad in ["", "-", "1-", "-1", "1-2-3", "abc", "1-x", "$", ">"] {
            assert!(entry_id(&Receipt(bad.into())).is_err(), "{bad}");
        }
    }
}
