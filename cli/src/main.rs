//! The `berth` binary: parses the command line, sets up logging, and hands
//! each subcommand to the library crate that owns it. It holds no registry,
//! builder, mirror or bumper logic of its own; errors reach the user as one
//! line saying what failed and how to fix it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod bot;
mod build;
mod bump;
mod logging;
mod mirror;
mod progress;
mod pull;
mod serve;
mod server;

/// berth: Nix closures to running pods.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the OCI registry (filesystem blobs and SQLite under --data).
    Serve(serve::ServeArgs),
    /// Build a reproducible layered image from an image spec.
    Build(build::BuildArgs),
    /// Fetch an image pinned by digest into an OCI image layout (a build's
    /// base; what berth.lib.pullImage runs).
    Pull(pull::PullArgs),
    /// Run the node mirror containerd pulls through (verified pull-through
    /// cache of the mirrored registries).
    Mirror(mirror::MirrorArgs),
    /// Pin image digests in a GitOps checkout (changing nothing else), and
    /// optionally push a branch and open or update a pull request.
    Bump(bump::BumpArgs),
    /// Manage the registry's projects, members, users and robots, and read
    /// its audit log (the admin API of `berth serve` with [auth]).
    Admin(admin::AdminArgs),
    /// Receive the registry's push webhooks (or poll tags) and open digest
    /// bump pull requests.
    Bot(bot::BotArgs),
}

/// Read the configuration file `path` and parse it with `parse`; either
/// failure names the file.
pub(crate) fn read_config<T>(
    path: &std::path::Path,
    parse: impl FnOnce(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Build(args) => build::run(args),
        Command::Pull(args) => pull::run(args),
        Command::Mirror(args) => mirror::run(args),
        Command::Bump(args) => bump::run(args),
        Command::Bot(args) => bot::run(args),
        Command::Admin(args) => admin::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the cause chain, outermost first.
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}
