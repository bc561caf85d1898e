//! The `fanout-worker` binary: reads its configuration (`fanout-worker --help`), sets up logging and runs
//! the worker until SIGTERM or Ctrl-C, then drains and exits 0. `fanout-worker dlq ...` runs an operator
//! command instead.

use clap::Parser;
use fanout_worker::config::Config;

/// mimalloc rather than the system allocator: every post allocates small, short-lived buffers (the signed
/// request, the answer, Redis replies).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(command) = &config.command {
        common::telemetry::init_tracing(config.shared.log_format);
        fanout_worker::run_command(&config, command, &mut std::io::stdout()).await?;
        return Ok(());
    }
    let settings = common::config::or_exit("fanout-worker", config.validate());
    common::telemetry::init_tracing(settings.log_format);
    fanout_worker::run(settings, common::telemetry::shutdown_signal()).await?;
    Ok(())
}
