//! `berth bot`: reads the bot's configuration file, opens its state
//! directory, binds the webhook listener (printing the bound address on
//! stdout), starts the bump worker and poller, and serves until SIGINT or
//! SIGTERM. `--check-config` only validates the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use berth_bumper::bot::{Bot, BotConfig};
use berth_registry::config::LogFormat;
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct BotArgs {
    /// The bot's configuration (TOML; see docs/bumper.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Listen here instead of the file's `listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Log one JSON object per line.
    #[arg(long)]
    log_json: bool,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

pub(crate) fn run(args: BotArgs) -> Result<()> {
    let mut config = crate::read_config(&args.config, |t| {
        BotConfig::from_toml(t).map_err(anyhow::Error::msg)
    })?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if args.check_config {
        println!("{}: ok", args.config.display());
        return Ok(());
    }
    let format = if args.log_json {
        LogFormat::Json
    } else {
        LogFormat::Human
    };
    crate::logging::init(format, "info");
    let listen = config.listen;
    let bot = Bot::open(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}: is another process using it?"))?;
        println!("{}", listener.local_addr()?);
        bot.spawn_workers();
        berth_bumper::bot::serve(listener, bot.router(), crate::serve::shutdown_signal())
            .await
            .context("serving webhooks")
    })
}
