//! The whole system on free ports: end-to-end scenarios on both queue backends, revocation, the chat page and the JS client in Chromium, and the load-test smoke runs.
//!
//! One test binary for the crate (each binary links the whole dependency graph); one module per area.

mod browser;
mod client;
mod e2e;
mod loadtest_smoke;
mod revocation;
