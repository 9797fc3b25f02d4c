//! What the three long-running subcommands (`serve`, `mirror`, `bot`)
//! share: the flags every one of them takes (`--listen`, `--log-json`,
//! `--check-config`), their async runtime, binding the listener with an
//! error that says how to fix a busy port, and the shutdown signal
//! (SIGINT or SIGTERM) that starts a graceful drain.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use berth_oci::log::{LogConfig, LogFormat};
use clap::Args;

/// Flags every server subcommand takes.
#[derive(Debug, Args)]
pub(crate) struct ServerFlags {
    /// Address to listen on (overrides the file), IP:PORT or
    /// localhost:PORT; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub(crate) listen: Option<SocketAddr>,
    /// Log one JSON object per line (overrides the file's `[log]`).
    #[arg(long)]
    pub(crate) log_json: bool,
    /// Check the configuration and exit without serving.
    #[arg(long)]
    pub(crate) check_config: bool,
}

/// A `--listen` value: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`; the
/// other forms people type get the right one named.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let port = |p: &str| p.parse::<u16>().ok();
    if let Some(p) = s.strip_prefix("localhost:").and_then(port) {
        return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
    }
    if s.strip_prefix(':').and_then(port).is_some() {
        return Err(format!(
            "{s:?} names no address: write 127.0.0.1{s} (this machine only) or 0.0.0.0{s} (every interface)"
        ));
    }
    Err(format!(
        "{s:?} is not an address to listen on: write IP:PORT, e.g. 127.0.0.1:5000, [::1]:5000, localhost:5000, or 127.0.0.1:0 for a free port"
    ))
}

impl ServerFlags {
    /// Apply the overrides to a configuration's listen address and logging.
    pub(crate) fn apply(&self, listen: &mut SocketAddr, log: &mut LogConfig) {
        if let Some(l) = self.listen {
            *listen = l;
        }
        if self.log_json {
            log.format = LogFormat::Json;
        }
    }
}

/// The one answer of `--check-config` for every server: the file checked,
/// or the built-in defaults.
pub(crate) fn config_valid(file: Option<&std::path::Path>) {
    match file {
        Some(f) => println!("{}: configuration is valid", f.display()),
        None => println!("configuration is valid (built-in defaults)"),
    }
}

/// The multi-threaded runtime a server runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Bind `addr`; a failure says how to pick a free port.
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} (is another process using it? pass --listen 127.0.0.1:0 for a free port)"
        )
    })
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
