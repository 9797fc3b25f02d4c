//! Logging set-up for every subcommand: `tracing` to stderr, human-readable
//! by default or one JSON object per line, filtered by `RUST_LOG` when set.

use std::io::IsTerminal;

use berth_oci::log::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Install the global subscriber for `log` (`RUST_LOG` overrides its
/// level).
pub(crate) fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}
