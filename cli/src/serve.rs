//! `berth serve`: reads the configuration file (if any), applies command-line
//! overrides, opens the registry on its data directory, binds the listener,
//! prints the bound address on stdout, and serves until SIGINT or SIGTERM,
//! draining in-flight requests before it exits.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_registry::config::Config;
use berth_registry::tls::{ReloadingCert, serve_tls};
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
        if let Some(tls) = &config.tls {
            tls.files().load().context("in [tls]")?;
        }
        berth_registry::webhooks::Webhooks::load(&config.webhooks, &config.webhook)
            .map_err(anyhow::Error::msg)
            .context("in [[webhooks]]")?;
        if let Some(url) = &config.metadata.postgres {
            let password = match &config.metadata.password_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| {
                            format!("in [metadata]: cannot read password_file {}", f.display())
                        })?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned(),
                ),
                None => None,
            };
            berth_registry::metadata::Postgres::probe(url, password.as_deref()).with_context(|| {
                format!(
                    "in [metadata]: cannot use {} (is PostgreSQL up, the URL and password right?)",
                    berth_registry::metadata::Postgres::describe(url)
                )
            })?;
        }
        if let Some(s3) = &config.storage.s3 {
            // The bucket exists, and berth may write, list multipart
            // uploads and delete there.
            crate::server::runtime()?.block_on(async {
                let meta: std::sync::Arc<berth_registry::metadata::Metadata> = std::sync::Arc::new(
                    berth_registry::metadata::Sqlite::in_memory()
                        .context("cannot open a temporary database")?,
                );
                let store = berth_registry::storage::S3BlobStore::connect(s3, meta)
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("in [storage.s3]")?;
                store
                    .probe()
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("in [storage.s3]")
            })?;
        }
        crate::server::config_valid(args.config.as_deref());
        return Ok(());
    }
    crate::logging::init(&config.log);
    crate::server::runtime()?.block_on(async move {
        // Bind first: a busy port must not leave a data directory behind.
        let listener = crate::server::bind(config.listen).await?;
        let cert = match &config.tls {
            Some(tls) => Some(ReloadingCert::new(tls.files()).context("in [tls]")?),
            None => None,
        };
        let meta = Registry::open_metadata(&config.data, &config.metadata).context(
            if config.metadata.postgres.is_some() {
                "cannot open the metadata database (check [metadata] postgres, password_file, and that PostgreSQL is up)"
            } else {
                "cannot open the metadata database under --data (check --data and its permissions)"
            },
        )?;
        let mut registry = match &config.storage.s3 {
            None => Registry::open_local(&config.data, config.storage.fsync, meta, config.limits())
                .context(
                    "cannot open the registry's data directory (check --data and its permissions)",
                )?,
            Some(s3) => {
                let registry = Registry::open_s3(&config.data, s3, meta, config.limits())
                    .await
                    .context("cannot open the registry (blobs in S3)")?;
                if let berth_registry::storage::Blobs::S3(store) = registry.blobs() {
                    store
                        .probe()
                        .await
                        .map_err(anyhow::Error::msg)
                        .context("in [storage.s3]")?;
                }
                registry
            }
        };
        registry = registry.with_trusted_proxies(&config.trusted_proxies);
        if let Some(auth) = &config.auth {
            let gate = auth
                .load(&config.data)
                .map_err(anyhow::Error::msg)
                .context("in [auth]")?;
            registry = registry
                .with_gate(gate)
                .context("cannot read the accounts in the metadata database")?;
        }
        let hooks = berth_registry::webhooks::Webhooks::load(&config.webhooks, &config.webhook)
            .map_err(anyhow::Error::msg)
            .context("in [[webhooks]]")?;
        let registry = registry
            .with_policies(&config.policies)
            .map_err(anyhow::Error::msg)
            .context("in [[policies]]")?
            .with_gc(config.gc.clone())
            .with_ui(config.ui.enabled && cfg!(feature = "ui"))
            .with_space_floor(
                &config.data,
                if config.storage.s3.is_some() {
                    0
                } else {
                    config.storage.min_free_mib << 20
                },
            )
            .with_webhooks(hooks)
            .with_https(cert.is_some())
            .with_audit_retention(std::time::Duration::from_secs(
                config.audit.retention_days * 86_400,
            ))
            .with_upload_expiry(std::time::Duration::from_secs(
                config.storage.upload_expiry_hours * 3600,
            ));
        let addr = listener.local_addr()?;
        if let Some(warning) = exposure_warning(addr, config.auth.is_some(), cert.is_some()) {
            eprintln!("berth: warning: {warning}");
            tracing::warn!(%addr, "{warning}");
        }
        let scheme = if cert.is_some() { "https" } else { "http" };
        let blobs = match &config.storage.s3 {
            Some(s3) => format!(", blobs in s3://{}/{}", s3.bucket, s3.prefix),
            None => String::new(),
        };
        let metadata = match &config.metadata.postgres {
            Some(url) => format!(
                ", metadata in {}",
                berth_registry::metadata::Postgres::describe(url)
            ),
            None => String::new(),
        };
        println!(
            "berth registry listening on {scheme}://{addr} (data in {}{blobs}{metadata})",
            config.data.display()
        );
        tracing::info!(%addr, %scheme, data = %config.data.display(), "serving");
        let registry = Arc::new(registry);
        let shutdown = crate::server::shutdown_signal();
        match cert {
            Some(cert) => serve_tls(listener, registry, cert, shutdown).await,
            None => serve(listener, registry, shutdown).await,
        }
        .context("server failed")?;
        tracing::info!("stopped after draining in-flight requests");
        Ok(())
    })
}

/// What to say when the registry listens beyond this machine: without
/// auth anyone may write; with auth but without TLS, passwords and tokens
/// cross the network in clear.
fn exposure_warning(addr: std::net::SocketAddr, auth: bool, tls: bool) -> Option<&'static str> {
    if addr.ip().is_loopback() {
        return None;
    }
    match (auth, tls) {
        (false, _) => Some(
            "berth serve has no [auth]: anyone who can reach this address can push, overwrite and delete (add [auth], or listen on 127.0.0.1)",
        ),
        (true, false) => Some(
            "[auth] is on without [tls]: passwords, robot secrets and tokens cross the network in clear (add [tls] cert_file/key_file, or terminate TLS in front)",
        ),
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::exposure_warning;

    #[test]
    fn exposure_is_warned_about_beyond_loopback_only() {
        let lan = "192.0.2.1:5000".parse().unwrap();
        let lo = "127.0.0.1:5000".parse().unwrap();
        assert!(exposure_warning(lo, false, false).is_none());
        assert!(
            exposure_warning(lan, false, true)
                .unwrap()
                .contains("no [auth]")
        );
        assert!(
            exposure_warning(lan, true, false)
                .unwrap()
                .contains("without [tls]")
        );
        assert!(exposure_warning(lan, true, true).is_none());
    }
}
