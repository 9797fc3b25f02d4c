//! `berth pull`: fetch an image pinned by digest from its registry into an
//! OCI image layout — the base of a build (`fromImage`), and what
//! `berth.lib.pullImage` runs inside its fixed-output derivation. For an
//! index, only the requested platform's image is fetched. Every blob is
//! verified before it is stored, so the layout is byte for byte what the
//! digest names, on any machine.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_oci::Reference;
use berth_oci::client::{Client, ClientOptions};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// The image, pinned by digest: `registry/repository[:tag]@sha256:…`.
    reference: String,
    /// Where: `oci:DIR[:TAG]`, an OCI image layout (created if missing).
    #[arg(short, long = "output", value_name = "oci:DIR[:TAG]")]
    output: String,
    /// For an index: the image of this operating system.
    #[arg(long, default_value = "linux")]
    os: String,
    /// For an index: the image of this architecture (Go's names: amd64,
    /// arm64, …).
    #[arg(long, default_value = "amd64")]
    arch: String,
    /// Talk HTTP, not HTTPS, to the registry (a loopback registry falls
    /// back to it by itself).
    #[arg(long)]
    plain_http: bool,
    /// Docker-style auth.json with credentials (default:
    /// $REGISTRY_AUTH_FILE, then ~/.docker/config.json when present).
    #[arg(long)]
    authfile: Option<PathBuf>,
}

pub(crate) fn run(args: PullArgs) -> Result<()> {
    let reference: Reference = args
        .reference
        .parse()
        .with_context(|| format!("{} is not an image reference", args.reference))?;
    if reference.digest().is_none() {
        bail!(
            "{} is not pinned by digest: write it as name:tag@sha256:… (a tag can move)",
            args.reference
        );
    }
    let Some(rest) = args.output.strip_prefix("oci:") else {
        bail!(
            "output {:?} is not supported; use oci:DIR[:TAG]",
            args.output
        );
    };
    let (dir, tag) = match rest.rsplit_once(':') {
        Some((d, t)) if !t.contains('/') && !t.is_empty() => (d, Some(t)),
        _ => (rest, None),
    };
    let credentials =
        crate::build::auth_file_credentials(args.authfile.as_deref(), reference.registry())?;
    let client = Client::new(ClientOptions {
        plain_http: args.plain_http,
        credentials,
        ..ClientOptions::default()
    });
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    let layout = berth_oci::ImageLayout::create(dir)?;
    let digest =
        berth_builder::base::pull(&client, &args.reference, &args.os, &args.arch, &layout, tag)?;
    println!("{digest}");
    Ok(())
}
