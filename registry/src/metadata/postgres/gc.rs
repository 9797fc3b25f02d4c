//! Garbage collection's side of the metadata ([`Collection`]) on
//! PostgreSQL. The plan reads one snapshot (`REPEATABLE READ`, read
//! only); the untagged-manifest walk is SQLite's own
//! ([`crate::metadata::gc::unreachable`]) over the rows read here; the
//! doomed manifests reach the blob queries as arrays (`unnest`) instead of
//! SQLite's temporary table. Deletions re-check what they remove inside
//! their `SERIALIZABLE` transaction, so a manifest stored on another
//! replica at the same moment either keeps its blobs or is refused.

use std::collections::{HashMap, HashSet};

use super::client::{Statements, Transaction};
use berth_oci::Digest;

use super::Postgres;
use super::content::forget;
use crate::metadata::gc::{Node, unreachable};
use crate::metadata::{
    Collection, DoomedBlob, DoomedManifest, GcPlan, Result, TagRow, parse_digest,
};

fn repo_names(tx: &mut Transaction<'_>) -> Result<HashMap<i64, String>> {
    Ok(tx
        .query("SELECT id, name FROM repositories", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Untagged manifests stored at or before `cutoff` that nothing kept
/// keeps (see [`unreachable`]).
fn doomed_manifests(tx: &mut Transaction<'_>, cutoff: u64) -> Result<Vec<Node>> {
    let nodes: Vec<Node> = tx
        .query(
            "SELECT m.repo_id, m.digest, m.subject, m.size,
                    m.created_at > $1 OR EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
             FROM manifests m",
            &[&(cutoff as i64)],
        )?
        .iter()
        .map(|r| Node {
            repo: r.get(0),
            digest: r.get(1),
            subject: r.get(2),
            size: r.get::<_, i64>(3) as u64,
            root: r.get(4),
        })
        .collect();
    let children: Vec<(i64, String, String)> = tx
        .query(
            "SELECT repo_id, manifest, ref FROM manifest_refs WHERE kind = 1",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(unreachable(nodes, &children))
}

impl Collection for Postgres {
    fn gc_plan(&self, grace_cutoff: u64, untagged_cutoff: Option<u64>) -> Result<GcPlan> {
        self.snapshot(|tx| {
            let total: i64 = tx.query_one("SELECT count(*) FROM blobs", &[])?.get(0);
            let mut plan = GcPlan {
                blobs_total: total as u64,
                ..GcPlan::default()
            };
            let (mut repos, mut digests) = (Vec::<i64>::new(), Vec::<String>::new());
            if let Some(cutoff) = untagged_cutoff {
                let names = repo_names(tx)?;
                for n in doomed_manifests(tx, cutoff)? {
                    plan.manifests.push(DoomedManifest {
                        repository: names.get(&n.repo).cloned().unwrap_or_default(),
                        digest: parse_digest(n.digest.clone())?,
                        size: n.size,
                    });
                    repos.push(n.repo);
                    digests.push(n.digest);
                }
            }
            plan.dirty_seq = tx
                .query_one("SELECT coalesce(max(seq), 0)::BIGINT FROM gc_dirty", &[])?
                .get(0);
            // The doomed manifests; a reference counts unless its manifest
            // is one of them. What may have become garbage: marked blobs,
            // and what doomed manifests reference.
            const WITH: &str = "WITH doomed AS (SELECT * FROM unnest($2::BIGINT[], $3::TEXT[]) AS d(repo_id, digest)),
                 suspect AS (SELECT digest FROM gc_dirty UNION
                             SELECT r.ref FROM manifest_refs r JOIN doomed g ON g.repo_id = r.repo_id AND g.digest = r.manifest)";
            const LIVE_REF: &str = "NOT EXISTS (SELECT 1 FROM doomed g WHERE g.repo_id = r.repo_id AND g.digest = r.manifest)";
            let links: i64 = tx
                .query_one(
                    &format!(
                        "{WITH} SELECT count(*) FROM repository_blobs rb
                         WHERE rb.digest IN (SELECT digest FROM suspect) AND rb.linked_at <= $1
                         AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = rb.digest AND r.repo_id = rb.repo_id AND {LIVE_REF})"
                    ),
                    &[&(grace_cutoff as i64), &repos, &digests],
                )?
                .get(0);
            plan.links = links as u64;
            for r in tx.query(
                &format!(
                    "{WITH} SELECT b.digest, b.size FROM blobs b
                     WHERE b.digest IN (SELECT digest FROM suspect)
                     AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest AND rb.linked_at > $1)
                     AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = b.digest AND {LIVE_REF})
                     ORDER BY b.digest"
                ),
                &[&(grace_cutoff as i64), &repos, &digests],
            )? {
                plan.blobs.push(DoomedBlob {
                    digest: parse_digest(r.get(0))?,
                    size: r.get::<_, i64>(1) as u64,
                });
            }
            Ok(plan)
        })
    }

    fn untagged_in_project(
        &self,
        project: &str,
        cutoff: u64,
        without: &[TagRow],
    ) -> Result<Vec<DoomedManifest>> {
        self.rolled_back(|tx| {
            for t in without {
                tx.execute(
                    "DELETE FROM tags WHERE name = $2 AND digest = $3
                     AND repo_id = (SELECT id FROM repositories WHERE name = $1)",
                    &[&t.repository, &t.tag, &t.digest],
                )?;
            }
            let names = repo_names(tx)?;
            let mut out = Vec::new();
            for n in doomed_manifests(tx, cutoff)? {
                let repository = names.get(&n.repo).cloned().unwrap_or_default();
                if crate::auth::model::project_of(&repository) == project {
                    out.push(DoomedManifest {
                        repository,
                        digest: parse_digest(n.digest)?,
                        size: n.size,
                    });
                }
            }
            Ok(out)
        })
    }

    fn gc_remove_manifests(&self, repo: &str, digests: &[Digest]) -> Result<usize> {
        let set: HashSet<String> = digests.iter().map(ToString::to_string).collect();
        self.write(|tx| {
            let Some(id) = tx
                .query_opt("SELECT id FROM repositories WHERE name = $1", &[&repo])?
                .map(|r| r.get::<_, i64>(0))
            else {
                return Ok(0);
            };
            for d in &set {
                let tagged = tx
                    .query_opt(
                        "SELECT 1 FROM tags WHERE repo_id = $1 AND digest = $2 LIMIT 1",
                        &[&id, d],
                    )?
                    .is_some();
                let parents: Vec<String> = tx
                    .query(
                        "SELECT manifest FROM manifest_refs WHERE ref = $2 AND repo_id = $1 AND kind = 1",
                        &[&id, d],
                    )?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                // A referrer pushed since keeps nothing: a kept subject
                // keeps its referrers, not the other way round.
                if tagged || parents.iter().any(|p| !set.contains(p)) {
                    return Ok(0);
                }
            }
            let mut n = 0;
            for d in &set {
                forget(tx, id, d)?;
                n += tx.execute(
                    "DELETE FROM manifests WHERE repo_id = $1 AND digest = $2",
                    &[&id, d],
                )? as usize;
            }
            Ok(n)
        })
    }

    fn gc_prune_links(&self, cutoff: u64) -> Result<u64> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM repository_blobs rb WHERE linked_at <= $1
                 AND digest IN (SELECT digest FROM gc_dirty)
                 AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = rb.digest AND r.repo_id = rb.repo_id)",
                &[&(cutoff as i64)],
            )?)
        })
    }

    fn gc_settle(&self, seq: i64) -> Result<u64> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM gc_dirty g WHERE seq <= $1 AND (
                    NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = g.digest)
                    OR (EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = g.digest)
                        AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = g.digest
                            AND NOT EXISTS (SELECT 1 FROM manifest_refs r2 WHERE r2.ref = rb.digest AND r2.repo_id = rb.repo_id))))",
                &[&seq],
            )?)
        })
    }

    fn gc_forget_blobs(&self, blobs: &[DoomedBlob], cutoff: u64) -> Result<Vec<DoomedBlob>> {
        self.write(|tx| {
            let mut gone = Vec::new();
            for b in blobs {
                let d = b.digest.to_string();
                let referenced = tx
                    .query_opt("SELECT 1 FROM manifest_refs WHERE ref = $1 LIMIT 1", &[&d])?
                    .is_some();
                let fresh = tx
                    .query_opt(
                        "SELECT 1 FROM repository_blobs WHERE digest = $1 AND linked_at > $2 LIMIT 1",
                        &[&d, &(cutoff as i64)],
                    )?
                    .is_some();
                if referenced || fresh {
                    continue;
                }
                tx.execute("DELETE FROM repository_blobs WHERE digest = $1", &[&d])?;
                tx.execute("DELETE FROM blob_pieces WHERE digest = $1", &[&d])?;
                if tx.execute("DELETE FROM blobs WHERE digest = $1", &[&d])? > 0 {
                    gone.push(b.clone());
                }
            }
            Ok(gone)
        })
    }

    fn gc_known_digests(&self) -> Result<HashSet<String>> {
        self.read(|c| {
            Ok(c.query("SELECT digest FROM blobs", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn gc_blob_known(&self, digest: &str) -> Result<bool> {
        self.read(|c| {
            Ok(
                c.query_opt("SELECT 1 FROM blobs WHERE digest = $1", &[&digest])?
                    .is_some(),
            )
        })
    }

    fn gc_s3_orphans(&self, limit: usize) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT s.digest, s.key FROM s3_blobs s
                 WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = s.digest)
                 ORDER BY s.digest LIMIT $1",
                &[&(limit as i64)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    fn blob_pieces(&self, digest: &str) -> Result<Option<(u64, Vec<u8>)>> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT piece_size, hashes FROM blob_pieces WHERE digest = $1",
                &[&digest],
            )?
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
        })
    }

    fn put_blob_pieces(&self, digest: &str, piece_size: u64, hashes: &[u8]) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO blob_pieces (digest, piece_size, hashes)
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = $1)
                 ON CONFLICT (digest) DO UPDATE SET piece_size = EXCLUDED.piece_size, hashes = EXCLUDED.hashes",
                &[&digest, &(piece_size as i64), &hashes],
            )?;
            Ok(())
        })
    }

    fn gc_stored_bytes(&self) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c
                .query_one("SELECT coalesce(sum(size), 0)::BIGINT FROM blobs", &[])?
                .get(0);
            Ok(n as u64)
        })
    }
}
