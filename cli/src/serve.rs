//! `berth serve`: reads the configuration file (if any), applies command-line
//! overrides, opens the registry on its data directory, binds the listener,
//! prints the bound address on stdout, and serves until SIGINT or SIGTERM,
//! draining in-flight requests before it exits.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_registry::config::Config;
use berth_registry::{Registry, serve};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML); every setting has a default.
    #[arg(long, short, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory for blobs and metadata (overrides the file).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    server: crate::server::ServerFlags,
}

fn load(args: &ServeArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => crate::read_config(path, |t| Ok(Config::parse(t)?))?,
        None => Config::default(),
    };
    args.server.apply(&mut config.listen, &mut config.log);
    if let Some(d) = &args.data {
        config.data = d.clone();
    }
    config.validate()?;
    Ok(config)
}

pub(crate) fn run(args: ServeArgs) -> Result<()> {
    let config = load(&args)?;
    if args.server.check_config {
        if let Some(auth) = &config.auth {
            auth.check_files()
                .map_err(anyhow::Error::msg)
                .context("in [auth]")?;
        }
        crate::server::config_valid(args.config.as_deref());
        return Ok(());
    }
    crate::logging::init(&config.log);
    crate::server::runtime()?.block_on(async move {
        // Bind first: a busy port must not leave a data directory behind.
        let listener = crate::server::bind(config.listen).await?;
        let mut registry =
            Registry::open_local(&config.data, config.storage.fsync, config.limits()).context(
                "cannot open the registry's data directory (check --data and its permissions)",
            )?;
        if let Some(auth) = &config.auth {
            let gate = auth
                .load(&config.data)
                .map_err(anyhow::Error::msg)
                .context("in [auth]")?;
            registry = registry.with_gate(gate);
        }
        if !listener.local_addr()?.ip().is_loopback() && config.auth.is_none() {
            let warning = "berth serve has no authentication yet: anyone who can reach this address can push, overwrite and delete";
            eprintln!("berth: warning: {warning} (listen on 127.0.0.1, or put an authenticating proxy in front)");
            tracing::warn!(addr = %config.listen, "{warning}");
        }
        let addr = listener.local_addr()?;
        println!(
            "berth registry listening on http://{addr} (data in {})",
            config.data.display()
        );
        tracing::info!(%addr, data = %config.data.display(), "serving");
        serve(
            listener,
            Arc::new(registry),
            crate::server::shutdown_signal(),
        )
        .await
        .context("server failed")?;
        tracing::info!("stopped after draining in-flight requests");
        Ok(())
    })
}
