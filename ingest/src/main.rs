//! The `ingest` binary: parses configuration, sets up logging and runs the service until SIGTERM or
//! Ctrl-C. Run `ingest --help` for every setting.

use clap::Parser;
use ingest::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    common::telemetry::init_tracing(config.shared.log_format);
    let settings = common::config::or_exit("ingest", config.validate());
    ingest::run(settings, common::telemetry::shutdown_signal()).await?;
    Ok(())
}
