//! `berth bot`: reads the bot's configuration file, opens its state
//! directory, binds the webhook listener (printing the bound address on
//! stdout), starts the bump worker and poller, and serves until SIGINT or
//! SIGTERM. `--check-config` only validates the file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use berth_bumper::bot::{Bot, BotConfig};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct BotArgs {
    /// The bot's configuration (TOML; see docs/bumper.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    server: crate::server::ServerFlags,
}

pub(crate) fn run(args: BotArgs) -> Result<()> {
    let mut config = crate::read_config(&args.config, |t| {
        BotConfig::from_toml(t).map_err(anyhow::Error::msg)
    })?;
    args.server.apply(&mut config.listen, &mut config.log);
    if args.server.check_config {
        config
            .check_files()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("in {}", args.config.display()))?;
        crate::server::config_valid(Some(&args.config));
        return Ok(());
    }
    crate::logging::init(&config.log);
    let listen = config.listen;
    let bot = Bot::open(config)?;
    crate::server::runtime()?.block_on(async move {
        let listener = crate::server::bind(listen).await?;
        println!("{}", listener.local_addr()?);
        bot.spawn_workers();
        berth_bumper::bot::serve(listener, bot.router(), crate::server::shutdown_signal())
            .await
            .context("serving webhooks")
    })
}
