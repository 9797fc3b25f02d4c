//! `berth mirror`: reads the configuration file (if any), applies
//! command-line overrides, checks the node's containerd config, opens the
//! mirror's cache, binds the listener, prints the bound address on stdout,
//! and serves containerd's pulls until SIGINT or SIGTERM. `berth mirror
//! hosts-config` writes or prints the runtime configuration that sends
//! pulls through the mirror.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use berth_mirror::Mirror;
use berth_mirror::config::Config;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct MirrorArgs {
    #[command(subcommand)]
    command: Option<MirrorCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum MirrorCommand {
    /// Write containerd hosts.toml files (or print a Talos patch or a k3s
    /// registries.yaml) that send pulls through the mirror; with
    /// --check-containerd, check a containerd config for settings that
    /// defeat it.
    HostsConfig(HostsArgs),
}

#[derive(Debug, Args)]
struct HostsArgs {
    /// A registry to mirror, `HOST[:PORT]` or `HOST[:PORT]=URL` (its API
    /// when not https://HOST). May be repeated.
    #[arg(
        long = "registry",
        value_name = "HOST[=URL]",
        required_unless_present = "check_containerd"
    )]
    registries: Vec<String>,
    /// Check this containerd config.toml for settings that defeat the
    /// mirror (no registry config_path, discard_unpacked_layers = true):
    /// prints each with its fix and exits 1 if there is any.
    #[arg(long, value_name = "FILE")]
    check_containerd: Option<PathBuf>,
    /// The mirror as containerd on this node reaches it.
    #[arg(long, default_value = "http://127.0.0.1:5001")]
    mirror_url: String,
    /// Write `<DIR>/<registry>/hosts.toml` (containerd's config_path, e.g.
    /// /etc/containerd/certs.d); without it, print them.
    #[arg(long, value_name = "DIR")]
    containerd_dir: Option<PathBuf>,
    /// Print a Talos machine-config patch instead.
    #[arg(long, conflicts_with_all = ["k3s", "containerd_dir"])]
    talos: bool,
    /// Print a k3s registries.yaml instead.
    #[arg(long, conflicts_with_all = ["talos", "containerd_dir"])]
    k3s: bool,
    /// How long containerd waits to connect to the mirror before it goes
    /// to the registry.
    #[arg(long, default_value_t = 200)]
    dial_timeout_ms: u64,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Configuration file (TOML); every setting has a default.
    #[arg(long, short, env = "BERTH_MIRROR_CONFIG")]
    config: Option<PathBuf>,
    /// Cache directory (overrides the file).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A registry to mirror, as `HOST[:PORT]` or `HOST[:PORT]=URL` (the
    /// registry's API when it is not https://HOST). May be repeated; adds
    /// to the file's.
    #[arg(long = "registry", value_name = "HOST[=URL]")]
    registries: Vec<String>,
    /// This node's mirror as the other nodes reach it, e.g.
    /// `http://$(NODE_IP):5001` in a DaemonSet (overrides the file's
    /// `advertise_url`).
    #[arg(long, value_name = "URL", env = "BERTH_MIRROR_ADVERTISE_URL")]
    advertise_url: Option<String>,
    #[command(flatten)]
    server: crate::server::ServerFlags,
}

fn load(args: &ServeArgs) -> Result<Config> {
    let mut config = match &args.config {
        // Validated below, after the flags have had their say.
        Some(path) => crate::read_config(path, |t| Ok(Config::parse_unchecked(t)?))?,
        None => Config::default(),
    };
    args.server.apply(&mut config.listen, &mut config.log);
    if let Some(d) = &args.data {
        config.data = d.clone();
    }
    if let Some(url) = &args.advertise_url {
        config.advertise_url = Some(url.clone());
    }
    for r in &args.registries {
        let r = berth_mirror::hosts::parse_registry(r).map_err(anyhow::Error::msg)?;
        if !config.registries.contains(&r.host) {
            config.registries.push(r.host.clone());
        }
        if !r.assumed {
            config.upstreams.insert(r.host, r.server);
        }
    }
    config.validate()?;
    Ok(config)
}

pub(crate) fn run(args: MirrorArgs) -> Result<()> {
    match args.command {
        Some(MirrorCommand::HostsConfig(h)) => hosts_config(&h),
        None => serve(&args.serve),
    }
}

fn hosts_config(args: &HostsArgs) -> Result<()> {
    use berth_mirror::hosts;
    if let Some(file) = &args.check_containerd {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let problems = hosts::check_containerd_config(&text);
        for p in &problems {
            eprintln!("{}: {p}", file.display());
        }
        if !problems.is_empty() {
            bail!(
                "{} setting(s) in {} defeat the mirror",
                problems.len(),
                file.display()
            );
        }
        println!("{}: no setting defeats the mirror", file.display());
        if args.registries.is_empty() {
            return Ok(());
        }
    }
    let mirror_url =
        hosts::check_url("--mirror-url", &args.mirror_url).map_err(anyhow::Error::msg)?;
    let registries = args
        .registries
        .iter()
        .map(|r| hosts::parse_registry(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    for r in registries.iter().filter(|r| r.assumed) {
        eprintln!(
            "berth mirror: {host} falls back to {server} (containerd's default); for a plain-HTTP registry such as berth serve without TLS write --registry {host}=http://{host}",
            host = r.host,
            server = r.server
        );
    }
    if args.talos {
        print!("{}", hosts::talos_patch(&registries, &mirror_url));
        return Ok(());
    }
    if args.k3s {
        print!("{}", hosts::k3s_registries_yaml(&registries, &mirror_url));
        return Ok(());
    }
    for hosts::Mirrored { host, server, .. } in &registries {
        let text = hosts::containerd_hosts_toml(server, &mirror_url, args.dial_timeout_ms);
        match &args.containerd_dir {
            Some(dir) => {
                let d = dir.join(host);
                std::fs::create_dir_all(&d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                let path = d.join("hosts.toml");
                let mut tmp = berth_oci::layout::output_temp(&d)
                    .with_context(|| format!("cannot write in {}", d.display()))?;
                std::io::Write::write_all(&mut tmp, text.as_bytes())?;
                tmp.persist(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", path.display());
            }
            None => print!("# {host}/hosts.toml\n{text}\n"),
        }
    }
    Ok(())
}

fn serve(args: &ServeArgs) -> Result<()> {
    let config = load(args)?;
    if args.server.check_config {
        crate::server::config_valid(args.config.as_deref());
        return Ok(());
    }
    crate::logging::init(&config.log);
    if let Ok(text) = std::fs::read_to_string(&config.containerd_config) {
        // Once, through the log (which goes to stderr), naming the file
        // checked: the mirror's `containerd_config` says which one.
        for problem in berth_mirror::hosts::check_containerd_config(&text) {
            tracing::warn!(
                file = %config.containerd_config.display(),
                "containerd config defeats the mirror: {problem} (another file? set containerd_config in the mirror's config)"
            );
        }
    }
    crate::server::runtime()?.block_on(async move {
        let listen = config.listen;
        let data = config.data.clone();
        // Bind first: a busy port must not leave a cache directory behind.
        let listener = crate::server::bind(listen).await?;
        let mirror = match config.p2p.clone() {
            None => Mirror::open(config),
            Some(p2p) => {
                let key = p2p.key()?;
                let url = config.advertise_url.clone().unwrap_or_default();
                let bootstrap = p2p
                    .bootstrap
                    .iter()
                    .filter_map(|a| a.parse().ok())
                    .collect();
                let routing = berth_mirror::p2p::P2p::start(
                    &url,
                    p2p.listen.parse().context("p2p.listen")?,
                    bootstrap,
                    key,
                )
                .await
                .context("cannot start libp2p routing (check p2p.listen)")?;
                eprintln!("berth mirror: p2p listening on {}", routing.listen_addr);
                let upstream = berth_mirror::upstream::Upstream::new(
                    &config.upstream,
                    config.cache.max_manifest_bytes,
                );
                Mirror::with_routing(config, upstream, Arc::new(routing))
            }
        }
        .context("cannot open the mirror's cache directory (check --data and its permissions)")?;
        let mirror = Arc::new(mirror);
        mirror.announce_cached();
        let addr = listener.local_addr()?;
        println!(
            "berth mirror listening on http://{addr} (cache in {})",
            data.display()
        );
        tracing::info!(%addr, "serving");
        berth_mirror::serve(listener, mirror, crate::server::shutdown_signal())
            .await
            .context("server failed")?;
        Ok(())
    })
}
