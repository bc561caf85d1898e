//! fanout-worker's integration tests against real servers: delivery, connections still connecting, faults and leases, the governor, the lanes, signals, and the SQS backend.
//!
//! One test binary for the crate (each binary links the whole dependency graph); one module per area.

mod connecting;
mod fanout;
mod faults;
mod governor;
mod lanes;
mod signals;
mod sqs;
mod support;
