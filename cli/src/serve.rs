//! `berth serve`: reads the configuration file (if any), applies command-line
//! overrides, opens the registry on its data directory, binds the listener,
//! prints the bound address on stdout, and serves until SIGINT or SIGTERM,
//! draining in-flight requests before it exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_registry::config::{Config, LogFormat};
use berth_registry::{Registry, serve};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML); every setting has a default.
    #[arg(long, short, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the file); port 0 picks a free one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory for blobs and metadata (overrides the file).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Log one JSON object per line.
    #[arg(long)]
    log_json: bool,
    /// Check the configuration and exit without serving.
    #[arg(long)]
    check_config: bool,
}

fn load(args: &ServeArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => crate::read_config(path, |t| Ok(Config::parse(t)?))?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = &args.data {
        config.data = d.clone();
    }
    if args.log_json {
        config.log.format = LogFormat::Json;
    }
    config.validate()?;
    Ok(config)
}

pub(crate) fn run(args: ServeArgs) -> Result<()> {
    let config = load(&args)?;
    if args.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    crate::logging::init(config.log.format, &config.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let registry = Registry::open_local(&config.data, config.storage.fsync, config.limits())
            .context("cannot open the registry's data directory (check --data and its permissions)")?;
        let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another process using it? pass --listen 127.0.0.1:0 for a free port)",
                config.listen
            )
        })?;
        let addr = listener.local_addr()?;
        println!("berth registry listening on http://{addr} (data in {})", config.data.display());
        tracing::info!(%addr, data = %config.data.display(), "serving");
        serve(listener, Arc::new(registry), shutdown_signal())
            .await
            .context("server failed")?;
        tracing::info!("stopped after draining in-flight requests");
        Ok(())
    })
}

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
