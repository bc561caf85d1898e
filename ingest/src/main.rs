//! The `ingest` binary: parses configuration, sets up logging and runs the service until SIGTERM or
//! Ctrl-C. Run `ingest --help` for every setting. A setting that cannot be used stops it at once with one
//! line naming the setting and exit status 2 (as for a bad flag); a failure to start (Redis or the queue
//! unreachable, the address taken) with one line and exit status 1.

use clap::Parser;
use ingest::config::Config;
use std::process::ExitCode;

/// mimalloc rather than the system allocator: a callback allocates many small, short-lived buffers
/// (HTTP, JSON, Redis replies); under chat load glibc's malloc was about a third of ingest's CPU, and a
/// `$connect` costs a quarter less CPU with mimalloc (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    common::telemetry::init_tracing(config.shared.log_format);
    let settings = common::config::or_exit("ingest", config.validate());
    match ingest::run(settings, common::telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest: {e}");
            ExitCode::FAILURE
        }
    }
}
