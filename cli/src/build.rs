//! `berth build`: reads an image spec, builds the image with
//! `berth-builder`, writes it to the requested outputs, and prints the
//! manifest digest on stdout (and nothing else there), so CI can capture it.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_builder::archive::{ArchiveKind, write_archive};
use berth_builder::cache::LayerCache;
use berth_builder::canonical_tar::TarOptions;
use berth_builder::compress::Compression;
use berth_builder::publish::{PublishError, build_set};
use berth_builder::{BuildOptions, ImageSpec};
use berth_oci::client::{Client, ClientOptions, Credentials};
use berth_oci::{ImageLayout, Reference};
use clap::Args;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["specs", "nix"])))]
pub(crate) struct BuildArgs {
    /// Image specs (JSON; see docs/image-spec.md); several, one per
    /// platform, with --index.
    #[arg(value_name = "SPEC")]
    specs: Vec<PathBuf>,
    /// Tie the images of several specs together in one multi-architecture
    /// OCI index (their platforms come from each spec).
    #[arg(long)]
    index: bool,
    /// Build from these store paths instead of a spec: the closure comes
    /// from `nix path-info --json --recursive`, the config from the flags
    /// below.
    #[arg(long, num_args = 1.., value_name = "STOREPATH")]
    nix: Vec<String>,
    /// With --nix: the entrypoint (repeat for each argument).
    #[arg(long, requires = "nix")]
    entrypoint: Vec<String>,
    /// With --nix: the default command (repeat for each argument).
    #[arg(long, requires = "nix")]
    cmd: Vec<String>,
    /// With --nix: an environment entry NAME=value (repeatable).
    #[arg(long, requires = "nix")]
    env: Vec<String>,
    /// With --nix: the image name.
    #[arg(long, requires = "nix")]
    name: Option<String>,
    /// A config label KEY=VALUE, over the spec's (repeatable), e.g.
    /// `org.opencontainers.image.revision=$GITHUB_SHA`: the bot's pull
    /// requests name the source and revision they carry.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Rebuild and check that the registry holds exactly this image at
    /// REF (exit status 1 if not); writes and pushes nothing.
    #[arg(long, value_name = "REF", conflicts_with_all = ["outputs", "push"])]
    verify: Option<String>,
    /// Output: `oci:DIR[:TAG]` (an OCI image layout), `oci-archive:FILE[:TAG]`
    /// or `docker-archive:FILE[:NAME:TAG]` (for `podman load`/`docker
    /// load`). TAG defaults to `latest`. May be repeated. With no output,
    /// no --push and no --verify, the image is only built (into the
    /// layer cache) and its digest printed: what a push would send.
    #[arg(short, long = "output")]
    outputs: Vec<String>,
    /// Push to this reference (`host[:port]/repo[:tag]`), uploading only
    /// what the registry lacks.
    #[arg(long)]
    push: Option<String>,
    /// Talk HTTP, not HTTPS, to the registry (a loopback registry is
    /// tried over HTTPS first and falls back to HTTP by itself).
    #[arg(long)]
    plain_http: bool,
    /// Docker-style auth.json with credentials (default:
    /// $REGISTRY_AUTH_FILE, then ~/.docker/config.json when present).
    #[arg(long)]
    authfile: Option<PathBuf>,
    /// Registry user name (with --password or BERTH_PASSWORD).
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// Registry password or token.
    #[arg(long, env = "BERTH_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// A repository in the same registry to mount shared blobs from.
    #[arg(long)]
    mount_from: Option<String>,
    /// Parallel blob uploads.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Do not attach the CycloneDX SBOM (an OCI 1.1 referrer of the image).
    #[arg(long)]
    no_sbom: bool,
    /// No progress bars (they are drawn only on a terminal anyway).
    #[arg(long, short)]
    quiet: bool,
    /// Layer compression: gzip[:1-9] (level 4 by default), zstd[:1-19] or
    /// none.
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// Compression threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Read store paths from this root (a chroot store) instead of `/`.
    #[arg(long, default_value = "/")]
    store_root: PathBuf,
    /// Layer cache and push staging directory (default
    /// $XDG_CACHE_HOME/berth or ~/.cache/berth).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Build every layer from the store, ignoring the cache.
    #[arg(long)]
    no_cache: bool,
    /// Most bytes of built blobs the cache keeps; the least recently used
    /// go first (10GiB, 512MiB, …).
    #[arg(long, default_value = "10GiB", value_parser = berth_builder::cache::parse_size)]
    cache_max: u64,
}

enum Output {
    Oci { dir: PathBuf, tag: String },
    Archive { file: PathBuf, kind: ArchiveKind },
}

fn parse_output(s: &str) -> Result<Output> {
    let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
    if rest.is_empty() {
        bail!(
            "output {s:?} is not supported; use oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]"
        );
    }
    let (path, name) = match rest.split_once(':') {
        Some((p, n)) if !p.is_empty() => (p, Some(n)),
        _ => (rest, None),
    };
    let tag = |t: Option<&str>| -> Result<String> {
        let t = t.unwrap_or("latest");
        berth_oci::validate_tag(t).with_context(|| format!("in output {s:?}"))?;
        Ok(t.to_owned())
    };
    match kind {
        "oci" => Ok(Output::Oci {
            dir: PathBuf::from(path),
            tag: tag(name)?,
        }),
        "oci-archive" => Ok(Output::Archive {
            file: PathBuf::from(path),
            kind: ArchiveKind::Oci { tag: tag(name)? },
        }),
        "docker-archive" => {
            // NAME:TAG, NAME alone meaning NAME:latest; none: the spec's
            // name (filled in once the spec is read), tag latest.
            let repo_tag = name
                .map(|n| {
                    let (repo, t) = match n.rsplit_once(':') {
                        Some((r, t)) if !t.contains('/') => (r, t),
                        _ => (n, "latest"),
                    };
                    // Checked as typed: a reference would be normalised
                    // (`library/…`), naming something the user never wrote.
                    berth_oci::validate_name(repo.rsplit_once('/').map_or(repo, |(_, r)| r))
                        .and_then(|()| berth_oci::validate_tag(t))
                        .with_context(|| format!("in output {s:?}, name {n:?}"))?;
                    Ok::<_, anyhow::Error>(format!("{repo}:{t}"))
                })
                .transpose()?;
            Ok(Output::Archive {
                file: PathBuf::from(path),
                kind: ArchiveKind::Docker { repo_tag },
            })
        }
        _ => bail!(
            "output {s:?} is not supported; use oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]"
        ),
    }
}

/// Refuse flags that would be ignored: the config flags without `--nix`
/// (a spec's config sets those), the registry flags without `--push` or
/// `--verify`.
fn check_flags(args: &BuildArgs) -> Result<()> {
    if args.nix.is_empty() {
        for (flag, given) in [
            ("--entrypoint", !args.entrypoint.is_empty()),
            ("--cmd", !args.cmd.is_empty()),
            ("--env", !args.env.is_empty()),
            ("--name", args.name.is_some()),
        ] {
            if given {
                bail!(
                    "{flag} applies only with --nix; with a spec, set it in the spec's config (docs/image-spec.md)"
                );
            }
        }
    }
    for label in &args.labels {
        if label.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            bail!(
                "--label {label:?} is not KEY=VALUE (e.g. org.opencontainers.image.revision=abc123)"
            );
        }
    }
    if args.push.is_none() && args.verify.is_none() {
        for (flag, given) in [
            ("--plain-http", args.plain_http),
            ("--authfile", args.authfile.is_some()),
            ("--username", args.username.is_some()),
            ("--mount-from", args.mount_from.is_some()),
        ] {
            if given {
                bail!("{flag} applies only with --push or --verify");
            }
        }
    }
    Ok(())
}

pub(crate) fn run(args: BuildArgs) -> Result<()> {
    check_flags(&args)?;
    let mut outputs: Vec<Output> = args
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<_>>()?;
    let push = args
        .push
        .as_deref()
        .map(|r| {
            r.parse::<Reference>()
                .with_context(|| format!("--push {r}"))
        })
        .transpose()?;
    let mut specs = load_specs(&args)?;
    // Bases named only by reference are fetched (once: into the cache).
    let _bases_tmp = fetch_bases(&args, &mut specs, push.as_ref())?;
    for label in &args.labels {
        // check_flags made sure it is KEY=VALUE.
        let (key, value) = label.split_once('=').unwrap_or((label, ""));
        for spec in &mut specs {
            spec.config.labels.insert(key.to_owned(), value.to_owned());
        }
    }
    // A docker archive without NAME:TAG is named after the spec, tagged
    // latest (`docker load` would otherwise load it untagged).
    let default_repo_tag = format!("{}:latest", specs[0].name.as_deref().unwrap_or("image"));
    for o in &mut outputs {
        if let Output::Archive {
            kind: ArchiveKind::Docker { repo_tag },
            ..
        } = o
        {
            repo_tag.get_or_insert_with(|| default_repo_tag.clone());
        }
    }
    if specs.len() > 1 && !args.index {
        return Err(PublishError::NeedsIndex(specs.len()).into());
    }
    if args.index && outputs.iter().any(|o| matches!(o, Output::Archive { .. })) {
        bail!("an index holds several images; write it with -o oci:DIR, not as an archive");
    }
    let opts = build_options(&args)?;
    // A base that cannot be used fails here, before any output exists;
    // files of a base that the image's own replace are said, not refused.
    for spec in &specs {
        if let Some(from) = &spec.from_image {
            let base = berth_builder::base::Base::load(spec, from)?;
            for path in base.shadowed(spec, &opts)? {
                eprintln!(
                    "berth: {path} of the base {} is replaced by the image's own (the top layer wins)",
                    base.name
                );
            }
        }
    }

    // One uncompressed archive and nothing else: stream the layers straight
    // into it, each byte written once.
    // (Not with a base image: its layers come compressed, as they are.)
    if let ([Output::Archive { file, kind }], None, None, Compression::None, None) = (
        outputs.as_slice(),
        &push,
        &args.verify,
        opts.compression,
        &specs[0].from_image,
    ) {
        let bars = crate::progress::BuildBars::new(args.quiet);
        let opts = BuildOptions {
            progress: bars.clone().map(|b| b as berth_builder::image::Progress),
            ..opts
        };
        let built = berth_builder::stream::stream_archive(&specs[0], &opts, kind, file);
        if let Some(b) = &bars {
            b.finish();
        }
        let built = built.with_context(|| format!("cannot write {}", file.display()))?;
        prune_cache(&opts, args.cache_max);
        println!("{}", built.manifest_digest);
        return Ok(());
    }

    // Build once: into the first layout output, else into the cache's own
    // layout (so an unchanged layer is neither rebuilt nor re-read), else
    // into a temporary one.
    let mut oci_outputs = outputs.iter().filter_map(|o| match o {
        Output::Oci { dir, tag } => Some((dir, tag)),
        Output::Archive { .. } => None,
    });
    let first = oci_outputs.next();
    let _scratch;
    let (work_dir, tag) = match (first, &opts.cache) {
        (Some((dir, tag)), _) => (dir.clone(), Some(tag.as_str())),
        (None, Some(cache)) => (cache.staging(), None),
        (None, None) => {
            let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
            let path = dir.path().to_owned();
            _scratch = dir;
            (path, None)
        }
    };
    let layout = ImageLayout::create(&work_dir)
        .with_context(|| format!("cannot create the OCI layout {}", work_dir.display()))?;
    let bars = crate::progress::BuildBars::new(args.quiet);
    let opts = BuildOptions {
        progress: bars.clone().map(|b| b as berth_builder::image::Progress),
        ..opts
    };
    let built = build_set(&specs, &opts, &layout, tag, args.index, !args.no_sbom);
    if let Some(b) = &bars {
        b.finish();
    }
    let built = built?;

    for (dir, tag) in oci_outputs {
        let other = ImageLayout::create(dir)
            .with_context(|| format!("cannot create the OCI layout {}", dir.display()))?;
        built.copy_to(&layout, &other, tag)?;
    }
    for output in &outputs {
        if let Output::Archive { file, kind } = output {
            write_archive(&layout, &built.top, kind, file)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
    }
    if let Some(reference) = &args.verify {
        verify(&args, &built.top, reference)?;
    }
    if let Some(dest) = push {
        let push_bar = crate::progress::PushBar::new(args.quiet);
        let client = Client::new(ClientOptions {
            plain_http: args.plain_http,
            credentials: credentials(&args, dest.registry())?,
            parallel: args.parallel.max(1),
            // A base in the same registry lends its layers by mount.
            mount_from: args
                .mount_from
                .clone()
                .or_else(|| same_registry_base(&specs, &dest)),
            progress: push_bar.as_ref().map(crate::progress::PushBar::hook),
            ..ClientOptions::default()
        });
        let total = built.push(&client, &layout, &dest);
        if let Some(b) = &push_bar {
            b.finish();
        }
        let total = total?;
        eprintln!(
            "pushed {dest}: {} blobs uploaded ({} bytes with the manifests), {} mounted, {} already there",
            total.uploaded.len(),
            total.bytes,
            total.mounted.len(),
            total.skipped.len()
        );
    }
    prune_cache(&opts, args.cache_max);
    println!("{}", built.top);
    Ok(())
}

/// Keep the cache within its size (a failure is a warning: the image is
/// built).
fn prune_cache(opts: &BuildOptions, max: u64) {
    if let Some(cache) = &opts.cache {
        match cache.prune(max) {
            Ok(p) if p.blobs > 0 => tracing::debug!(
                blobs = p.blobs,
                bytes = p.bytes,
                entries = p.entries,
                "pruned the layer cache"
            ),
            Ok(_) => {}
            Err(e) => eprintln!("warning: cannot prune the layer cache: {e}"),
        }
    }
}

fn load_specs(args: &BuildArgs) -> Result<Vec<ImageSpec>> {
    if args.specs.is_empty() {
        return Ok(vec![spec_from_nix(args)?]);
    }
    args.specs
        .iter()
        .map(|path| {
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read image spec {}", path.display()))?;
            ImageSpec::parse(&text).with_context(|| format!("in {}", path.display()))
        })
        .collect()
}

fn build_options(args: &BuildArgs) -> Result<BuildOptions> {
    let mut opts = BuildOptions {
        compression: Compression::parse(&args.compression).map_err(anyhow::Error::msg)?,
        tar: TarOptions::from_env(),
        store_root: args.store_root.clone(),
        ..BuildOptions::default()
    };
    if let Some(t) = args.threads {
        opts.threads = t.max(1);
    }
    if !args.no_cache {
        opts.cache = args
            .cache_dir
            .clone()
            .or_else(LayerCache::default_dir)
            .map(LayerCache::new);
    }
    Ok(opts)
}

fn verify(args: &BuildArgs, digest: &berth_oci::Digest, reference: &str) -> Result<()> {
    let dest: Reference = reference
        .parse()
        .with_context(|| format!("--verify {reference}"))?;
    let client = Client::new(ClientOptions {
        plain_http: args.plain_http,
        credentials: credentials(args, dest.registry())?,
        ..ClientOptions::default()
    });
    berth_builder::publish::verify(&client, digest, &dest)?;
    eprintln!("verified: {dest} is {digest}, as built");
    Ok(())
}

/// The spec for `--nix`: the closure from `nix path-info`, roots and
/// config from the flags.
fn spec_from_nix(args: &BuildArgs) -> Result<ImageSpec> {
    let roots = args
        .nix
        .iter()
        .map(|p| store_path(p))
        .collect::<Result<Vec<_>>>()?;
    let out = std::process::Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
            "--recursive",
        ])
        .args(&roots)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run `nix path-info` (is Nix installed and on PATH?)")?;
    if !out.status.success() {
        bail!(
            "`nix path-info` failed for {}: are the paths built?",
            roots.join(" ")
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .context("`nix path-info --json` printed something else than JSON")?;
    // Nix before 2.19 prints a list; later versions an object keyed by path.
    let closure = match info {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(path, mut v)| {
                v["path"] = serde_json::Value::String(path);
                v
            })
            .collect(),
        _ => bail!("`nix path-info --json` printed neither a list nor an object"),
    };
    let mut config = serde_json::Map::new();
    for (key, values) in [
        ("Entrypoint", &args.entrypoint),
        ("Cmd", &args.cmd),
        ("Env", &args.env),
    ] {
        if !values.is_empty() {
            config.insert(key.into(), serde_json::json!(values));
        }
    }
    let mut spec = serde_json::json!({
        "version": berth_builder::spec::SPEC_VERSION,
        "closure": closure,
        "roots": roots,
        "config": config,
    });
    if let Some(name) = &args.name {
        spec["name"] = serde_json::json!(name);
    }
    ImageSpec::parse(spec.to_string().as_bytes()).context("the spec made from nix path-info")
}

/// The store path `arg` names: a store path itself, or a path that leads
/// to one through symlinks (`./result`, the out-link `nix-build` leaves,
/// or `result`, which Nix itself would take for a flake reference).
fn store_path(arg: &str) -> Result<String> {
    let store = std::env::var("NIX_STORE_DIR").unwrap_or_else(|_| "/nix/store".to_owned());
    let store = std::path::Path::new(&store);
    let in_store = |p: &std::path::Path| -> Option<String> {
        let rest = p.strip_prefix(store).ok()?;
        let first = rest.components().next()?;
        Some(store.join(first).display().to_string())
    };
    let mut p = std::path::absolute(arg).with_context(|| format!("--nix {arg}"))?;
    for _ in 0..40 {
        if let Some(s) = in_store(&p) {
            return Ok(s);
        }
        let target = std::fs::read_link(&p).with_context(|| {
            format!(
                "--nix {arg}: {} is neither in {} nor a link to it (give a store path or an out-link such as ./result)",
                p.display(),
                store.display()
            )
        })?;
        p = match p.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    bail!("--nix {arg}: too many symbolic links")
}

/// The repository of the first spec's base when it is in `dest`'s
/// registry: the push offers to mount blobs from it.
fn same_registry_base(specs: &[ImageSpec], dest: &Reference) -> Option<String> {
    specs.iter().find_map(|s| {
        let base: Reference = s.from_image.as_ref()?.reference.parse().ok()?;
        (base.registry() == dest.registry()).then(|| base.repository().to_owned())
    })
}

/// Fetch the base of every spec that names it only by reference into
/// `<cache>/bases/<digest>` (a temporary directory with `--no-cache`,
/// returned so it lives through the build), and point the spec at it.
/// The base's registry gets the push's credentials when it is the push's
/// registry, else those of the auth file.
fn fetch_bases(
    args: &BuildArgs,
    specs: &mut [ImageSpec],
    push: Option<&Reference>,
) -> Result<Option<tempfile::TempDir>> {
    let mut tmp = None;
    for spec in specs.iter_mut() {
        let Some(from) = spec.from_image.as_mut() else {
            continue;
        };
        if from.layout.is_some() {
            continue;
        }
        let base: Reference = from
            .reference
            .parse()
            .with_context(|| format!("fromImage {}", from.reference))?;
        let pinned = base
            .digest()
            .cloned()
            .with_context(|| format!("fromImage {} is not pinned by digest", from.reference))?;
        let root = match args.cache_dir.clone().or_else(LayerCache::default_dir) {
            Some(dir) if !args.no_cache => dir.join("bases"),
            _ => {
                let t = tmp.get_or_insert(tempfile::tempdir()?);
                t.path().to_owned()
            }
        };
        let dir = root.join(pinned.hex());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let layout = berth_oci::ImageLayout::create(&dir)?;
        let same = push.is_some_and(|p| p.registry() == base.registry());
        let credentials = if same {
            credentials(args, base.registry())?
        } else {
            auth_file_credentials(args.authfile.as_deref(), base.registry())?
        };
        let client = Client::new(ClientOptions {
            plain_http: args.plain_http && same,
            credentials,
            ..ClientOptions::default()
        });
        berth_builder::base::pull(
            &client,
            &from.reference,
            &spec.os,
            &spec.architecture,
            &layout,
            None,
        )?;
        from.layout = Some(dir.display().to_string());
    }
    Ok(tmp)
}

fn credentials(args: &BuildArgs, registry: &str) -> Result<Credentials> {
    if let (Some(u), Some(p)) = (&args.username, &args.password) {
        return Ok(Credentials::Basic {
            username: u.clone(),
            password: p.clone(),
        });
    }
    auth_file_credentials(args.authfile.as_deref(), registry)
}

/// Credentials for `registry` from the auth file (`authfile`, else
/// `$REGISTRY_AUTH_FILE`, else `~/.docker/config.json`), or anonymous.
pub(crate) fn auth_file_credentials(
    authfile: Option<&std::path::Path>,
    registry: &str,
) -> Result<Credentials> {
    let file = authfile
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("REGISTRY_AUTH_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            let p = PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json");
            p.exists().then_some(p)
        });
    match file {
        None => Ok(Credentials::Anonymous),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read credentials file {}", path.display()))?;
            Ok(Credentials::from_auth_json(
                &text,
                registry,
                &path.display().to_string(),
            )?)
        }
    }
}
