//! The PostgreSQL schema and its migrations: the same tables as SQLite's
//! schema version 7, in PostgreSQL's types (`BIGINT` for every integer,
//! `BOOLEAN` for flags, `BYTEA` for bytes, identity columns for ids), with
//! `auth_members.username` where SQLite says `user` (reserved here).
//! `berth_schema` holds the version; steps are applied in one transaction
//! each, under an advisory lock so that replicas starting together
//! migrate once.

use ::postgres::Client;

use crate::metadata::{MetadataError, Result};

/// The schema version this berth writes.
pub(super) const VERSION: i64 = 1;

/// Version 1: everything SQLite's versions 1 to 7 hold.
const V1: &str = r#"
CREATE TABLE repositories (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE repository_blobs (
    repo_id BIGINT NOT NULL REFERENCES repositories(id),
    digest TEXT NOT NULL REFERENCES blobs(digest),
    linked_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs(digest);
CREATE TABLE manifests (
    repo_id BIGINT NOT NULL REFERENCES repositories(id),
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    size BIGINT NOT NULL,
    content BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX manifests_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
CREATE TABLE tags (
    repo_id BIGINT NOT NULL REFERENCES repositories(id),
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name)
);
CREATE INDEX tags_digest ON tags(repo_id, digest);
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    size BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE auth_projects (
    name TEXT PRIMARY KEY,
    public BOOLEAN NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE auth_users (
    name TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    admin BOOLEAN NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE auth_members (
    project TEXT NOT NULL,
    username TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (project, username)
);
CREATE TABLE auth_robots (
    name TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    permissions TEXT NOT NULL,
    expires_at BIGINT,
    disabled BOOLEAN NOT NULL,
    description TEXT NOT NULL,
    secret_set_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    client TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_target ON audit(action, target);
CREATE TABLE s3_blobs (
    digest TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE s3_uploads (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    mpu TEXT,
    parts TEXT NOT NULL,
    next_part BIGINT NOT NULL,
    tail BYTEA NOT NULL,
    completed BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE webhook_outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    last_status TEXT NOT NULL DEFAULT '',
    delivered_at BIGINT,
    failed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX webhook_due ON webhook_outbox(next_at) WHERE delivered_at IS NULL AND NOT failed;
CREATE TABLE manifest_refs (
    repo_id BIGINT NOT NULL REFERENCES repositories(id),
    manifest TEXT NOT NULL,
    ref TEXT NOT NULL,
    kind BIGINT NOT NULL,
    PRIMARY KEY (repo_id, manifest, ref)
);
CREATE INDEX manifest_refs_ref ON manifest_refs(ref, repo_id);
CREATE TABLE gc_dirty (
    digest TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
CREATE INDEX gc_dirty_seq ON gc_dirty(seq);
CREATE SEQUENCE gc_dirty_seq_counter;
CREATE TABLE blob_pieces (
    digest TEXT PRIMARY KEY,
    piece_size BIGINT NOT NULL,
    hashes BYTEA NOT NULL
);
CREATE TABLE project_policies (
    project TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE ui_sessions (
    id_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions(expires_at);
CREATE TABLE job_runs (
    job TEXT NOT NULL,
    scope TEXT NOT NULL,
    dry_run BOOLEAN NOT NULL,
    finished_at BIGINT NOT NULL,
    by_whom TEXT NOT NULL,
    ok BOOLEAN NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (job, scope, dry_run)
);
"#;

/// Every step, in order; step `i` brings the schema to version `i + 1`.
const STEPS: [&str; VERSION as usize] = [V1];

/// Bring the database to [`VERSION`], holding advisory lock `lock` while
/// reading and changing the version.
pub(super) fn migrate(c: &mut Client, lock: i64) -> Result<()> {
    c.execute("SELECT pg_advisory_lock($1)", &[&lock])?;
    let result = (|| {
        c.batch_execute("CREATE TABLE IF NOT EXISTS berth_schema (version BIGINT NOT NULL)")?;
        let version: i64 = match c.query_opt("SELECT version FROM berth_schema", &[])? {
            Some(row) => row.get(0),
            None => {
                c.execute("INSERT INTO berth_schema (version) VALUES (0)", &[])?;
                0
            }
        };
        if version > VERSION {
            return Err(MetadataError::TooNew {
                found: version,
                known: VERSION,
            });
        }
        for (i, step) in STEPS.iter().enumerate().skip(version as usize) {
            let mut tx = c.transaction()?;
            tx.batch_execute(step)?;
            tx.execute("UPDATE berth_schema SET version = $1", &[&(i as i64 + 1)])?;
            tx.commit()?;
        }
        Ok(())
    })();
    let unlocked = c.execute("SELECT pg_advisory_unlock($1)", &[&lock]);
    result?;
    unlocked?;
    Ok(())
}
