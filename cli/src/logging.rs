//! Logging set-up for every subcommand: `tracing` to stderr, human-readable
//! by default or one JSON object per line, filtered by `RUST_LOG` when set.

use std::io::IsTerminal;

use berth_registry::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber.
pub(crate) fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}
