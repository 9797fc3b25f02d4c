//! `berth-bumper` finds image references in a GitOps checkout (pod specs,
//! kustomizations, Helm values, Argo CD Applications, Flux HelmReleases),
//! rewrites their digests by splicing at parser spans, checks that nothing
//! else changed, and pushes a branch and upserts one pull request per target
//! on Forgejo, Gitea or GitHub; `berth bot` drives it from registry webhooks.
//!
//! It never reformats a byte it did not mean to change: every edit is a
//! splice, and every edited file is parsed again and compared with the
//! original before it is written.

use std::path::PathBuf;

pub mod bot;
pub mod bump;
mod find;
pub mod forge;
pub mod git;
pub mod registry;
mod rewrite;
mod yaml;

pub use find::{Form, ImageRef};
pub use rewrite::{
    Change, FileRefs, MAX_FILE, Plan, Skipped, Target, Unpinnable, scan_repo, scan_text,
};

/// Everything that can go wrong in a bump.
#[derive(Debug, thiserror::Error)]
pub enum BumpError {
    /// The bot's configuration names something start-up cannot use.
    #[error("invalid configuration: {message}")]
    Config {
        /// What, naming the key.
        message: String,
    },
    /// A file is not valid YAML.
    #[error("{}:{line}: not valid YAML: {message}", file.display())]
    Parse {
        /// File.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
    /// An edit would have changed more than its target; nothing written.
    #[error("{}:{line}: refusing to edit: {message}; the file was left as it is", file.display())]
    Verify {
        /// File.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What differed.
        message: String,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause (not a `source`: the message already says it once).
        cause: std::io::Error,
    },
    /// A `--set` image is not `repository[:tag]`.
    #[error("bad image {image:?}: {message} (write repository[:tag], e.g. ghcr.io/org/app:1.4)")]
    Target {
        /// As given.
        image: String,
        /// Why.
        message: String,
    },
    /// The digest to pin is not in the registry; nothing was written.
    #[error(
        "{image}@{digest} is not in the registry; nothing was written (push it first, check the digest, or pass --offline)"
    )]
    Missing {
        /// Target.
        image: String,
        /// Digest.
        digest: berth_oci::Digest,
    },
    /// A git command failed.
    #[error("{command}: {message}")]
    Git {
        /// The command.
        command: String,
        /// Its stderr.
        message: String,
    },
    /// The forge refused or could not be reached.
    #[error("forge: {message}")]
    Forge {
        /// What happened.
        message: String,
    },
    /// A registry could not answer.
    #[error("{message}")]
    Registry {
        /// Registry host.
        registry: String,
        /// What went wrong.
        message: String,
    },
}

impl BumpError {
    /// Whether running the same bump again cannot succeed without someone
    /// changing the input (as opposed to a forge, git or registry outage).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            BumpError::Missing { .. }
                | BumpError::Target { .. }
                | BumpError::Verify { .. }
                | BumpError::Parse { .. }
        )
    }
}
