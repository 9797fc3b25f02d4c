//! `berth build`: reads an image spec, builds the image with
//! `berth-builder`, writes it to the requested outputs, and prints the
//! manifest digest on stdout (and nothing else there), so CI can capture it.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_builder::canonical_tar::TarOptions;
use berth_builder::compress::Compression;
use berth_builder::{BuildOptions, ImageSpec, build_image};
use berth_oci::ImageLayout;
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The image spec (JSON; see docs/image-spec.md).
    spec: PathBuf,
    /// Output: `oci:DIR` or `oci:DIR:TAG` (an OCI image layout; TAG
    /// defaults to `latest`).
    #[arg(short, long = "output", required = true)]
    outputs: Vec<String>,
    /// Layer compression: gzip[:1-9], zstd[:1-19] or none.
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// Compression threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Read store paths from this root (a chroot store) instead of `/`.
    #[arg(long, default_value = "/")]
    store_root: PathBuf,
}

enum Output {
    Oci { dir: PathBuf, tag: String },
}

fn parse_output(s: &str) -> Result<Output> {
    match s.split_once(':') {
        Some(("oci", rest)) if !rest.is_empty() => {
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !d.is_empty() => (d, t),
                _ => (rest, "latest"),
            };
            berth_oci::validate_tag(tag).with_context(|| format!("in output {s:?}"))?;
            Ok(Output::Oci {
                dir: PathBuf::from(dir),
                tag: tag.to_owned(),
            })
        }
        _ => bail!("output {s:?} is not supported; use oci:DIR[:TAG]"),
    }
}

pub(crate) fn run(args: BuildArgs) -> Result<()> {
    let outputs: Vec<Output> = args
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<_>>()?;
    let compression = Compression::parse(&args.compression).map_err(anyhow::Error::msg)?;
    let text = std::fs::read(&args.spec)
        .with_context(|| format!("cannot read image spec {}", args.spec.display()))?;
    let spec = ImageSpec::parse(&text).with_context(|| format!("in {}", args.spec.display()))?;
    let mut opts = BuildOptions {
        compression,
        tar: TarOptions::from_env(),
        store_root: args.store_root,
        ..BuildOptions::default()
    };
    if let Some(t) = args.threads {
        opts.threads = t.max(1);
    }
    let mut digest = None;
    for output in &outputs {
        match output {
            Output::Oci { dir, tag } => {
                let layout = ImageLayout::create(dir)
                    .with_context(|| format!("cannot create the OCI layout {}", dir.display()))?;
                let image = build_image(&spec, &opts, &layout, Some(tag))?;
                digest = Some(image.manifest_digest);
            }
        }
    }
    if let Some(d) = digest {
        println!("{d}");
    }
    Ok(())
}
