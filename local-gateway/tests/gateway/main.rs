//! End-to-end tests of the local gateway over real sockets: a tokio-tungstenite client in front, a small
//! recording axum app behind it as the integration (the boundary ingest plays), and HTTP calls (plain and
//! through the AWS SDK and the lean client) to the Management API, with and without SigV4 verification.

mod aws_cli;
mod faults;
mod lifecycle;
mod management;
mod routing;
mod sdk_contract;
mod sigv4;
mod support;
mod virtual_conns;
