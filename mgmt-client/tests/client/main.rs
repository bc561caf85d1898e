//! mgmt-client's integration tests: SigV4 conformance with aws-sigv4, the Management API calls and their errors, TLS, verification, and the crate's tidiness.
//!
//! One test binary for the crate (each binary links the whole dependency graph); one module per area.

mod conformance;
mod management_api;
mod support;
mod tidy;
mod tls;
mod verify;
