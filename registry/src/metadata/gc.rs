//! What garbage collection reads and deletes in the metadata: the
//! references every manifest makes (`manifest_refs`, recorded in the
//! transaction that stores the manifest, after checking each target is
//! there), when each blob was last linked into a repository, the plan of a
//! collection (untagged manifests past their age, links and blobs nothing
//! references) and the guarded deletions that apply it.
//!
//! A collection looks only at blobs that may have become garbage since the
//! last one (`gc_dirty`: marked when a blob is linked, unlinked, or loses a
//! reference because a manifest went), so its cost follows what changed,
//! not the size of the store; a blob leaves the set once it is referenced
//! and every link of it is used, or once it is gone.
//!
//! Safety rests on SQLite's one writer: a manifest PUT checks its blobs and
//! records its references in one transaction, and a sweep re-checks a blob
//! is unreferenced in the transaction that forgets it, so one of the two
//! always sees the other — the PUT fails with `MANIFEST_BLOB_UNKNOWN`, or
//! the blob is kept. The bytes go only after that transaction commits,
//! under the blob's [`crate::gc::Gate`] stripe, which uploads of the same
//! digest take too.

use std::collections::{HashMap, HashSet};

use berth_oci::{Digest, Manifest};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{MetadataError, Result, Sqlite, parse_digest};

/// Version 5: manifest references, when each blob was linked, the dirty
/// set, blobs' piece digests, and project policies stored through the
/// admin API.
pub(super) const SCHEMA_V5: &str = r#"
CREATE TABLE manifest_refs (
    repo_id INTEGER NOT NULL REFERENCES repositories(id),
    manifest TEXT NOT NULL,
    ref TEXT NOT NULL,
    kind INTEGER NOT NULL,
    PRIMARY KEY (repo_id, manifest, ref)
) WITHOUT ROWID;
CREATE INDEX manifest_refs_ref ON manifest_refs(ref, repo_id);
CREATE TABLE gc_dirty (
    digest TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX gc_dirty_seq ON gc_dirty(seq);
INSERT INTO gc_dirty (digest, seq) SELECT digest, 0 FROM blobs;
CREATE TABLE blob_pieces (
    digest TEXT PRIMARY KEY,
    piece_size INTEGER NOT NULL,
    hashes BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE project_policies (
    project TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
ALTER TABLE repository_blobs ADD COLUMN linked_at INTEGER NOT NULL DEFAULT 0;
UPDATE repository_blobs SET linked_at = (SELECT created_at FROM blobs b WHERE b.digest = repository_blobs.digest);
"#;

/// A reference to a blob (config or layer).
const BLOB: i64 = 0;
/// A reference to a child manifest (an index's entry).
const CHILD: i64 = 1;

/// What a manifest references, checked and recorded when it is stored.
#[derive(Debug, Clone, Default)]
pub struct ManifestRefs<'a> {
    /// Blobs (config, layers; not foreign layers) with their sizes.
    pub blobs: Vec<(&'a Digest, u64)>,
    /// Child manifests (an index's entries).
    pub children: Vec<&'a Digest>,
}

/// Record the references of every stored manifest (the version 5
/// migration; manifests that no longer parse reference nothing).
pub(super) fn backfill(tx: &Connection) -> Result<()> {
    let rows: Vec<(i64, String, String, Vec<u8>)> = tx
        .prepare("SELECT repo_id, digest, media_type, content FROM manifests")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut insert = tx.prepare(
        "INSERT OR IGNORE INTO manifest_refs (repo_id, manifest, ref, kind) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (repo, digest, media_type, content) in rows {
        let Ok(m) = Manifest::parse(&content, Some(&media_type)) else {
            continue;
        };
        for b in m.blobs().unwrap_or_default() {
            if b.urls.is_empty() {
                insert.execute(params![repo, digest, b.digest.to_string(), BLOB])?;
            }
        }
        for c in m.children().unwrap_or_default() {
            insert.execute(params![repo, digest, c.digest.to_string(), CHILD])?;
        }
    }
    Ok(())
}

/// Check, inside the transaction storing manifest `digest` in repository
/// `repo`, that everything it references is there, and record it.
pub(super) fn record(
    tx: &Transaction<'_>,
    repo: i64,
    digest: &str,
    refs: &ManifestRefs<'_>,
) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO manifest_refs (repo_id, manifest, ref, kind) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut blob = tx.prepare_cached(
        "SELECT 1 FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
         WHERE rb.repo_id = ?1 AND rb.digest = ?2 AND b.size = ?3",
    )?;
    for (d, size) in &refs.blobs {
        let d = d.to_string();
        if !blob.exists(params![repo, d, *size as i64])? {
            return Err(MetadataError::Missing { digest: d });
        }
        insert.execute(params![repo, digest, d, BLOB])?;
    }
    let mut child =
        tx.prepare_cached("SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2")?;
    for c in &refs.children {
        let c = c.to_string();
        if !child.exists(params![repo, c])? {
            return Err(MetadataError::Missing { digest: c });
        }
        insert.execute(params![repo, digest, c, CHILD])?;
    }
    Ok(())
}

/// Forget the references of manifest `digest` in repository `repo`; the
/// blobs it referenced may now be garbage.
pub(super) fn forget(tx: &Connection, repo: i64, digest: &str) -> Result<()> {
    let refs: Vec<String> = tx
        .prepare_cached(
            "SELECT ref FROM manifest_refs WHERE repo_id = ?1 AND manifest = ?2 AND kind = 0",
        )?
        .query_map(params![repo, digest], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for r in &refs {
        dirty(tx, r)?;
    }
    tx.prepare_cached("DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest = ?2")?
        .execute(params![repo, digest])?;
    Ok(())
}

/// Mark blob `digest` for the next collection to look at (with a sequence
/// number past every earlier mark, so a collection that looked at it
/// before this mark does not clear it).
pub(super) fn dirty(tx: &Connection, digest: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO gc_dirty (digest, seq) VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM gc_dirty))
         ON CONFLICT(digest) DO UPDATE SET seq = excluded.seq",
    )?
    .execute([digest])?;
    Ok(())
}

/// An untagged manifest a collection removes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DoomedManifest {
    /// Its repository.
    pub repository: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// A blob a collection removes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DoomedBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// What a collection would remove, read from one snapshot.
#[derive(Debug, Clone, Default)]
pub struct GcPlan {
    /// Untagged manifests past their age that nothing kept references.
    pub manifests: Vec<DoomedManifest>,
    /// Repository links (repository, blob) that nothing in the repository
    /// references and that are older than the grace window.
    pub links: u64,
    /// Blobs that no manifest kept references and that no repository
    /// linked within the grace window.
    pub blobs: Vec<DoomedBlob>,
    /// Blobs the metadata knows, before the collection.
    pub blobs_total: u64,
    /// The last dirty mark the plan saw: marks up to it that the run
    /// settles are cleared.
    pub dirty_seq: i64,
}

/// One manifest, as the untagged-manifest pass sees it.
pub(super) struct Node {
    pub(super) repo: i64,
    pub(super) digest: String,
    pub(super) subject: Option<String>,
    pub(super) size: u64,
    /// Tagged, or stored after the cutoff: kept, and keeps what it reaches.
    pub(super) root: bool,
}

/// Garbage collection's side of the metadata: the plan from one snapshot,
/// deletions that re-check what they remove inside their transaction, and
/// blob piece digests.
pub trait Collection {
    /// Plan a collection: blobs linked at or before `grace_cutoff` (unix
    /// seconds) that nothing references go; with `untagged_cutoff`,
    /// untagged manifests stored at or before it go first, unless a tag, a
    /// kept index or (for a referrer) a kept subject keeps them. Reads one
    /// snapshot; nothing is changed.
    fn gc_plan(&self, grace_cutoff: u64, untagged_cutoff: Option<u64>) -> Result<GcPlan>;

    /// Untagged manifests of `project`'s repositories stored at or before
    /// `cutoff` that nothing kept holds (retention's `remove_untagged`), as
    /// they would be without the tags `without` (a dry run's: removed in a
    /// transaction that is rolled back).
    fn untagged_in_project(
        &self,
        project: &str,
        cutoff: u64,
        without: &[super::TagRow],
    ) -> Result<Vec<DoomedManifest>>;

    /// Remove the planned untagged manifests of one repository, unless
    /// since the plan one got a tag or a manifest outside the set now
    /// references it (then none of the repository's go: the next run plans
    /// again). Returns how many went.
    fn gc_remove_manifests(&self, repo: &str, digests: &[Digest]) -> Result<usize>;

    /// Forget links (repository, marked blob) made at or before `cutoff`
    /// that nothing in their repository references. Returns how many went.
    fn gc_prune_links(&self, cutoff: u64) -> Result<u64>;

    /// Clear the marks up to `seq` of blobs that are settled: gone, or
    /// referenced with every link used. Marks made since stay.
    fn gc_settle(&self, seq: i64) -> Result<u64>;

    /// Forget those of `blobs` that are still unreferenced and not linked
    /// after `cutoff`, in one transaction; returns the ones forgotten,
    /// whose bytes the caller then deletes.
    fn gc_forget_blobs(&self, blobs: &[DoomedBlob], cutoff: u64) -> Result<Vec<DoomedBlob>>;

    /// Every blob digest the metadata knows (the store's orphan pass reads
    /// them once instead of asking per file).
    fn gc_known_digests(&self) -> Result<HashSet<String>>;

    /// Whether the metadata knows blob `digest` (the store's orphan pass
    /// keeps whatever it does).
    fn gc_blob_known(&self, digest: &str) -> Result<bool>;

    /// The S3 index's entries (digest, object key) for blobs the metadata
    /// no longer knows: bytes left by a sweep whose object delete failed.
    fn gc_s3_orphans(&self, limit: usize) -> Result<Vec<(String, String)>>;

    /// The piece size and concatenated sha256 piece digests of `digest`,
    /// if computed.
    fn blob_pieces(&self, digest: &str) -> Result<Option<(u64, Vec<u8>)>>;

    /// Keep `digest`'s piece digests (if the blob is still known).
    fn put_blob_pieces(&self, digest: &str, piece_size: u64, hashes: &[u8]) -> Result<()>;

    /// Bytes of distinct blobs the metadata knows.
    fn gc_stored_bytes(&self) -> Result<u64>;
}

impl Collection for Sqlite {
    fn gc_plan(&self, grace_cutoff: u64, untagged_cutoff: Option<u64>) -> Result<GcPlan> {
        let mut conn = self.reader();
        let tx = conn.transaction()?;
        let mut plan = GcPlan {
            blobs_total: tx.query_row("SELECT count(*) FROM blobs", [], |r| r.get::<_, i64>(0))?
                as u64,
            ..GcPlan::default()
        };
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS gc_doomed (repo_id INTEGER NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (repo_id, digest)) WITHOUT ROWID;
             DELETE FROM temp.gc_doomed;",
        )?;
        if let Some(cutoff) = untagged_cutoff {
            let doomed = doomed_manifests(&tx, cutoff)?;
            let mut insert =
                tx.prepare_cached("INSERT INTO temp.gc_doomed (repo_id, digest) VALUES (?1, ?2)")?;
            let names = repo_names(&tx)?;
            for n in doomed {
                insert.execute(params![n.repo, n.digest])?;
                plan.manifests.push(DoomedManifest {
                    repository: names.get(&n.repo).cloned().unwrap_or_default(),
                    digest: parse_digest(n.digest)?,
                    size: n.size,
                });
            }
        }
        plan.dirty_seq = tx.query_row("SELECT coalesce(max(seq), 0) FROM gc_dirty", [], |r| {
            r.get(0)
        })?;
        // A reference counts unless its manifest is doomed.
        const LIVE_REF: &str = "NOT EXISTS (SELECT 1 FROM temp.gc_doomed g WHERE g.repo_id = r.repo_id AND g.digest = r.manifest)";
        // What may have become garbage: marked blobs, and what doomed
        // manifests reference.
        const SUSPECT: &str = "(SELECT digest FROM gc_dirty UNION SELECT r.ref FROM manifest_refs r JOIN temp.gc_doomed g ON g.repo_id = r.repo_id AND g.digest = r.manifest)";
        plan.links = tx.query_row(
            &format!(
                "SELECT count(*) FROM repository_blobs rb WHERE rb.digest IN {SUSPECT} AND rb.linked_at <= ?1
                 AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = rb.digest AND r.repo_id = rb.repo_id AND {LIVE_REF})"
            ),
            [grace_cutoff as i64],
            |r| r.get::<_, i64>(0),
        )? as u64;
        let blobs: Vec<(String, i64)> = tx
            .prepare(&format!(
                "SELECT b.digest, b.size FROM blobs b
                 WHERE b.digest IN {SUSPECT}
                 AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest AND rb.linked_at > ?1)
                 AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = b.digest AND {LIVE_REF})
                 ORDER BY b.digest"
            ))?
            .query_map([grace_cutoff as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (d, size) in blobs {
            plan.blobs.push(DoomedBlob {
                digest: parse_digest(d)?,
                size: size as u64,
            });
        }
        tx.execute_batch("DELETE FROM temp.gc_doomed;")?;
        tx.commit()?;
        Ok(plan)
    }

    fn untagged_in_project(
        &self,
        project: &str,
        cutoff: u64,
        without: &[super::TagRow],
    ) -> Result<Vec<DoomedManifest>> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        for t in without {
            tx.prepare_cached(
                "DELETE FROM tags WHERE name = ?2 AND digest = ?3
                 AND repo_id = (SELECT id FROM repositories WHERE name = ?1)",
            )?
            .execute(params![t.repository, t.tag, t.digest])?;
        }
        let names = repo_names(&tx)?;
        let mut out = Vec::new();
        for n in doomed_manifests(&tx, cutoff)? {
            let repository = names.get(&n.repo).cloned().unwrap_or_default();
            if crate::auth::model::project_of(&repository) == project {
                out.push(DoomedManifest {
                    repository,
                    digest: parse_digest(n.digest)?,
                    size: n.size,
                });
            }
        }
        // Dropped: rolled back.
        drop(tx);
        Ok(out)
    }

    fn gc_remove_manifests(&self, repo: &str, digests: &[Digest]) -> Result<usize> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let Some(id) = Self::existing_repo_id(&tx, repo)? else {
            return Ok(0);
        };
        let set: HashSet<String> = digests.iter().map(ToString::to_string).collect();
        for d in &set {
            let tagged = tx
                .prepare_cached("SELECT 1 FROM tags WHERE repo_id = ?1 AND digest = ?2")?
                .exists(params![id, d])?;
            let parents: Vec<String> = tx
                .prepare_cached(
                    "SELECT manifest FROM manifest_refs WHERE ref = ?2 AND repo_id = ?1 AND kind = 1",
                )?
                .query_map(params![id, d], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            // A referrer pushed since keeps nothing: a kept subject keeps
            // its referrers, not the other way round.
            if tagged || parents.iter().any(|p| !set.contains(p)) {
                return Ok(0);
            }
        }
        let mut n = 0;
        for d in &set {
            forget(&tx, id, d)?;
            n += tx
                .prepare_cached("DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2")?
                .execute(params![id, d])?;
        }
        tx.commit()?;
        Ok(n)
    }

    fn gc_prune_links(&self, cutoff: u64) -> Result<u64> {
        let n = self.writer().execute(
            "DELETE FROM repository_blobs WHERE linked_at <= ?1
             AND digest IN (SELECT digest FROM gc_dirty)
             AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = repository_blobs.digest AND r.repo_id = repository_blobs.repo_id)",
            [cutoff as i64],
        )?;
        Ok(n as u64)
    }

    fn gc_settle(&self, seq: i64) -> Result<u64> {
        let n = self.writer().execute(
            "DELETE FROM gc_dirty WHERE seq <= ?1 AND (
                NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = gc_dirty.digest)
                OR (EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = gc_dirty.digest)
                    AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = gc_dirty.digest
                        AND NOT EXISTS (SELECT 1 FROM manifest_refs r2 WHERE r2.ref = rb.digest AND r2.repo_id = rb.repo_id))))",
            [seq],
        )?;
        Ok(n as u64)
    }

    fn gc_forget_blobs(&self, blobs: &[DoomedBlob], cutoff: u64) -> Result<Vec<DoomedBlob>> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let mut gone = Vec::new();
        for b in blobs {
            let d = b.digest.to_string();
            let referenced = tx
                .prepare_cached("SELECT 1 FROM manifest_refs WHERE ref = ?1")?
                .exists([&d])?;
            let fresh = tx
                .prepare_cached(
                    "SELECT 1 FROM repository_blobs WHERE digest = ?1 AND linked_at > ?2",
                )?
                .exists(params![d, cutoff as i64])?;
            if referenced || fresh {
                continue;
            }
            tx.prepare_cached("DELETE FROM repository_blobs WHERE digest = ?1")?
                .execute([&d])?;
            tx.prepare_cached("DELETE FROM blob_pieces WHERE digest = ?1")?
                .execute([&d])?;
            if tx
                .prepare_cached("DELETE FROM blobs WHERE digest = ?1")?
                .execute([&d])?
                > 0
            {
                gone.push(b.clone());
            }
        }
        tx.commit()?;
        Ok(gone)
    }

    fn gc_known_digests(&self) -> Result<HashSet<String>> {
        let conn = self.reader();
        let known = conn
            .prepare("SELECT digest FROM blobs")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(known)
    }

    fn gc_blob_known(&self, digest: &str) -> Result<bool> {
        Ok(self
            .reader()
            .prepare_cached("SELECT 1 FROM blobs WHERE digest = ?1")?
            .exists([digest])?)
    }

    fn gc_s3_orphans(&self, limit: usize) -> Result<Vec<(String, String)>> {
        let conn = self.reader();
        let rows = conn
            .prepare_cached(
                "SELECT s.digest, s.key FROM s3_blobs s
                 WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = s.digest)
                 ORDER BY s.digest LIMIT ?1",
            )?
            .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn blob_pieces(&self, digest: &str) -> Result<Option<(u64, Vec<u8>)>> {
        let row: Option<(i64, Vec<u8>)> = self
            .reader()
            .prepare_cached("SELECT piece_size, hashes FROM blob_pieces WHERE digest = ?1")?
            .query_row([digest], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(s, h)| (s as u64, h)))
    }

    fn put_blob_pieces(&self, digest: &str, piece_size: u64, hashes: &[u8]) -> Result<()> {
        self.writer()
            .prepare_cached(
                "INSERT OR REPLACE INTO blob_pieces (digest, piece_size, hashes)
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)",
            )?
            .execute(params![digest, piece_size as i64, hashes])?;
        Ok(())
    }

    fn gc_stored_bytes(&self) -> Result<u64> {
        let n: i64 =
            self.reader()
                .query_row("SELECT coalesce(sum(size), 0) FROM blobs", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

fn repo_names(tx: &Connection) -> Result<HashMap<i64, String>> {
    let rows = tx
        .prepare("SELECT id, name FROM repositories")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Untagged manifests stored at or before `cutoff` that no kept manifest
/// keeps: roots are tagged or younger manifests; a kept manifest keeps its
/// children, and a kept subject keeps its referrers.
fn doomed_manifests(tx: &Connection, cutoff: u64) -> Result<Vec<Node>> {
    let mut nodes: Vec<Node> = tx
        .prepare(
            "SELECT m.repo_id, m.digest, m.subject, m.size,
                    m.created_at > ?1 OR EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
             FROM manifests m",
        )?
        .query_map([cutoff as i64], |r| {
            Ok(Node {
                repo: r.get(0)?,
                digest: r.get(1)?,
                subject: r.get(2)?,
                size: r.get::<_, i64>(3)? as u64,
                root: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let children: Vec<(i64, String, String)> = tx
        .prepare("SELECT repo_id, manifest, ref FROM manifest_refs WHERE kind = 1")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    nodes = unreachable(nodes, &children);
    Ok(nodes)
}

/// The manifests of `nodes` no root reaches, where a manifest reaches the
/// children `children` (repository, parent, child) names and its
/// referrers (the manifests whose subject it is): the walk every database
/// runs on the rows it read.
pub(super) fn unreachable(mut nodes: Vec<Node>, children: &[(i64, String, String)]) -> Vec<Node> {
    let index: HashMap<(i64, &str), usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| ((n.repo, n.digest.as_str()), i))
        .collect();
    // Edges: parent → child, subject → referrer.
    let mut edges: HashMap<usize, Vec<usize>> = HashMap::new();
    for (repo, parent, child) in children {
        if let (Some(&p), Some(&c)) = (
            index.get(&(*repo, parent.as_str())),
            index.get(&(*repo, child.as_str())),
        ) {
            edges.entry(p).or_default().push(c);
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        if let Some(&s) = n.subject.as_deref().and_then(|s| index.get(&(n.repo, s))) {
            edges.entry(s).or_default().push(i);
        }
    }
    let mut kept = vec![false; nodes.len()];
    let mut stack: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].root).collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut kept[i], true) {
            continue;
        }
        stack.extend(edges.get(&i).into_iter().flatten().copied());
    }
    drop(index);
    let mut kept = kept.into_iter();
    nodes.retain(|_| !kept.next().unwrap_or(true));
    nodes
}
