//! The `fanout-worker` binary: reads its configuration (`fanout-worker --help`), sets up logging and runs
//! the worker until SIGTERM or Ctrl-C, then drains and exits 0.

use clap::Parser;
use fanout_worker::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = common::config::or_exit("fanout-worker", Config::parse().validate());
    common::telemetry::init_tracing(settings.log_format);
    fanout_worker::run(settings, common::telemetry::shutdown_signal()).await?;
    Ok(())
}
