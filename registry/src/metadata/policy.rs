//! Project policies stored through the admin API (`project_policies`), as
//! the JSON of [`crate::policy::PolicyConfig`]; the configuration's
//! `[[policies]]` are never stored, and win over these.

use rusqlite::params;

use super::{Result, Sqlite, now};
use crate::policy::PolicyConfig;

/// Stored project policies, and the tag rows and usage that retention and
/// quotas read.
pub trait Policies {
    /// Every stored policy (rows that no longer parse are skipped, with an
    /// error in the log).
    fn stored_policies(&self) -> Result<Vec<PolicyConfig>>;

    /// Store `policy` (its project's), replacing the one before.
    fn put_policy(&self, policy: &PolicyConfig, by: &str) -> Result<()>;

    /// Forget `project`'s stored policy. Returns whether there was one.
    fn delete_policy(&self, project: &str) -> Result<bool>;

    /// Every tag of `project`'s repositories.
    fn project_tags(&self, project: &str) -> Result<Vec<TagRow>>;

    /// Delete `row`'s tag if it still points where it did, pushed when it
    /// was (a tag pushed again since is left alone). Returns whether it
    /// went.
    fn retention_delete_tag(&self, row: &TagRow) -> Result<bool>;

    /// Blob bytes `project` holds: each distinct blob linked into one of
    /// its repositories counted once.
    fn project_usage(&self, project: &str) -> Result<u64>;

    /// Whether a repository of `project` already holds blob `digest` (a
    /// push of it then adds nothing to the project's usage).
    fn blob_in_project(&self, project: &str, digest: &str) -> Result<bool>;
}

impl Policies for Sqlite {
    fn stored_policies(&self) -> Result<Vec<PolicyConfig>> {
        let conn = self.reader();
        let rows: Vec<(String, String)> = conn
            .prepare_cached("SELECT project, body FROM project_policies ORDER BY project")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(project, body)| parse_policy(project, &body))
            .collect())
    }

    fn put_policy(&self, policy: &PolicyConfig, by: &str) -> Result<()> {
        let body = policy_body(policy);
        self.writer()
            .prepare_cached(
                "INSERT INTO project_policies (project, body, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(project) DO UPDATE SET body = excluded.body, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )?
            .execute(params![policy.project, body, by, now()])?;
        Ok(())
    }

    fn delete_policy(&self, project: &str) -> Result<bool> {
        let n = self
            .writer()
            .prepare_cached("DELETE FROM project_policies WHERE project = ?1")?
            .execute([project])?;
        Ok(n > 0)
    }

    fn project_tags(&self, project: &str) -> Result<Vec<TagRow>> {
        let (lo, hi) = project_range(project);
        let conn = self.reader();
        let rows = conn
            .prepare_cached(
                "SELECT r.name, t.name, t.digest, t.updated_at FROM tags t
                 JOIN repositories r ON r.id = t.repo_id
                 WHERE r.name = ?3 OR (r.name >= ?1 AND r.name < ?2)
                 ORDER BY r.name, t.name",
            )?
            .query_map(params![lo, hi, project], |r| {
                Ok(TagRow {
                    repository: r.get(0)?,
                    tag: r.get(1)?,
                    digest: r.get(2)?,
                    pushed_at: r.get::<_, i64>(3)? as u64,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn retention_delete_tag(&self, row: &TagRow) -> Result<bool> {
        let n = self
            .writer()
            .prepare_cached(
                "DELETE FROM tags WHERE name = ?2 AND digest = ?3 AND updated_at = ?4
                 AND repo_id = (SELECT id FROM repositories WHERE name = ?1)",
            )?
            .execute(params![
                row.repository,
                row.tag,
                row.digest,
                row.pushed_at as i64
            ])?;
        Ok(n > 0)
    }

    fn project_usage(&self, project: &str) -> Result<u64> {
        let (lo, hi) = project_range(project);
        let n: i64 = self
            .reader()
            .prepare_cached(
                "SELECT coalesce(sum(b.size), 0) FROM blobs b WHERE b.digest IN (
                    SELECT rb.digest FROM repository_blobs rb JOIN repositories r ON r.id = rb.repo_id
                    WHERE r.name = ?3 OR (r.name >= ?1 AND r.name < ?2))",
            )?
            .query_row(params![lo, hi, project], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn blob_in_project(&self, project: &str, digest: &str) -> Result<bool> {
        let (lo, hi) = project_range(project);
        Ok(self
            .reader()
            .prepare_cached(
                "SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repo_id
                 WHERE rb.digest = ?4 AND (r.name = ?3 OR (r.name >= ?1 AND r.name < ?2))",
            )?
            .exists(params![lo, hi, project, digest])?)
    }
}

/// A tag, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    /// Its repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest it points at.
    pub digest: String,
    /// When it was last pushed (unix seconds).
    pub pushed_at: u64,
}

/// `[lo, hi)` bounds of the repository names under `project` (`p/…`;
/// the queries add `p` itself).
/// A stored policy's row as the policy; one that does not parse is
/// logged and ignored.
pub(super) fn parse_policy(project: String, body: &str) -> Option<PolicyConfig> {
    match serde_json::from_str::<PolicyConfig>(body) {
        Ok(mut p) => {
            p.project = project;
            Some(p)
        }
        Err(e) => {
            tracing::error!(%project, error = %e, "a stored policy does not parse; ignored");
            None
        }
    }
}

/// The JSON a policy is stored as (without its project, the row's key).
pub(super) fn policy_body(policy: &PolicyConfig) -> String {
    serde_json::to_string(&PolicyConfig {
        project: String::new(),
        ..policy.clone()
    })
    .unwrap_or_default()
}

/// The repository names of `project` other than itself: those from
/// `project/` up to (not including) `project0`.
pub(super) fn project_range(project: &str) -> (String, String) {
    // '0' is the character after '/'.
    (format!("{project}/"), format!("{project}0"))
}
