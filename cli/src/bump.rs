//! `berth bump`: maps the command line onto `berth_bumper::bump::Options`
//! (targets, registry access, pull-request settings and the forge token
//! from a file or the environment), runs it, and prints a diff-like summary
//! of what changed, what was already pinned and what could not be.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_bumper::bump::{self, Options, PrOptions, Report};
use berth_bumper::forge::{Forge, ForgeKind};
use berth_bumper::git::Identity;
use berth_bumper::registry::Registries;
use berth_bumper::{Target, forge::Upsert};
use berth_oci::Digest;
use clap::Args;

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("what").required(true).args(["sets", "resolve", "list"])
))]
pub(crate) struct BumpArgs {
    /// The GitOps checkout.
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,
    /// Pin `IMAGE` (`repository[:tag]`) to `DIGEST`; with a tag only the
    /// references with that tag, without one every reference to the
    /// repository. May be repeated.
    #[arg(long = "set", value_name = "IMAGE=DIGEST")]
    sets: Vec<String>,
    /// Exit 0 even when references stay unresolved or a --set target
    /// matches nothing (reported either way).
    #[arg(long)]
    allow_incomplete: bool,
    /// Pin every tagged reference to the digest its tag has now.
    #[arg(long, conflicts_with = "sets")]
    resolve: bool,
    /// Do not ask registries whether the digests exist (for registries out
    /// of reach).
    #[arg(long, conflicts_with = "resolve")]
    offline: bool,
    /// List every image reference found (file:line, form, reference,
    /// whether it can be pinned) and exit.
    #[arg(long, conflicts_with_all = ["sets", "resolve", "pr"])]
    list: bool,
    /// Print what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Commit on a branch per target, push, and open or update the pull
    /// request, instead of editing the checkout.
    #[arg(long)]
    pr: bool,
    /// Registry credentials (docker/podman auth.json).
    #[arg(long, value_name = "FILE", env = "REGISTRY_AUTH_FILE")]
    registry_auth: Option<PathBuf>,
    /// Talk plain HTTP to registries (a loopback registry falls back to
    /// it by itself when it does not answer HTTPS).
    #[arg(long)]
    plain_http: bool,
    /// Git remote to fetch the base from and push to.
    #[arg(long, default_value = "origin")]
    remote: String,
    /// Branch the pull requests target.
    #[arg(long, default_value = "main")]
    base: String,
    /// Prefix of bump branches.
    #[arg(long, default_value = "berth/bump/")]
    branch_prefix: String,
    /// One branch and pull request for all targets: `<prefix>group/NAME`.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// The forge: forgejo, gitea or github. Without it branches are pushed
    /// but no pull request is opened.
    #[arg(long, requires_all = ["forge_url", "forge_repo"])]
    forge: Option<ForgeKind>,
    /// The forge's address (`https://forgejo.lan`, `https://github.com`).
    #[arg(long, value_name = "URL")]
    forge_url: Option<String>,
    /// The repository on the forge, `owner/name`.
    #[arg(long, value_name = "OWNER/NAME")]
    forge_repo: Option<String>,
    /// File holding the forge token (else $BERTH_FORGE_TOKEN).
    #[arg(long, value_name = "FILE")]
    forge_token_file: Option<PathBuf>,
    /// Commit author name.
    #[arg(long, default_value = "berth bump")]
    author_name: String,
    /// Commit author e-mail (how berth recognises its own branches).
    #[arg(long, default_value = "bump@berth.invalid")]
    author_email: String,
}

pub(crate) fn run(args: BumpArgs) -> Result<()> {
    if args.list {
        use std::fmt::Write as _;
        let (files, skipped) = berth_bumper::scan_repo(&args.repo)?;
        let mut out = String::new();
        for f in &files {
            for r in &f.refs {
                let tag = r
                    .tag
                    .as_deref()
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default();
                let digest = r
                    .digest
                    .as_ref()
                    .map(|d| format!("@{d}"))
                    .unwrap_or_default();
                let pin = r.unpinnable().unwrap_or("pinnable");
                let _ = writeln!(
                    out,
                    "{}:{}\t{}\t{}{tag}{digest}\t{pin}",
                    f.path.display(),
                    r.line,
                    r.form.as_str(),
                    r.name
                );
            }
        }
        print!("{out}");
        for s in skipped {
            eprintln!("skipped {}: {}", s.path.display(), s.reason);
        }
        return Ok(());
    }
    let mut sets = Vec::new();
    for s in &args.sets {
        let (image, digest) = s.split_once('=').with_context(|| {
            format!("--set {s:?}: write IMAGE=DIGEST, e.g. ghcr.io/org/app:1.4=sha256:…")
        })?;
        let digest: Digest = digest.parse().with_context(|| {
            format!("--set {s:?}: {digest:?} is not a digest (sha256:<64 hex>)")
        })?;
        sets.push((Target::parse(image)?, digest));
    }
    let registries = if args.offline {
        None
    } else {
        Some(Registries::new(
            args.registry_auth.as_deref(),
            args.plain_http,
        )?)
    };
    let pr = if args.pr {
        let forge = match (&args.forge, &args.forge_url, &args.forge_repo) {
            (Some(kind), Some(url), Some(repo)) => {
                Some(Forge::new(*kind, url, repo, forge_token(&args)?)?)
            }
            _ => None,
        };
        Some(PrOptions {
            remote: args.remote.clone(),
            base: args.base.clone(),
            prefix: args.branch_prefix.clone(),
            group: args.group.clone(),
            forge,
            identity: Identity {
                name: args.author_name.clone(),
                email: args.author_email.clone(),
            },
        })
    } else {
        if args.forge.is_some() || args.group.is_some() {
            bail!("--forge and --group only apply with --pr");
        }
        None
    };
    let opts = Options {
        repo: args.repo.clone(),
        sets,
        resolve: args.resolve,
        registries,
        dry_run: args.dry_run,
        pr,
    };
    let report = bump::run(&opts)?;
    print_report(&report, args.dry_run);
    if report.incomplete() && !args.allow_incomplete {
        bail!(
            "{} reference(s) not resolved and {} --set target(s) matching nothing (see the warnings above; --allow-incomplete accepts that)",
            report.unresolved.len(),
            report.unmatched.len()
        );
    }
    Ok(())
}

fn forge_token(args: &BumpArgs) -> Result<String> {
    match &args.forge_token_file {
        Some(p) => Ok(std::fs::read_to_string(p)
            .with_context(|| format!("reading the forge token {}", p.display()))?
            .trim()
            .to_owned()),
        None => std::env::var("BERTH_FORGE_TOKEN")
            .context("no forge token: pass --forge-token-file or set BERTH_FORGE_TOKEN"),
    }
}

fn print_report(r: &Report, dry_run: bool) {
    use std::fmt::Write as _;
    // One write: thousands of changes must not cost thousands of syscalls.
    let mut out = String::new();
    for c in &r.changes {
        let tag = c
            .tag
            .as_deref()
            .map(|t| format!(":{t}"))
            .unwrap_or_default();
        let old = c
            .old
            .as_ref()
            .map_or("(no digest)".to_owned(), |d| d.to_string());
        let _ = writeln!(
            out,
            "{}:{}: {}{tag} ({})\n  - {old}\n  + {}",
            c.file.display(),
            c.line,
            c.name,
            c.form.as_str(),
            c.new
        );
    }
    print!("{out}");
    for u in &r.unpinnable {
        eprintln!(
            "warning: {}:{}: {} cannot be pinned: {}",
            u.file.display(),
            u.line,
            u.name,
            u.reason
        );
    }
    for (name, why) in &r.unresolved {
        eprintln!("warning: {name}: not resolved: {why}");
    }
    for image in &r.unmatched {
        eprintln!("warning: --set {image}: no reference in the checkout matches it");
    }
    let files: std::collections::BTreeSet<_> = r.changes.iter().map(|c| &c.file).collect();
    let verb = if dry_run { "would change" } else { "changed" };
    println!(
        "{} reference(s) in {} file(s) {verb}; {} already pinned; {} cannot be pinned; {} not resolved; {} target(s) matching nothing; {} file(s) not YAML",
        r.changes.len(),
        files.len(),
        r.unchanged,
        r.unpinnable.len(),
        r.unresolved.len(),
        r.unmatched.len(),
        r.skipped.len()
    );
    for b in &r.branches {
        let pr = match b.pr {
            Some(Upsert::Created(n)) => format!(", opened #{n}"),
            Some(Upsert::Updated(n)) => format!(", updated #{n}"),
            Some(Upsert::Unchanged(n)) => format!(", #{n} up to date"),
            None => String::new(),
        };
        let pushed = if b.pushed { "pushed" } else { "up to date" };
        let closed: Vec<String> = b.closed.iter().map(|n| format!("#{n}")).collect();
        let closed = if closed.is_empty() {
            String::new()
        } else {
            format!(", closed {}", closed.join(" "))
        };
        match &b.note {
            Some(note) => println!("branch {}: {note}{closed}", b.branch),
            None => println!("branch {}: {pushed}{pr}{closed}", b.branch),
        }
    }
}
