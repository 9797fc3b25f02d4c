//! Git through the `git` program (the one the user's credentials, hooks and
//! remotes are configured for): fetching the base branch into a private
//! ref, a detached worktree to commit in without touching the user's
//! checkout, reading the remote branch for the lease, and pushing with
//! `--force-with-lease` so a branch that moved since it was read is never
//! overwritten.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::BumpError;

/// Private ref the base branch is fetched into.
const BASE_REF: &str = "refs/berth/base";

/// The identity bump commits are made with.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Author and committer name.
    pub name: String,
    /// Author and committer e-mail; also how the bumper recognises its own
    /// commits on a branch.
    pub email: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            name: "berth bump".into(),
            email: "bump@berth.invalid".into(),
        }
    }
}

/// Run git in `dir`, returning trimmed stdout.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<String, BumpError> {
    git_env(dir, args, &[])
}

fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String, BumpError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| BumpError::Git {
            command: format!("git {}", args.join(" ")),
            message: format!("cannot run git: {e} (install git)"),
        })?;
    if !out.status.success() {
        return Err(BumpError::Git {
            command: format!("git {}", args.join(" ")),
            // One line: git's stderr joined, blank lines dropped.
            message: String::from_utf8_lossy(&out.stderr)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A detached worktree of the fetched base branch, removed on drop.
#[derive(Debug)]
pub(crate) struct Worktree {
    repo: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) base: String,
    _tmp: tempfile::TempDir,
}

impl Worktree {
    /// Fetch `base` from `remote` and check it out, detached, in a new
    /// temporary worktree of `repo`.
    pub(crate) fn new(repo: &Path, remote: &str, base: &str) -> Result<Self, BumpError> {
        git(
            repo,
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                remote,
                &format!("+refs/heads/{base}:{BASE_REF}"),
            ],
        )?;
        let tmp = tempfile::Builder::new()
            .prefix("berth-bump-")
            .tempdir()
            .map_err(|e| BumpError::Io {
                path: std::env::temp_dir(),
                cause: e,
            })?;
        let dir = tmp.path().join("w");
        let dir_s = dir.to_string_lossy().into_owned();
        git(
            repo,
            &["worktree", "add", "--quiet", "--detach", &dir_s, BASE_REF],
        )?;
        let base_sha = git(&dir, &["rev-parse", "HEAD"])?;
        Ok(Self {
            repo: repo.to_owned(),
            dir,
            base: base_sha,
            _tmp: tmp,
        })
    }

    /// Back to the base commit, with no changes.
    pub(crate) fn reset(&self) -> Result<(), BumpError> {
        git(
            &self.dir,
            &["checkout", "--quiet", "--detach", "--force", &self.base],
        )?;
        git(&self.dir, &["clean", "--quiet", "-fdx"])?;
        Ok(())
    }

    /// Commit the named files; returns the new commit's tree.
    pub(crate) fn commit(
        &self,
        files: &[PathBuf],
        message: &str,
        who: &Identity,
    ) -> Result<String, BumpError> {
        let mut args = vec!["add", "--"];
        let names: Vec<String> = files
            .iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        args.extend(names.iter().map(String::as_str));
        git(&self.dir, &args)?;
        let env = [
            ("GIT_AUTHOR_NAME", who.name.as_str()),
            ("GIT_AUTHOR_EMAIL", who.email.as_str()),
            ("GIT_COMMITTER_NAME", who.name.as_str()),
            ("GIT_COMMITTER_EMAIL", who.email.as_str()),
        ];
        git_env(
            &self.dir,
            &[
                "commit",
                "--quiet",
                "--no-verify",
                "--no-gpg-sign",
                "-m",
                message,
            ],
            &env,
        )?;
        git(&self.dir, &["rev-parse", "HEAD^{tree}"])
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let _ = git(&self.repo, &["worktree", "remove", "--force", &dir]);
        let _ = git(&self.repo, &["worktree", "prune"]);
    }
}

/// The remote branch as it is now: its commit, that commit's tree, parent
/// and committer e-mail.
#[derive(Debug, Clone)]
pub(crate) struct RemoteBranch {
    pub(crate) commit: String,
    pub(crate) tree: String,
    pub(crate) parent: String,
    pub(crate) committer: String,
}

/// Read `branch` on `remote` (fetching its commit), or `None` if absent.
pub(crate) fn remote_branch(
    dir: &Path,
    remote: &str,
    branch: &str,
) -> Result<Option<RemoteBranch>, BumpError> {
    let refname = format!("refs/heads/{branch}");
    let out = git(dir, &["ls-remote", remote, &refname])?;
    let Some(commit) = out.lines().find_map(|l| {
        let (sha, name) = l.split_once('\t')?;
        (name == refname).then(|| sha.to_owned())
    }) else {
        return Ok(None);
    };
    git(
        dir,
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            remote,
            &format!("+{refname}:refs/berth/remote"),
        ],
    )?;
    let info = git(dir, &["log", "-1", "--format=%T %P %ce", &commit])?;
    let mut parts = info.split(' ');
    let tree = parts.next().unwrap_or_default().to_owned();
    let parent = parts.next().unwrap_or_default().to_owned();
    let committer = parts.next().unwrap_or_default().to_owned();
    Ok(Some(RemoteBranch {
        commit,
        tree,
        parent,
        committer,
    }))
}

/// Push HEAD of `dir` to `branch` on `remote`, only if the remote branch
/// is still at `lease` (absent when `None`).
pub(crate) fn push_with_lease(
    dir: &Path,
    remote: &str,
    branch: &str,
    lease: Option<&str>,
) -> Result<(), BumpError> {
    let lease = format!(
        "--force-with-lease=refs/heads/{branch}:{}",
        lease.unwrap_or("")
    );
    git(dir, &["push", "--quiet", &lease, remote, &format!("HEAD:refs/heads/{branch}")])
        .map(|_| ())
        .map_err(|e| match e {
            BumpError::Git { command, message } if ["stale info", "cannot lock ref", "failed to update ref", "but expected"].iter().any(|m| message.contains(m)) => {
                BumpError::Git {
                    command,
                    message: format!("the branch moved while the bump was being pushed; it was left as it is: {message}"),
                }
            }
            e => e,
        })
}

/// Whether `name` is a valid branch name.
pub(crate) fn valid_branch(dir: &Path, name: &str) -> bool {
    git(dir, &["check-ref-format", "--branch", name]).is_ok()
}
