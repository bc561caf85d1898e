//! The `local-gateway` binary: parses configuration, sets up logging and runs the emulator until SIGTERM
//! or Ctrl-C. Run `local-gateway --help` for every setting; for example, in front of a local ingest:
//! `cargo run -p local-gateway -- --integration-base http://127.0.0.1:8080/ws`, then connect to
//! `ws://127.0.0.1:4001/local?channel=...&ws_token=...` and give ingest `local=http://127.0.0.1:4000/local`.

use clap::Parser;
use local_gateway::Config;

/// mimalloc rather than the system allocator, as the product's own services use: the emulator carries
/// every frame of a load test, and should not be the first process to saturate.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    common::telemetry::init_tracing(config.log_format);
    let settings = common::config::or_exit("local-gateway", config.validate());
    local_gateway::run(settings, common::telemetry::shutdown_signal()).await?;
    Ok(())
}
