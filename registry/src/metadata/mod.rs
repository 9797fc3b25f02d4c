//! Registry metadata: repositories, which blobs each repository may serve,
//! manifests (their bytes, media type, subject and artifact type), tags,
//! upload sessions, accounts made through the admin API ([`directory`]),
//! the audit log ([`audit`]), the webhook outbox ([`outbox`]), the S3
//! store's index and upload sessions ([`s3`]), web UI sessions
//! ([`sessions`]) and the last run of each maintenance job ([`runs`]).
//! This is the registry's source of truth for what exists; the blob store
//! is only consulted for bytes, and nothing here ever lists it.
//!
//! The contract is [`MetadataStore`]: one trait per area ([`Content`],
//! [`Accounts`], [`AuditLog`], …), each defined in its area's file with
//! its SQLite implementation, and the registry holds an
//! `Arc<`[`Metadata`]`>` (a trait object) so the database behind it is
//! chosen at start-up. [`Sqlite`] is the embedded default: one writer
//! connection and a few reader connections share a WAL database, so reads
//! never wait for writes. Methods are synchronous; the API runs them on
//! the blocking pool. Every multi-row change is one transaction, so a
//! crash leaves either the old or the new state.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use berth_oci::Digest;
use rusqlite::{Connection, OptionalExtension, params};

use crate::storage::UploadId;

mod audit;
mod browse;
#[cfg(test)]
mod conformance;
mod directory;
mod gc;
mod logins;
pub mod migrate;
mod outbox;
mod policy;
mod postgres;
mod runs;
mod s3;
mod sessions;

pub use audit::AuditLog;
pub use browse::Browse;
pub use browse::{RepoSummary, TagListing};
pub use directory::Accounts;
pub use gc::Collection;
pub use outbox::Outbox;
pub use policy::Policies;
pub use postgres::Postgres;

pub use logins::LoginFailures;
pub use runs::{JobRun, JobRuns};
pub use s3::S3Index;
pub use sessions::Session;
pub use sessions::UiSessions;

pub use audit::{AuditEvent, AuditQuery};
pub use directory::{AuthRows, StoredProject, StoredRobot, StoredUser};
pub use gc::{DoomedBlob, DoomedManifest, GcPlan, ManifestRefs};
pub use outbox::{Delivery, OutboxEvent};
pub use policy::TagRow;
pub use s3::{S3Part, S3Upload};

const SCHEMA_VERSION: i64 = 8;
const SCHEMA: &str = r#"
CREATE TABLE repositories (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE repository_blobs (
    repo_id INTEGER NOT NULL REFERENCES repositories(id),
    digest TEXT NOT NULL REFERENCES blobs(digest),
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX repository_blobs_digest ON repository_blobs(digest);
CREATE TABLE manifests (
    repo_id INTEGER NOT NULL REFERENCES repositories(id),
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    size INTEGER NOT NULL,
    content BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX manifests_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
CREATE TABLE tags (
    repo_id INTEGER NOT NULL REFERENCES repositories(id),
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
) WITHOUT ROWID;
CREATE INDEX tags_digest ON tags(repo_id, digest);
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    size INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Version 2: accounts made through the admin API, and the audit log.
const SCHEMA_V2: &str = r#"
CREATE TABLE auth_projects (
    name TEXT PRIMARY KEY,
    public INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE auth_users (
    name TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    admin INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE auth_members (
    project TEXT NOT NULL,
    user TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (project, user)
) WITHOUT ROWID;
CREATE TABLE auth_robots (
    name TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    permissions TEXT NOT NULL,
    expires_at INTEGER,
    disabled INTEGER NOT NULL,
    description TEXT NOT NULL,
    secret_set_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    client TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_at ON audit(at);
"#;

/// Version 4: the webhook outbox, written in the transaction of the
/// change it reports.
const SCHEMA_V4: &str = r#"
CREATE TABLE webhook_outbox (
    id INTEGER PRIMARY KEY,
    delivery TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL,
    last_status TEXT NOT NULL DEFAULT '',
    delivered_at INTEGER,
    failed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_due ON webhook_outbox(next_at) WHERE delivered_at IS NULL AND failed = 0;
"#;

/// Version 3: the S3 blob store's index (digest → object key) and its
/// upload sessions (multipart upload, parts, the staged tail).
const SCHEMA_V3: &str = r#"
CREATE TABLE s3_blobs (
    digest TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE s3_uploads (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    mpu TEXT,
    parts TEXT NOT NULL,
    next_part INTEGER NOT NULL,
    tail BLOB NOT NULL,
    completed INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
"#;

const READERS: usize = 4;

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// SQLite failed.
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value does not parse back.
    #[error("metadata database holds a malformed {what}: {value:?}")]
    Corrupt {
        /// What kind of value.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A tag an immutability rule protects would move or go.
    #[error("tag {tag:?} is immutable (rule {rule:?}); push a new tag instead")]
    Immutable {
        /// The tag.
        tag: String,
        /// The rule's pattern.
        rule: String,
    },
    /// A manifest references a blob or child manifest the repository does
    /// not hold (checked in the transaction that would store it).
    #[error("manifest references {digest}, which is not in the repository (or has another size)")]
    Missing {
        /// The missing digest.
        digest: String,
    },
    /// The database was written by a newer berth.
    #[error(
        "metadata schema version {found} is newer than this berth understands ({known}); upgrade berth"
    )]
    TooNew {
        /// The database's version.
        found: i64,
        /// The newest this berth knows.
        known: i64,
    },
    /// PostgreSQL refused a statement.
    #[error("metadata database: {0}")]
    Postgres(tokio_postgres::Error),
    /// The metadata database cannot be reached now (PostgreSQL down, the
    /// network gone); nothing was written. Worth retrying.
    #[error("metadata database unavailable: {0}")]
    Unavailable(String),
}

type Result<T> = std::result::Result<T, MetadataError>;

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Its digest.
    pub digest: Digest,
    /// The media type it is served as.
    pub media_type: String,
    /// Its bytes (empty when only the head was asked for).
    pub content: Vec<u8>,
    /// Its size in bytes.
    pub size: u64,
}

/// What a new manifest is stored with.
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    /// Its digest (already verified against `content`).
    pub digest: &'a Digest,
    /// Its media type.
    pub media_type: &'a str,
    /// Its artifact type, for the referrers API.
    pub artifact_type: Option<&'a str>,
    /// The digest of its subject, if any.
    pub subject: Option<&'a Digest>,
    /// Its annotations as a JSON object, if any.
    pub annotations: Option<String>,
    /// Its bytes.
    pub content: &'a [u8],
}

/// A manifest that refers to another, as the referrers API lists it.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The referrer's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// Its artifact type.
    pub artifact_type: Option<String>,
    /// Its annotations as a JSON object, if any.
    pub annotations: Option<String>,
}

/// An upload session as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// The repository it was started in.
    pub repository: String,
    /// Bytes acknowledged so far.
    pub size: u64,
}

/// The webhook events a delete queues, given the manifest's digest and the
/// tags deleted.
pub type DeleteEvents<'a> = dyn Fn(&str, &[String]) -> Vec<OutboxEvent> + Sync + 'a;

/// How a manifest is addressed.
#[derive(Debug, Clone, Copy)]
pub enum ManifestKey<'a> {
    /// By tag.
    Tag(&'a str),
    /// By digest.
    Digest(&'a Digest),
}

/// Everything the registry keeps besides blob bytes, as one contract with
/// an implementation per database: [`Sqlite`] (embedded, the default) and,
/// for several replicas, PostgreSQL. Each part is its own trait, defined
/// with the SQLite implementation of its area; a trait object of this
/// one calls them all without importing them.
pub trait MetadataStore:
    Coordination
    + Content
    + AuditLog
    + Browse
    + Accounts
    + Collection
    + Outbox
    + Policies
    + JobRuns
    + LoginFailures
    + S3Index
    + UiSessions
    + Send
    + Sync
    + std::fmt::Debug
{
}

impl<T> MetadataStore for T where
    T: Coordination
        + Content
        + AuditLog
        + Browse
        + Accounts
        + Collection
        + Outbox
        + Policies
        + JobRuns
        + LoginFailures
        + S3Index
        + UiSessions
        + Send
        + Sync
        + std::fmt::Debug
{
}

/// A held lock (see [`Coordination`]); dropping it lets go.
pub struct LockGuard {
    /// What lets go when dropped (none: one process's own locks suffice).
    _held: Option<Box<dyn Send + Sync>>,
}

impl LockGuard {
    /// A guard that holds nothing: one process's own locks suffice.
    pub fn local() -> Self {
        Self { _held: None }
    }

    /// A guard that lets go when `inner` is dropped.
    pub(crate) fn holding(inner: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Some(Box::new(inner)),
        }
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self._held.is_some() {
            "LockGuard(held)"
        } else {
            "LockGuard(local)"
        })
    }
}

/// What a replica's in-memory copies follow: the accounts (for the auth
/// directory) and the stored policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioned {
    /// Projects, users, members and robots.
    Accounts,
    /// Stored project policies.
    Policies,
}

impl Versioned {
    /// Its row in `berth_versions`.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Versioned::Accounts => "accounts",
            Versioned::Policies => "policies",
        }
    }
}

/// What replicas sharing the store coordinate through it, on top of each
/// process's own locks: the stripes of the blob gate (a replica deleting a
/// digest's bytes against another publishing the same digest), the jobs
/// only one replica runs at a time, and version numbers that tell a
/// replica its copy of the accounts or policies is stale. A SQLite store
/// belongs to one process: its guards hold nothing and it has no versions
/// (the process reloads its copies itself after each change).
pub trait Coordination {
    /// Whether a call waits on the network (another process's database):
    /// async code then makes it from the blocking pool rather than on its
    /// worker thread, which a local SQLite read may use.
    fn remote(&self) -> bool;

    /// Whether the database answers now (readiness).
    fn ping(&self) -> Result<()>;

    /// The version of `what`, bumped by every change to it; `None` when
    /// the store serves one process.
    fn version(&self, what: Versioned) -> Result<Option<i64>>;

    /// Hold stripe `stripe` of the blob gate, `exclusive` to delete bytes
    /// or shared to publish and link them, waiting for it.
    fn gate_stripe(&self, stripe: usize, exclusive: bool) -> Result<LockGuard>;

    /// Become the one replica running `job` (`gc`, `retention`): the
    /// guard, or `None` while another replica runs it.
    fn try_job(&self, job: &str) -> Result<Option<LockGuard>>;

    /// Hold upload session `id` for one request on every replica, so two
    /// requests on different replicas never write one session at once:
    /// the guard, or `None` while another replica's request holds it. It
    /// lets go when dropped, or at once when the replica holding it dies.
    fn claim_upload(&self, id: UploadId) -> Result<Option<LockGuard>>;
}

impl Coordination for Sqlite {
    fn remote(&self) -> bool {
        false
    }

    fn ping(&self) -> Result<()> {
        self.reader().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn version(&self, _what: Versioned) -> Result<Option<i64>> {
        Ok(None)
    }

    fn gate_stripe(&self, _stripe: usize, _exclusive: bool) -> Result<LockGuard> {
        Ok(LockGuard::local())
    }

    fn try_job(&self, _job: &str) -> Result<Option<LockGuard>> {
        Ok(Some(LockGuard::local()))
    }

    fn claim_upload(&self, _id: UploadId) -> Result<Option<LockGuard>> {
        // One process: the registry's own claim on the session suffices.
        Ok(Some(LockGuard::local()))
    }
}

/// The metadata store the registry uses, whichever database is behind it.
pub type Metadata = dyn MetadataStore;

/// Every part of the contract, for code holding a concrete store (tests).
pub mod prelude {
    pub use super::{
        Accounts, AuditLog, Browse, Collection, Content, Coordination, JobRuns, LoginFailures,
        Outbox, Policies, S3Index, UiSessions,
    };
}

/// The SQLite metadata store.
#[derive(Debug)]
pub struct Sqlite {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// A test's database file, deleted on drop.
    temporary: Option<std::path::PathBuf>,
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        if let Some(path) = &self.temporary {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn now() -> i64 {
    crate::unix_now() as i64
}

fn parse_digest(s: String) -> Result<Digest> {
    s.parse().map_err(|_| MetadataError::Corrupt {
        what: "digest",
        value: s,
    })
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding a connection cannot leave a half-done
    // transaction visible (SQLite rolls it back), so the connection is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL with NORMAL is durable across process crashes; only power loss can
    // roll back the last transactions, never corrupt the database.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// The registry's content: blobs and which repositories may serve them,
/// upload sessions, manifests, tags, the catalog and referrers.
pub trait Content {
    // ---- blobs ----
    /// The size of `digest` if repository `repo` may serve it.
    fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>>;

    /// The size of `digest` if any repository holds it.
    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>>;

    /// The size of `digest` if some repository may serve it.
    fn linked_blob_size(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Record that `digest` (of `size` bytes, already published in the blob
    /// store) may be served from `repo`, and end upload `upload` if given —
    /// in one transaction.
    fn link_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        upload: Option<UploadId>,
    ) -> Result<()>;

    /// Link blob `digest` into `repo` if the registry still holds it (a
    /// cross-repository mount: its source was checked before, and a
    /// collection may have forgotten it since). Returns its size if linked.
    fn mount_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>>;

    /// Stop serving `digest` from `repo`. Returns whether it was linked. The
    /// bytes stay until garbage collection finds nothing refers to them.
    fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool>;

    // ---- uploads ----
    /// Record a new upload session.
    fn create_upload(&self, id: UploadId, repo: &str) -> Result<()>;

    /// An upload session, if it exists.
    fn upload(&self, id: UploadId) -> Result<Option<UploadRecord>>;

    /// Record that the first `size` bytes of an upload are acknowledged.
    fn set_upload_size(&self, id: UploadId, size: u64) -> Result<()>;

    /// Forget an upload session.
    fn delete_upload(&self, id: UploadId) -> Result<()>;

    /// Upload sessions not touched since `before` (unix seconds).
    fn stale_uploads(&self, before: u64) -> Result<Vec<UploadId>>;

    /// Number of open upload sessions.
    fn upload_count(&self) -> Result<u64>;

    // ---- manifests and tags ----
    /// Store a manifest in `repo` and point `tags` at it, in one
    /// transaction. Returns the tags that moved from another manifest, with
    /// the digest each pointed at before (for the audit log).
    fn put_manifest(
        &self,
        repo: &str,
        m: &NewManifest<'_>,
        tags: &[String],
    ) -> Result<Vec<(String, Digest)>>;

    /// [`Content::put_manifest`], checking that everything in `refs` is in
    /// the repository and recording it (garbage collection keeps it), and
    /// queueing `events` for webhook delivery — all in the same
    /// transaction: an acknowledged push always has its blobs and its
    /// events, even across a crash or a concurrent collection.
    fn put_manifest_with_events(
        &self,
        repo: &str,
        m: &NewManifest<'_>,
        refs: &ManifestRefs<'_>,
        tags: &[String],
        events: &[OutboxEvent],
        immutable: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Vec<(String, Digest)>>;

    /// A manifest by tag or digest; with `with_content` false, `content` is
    /// left empty (HEAD requests).
    fn manifest(
        &self,
        repo: &str,
        key: ManifestKey<'_>,
        with_content: bool,
    ) -> Result<Option<StoredManifest>>;

    /// Delete a manifest and every tag that points at it. Returns whether
    /// it existed.
    fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool>;

    /// [`Content::delete_manifest`], refused when a tag pointing at it is
    /// immutable; the webhook `events` for (its digest, its tags) are queued
    /// in the same transaction.
    fn delete_manifest_checked(
        &self,
        repo: &str,
        digest: &Digest,
        immutable: &(dyn Fn(&str) -> Option<String> + Sync),
        events: &DeleteEvents<'_>,
    ) -> Result<bool>;

    /// Delete a tag, leaving its manifest. Returns whether it existed.
    fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool>;

    /// [`Content::delete_tag`], refused when the tag exists and is
    /// immutable.
    fn delete_tag_checked(
        &self,
        repo: &str,
        tag: &str,
        immutable: &(dyn Fn(&str) -> Option<String> + Sync),
        events: &DeleteEvents<'_>,
    ) -> Result<bool>;

    /// Up to `n` tags of `repo` sorted after `last`, or `None` if the
    /// repository is unknown.
    fn tags(&self, repo: &str, last: Option<&str>, n: usize) -> Result<Option<Vec<String>>>;

    /// Up to `n` repository names (that hold at least one manifest) sorted
    /// after `last`.
    fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>>;

    /// Manifests in `repo` whose subject is `subject`, optionally only those
    /// of one artifact type, in digest order.
    fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>>;
}

impl Content for Sqlite {
    fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(
            "SELECT b.size FROM repository_blobs rb
             JOIN repositories r ON r.id = rb.repo_id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = ?1 AND rb.digest = ?2",
        )?;
        let size: Option<i64> = st
            .query_row(params![repo, digest.to_string()], |r| r.get(0))
            .optional()?;
        Ok(size.map(|s| s as u64))
    }

    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let conn = self.reader();
        let size: Option<i64> = conn
            .prepare_cached("SELECT size FROM blobs WHERE digest = ?1")?
            .query_row([digest.to_string()], |r| r.get(0))
            .optional()?;
        Ok(size.map(|s| s as u64))
    }

    fn linked_blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let conn = self.reader();
        let size: Option<i64> = conn
            .prepare_cached(
                "SELECT b.size FROM blobs b WHERE b.digest = ?1
                 AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
            )?
            .query_row([digest.to_string()], |r| r.get(0))
            .optional()?;
        Ok(size.map(|s| s as u64))
    }

    fn link_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        upload: Option<UploadId>,
    ) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let id = Self::repo_id(&tx, repo)?;
        let d = digest.to_string();
        tx.prepare_cached(
            "INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![d, size as i64, now()])?;
        // Linking again renews the link: garbage collection spares links
        // younger than its grace window, and looks at the blob next time.
        tx.prepare_cached(
            "INSERT INTO repository_blobs (repo_id, digest, linked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(repo_id, digest) DO UPDATE SET linked_at = excluded.linked_at",
        )?
        .execute(params![id, d, now()])?;
        gc::dirty(&tx, &d)?;
        if let Some(u) = upload {
            tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?
                .execute([u.to_string()])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn mount_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let d = digest.to_string();
        let Some(size) = tx
            .prepare_cached("SELECT size FROM blobs WHERE digest = ?1")?
            .query_row([&d], |r| r.get::<_, i64>(0))
            .optional()?
        else {
            return Ok(None);
        };
        let id = Self::repo_id(&tx, repo)?;
        tx.prepare_cached(
            "INSERT INTO repository_blobs (repo_id, digest, linked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(repo_id, digest) DO UPDATE SET linked_at = excluded.linked_at",
        )?
        .execute(params![id, d, now()])?;
        gc::dirty(&tx, &d)?;
        tx.commit()?;
        Ok(Some(size as u64))
    }

    fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let d = digest.to_string();
        let n = tx
            .prepare_cached(
                "DELETE FROM repository_blobs WHERE digest = ?2
                 AND repo_id = (SELECT id FROM repositories WHERE name = ?1)",
            )?
            .execute(params![repo, d])?;
        if n > 0 {
            gc::dirty(&tx, &d)?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    fn create_upload(&self, id: UploadId, repo: &str) -> Result<()> {
        let t = now();
        self.writer()
            .prepare_cached(
                "INSERT INTO uploads (id, repository, size, started_at, updated_at) VALUES (?1, ?2, 0, ?3, ?3)",
            )?
            .execute(params![id.to_string(), repo, t])?;
        Ok(())
    }

    fn upload(&self, id: UploadId) -> Result<Option<UploadRecord>> {
        let conn = self.reader();
        let row: Option<(String, i64)> = conn
            .prepare_cached("SELECT repository, size FROM uploads WHERE id = ?1")?
            .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(repository, size)| UploadRecord {
            repository,
            size: size as u64,
        }))
    }

    fn set_upload_size(&self, id: UploadId, size: u64) -> Result<()> {
        self.writer()
            .prepare_cached("UPDATE uploads SET size = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![id.to_string(), size as i64, now()])?;
        Ok(())
    }

    fn delete_upload(&self, id: UploadId) -> Result<()> {
        self.writer()
            .prepare_cached("DELETE FROM uploads WHERE id = ?1")?
            .execute([id.to_string()])?;
        Ok(())
    }

    fn stale_uploads(&self, before: u64) -> Result<Vec<UploadId>> {
        let conn = self.reader();
        let ids: Vec<String> = conn
            .prepare_cached("SELECT id FROM uploads WHERE updated_at <= ?1")?
            .query_map([before as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
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
        let conn = self.reader();
        let n: i64 = conn
            .prepare_cached("SELECT count(*) FROM uploads")?
            .query_row([], |r| r.get(0))?;
        Ok(n as u64)
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
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let id = Self::repo_id(&tx, repo)?;
        let d = m.digest.to_string();
        let t = now();
        tx.prepare_cached(
            "INSERT INTO manifests (repo_id, digest, media_type, artifact_type, subject, annotations, size, content, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(repo_id, digest) DO NOTHING",
        )?
        .execute(params![
            id,
            d,
            m.media_type,
            m.artifact_type,
            m.subject.map(ToString::to_string),
            m.annotations,
            m.content.len() as i64,
            m.content,
            t
        ])?;
        gc::record(&tx, id, &d, refs)?;
        let mut moved = Vec::new();
        for tag in tags {
            let before: Option<String> = tx
                .prepare_cached("SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2")?
                .query_row(params![id, tag], |r| r.get(0))
                .optional()?;
            tx.prepare_cached(
                "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )?
            .execute(params![id, tag, d, t])?;
            if let Some(before) = before.filter(|b| *b != d) {
                // Checked in this transaction: a racing push sees the tag
                // this one set. Returning rolls everything back.
                if let Some(rule) = immutable(tag) {
                    return Err(MetadataError::Immutable {
                        tag: tag.clone(),
                        rule,
                    });
                }
                moved.push((tag.clone(), parse_digest(before)?));
            }
        }
        for e in events {
            outbox::insert(&tx, e, t)?;
        }
        tx.commit()?;
        Ok(moved)
    }

    fn manifest(
        &self,
        repo: &str,
        key: ManifestKey<'_>,
        with_content: bool,
    ) -> Result<Option<StoredManifest>> {
        let conn = self.reader();
        // Static statements (cached once per connection); ?3 says whether
        // the bytes are wanted.
        let (sql, arg) = match key {
            ManifestKey::Tag(t) => (
                "SELECT m.digest, m.media_type, m.size, CASE WHEN ?3 THEN m.content ELSE x'' END
                 FROM tags t
                 JOIN repositories r ON r.id = t.repo_id
                 JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                 WHERE r.name = ?1 AND t.name = ?2",
                t.to_owned(),
            ),
            ManifestKey::Digest(d) => (
                "SELECT m.digest, m.media_type, m.size, CASE WHEN ?3 THEN m.content ELSE x'' END
                 FROM manifests m
                 JOIN repositories r ON r.id = m.repo_id
                 WHERE r.name = ?1 AND m.digest = ?2",
                d.to_string(),
            ),
        };
        let row: Option<(String, String, i64, Vec<u8>)> = conn
            .prepare_cached(sql)?
            .query_row(params![repo, arg, with_content], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        row.map(|(digest, media_type, size, content)| {
            Ok(StoredManifest {
                digest: parse_digest(digest)?,
                media_type,
                content,
                size: size as u64,
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
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let Some(id) = Self::existing_repo_id(&tx, repo)? else {
            return Ok(false);
        };
        let d = digest.to_string();
        let tags: Vec<String> = tx
            .prepare_cached("SELECT name FROM tags WHERE repo_id = ?1 AND digest = ?2")?
            .query_map(params![id, d], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for tag in &tags {
            if let Some(rule) = immutable(tag) {
                return Err(MetadataError::Immutable {
                    tag: tag.clone(),
                    rule,
                });
            }
        }
        tx.prepare_cached("DELETE FROM tags WHERE repo_id = ?1 AND digest = ?2")?
            .execute(params![id, d])?;
        gc::forget(&tx, id, &d)?;
        let n = tx
            .prepare_cached("DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2")?
            .execute(params![id, d])?;
        if n > 0 {
            for e in events(&d, &tags) {
                outbox::insert(&tx, &e, now())?;
            }
        }
        tx.commit()?;
        Ok(n > 0)
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
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let digest: Option<String> = tx
            .prepare_cached(
                "DELETE FROM tags WHERE name = ?2
                 AND repo_id = (SELECT id FROM repositories WHERE name = ?1) RETURNING digest",
            )?
            .query_row(params![repo, tag], |r| r.get(0))
            .optional()?;
        // A tag that existed and is protected: the delete is rolled back.
        if let Some(d) = &digest {
            if let Some(rule) = immutable(tag) {
                return Err(MetadataError::Immutable {
                    tag: tag.to_owned(),
                    rule,
                });
            }
            for e in events(d, &[tag.to_owned()]) {
                outbox::insert(&tx, &e, now())?;
            }
        }
        tx.commit()?;
        Ok(digest.is_some())
    }

    fn tags(&self, repo: &str, last: Option<&str>, n: usize) -> Result<Option<Vec<String>>> {
        let conn = self.reader();
        let Some(id) = Self::existing_repo_id(&conn, repo)? else {
            return Ok(None);
        };
        let mut st = conn.prepare_cached(
            "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
        )?;
        let tags = st
            .query_map(params![id, last.unwrap_or(""), n as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(Some(tags))
    }

    fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(
            "SELECT name FROM repositories r WHERE name > ?1
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
             ORDER BY name LIMIT ?2",
        )?;
        let names = st
            .query_map(params![last.unwrap_or(""), n as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(names)
    }

    fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m
             JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = ?1 AND m.subject = ?2 AND (?3 IS NULL OR m.artifact_type = ?3)
             ORDER BY m.digest",
        )?;
        let rows = st
            .query_map(params![repo, subject.to_string(), artifact_type], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(digest, media_type, size, artifact_type, annotations)| {
                Ok(Referrer {
                    digest: parse_digest(digest)?,
                    media_type,
                    size: size as u64,
                    artifact_type,
                    annotations,
                })
            })
            .collect()
    }
}

impl Sqlite {
    /// Open (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let writer = Connection::open(path)?;
        configure(&writer)?;
        let version: i64 = writer.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(MetadataError::TooNew {
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        // Each step in one transaction: a crash leaves the old version.
        let steps = [
            SCHEMA,
            SCHEMA_V2,
            SCHEMA_V3,
            SCHEMA_V4,
            gc::SCHEMA_V5,
            sessions::SCHEMA_V6,
            runs::SCHEMA_V7,
            logins::SCHEMA_V8,
        ];
        if version < SCHEMA_VERSION {
            let pending = steps[version as usize..].concat();
            // Dropped before COMMIT (an error): rolled back.
            let tx = rusqlite::Transaction::new_unchecked(
                &writer,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            tx.execute_batch(&pending)?;
            // Version 5 records what each stored manifest references.
            if version < 5 {
                gc::backfill(&tx)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open(path)?;
                configure(&c)?;
                Ok(Mutex::new(c))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            temporary: None,
        })
    }

    /// A throwaway database for tests: a file of its own in the temporary
    /// directory, opened exactly as [`Sqlite::open`] opens one (WAL, one
    /// writer, several readers, the same isolation), and deleted when
    /// dropped. An in-memory shared-cache database would lock whole tables
    /// between connections, which production never does.
    pub fn in_memory() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("berth-meta-{}.db", uuid::Uuid::new_v4()));
        let mut m = Self::open(&path)?;
        m.temporary = Some(path);
        Ok(m)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(g) = self.readers[(start + i) % n].try_lock() {
                return g;
            }
        }
        lock(&self.readers[start % n])
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        lock(&self.writer)
    }

    /// The id of repository `name`, if it exists.
    fn existing_repo_id(conn: &Connection, name: &str) -> Result<Option<i64>> {
        Ok(conn
            .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
            .query_row([name], |r| r.get::<_, i64>(0))
            .optional()?)
    }

    fn repo_id(tx: &Connection, name: &str) -> Result<i64> {
        tx.prepare_cached(
            "INSERT INTO repositories (name, created_at) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET name = name RETURNING id",
        )?
        .query_row(params![name, now()], |r| r.get(0))
        .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_database_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let d = Digest::sha256(b"v1");
        {
            // What berth wrote before accounts and the audit log existed.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(&format!("{SCHEMA} PRAGMA user_version = 1;"))
                .unwrap();
            c.execute(
                "INSERT INTO repositories (name, created_at) VALUES ('old/repo', 1)",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO blobs (digest, size, created_at) VALUES (?1, 2, 1)",
                [d.to_string()],
            )
            .unwrap();
            c.execute(
                "INSERT INTO repository_blobs (repo_id, digest) VALUES (1, ?1)",
                [d.to_string()],
            )
            .unwrap();
            // A manifest using it, and an unused blob.
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":2}},"layers":[]}}"#
            );
            c.execute(
                "INSERT INTO manifests (repo_id, digest, media_type, size, content, created_at)
                 VALUES (1, ?1, 'application/vnd.oci.image.manifest.v1+json', ?2, ?3, 1)",
                params![
                    Digest::sha256(manifest.as_bytes()).to_string(),
                    manifest.len() as i64,
                    manifest.as_bytes()
                ],
            )
            .unwrap();
            c.execute(
                "INSERT INTO blobs (digest, size, created_at) VALUES (?1, 6, 1)",
                [Digest::sha256(b"unused").to_string()],
            )
            .unwrap();
        }
        let m = Sqlite::open(&path).unwrap();
        assert_eq!(m.repo_blob("old/repo", &d).unwrap(), Some(2));
        // Version 5 recorded what the old manifest references: garbage
        // collection keeps its config and would take only the unused blob.
        let plan = m.gc_plan(u64::MAX / 2, None).unwrap();
        assert_eq!(plan.blobs.len(), 1);
        assert_eq!(plan.blobs[0].digest, Digest::sha256(b"unused"));
        assert!(m.auth_rows().unwrap().robots.is_empty());
        m.audit_append(&[]).unwrap();
        let version: i64 = m
            .reader()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(m);
        // And opening it again changes nothing.
        assert_eq!(
            Sqlite::open(&path)
                .unwrap()
                .repo_blob("old/repo", &d)
                .unwrap(),
            Some(2)
        );
    }

    #[test]
    fn reopening_a_file_database_keeps_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let d = Digest::sha256(b"z");
        Sqlite::open(&path)
            .unwrap()
            .link_blob("a", &d, 1, None)
            .unwrap();
        assert_eq!(
            Sqlite::open(&path).unwrap().repo_blob("a", &d).unwrap(),
            Some(1)
        );
    }
}
