//! Shared pieces of the fan-out backend, used by `ingest` and `fanout-worker`.
//!
//! Read the modules in this order:
//! - [`config`]: the settings every process shares (Redis, queue, key prefix, APIs, region, log format).
//! - [`names`]: the validated identifiers (connection ids, channel names, subjects) and the payload limit.
//! - [`job`]: the versioned job schema that travels on the queue from ingest to the workers.
//! - [`keys`]: every Redis key the product uses, with hash tags so the same code runs on Redis Cluster.
//! - [`lua`]: Lua shared by the Redis scripts (the server's clock as `now`).
//! - [`ordered`]: publishing to an ordered channel: its backlog in Redis and the one drain job per channel.
//! - [`presence`]: a presence member's stored and shown forms, its events, and the leave script.
//! - [`store`]: the Redis connection (single node or cluster) behind one type.
//! - [`queue`]: the queue trait and its two backends, SQS and Redis Streams, chosen by URL.
//! - [`gateways`]: the configured API Gateway APIs, their stages and Management API endpoints.
//! - [`secret`]: a string whose `Debug` never prints it, compared in constant time.
//! - [`metrics`]: every Prometheus metric name and the registries that hold them.
//! - [`telemetry`]: tracing set-up (text or JSON) and the shutdown signal shared by the binaries.

pub mod config;
pub mod gateways;
pub mod job;
pub mod keys;
pub mod lua;
pub mod metrics;
pub mod names;
pub mod ordered;
pub mod presence;
pub mod queue;
pub mod secret;
pub mod store;
pub mod telemetry;
