//! The registry's content ([`Content`]) on PostgreSQL: blobs and their
//! links, upload sessions, manifests with the references they record,
//! tags (moves checked against immutability in the transaction that makes
//! them), the catalog and referrers. Also the collection's bookkeeping
//! that content changes write in their own transactions (what a manifest
//! references, which blobs to look at next), as SQLite's `gc.rs` does.

use super::client::{Statements, Transaction};
use berth_oci::Digest;

use super::Postgres;
use super::queues::queue;
use crate::metadata::{
    Content, DeleteEvents, ManifestKey, ManifestRefs, MetadataError, NewManifest, OutboxEvent,
    Referrer, Result, StoredManifest, UploadRecord, now, parse_digest,
};
use crate::storage::UploadId;

/// `manifest_refs.kind` of a blob (a child manifest is 1).
const BLOB: i64 = 0;
const CHILD: i64 = 1;

/// The advisory lock that orders `gc_dirty` marks by commit: held from
/// taking a mark's number to the end of its transaction, so a collection
/// that saw number `n` saw every mark numbered up to `n`.
const DIRTY_LOCK: i64 = 0x6265_7274_685f_6764; // "berth_gd"

/// The id of repository `name`, made if new.
fn repo_id(tx: &mut Transaction<'_>, name: &str) -> Result<i64> {
    if let Some(row) = tx.query_opt("SELECT id FROM repositories WHERE name = $1", &[&name])? {
        return Ok(row.get(0));
    }
    Ok(tx
        .query_one(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            &[&name, &now()],
        )?
        .get(0))
}

/// Mark blob `digest` for the next collection to look at.
pub(super) fn dirty(tx: &mut Transaction<'_>, digest: &str) -> Result<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DIRTY_LOCK])?;
    tx.execute(
        "INSERT INTO gc_dirty (digest, seq) VALUES ($1, (SELECT coalesce(max(seq), 0) + 1 FROM gc_dirty))
         ON CONFLICT (digest) DO UPDATE SET seq = EXCLUDED.seq",
        &[&digest],
    )?;
    Ok(())
}

/// Record what manifest `digest` of `repo` references, after checking
/// each is in the repository (a blob with its size).
fn record(
    tx: &mut Transaction<'_>,
    repo: i64,
    digest: &str,
    refs: &ManifestRefs<'_>,
) -> Result<()> {
    for (d, size) in &refs.blobs {
        let d = d.to_string();
        let held = tx.query_opt(
            "SELECT 1 FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo_id = $1 AND rb.digest = $2 AND b.size = $3",
            &[&repo, &d, &(*size as i64)],
        )?;
        if held.is_none() {
            return Err(MetadataError::Missing { digest: d });
        }
        tx.execute(
            "INSERT INTO manifest_refs (repo_id, manifest, ref, kind) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&repo, &digest, &d, &BLOB],
        )?;
    }
    for c in &refs.children {
        let c = c.to_string();
        let held = tx.query_opt(
            "SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2",
            &[&repo, &c],
        )?;
        if held.is_none() {
            return Err(MetadataError::Missing { digest: c });
        }
        tx.execute(
            "INSERT INTO manifest_refs (repo_id, manifest, ref, kind) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&repo, &digest, &c, &CHILD],
        )?;
    }
    Ok(())
}

/// Forget what manifest `digest` of `repo` referenced, marking its blobs.
pub(super) fn forget(tx: &mut Transaction<'_>, repo: i64, digest: &str) -> Result<()> {
    let refs: Vec<String> = tx
        .query(
            "SELECT ref FROM manifest_refs WHERE repo_id = $1 AND manifest = $2 AND kind = 0",
            &[&repo, &digest],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for r in &refs {
        dirty(tx, r)?;
    }
    tx.execute(
        "DELETE FROM manifest_refs WHERE repo_id = $1 AND manifest = $2",
        &[&repo, &digest],
    )?;
    Ok(())
}

fn immutable_error(tag: &str, rule: String) -> MetadataError {
    MetadataError::Immutable {
        tag: tag.to_owned(),
        rule,
    }
}

impl Content for Postgres {
    fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let d = digest.to_string();
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT b.size FROM repository_blobs rb
                 JOIN repositories r ON r.id = rb.repo_id
                 JOIN blobs b ON b.digest = rb.digest
                 WHERE r.name = $1 AND rb.digest = $2",
                &[&repo, &d],
            )?
            .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let d = digest.to_string();
        self.read(|c| {
            Ok(
                c.query_opt("SELECT size FROM blobs WHERE digest = $1", &[&d])?
                    .map(|r| r.get::<_, i64>(0) as u64),
            )
        })
    }

    fn linked_blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let d = digest.to_string();
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT b.size FROM blobs b WHERE b.digest = $1
                 AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
                &[&d],
            )?
            .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn link_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        upload: Option<UploadId>,
    ) -> Result<()> {
        let d = digest.to_string();
        self.write(|tx| {
            let id = repo_id(tx, repo)?;
            let t = now();
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (digest) DO NOTHING",
                &[&d, &(size as i64), &t],
            )?;
            // Linking again renews the link: garbage collection spares
            // links younger than its grace window.
            tx.execute(
                "INSERT INTO repository_blobs (repo_id, digest, linked_at) VALUES ($1, $2, $3)
                 ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = EXCLUDED.linked_at",
                &[&id, &d, &t],
            )?;
            dirty(tx, &d)?;
            if let Some(u) = upload {
                tx.execute("DELETE FROM uploads WHERE id = $1", &[&u.to_string()])?;
            }
            Ok(())
        })
    }

    fn mount_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let d = digest.to_string();
        self.write(|tx| {
            let Some(size) = tx
                .query_opt("SELECT size FROM blobs WHERE digest = $1", &[&d])?
                .map(|r| r.get::<_, i64>(0))
            else {
                return Ok(None);
            };
            let id = repo_id(tx, repo)?;
            tx.execute(
                "INSERT INTO repository_blobs (repo_id, digest, linked_at) VALUES ($1, $2, $3)
                 ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = EXCLUDED.linked_at",
                &[&id, &d, &now()],
            )?;
            dirty(tx, &d)?;
            Ok(Some(size as u64))
        })
    }

    fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let d = digest.to_string();
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM repository_blobs WHERE digest = $2
                 AND repo_id = (SELECT id FROM repositories WHERE name = $1)",
                &[&repo, &d],
            )?;
            if n > 0 {
                dirty(tx, &d)?;
            }
            Ok(n > 0)
        })
    }

    fn create_upload(&self, id: UploadId, repo: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO uploads (id, repository, size, started_at, updated_at) VALUES ($1, $2, 0, $3, $3)",
                &[&id.to_string(), &repo, &now()],
            )?;
            Ok(())
        })
    }

    fn upload(&self, id: UploadId) -> Result<Option<UploadRecord>> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT repository, size FROM uploads WHERE id = $1",
                &[&id.to_string()],
            )?
            .map(|r| UploadRecord {
                repository: r.get(0),
                size: r.get::<_, i64>(1) as u64,
            }))
        })
    }

    fn set_upload_size(&self, id: UploadId, size: u64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE uploads SET size = $2, updated_at = $3 WHERE id = $1",
                &[&id.to_string(), &(size as i64), &now()],
            )?;
            Ok(())
        })
    }

    fn delete_upload(&self, id: UploadId) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM uploads WHERE id = $1", &[&id.to_string()])?;
            Ok(())
        })
    }

    fn stale_uploads(&self, before: u64) -> Result<Vec<UploadId>> {
        let ids: Vec<String> = self.read(|c| {
            Ok(c.query(
                "SELECT id FROM uploads WHERE updated_at <= $1",
                &[&(before as i64)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })?;
        ids.into_iter()
            .map(|s| {
                UploadId::parse(&s).ok_or(MetadataError::Corrupt {
                    what: "upload id",
                    value: s,
                })
            })
            .collect()
    }

    fn upload_count(&self) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c.query_one("SELECT count(*) FROM uploads", &[])?.get(0);
            Ok(n as u64)
        })
    }

    fn put_manifest(
        &self,
        repo: &str,
        m: &NewManifest<'_>,
        tags: &[String],
    ) -> Result<Vec<(String, Digest)>> {
        self.put_manifest_with_events(repo, m, &ManifestRefs::default(), tags, &[], &|_| None)
    }

    fn put_manifest_with_events(
        &self,
        repo: &str,
        m: &NewManifest<'_>,
        refs: &ManifestRefs<'_>,
        tags: &[String],
        events: &[OutboxEvent],
        immutable: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Vec<(String, Digest)>> {
        let d = m.digest.to_string();
        let subject = m.subject.map(ToString::to_string);
        self.write(|tx| {
            let id = repo_id(tx, repo)?;
            let t = now();
            tx.execute(
                "INSERT INTO manifests (repo_id, digest, media_type, artifact_type, subject, annotations, size, content, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (repo_id, digest) DO NOTHING",
                &[
                    &id,
                    &d,
                    &m.media_type,
                    &m.artifact_type,
                    &subject,
                    &m.annotations,
                    &(m.content.len() as i64),
                    &m.content,
                    &t,
                ],
            )?;
            record(tx, id, &d, refs)?;
            let mut moved = Vec::new();
            for tag in tags {
                let before: Option<String> = tx
                    .query_opt(
                        "SELECT digest FROM tags WHERE repo_id = $1 AND name = $2",
                        &[&id, tag],
                    )?
                    .map(|r| r.get(0));
                tx.execute(
                    "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (repo_id, name) DO UPDATE SET digest = EXCLUDED.digest, updated_at = EXCLUDED.updated_at",
                    &[&id, tag, &d, &t],
                )?;
                if let Some(before) = before.filter(|b| *b != d) {
                    // Checked in this transaction: a racing push on another
                    // replica either sees this tag or fails to commit.
                    if let Some(rule) = immutable(tag) {
                        return Err(immutable_error(tag, rule));
                    }
                    moved.push((tag.clone(), parse_digest(before)?));
                }
            }
            for e in events {
                queue(tx, e, t)?;
            }
            Ok(moved)
        })
    }

    fn manifest(
        &self,
        repo: &str,
        key: ManifestKey<'_>,
        with_content: bool,
    ) -> Result<Option<StoredManifest>> {
        let (sql, arg) = match key {
            ManifestKey::Tag(t) => (
                "SELECT m.digest, m.media_type, m.size,
                        CASE WHEN $3 THEN m.content ELSE '\\x'::BYTEA END
                 FROM tags t
                 JOIN repositories r ON r.id = t.repo_id
                 JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                 WHERE r.name = $1 AND t.name = $2",
                t.to_owned(),
            ),
            ManifestKey::Digest(d) => (
                "SELECT m.digest, m.media_type, m.size,
                        CASE WHEN $3 THEN m.content ELSE '\\x'::BYTEA END
                 FROM manifests m
                 JOIN repositories r ON r.id = m.repo_id
                 WHERE r.name = $1 AND m.digest = $2",
                d.to_string(),
            ),
        };
        let row = self.read(|c| Ok(c.query_opt(sql, &[&repo, &arg, &with_content])?))?;
        row.map(|r| {
            Ok(StoredManifest {
                digest: parse_digest(r.get(0))?,
                media_type: r.get(1),
                size: r.get::<_, i64>(2) as u64,
                content: r.get(3),
            })
        })
        .transpose()
    }

    fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.delete_manifest_checked(repo, digest, &|_| None, &|_, _| Vec::new())
    }

    fn delete_manifest_checked(
        &self,
        repo: &str,
        digest: &Digest,
        immutable: &(dyn Fn(&str) -> Option<String> + Sync),
        events: &DeleteEvents<'_>,
    ) -> Result<bool> {
        let d = digest.to_string();
        self.write(|tx| {
            let Some(id) = tx
                .query_opt("SELECT id FROM repositories WHERE name = $1", &[&repo])?
                .map(|r| r.get::<_, i64>(0))
            else {
                return Ok(false);
            };
            let tags: Vec<String> = tx
                .query(
                    "SELECT name FROM tags WHERE repo_id = $1 AND digest = $2",
                    &[&id, &d],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for tag in &tags {
                if let Some(rule) = immutable(tag) {
                    return Err(immutable_error(tag, rule));
                }
            }
            tx.execute(
                "DELETE FROM tags WHERE repo_id = $1 AND digest = $2",
                &[&id, &d],
            )?;
            forget(tx, id, &d)?;
            let n = tx.execute(
                "DELETE FROM manifests WHERE repo_id = $1 AND digest = $2",
                &[&id, &d],
            )?;
            if n > 0 {
                for e in events(&d, &tags) {
                    queue(tx, &e, now())?;
                }
            }
            Ok(n > 0)
        })
    }

    fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        self.delete_tag_checked(repo, tag, &|_| None, &|_, _| Vec::new())
    }

    fn delete_tag_checked(
        &self,
        repo: &str,
        tag: &str,
        immutable: &(dyn Fn(&str) -> Option<String> + Sync),
        events: &DeleteEvents<'_>,
    ) -> Result<bool> {
        self.write(|tx| {
            let digest: Option<String> = tx
                .query_opt(
                    "DELETE FROM tags WHERE name = $2
                     AND repo_id = (SELECT id FROM repositories WHERE name = $1) RETURNING digest",
                    &[&repo, &tag],
                )?
                .map(|r| r.get(0));
            // A tag that existed and is protected: the delete rolls back.
            if let Some(d) = &digest {
                if let Some(rule) = immutable(tag) {
                    return Err(immutable_error(tag, rule));
                }
                for e in events(d, &[tag.to_owned()]) {
                    queue(tx, &e, now())?;
                }
            }
            Ok(digest.is_some())
        })
    }

    fn tags(&self, repo: &str, last: Option<&str>, n: usize) -> Result<Option<Vec<String>>> {
        self.read(|c| {
            let Some(id) = c
                .query_opt("SELECT id FROM repositories WHERE name = $1", &[&repo])?
                .map(|r| r.get::<_, i64>(0))
            else {
                return Ok(None);
            };
            Ok(Some(
                c.query(
                    "SELECT name FROM tags WHERE repo_id = $1 AND name > $2 ORDER BY name LIMIT $3",
                    &[&id, &last.unwrap_or(""), &(n as i64)],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect(),
            ))
        })
    }

    fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT name FROM repositories r WHERE name > $1
                 AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
                 ORDER BY name LIMIT $2",
                &[&last.unwrap_or(""), &(n as i64)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let s = subject.to_string();
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m
                 JOIN repositories r ON r.id = m.repo_id
                 WHERE r.name = $1 AND m.subject = $2 AND ($3::TEXT IS NULL OR m.artifact_type = $3)
                 ORDER BY m.digest",
                &[&repo, &s, &artifact_type],
            )?)
        })?;
        rows.iter()
            .map(|r| {
                Ok(Referrer {
                    digest: parse_digest(r.get(0))?,
                    media_type: r.get(1),
                    size: r.get::<_, i64>(2) as u64,
                    artifact_type: r.get(3),
                    annotations: r.get(4),
                })
            })
            .collect()
    }
}
