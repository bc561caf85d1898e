//! deploy/ checked against the code: the AWS and Kubernetes wiring, the container, monitoring rules and dashboard, and a live Prometheus evaluating every panel and alert.
//!
//! One test binary for the crate (each binary links the whole dependency graph); one module per area.

mod aws;
mod container;
mod k8s;
mod live_prometheus;
mod monitoring;
