//! The `ingest` binary: parses configuration, sets up logging and runs the service until SIGTERM or
//! Ctrl-C. Run `ingest --help` for every setting.

use clap::Parser;
use ingest::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    common::telemetry::init_tracing(config.shared.log_format);
    let settings = config
        .validate()
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    ingest::run(settings, common::telemetry::shutdown_signal()).await?;
    Ok(())
}
