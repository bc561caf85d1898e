//! Keeps `deploy/` in step with the code. The deployment files name things the code defines: the headers
//! API Gateway's integration sends (`common::gateways::headers`), the metric names the services export
//! (`common::metrics::names`), the `FANOUT_*` settings the binaries read, the Redis Streams keys the KEDA
//! scaler watches (`common::keys`). The tests in `tests/` read those files and compare them with the code, so
//! a rename on either side fails `cargo test -p deploy-check` instead of an operator's deploy.
//!
//! Modules, in reading order:
//! - [`repo`]: paths and file reading relative to the workspace root, and YAML loading.
//! - [`promql`]: the metric names a PromQL expression reads.
//! - [`dashboard`]: the Grafana dashboard, generated from `common::metrics::names` (`deploy/grafana/dashboards/fanout.json`).
//!
//! The external validators (cfn-lint, checkov, kubernetes-validate, hadolint, promtool, docker-compose) run
//! in `./dev deploy-check`, not here: they are Python and Go tools this crate does not install.

pub mod dashboard;
pub mod promql;
pub mod repo;
