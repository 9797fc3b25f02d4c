//! What the web UI lists: a project's repositories with their tag counts,
//! stored bytes and last push, and a repository's tags page by page (with
//! a substring filter), each with its manifest's digest, media type, size
//! and content (to read platforms and image sizes from), and who pushed
//! it (from the audit log).

use rusqlite::{OptionalExtension, params};

use super::{Result, Sqlite};

/// A repository as a project page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSummary {
    /// Its name.
    pub name: String,
    /// How many tags.
    pub tags: u64,
    /// Bytes of the distinct blobs linked into it.
    pub bytes: u64,
    /// When a tag last moved (Unix seconds).
    pub last_push: Option<u64>,
}

/// A tag as a repository page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagListing {
    /// The tag.
    pub name: String,
    /// Its manifest's digest.
    pub digest: String,
    /// Its manifest's media type.
    pub media_type: String,
    /// Its manifest's bytes.
    pub content: Vec<u8>,
    /// When it was last pushed (Unix seconds).
    pub updated_at: u64,
}

/// What the web UI lists: a project's repositories with their sizes and
/// last pushes, a repository's tags a page at a time, and who pushed a
/// digest.
pub trait Browse {
    /// Who pushed each of `digests` into `repo` last, from the audit log
    /// (`manifest.push` events): digest → actor.
    fn pushers(
        &self,
        repo: &str,
        digests: &[String],
    ) -> Result<std::collections::HashMap<String, String>>;

    /// The repositories of `project` (its own name or below it), by name.
    fn repositories_in(&self, project: &str) -> Result<Vec<RepoSummary>>;

    /// Up to `n` tags of `repo` after `after` in name order whose name
    /// contains `filter`, and how many match in all; `None` if there is no
    /// such repository.
    fn tag_page(
        &self,
        repo: &str,
        filter: &str,
        after: Option<&str>,
        n: usize,
    ) -> Result<Option<(Vec<TagListing>, u64)>>;
}

impl Browse for Sqlite {
    fn pushers(
        &self,
        repo: &str,
        digests: &[String],
    ) -> Result<std::collections::HashMap<String, String>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT actor FROM audit WHERE action = 'manifest.push' AND target = ?1
             ORDER BY id DESC LIMIT 1",
        )?;
        let mut out = std::collections::HashMap::new();
        for d in digests {
            let actor: Option<String> = stmt
                .query_row(params![format!("{repo}@{d}")], |r| r.get(0))
                .optional()?;
            if let Some(a) = actor {
                out.insert(d.clone(), a);
            }
        }
        Ok(out)
    }

    fn repositories_in(&self, project: &str) -> Result<Vec<RepoSummary>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT r.name,
                    (SELECT count(*) FROM tags t WHERE t.repo_id = r.id),
                    (SELECT coalesce(sum(b.size), 0) FROM repository_blobs rb
                       JOIN blobs b ON b.digest = rb.digest WHERE rb.repo_id = r.id),
                    (SELECT max(t.updated_at) FROM tags t WHERE t.repo_id = r.id)
             FROM repositories r
             WHERE r.name = ?1 OR substr(r.name, 1, length(?1) + 1) = ?1 || '/'
             ORDER BY r.name",
        )?;
        let rows = stmt.query_map(params![project], |r| {
            Ok(RepoSummary {
                name: r.get(0)?,
                tags: r.get::<_, i64>(1)? as u64,
                bytes: r.get::<_, i64>(2)? as u64,
                last_push: r.get::<_, Option<i64>>(3)?.map(|t| t as u64),
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn tag_page(
        &self,
        repo: &str,
        filter: &str,
        after: Option<&str>,
        n: usize,
    ) -> Result<Option<(Vec<TagListing>, u64)>> {
        let conn = self.reader();
        let exists: Option<i64> = conn
            .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
            .query_row(params![repo], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Ok(None);
        }
        let total: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repo_id
                 WHERE r.name = ?1 AND instr(t.name, ?2) > 0",
            )?
            .query_row(params![repo, filter], |r| r.get(0))?;
        let mut stmt = conn.prepare_cached(
            "SELECT t.name, t.digest, m.media_type, m.content, t.updated_at
             FROM tags t
             JOIN repositories r ON r.id = t.repo_id
             JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
             WHERE r.name = ?1 AND instr(t.name, ?2) > 0 AND t.name > ?3
             ORDER BY t.name LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![repo, filter, after.unwrap_or(""), n as i64], |r| {
            Ok(TagListing {
                name: r.get(0)?,
                digest: r.get(1)?,
                media_type: r.get(2)?,
                content: r.get(3)?,
                updated_at: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(Some((
            rows.collect::<std::result::Result<_, _>>()?,
            total as u64,
        )))
    }
}
