//! One bump, start to end: scan the checkout (or, for pull requests, a
//! fresh worktree of the remote base branch), decide the digests (given,
//! or resolved from each reference's tag), check with the registry that
//! they exist, then write the files in place, or commit them on one fixed
//! branch per target (or per group), push with a lease, and upsert the
//! pull request; pull requests a newer bump supersedes are closed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_oci::Digest;

use crate::forge::{Forge, Upsert};
use crate::git::{self, Identity, Worktree};
use crate::registry::{Labels, Registries};
use crate::{BumpError, Change, FileRefs, Plan, Skipped, Target, Unpinnable, scan_repo};

/// Where and how to open pull requests.
#[derive(Debug, Clone)]
pub struct PrOptions {
    /// Git remote name or URL.
    pub remote: String,
    /// Branch the pull requests go into.
    pub base: String,
    /// Prefix of the bump branches (`berth/bump/`).
    pub prefix: String,
    /// Put every target on one branch `<prefix>group/<name>`.
    pub group: Option<String>,
    /// The forge; `None` pushes branches only.
    pub forge: Option<Forge>,
    /// Who commits.
    pub identity: Identity,
}

/// What to bump.
#[derive(Debug)]
pub struct Options {
    /// The GitOps checkout.
    pub repo: PathBuf,
    /// `--set IMAGE=DIGEST` pairs.
    pub sets: Vec<(Target, Digest)>,
    /// Resolve every tagged reference's digest from its registry.
    pub resolve: bool,
    /// Registries to check and resolve against; `None` is `--offline`.
    pub registries: Option<Registries>,
    /// Write nothing.
    pub dry_run: bool,
    /// Push branches and open pull requests instead of editing the checkout.
    pub pr: Option<PrOptions>,
}

/// What one branch got.
#[derive(Debug, Clone)]
pub struct BranchOutcome {
    /// The branch.
    pub branch: String,
    /// Whether a commit was pushed (false: the branch already had it).
    pub pushed: bool,
    /// The pull request.
    pub pr: Option<Upsert>,
    /// Pull requests closed.
    pub closed: Vec<u64>,
    /// Why nothing was done, if so.
    pub note: Option<String>,
}

/// What a bump did.
#[derive(Debug, Default)]
pub struct Report {
    /// The targets and their digests.
    pub targets: Vec<(Target, Digest)>,
    /// References changed (or that would be).
    pub changes: Vec<Change>,
    /// References already at their digest.
    pub unchanged: usize,
    /// References matched but impossible to pin.
    pub unpinnable: Vec<Unpinnable>,
    /// Files not scanned.
    pub skipped: Vec<Skipped>,
    /// `--resolve` references whose digest could not be found, and why.
    pub unresolved: Vec<(String, String)>,
    /// `--set` targets that no reference in the checkout matches.
    pub unmatched: Vec<String>,
    /// Files written (without `--pr`).
    pub written: Vec<PathBuf>,
    /// Branches (with `--pr`).
    pub branches: Vec<BranchOutcome>,
}

impl Report {
    /// Whether something asked for was not done: a `--resolve` reference
    /// left unresolved, or a `--set` target that matched nothing. A CI job
    /// must not pass on a bump that checked nothing.
    pub fn incomplete(&self) -> bool {
        !self.unresolved.is_empty() || !self.unmatched.is_empty()
    }
}

/// Run a bump.
pub fn run(opts: &Options) -> Result<Report, BumpError> {
    let worktree = match &opts.pr {
        Some(pr) => Some(Worktree::new(&opts.repo, &pr.remote, &pr.base)?),
        None => None,
    };
    let root = worktree
        .as_ref()
        .map_or(opts.repo.as_path(), |w| w.dir.as_path());
    let (files, skipped) = scan_repo(root)?;
    let mut report = Report {
        skipped,
        ..Report::default()
    };
    report.targets = if opts.resolve {
        let Some(regs) = &opts.registries else {
            return Err(BumpError::Target {
                image: "--resolve".into(),
                message: "resolving tags needs the registry; drop --offline".into(),
            });
        };
        resolve_all(&files, regs, &mut report.unresolved)
    } else {
        opts.sets.clone()
    };
    let plan = Plan::new(&files, &report.targets);
    report.unmatched = report
        .targets
        .iter()
        .filter(|(t, _)| !files.iter().any(|f| f.refs.iter().any(|r| t.matches(r))))
        .map(|(t, _)| t.image.clone())
        .collect();
    if let Some(regs) = &opts.registries {
        if !opts.resolve {
            check_exist(&plan, &report.targets, regs)?;
        }
    }
    report.unchanged = plan.unchanged;
    report.unpinnable = plan.unpinnable.clone();
    report.changes = plan.changes.clone();
    // Every edit is made and verified even in a dry run, so a dry run
    // also shows the files berth would refuse to edit.
    let rendered = plan.render(&files)?;
    if opts.dry_run {
        return Ok(report);
    }
    match (&opts.pr, &worktree) {
        (Some(pr), Some(wt)) => {
            let labels = labels(&plan, &report.targets, opts.registries.as_ref());
            report.branches = publish(pr, wt, &files, &plan, &report.targets, &labels)?;
        }
        _ => {
            write_all(root, &rendered)?;
            report.written = rendered.into_iter().map(|(p, _)| p).collect();
        }
    }
    Ok(report)
}

/// The digest of every tagged reference, by tag.
fn resolve_all(
    files: &[FileRefs],
    regs: &Registries,
    unresolved: &mut Vec<(String, String)>,
) -> Vec<(Target, Digest)> {
    let mut seen = BTreeMap::new();
    for f in files {
        for r in &f.refs {
            if r.tag.is_some() && r.unpinnable().is_none() {
                seen.entry(r.reference.to_string())
                    .or_insert_with(|| r.reference.clone());
            }
        }
    }
    let seen: Vec<_> = seen.into_iter().collect();
    let answers = per_registry(
        &seen,
        |(_, r)| r.registry().to_owned(),
        |(_, r)| regs.resolve(r),
    );
    let mut out = Vec::new();
    for ((name, _), answer) in seen.into_iter().zip(answers) {
        match answer {
            Ok(Some(d)) => match Target::parse(&name) {
                Ok(t) => out.push((t, d)),
                Err(e) => unresolved.push((name, e.to_string())),
            },
            Ok(None) => unresolved.push((name, "the registry has no such tag".into())),
            Err(e) => unresolved.push((name, e.to_string())),
        }
    }
    out
}

/// `f` over `items`, up to eight requests in flight: registries answer
/// one small request at a time, and a repo names dozens of images.
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let chunk = items.len().div_ceil(8).max(1);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| unreachable!("a registry thread panicked"))
            })
            .collect()
    })
}

/// `f` over `items` (each on registry `registry(item)`): the first item of
/// each registry alone (in parallel across registries), then the rest in
/// parallel — so a registry that cannot be reached is tried once, not
/// once per image, before its other images fail fast.
fn per_registry<T: Sync, R: Send>(
    items: &[T],
    registry: impl Fn(&T) -> String,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let mut first = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if seen.insert(registry(item)) {
            first.push(i);
        }
    }
    let rest: Vec<usize> = (0..items.len()).filter(|i| !first.contains(i)).collect();
    let mut out: Vec<Option<R>> = items.iter().map(|_| None).collect();
    for phase in [first, rest] {
        for (i, r) in phase.iter().zip(parallel(&phase, |i| f(&items[*i]))) {
            out[*i] = Some(r);
        }
    }
    out.into_iter().flatten().collect()
}

/// The targets that change something, once each.
fn changed_targets(plan: &Plan) -> Vec<usize> {
    let mut t: Vec<usize> = plan.changes.iter().map(|c| c.target).collect();
    t.sort_unstable();
    t.dedup();
    t
}

fn check_exist(
    plan: &Plan,
    targets: &[(Target, Digest)],
    regs: &Registries,
) -> Result<(), BumpError> {
    let wanted = changed_targets(plan);
    let answers = per_registry(
        &wanted,
        |i| targets[*i].0.reference().registry().to_owned(),
        |i| {
            let (t, d) = &targets[*i];
            regs.exists(t.reference(), d)
        },
    );
    for (i, answer) in wanted.into_iter().zip(answers) {
        if !answer? {
            let (t, d) = &targets[i];
            return Err(BumpError::Missing {
                image: t.image.clone(),
                digest: d.clone(),
            });
        }
    }
    Ok(())
}

fn labels(
    plan: &Plan,
    targets: &[(Target, Digest)],
    regs: Option<&Registries>,
) -> BTreeMap<usize, Labels> {
    let Some(regs) = regs else {
        return BTreeMap::new();
    };
    let wanted = changed_targets(plan);
    let found = per_registry(
        &wanted,
        |i| targets[*i].0.reference().registry().to_owned(),
        |i| {
            let (t, d) = &targets[*i];
            regs.labels(t.reference(), d)
        },
    );
    wanted.into_iter().zip(found).collect()
}

/// Replace every file, several at a time: each replacement is a create and
/// a rename, which costs the file system more in waiting than in CPU.
fn write_all(root: &Path, files: &[(PathBuf, String)]) -> Result<(), BumpError> {
    let threads = files.len().clamp(1, 8);
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .try_for_each(|(p, t)| write_atomic(&root.join(p), t))
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| unreachable!("a writer thread panicked"))
        })
    })
}

fn write_atomic(path: &Path, text: &str) -> Result<(), BumpError> {
    let io = |e| BumpError::Io {
        path: path.to_owned(),
        cause: e,
    };
    let perms = std::fs::metadata(path).map_err(io)?.permissions();
    // `a.yaml` and `a.yml` may sit side by side: append, do not replace
    // the extension.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".berth-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::set_permissions(&tmp, perms).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The marker in a pull request body listing its targets.
const MARKER: &str = "<!-- berth-bump:";

fn slug(image: &str) -> String {
    image.replace(':', "-").replace("..", "-")
}

fn publish(
    pr: &PrOptions,
    wt: &Worktree,
    files: &[FileRefs],
    plan: &Plan,
    targets: &[(Target, Digest)],
    labels: &BTreeMap<usize, Labels>,
) -> Result<Vec<BranchOutcome>, BumpError> {
    let groups: Vec<(String, Vec<usize>)> = match &pr.group {
        Some(g) => vec![(
            format!("{}group/{}", pr.prefix, slug(g)),
            (0..targets.len()).collect(),
        )],
        None => targets
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (format!("{}{}", pr.prefix, slug(&t.image)), vec![i]))
            .collect(),
    };
    let mut out = Vec::new();
    for (branch, members) in groups {
        if !git::valid_branch(&wt.dir, &branch) {
            return Err(BumpError::Git {
                command: "check-ref-format".into(),
                message: format!(
                    "{branch:?} is not a valid branch name; change --branch-prefix or --group"
                ),
            });
        }
        let sub = plan.for_targets(&members);
        let outcome = publish_one(pr, wt, files, &sub, targets, &members, labels, &branch)?;
        out.push(outcome);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)] // reason: one call site, each argument a distinct input
fn publish_one(
    pr: &PrOptions,
    wt: &Worktree,
    files: &[FileRefs],
    plan: &Plan,
    targets: &[(Target, Digest)],
    members: &[usize],
    labels: &BTreeMap<usize, Labels>,
    branch: &str,
) -> Result<BranchOutcome, BumpError> {
    let mut outcome = BranchOutcome {
        branch: branch.to_owned(),
        pushed: false,
        pr: None,
        closed: Vec::new(),
        note: None,
    };
    if plan.changes.is_empty() {
        // The base already says this: an open bump PR is stale.
        if let Some(forge) = &pr.forge {
            if let Some(open) = forge.open_pulls()?.into_iter().find(|p| p.head == branch) {
                forge.close(
                    open.number,
                    &format!("Closed by berth: `{}` already pins these digests.", pr.base),
                )?;
                outcome.closed.push(open.number);
            }
        }
        outcome.note = Some("nothing to change".into());
        return Ok(outcome);
    }
    wt.reset()?;
    let rendered = plan.render(files)?;
    write_all(&wt.dir, &rendered)?;
    let paths: Vec<PathBuf> = rendered.into_iter().map(|(p, _)| p).collect();
    let (title, message) = describe(plan, targets);
    let tree = wt.commit(&paths, &message, &pr.identity)?;
    let remote = git::remote_branch(&wt.dir, &pr.remote, branch)?;
    match &remote {
        Some(rb) if rb.committer != pr.identity.email => {
            outcome.note = Some(format!(
                "{branch} has a commit by {} on top; not overwriting it (delete the branch to let berth take it back)",
                rb.committer
            ));
            return Ok(outcome);
        }
        Some(rb) if rb.tree == tree && rb.parent == wt.base => {}
        _ => {
            git::push_with_lease(
                &wt.dir,
                &pr.remote,
                branch,
                remote.as_ref().map(|r| r.commit.as_str()),
            )?;
            outcome.pushed = true;
        }
    }
    if let Some(forge) = &pr.forge {
        let body = body(plan, targets, members, labels);
        let open = forge.open_pulls()?;
        let up = forge.upsert(&open, branch, &pr.base, &title, &body)?;
        outcome.pr = Some(up);
        // Close older bump PRs whose every target this one covers.
        let mine: Vec<&Target> = members.iter().map(|i| &targets[*i].0).collect();
        for pull in open {
            if pull.head == branch || !pull.head.starts_with(&pr.prefix) {
                continue;
            }
            let Some(theirs) = marker_targets(&pull.body) else {
                continue;
            };
            let covered = !theirs.is_empty()
                && theirs
                    .iter()
                    .all(|t| mine.iter().any(|m| m.covers_target(t)));
            if covered {
                forge.close(pull.number, &format!("Superseded by #{}.", up.number()))?;
                outcome.closed.push(pull.number);
            }
        }
    }
    Ok(outcome)
}

fn marker_targets(body: &str) -> Option<Vec<Target>> {
    let rest = &body[body.find(MARKER)? + MARKER.len()..];
    let list = &rest[..rest.find("-->")?];
    list.split_whitespace()
        .map(|s| Target::parse(s).ok())
        .collect()
}

fn short(d: &Digest) -> String {
    let s = d.to_string();
    s.chars().take(s.find(':').map_or(0, |i| i + 13)).collect()
}

/// A row of the summary: image, tag, old digest, new digest.
type Row = (String, Option<String>, Option<String>, String);
/// Where a row's references are: file, line, target.
type Places = Vec<(PathBuf, usize, usize)>;

/// One row per image, tag and old digest.
fn rows(plan: &Plan) -> BTreeMap<Row, Places> {
    let mut rows: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for c in &plan.changes {
        rows.entry((
            c.name.clone(),
            c.tag.clone(),
            c.old.as_ref().map(|d| d.to_string()),
            c.new.to_string(),
        ))
        .or_default()
        .push((c.file.clone(), c.line, c.target));
    }
    rows
}

fn describe(plan: &Plan, targets: &[(Target, Digest)]) -> (String, String) {
    let mut names: Vec<&str> = plan
        .changes
        .iter()
        .map(|c| targets[c.target].0.image.as_str())
        .collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    let title = match names.as_slice() {
        [one] => format!(
            "Bump {one} to {}",
            short(&targets[plan.changes[0].target].1)
        ),
        many => format!("Bump {} images", many.len()),
    };
    let mut msg = format!("{title}\n\n");
    for ((name, tag, old, new), places) in rows(plan) {
        let tag = tag.map(|t| format!(":{t}")).unwrap_or_default();
        msg.push_str(&format!(
            "{name}{tag}: {} -> {new}\n",
            old.as_deref().unwrap_or("(none)")
        ));
        for (file, line, _) in places {
            msg.push_str(&format!("  {}:{line}\n", file.display()));
        }
    }
    (title, msg)
}

fn body(
    plan: &Plan,
    targets: &[(Target, Digest)],
    members: &[usize],
    labels: &BTreeMap<usize, Labels>,
) -> String {
    let mut b = String::from(
        "berth pinned these images to new digests. Only the digests changed; every other byte of every file is as it was.\n\n\
         | image | tag | old digest | new digest | source | revision |\n|---|---|---|---|---|---|\n",
    );
    for ((name, tag, old, new), places) in rows(plan) {
        let l = labels.get(&places[0].2).cloned().unwrap_or_default();
        let old = old.map_or("(none)".to_owned(), |o| format!("`{o}`"));
        let source = l.source.map_or("".to_owned(), |s| format!("[source]({s})"));
        let rev = l.revision.map_or("".to_owned(), |r| format!("`{r}`"));
        b.push_str(&format!(
            "| `{name}` | {} | {old} | `{new}` | {source} | {rev} |\n",
            tag.map_or("".to_owned(), |t| format!("`{t}`"))
        ));
    }
    b.push_str("\nFiles:\n");
    let mut places: Vec<(PathBuf, usize)> = plan
        .changes
        .iter()
        .map(|c| (c.file.clone(), c.line))
        .collect();
    places.sort();
    for (file, line) in places {
        b.push_str(&format!("- `{}` line {line}\n", file.display()));
    }
    let list: Vec<String> = members
        .iter()
        .map(|i| targets[*i].0.reference().to_string())
        .collect();
    b.push_str(&format!("\n{MARKER} {} -->\n", list.join(" ")));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_side_by_side_are_written_each_with_its_own_text() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["a.yaml", "a.yml", "b.yaml", "b.yml"];
        for n in names {
            std::fs::write(dir.path().join(n), "old\n").unwrap();
        }
        let files: Vec<(PathBuf, String)> = names
            .iter()
            .map(|n| (PathBuf::from(n), format!("{n}\n")))
            .collect();
        for _ in 0..20 {
            write_all(dir.path(), &files).unwrap();
            for n in names {
                assert_eq!(
                    std::fs::read_to_string(dir.path().join(n)).unwrap(),
                    format!("{n}\n")
                );
            }
        }
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(
            left.len(),
            names.len(),
            "no temporary file is left: {left:?}"
        );
    }

    #[test]
    fn pull_request_markers_round_trip() {
        let body = format!("text\n{MARKER} ghcr.io/a/b:1 docker.io/library/nginx -->\n");
        let t = marker_targets(&body).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].reference().repository(), "library/nginx");
        assert!(marker_targets("no marker").is_none());
    }
}
