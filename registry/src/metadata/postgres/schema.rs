//! The PostgreSQL schema and its migrations: the same tables as SQLite's
//! schema version 7, in PostgreSQL's types (`BIGINT` for every integer,
//! `BOOLEAN` for flags, `BYTEA` for bytes, identity columns for ids), with
//! `auth_members.username` where SQLite says `user` (reserved here).
//! Every text column sorts by bytes (`COLLATE "C"`), as SQLite's do:
//! tag lists page in that order, and a project's repositories are the
//! names between `project/` and `project0`, whatever the database's
//! locale.
//! `berth_schema` holds the version; steps are applied in one transaction
//! each, under an advisory lock so that replicas starting together
//! migrate once.

use super::client::{Client, Statements};

use crate::metadata::{MetadataError, Result};

/// The schema version this berth writes.
pub(super) const VERSION: i64 = 3;

/// Version 1: everything SQLite's versions 1 to 7 hold.
const V1: &str = r#"
CREATE TABLE repositories (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE blobs (
    digest TEXT COLLATE "C" PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE repository_blobs (
    repo_id BIGINT NOT NULL REFERENCES repositories(id),
    digest TEXT COLLATE "C" NOT NULL REFERENCES blobs(digest),
    linked_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs(digest);
CREATE TABLE manifests (
    repo_id BIGINT NOT NULL REFERENCES repositories(id),
    digest TEXT COLLATE "C" NOT NULL,
    media_type TEXT COLLATE "C" NOT NULL,
    artifact_type TEXT COLLATE "C",
    subject TEXT COLLATE "C",
    annotations TEXT COLLATE "C",
    size BIGINT NOT NULL,
    content BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX manifests_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
CREATE TABLE tags (
    repo_id BIGINT NOT NULL REFERENCES repositories(id),
    name TEXT COLLATE "C" NOT NULL,
    digest TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name)
);
CREATE INDEX tags_digest ON tags(repo_id, digest);
CREATE TABLE uploads (
    id TEXT COLLATE "C" PRIMARY KEY,
    repository TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE auth_projects (
    name TEXT COLLATE "C" PRIMARY KEY,
    public BOOLEAN NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE auth_users (
    name TEXT COLLATE "C" PRIMARY KEY,
    secret TEXT COLLATE "C" NOT NULL,
    admin BOOLEAN NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE auth_members (
    project TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    role TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (project, username)
);
CREATE TABLE auth_robots (
    name TEXT COLLATE "C" PRIMARY KEY,
    secret TEXT COLLATE "C" NOT NULL,
    permissions TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT,
    disabled BOOLEAN NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    secret_set_at BIGINT NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT COLLATE "C" NOT NULL,
    client TEXT COLLATE "C" NOT NULL,
    action TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    outcome TEXT COLLATE "C" NOT NULL,
    detail TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_target ON audit(action, target);
CREATE TABLE s3_blobs (
    digest TEXT COLLATE "C" PRIMARY KEY,
    key TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE s3_uploads (
    id TEXT COLLATE "C" PRIMARY KEY,
    key TEXT COLLATE "C" NOT NULL,
    mpu TEXT COLLATE "C",
    parts TEXT COLLATE "C" NOT NULL,
    next_part BIGINT NOT NULL,
    tail BYTEA NOT NULL,
    completed BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE webhook_outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery TEXT COLLATE "C" NOT NULL UNIQUE,
    target TEXT COLLATE "C" NOT NULL,
    event TEXT COLLATE "C" NOT NULL,
    payload TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    last_status TEXT COLLATE "C" NOT NULL DEFAULT '',
    delivered_at BIGINT,
    failed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX webhook_due ON webhook_outbox(next_at) WHERE delivered_at IS NULL AND NOT failed;
CREATE TABLE manifest_refs (
    repo_id BIGINT NOT NULL REFERENCES repositories(id),
    manifest TEXT COLLATE "C" NOT NULL,
    ref TEXT COLLATE "C" NOT NULL,
    kind BIGINT NOT NULL,
    PRIMARY KEY (repo_id, manifest, ref)
);
CREATE INDEX manifest_refs_ref ON manifest_refs(ref, repo_id);
CREATE TABLE gc_dirty (
    digest TEXT COLLATE "C" PRIMARY KEY,
    seq BIGINT NOT NULL
);
CREATE INDEX gc_dirty_seq ON gc_dirty(seq);
CREATE SEQUENCE gc_dirty_seq_counter;
CREATE TABLE blob_pieces (
    digest TEXT COLLATE "C" PRIMARY KEY,
    piece_size BIGINT NOT NULL,
    hashes BYTEA NOT NULL
);
CREATE TABLE project_policies (
    project TEXT COLLATE "C" PRIMARY KEY,
    body TEXT COLLATE "C" NOT NULL,
    updated_by TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE ui_sessions (
    id_hash TEXT COLLATE "C" PRIMARY KEY,
    username TEXT COLLATE "C" NOT NULL,
    csrf TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions(expires_at);
CREATE TABLE job_runs (
    job TEXT COLLATE "C" NOT NULL,
    scope TEXT COLLATE "C" NOT NULL,
    dry_run BOOLEAN NOT NULL,
    finished_at BIGINT NOT NULL,
    by_whom TEXT COLLATE "C" NOT NULL,
    ok BOOLEAN NOT NULL,
    report TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (job, scope, dry_run)
);
"#;

/// Version 2: version numbers of what replicas keep copies of.
const V2: &str = r#"
CREATE TABLE berth_versions (
    what TEXT COLLATE "C" PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO berth_versions (what, version) VALUES ('accounts', 0), ('policies', 0);
"#;

/// Version 3: failed logins per client (SQLite's version 8).
const V3: &str = r#"
CREATE TABLE login_failures (
    client TEXT COLLATE "C" PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_at BIGINT NOT NULL
);
CREATE INDEX login_failures_by_age ON login_failures (last_at);
"#;

/// Every step, in order; step `i` brings the schema to version `i + 1`.
const STEPS: [&str; VERSION as usize] = [V1, V2, V3];

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
            let tx = c.begin("")?;
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
