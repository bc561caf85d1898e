//! ingest's integration tests against real servers: gateway callbacks, the application API, lanes, ordered channels, limits, revocation, recovery, presence and the stale-connection sweep, lifecycle webhooks, outages, Redis Cluster and start-up.
//!
//! One test binary for the crate (each binary links the whole dependency graph); one module per area.

mod api;
mod bad_input;
mod broadcasts;
mod callbacks;
mod cluster;
mod demo;
mod idempotency;
mod lanes;
mod lifecycle_webhook_settings;
mod lifecycle_webhooks;
mod limits;
mod openapi;
mod ordered;
mod outage;
mod presence;
mod recovery;
mod revocation;
mod slowloris;
mod startup;
mod support;
mod sweep;
mod token_properties;
