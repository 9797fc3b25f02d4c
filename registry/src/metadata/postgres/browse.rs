//! What the web UI lists ([`Browse`]) on PostgreSQL: a project's
//! repositories with their sizes and last pushes, a repository's tags a
//! page at a time (`strpos` for the substring filter, as SQLite's
//! `instr`), and who pushed a digest.

use std::collections::HashMap;

use super::Postgres;
use super::client::Statements;
use crate::metadata::{Browse, RepoSummary, Result, TagListing};

impl Browse for Postgres {
    fn pushers(&self, repo: &str, digests: &[String]) -> Result<HashMap<String, String>> {
        let targets: Vec<String> = digests.iter().map(|d| format!("{repo}@{d}")).collect();
        self.read(|c| {
            // The latest push event of each target, in one query.
            Ok(c.query(
                "SELECT DISTINCT ON (target) target, actor FROM audit
                 WHERE action = 'manifest.push' AND target = ANY($1)
                 ORDER BY target, id DESC",
                &[&targets],
            )?
            .iter()
            .filter_map(|r| {
                let target: &str = r.get(0);
                let digest = target.rsplit_once('@')?.1.to_owned();
                Some((digest, r.get(1)))
            })
            .collect())
        })
    }

    fn repositories_in(&self, project: &str) -> Result<Vec<RepoSummary>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT r.name,
                        (SELECT count(*) FROM tags t WHERE t.repo_id = r.id),
                        (SELECT coalesce(sum(b.size), 0)::BIGINT FROM repository_blobs rb
                           JOIN blobs b ON b.digest = rb.digest WHERE rb.repo_id = r.id),
                        (SELECT max(t.updated_at) FROM tags t WHERE t.repo_id = r.id)
                 FROM repositories r
                 WHERE r.name = $1 OR left(r.name, length($1) + 1) = $1 || '/'
                 ORDER BY r.name",
                &[&project],
            )?
            .iter()
            .map(|r| RepoSummary {
                name: r.get(0),
                tags: r.get::<_, i64>(1) as u64,
                bytes: r.get::<_, i64>(2) as u64,
                last_push: r.get::<_, Option<i64>>(3).map(|t| t as u64),
            })
            .collect())
        })
    }

    fn tag_page(
        &self,
        repo: &str,
        filter: &str,
        after: Option<&str>,
        n: usize,
    ) -> Result<Option<(Vec<TagListing>, u64)>> {
        self.read(|c| {
            if c.query_opt("SELECT id FROM repositories WHERE name = $1", &[&repo])?
                .is_none()
            {
                return Ok(None);
            }
            let total: i64 = c
                .query_one(
                    "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repo_id
                     WHERE r.name = $1 AND strpos(t.name, $2) > 0",
                    &[&repo, &filter],
                )?
                .get(0);
            let rows = c
                .query(
                    "SELECT t.name, t.digest, m.media_type, m.content, t.updated_at
                     FROM tags t
                     JOIN repositories r ON r.id = t.repo_id
                     JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                     WHERE r.name = $1 AND strpos(t.name, $2) > 0 AND t.name > $3
                     ORDER BY t.name LIMIT $4",
                    &[&repo, &filter, &after.unwrap_or(""), &(n as i64)],
                )?
                .iter()
                .map(|r| TagListing {
                    name: r.get(0),
                    digest: r.get(1),
                    media_type: r.get(2),
                    content: r.get(3),
                    updated_at: r.get::<_, i64>(4) as u64,
                })
                .collect();
            Ok(Some((rows, total as u64)))
        })
    }
}
