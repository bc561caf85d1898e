//! The `fanout-worker` binary: sets up logging and runs the worker until SIGTERM or Ctrl-C.

#[tokio::main]
async fn main() {
    common::telemetry::init_tracing(common::telemetry::LogFormat::Text);
    fanout_worker::run(common::telemetry::shutdown_signal()).await;
}
