//! fanout-worker's integration tests against real servers: delivery, dispatch and one job's handling on their own, connections still connecting, faults and leases, the governor, the lanes, ordered channels, signals, and the SQS backend.
//!
//! One test binary for the crate (each binary links the whole dependency graph); one module per area.

mod connecting;
mod dispatch;
mod fanout;
mod faults;
mod governor;
mod lanes;
mod ordered;
mod process;
mod signals;
mod sqs;
mod support;
