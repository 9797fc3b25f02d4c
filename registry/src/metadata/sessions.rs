//! Web UI sign-in sessions (schema version 6, which also indexes the audit
//! log by action and target, for "who pushed this"): a row per session, keyed by
//! the sha256 of its cookie (the cookie itself is never stored), with the
//! user it signs in, its CSRF token and when it expires. Kept in the
//! metadata database so every replica knows every session and signing out
//! ends it everywhere at once.

use rusqlite::{OptionalExtension, params};

use super::{Result, Sqlite};

/// Version 6: UI sessions.
pub(super) const SCHEMA_V6: &str = r#"
CREATE TABLE ui_sessions (
    id_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX ui_sessions_expiry ON ui_sessions(expires_at);
CREATE INDEX audit_target ON audit(action, target);
"#;

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user it signs in.
    pub user: String,
    /// The token every form of the session carries.
    pub csrf: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// Web UI sign-in sessions, keyed by the sha256 of their cookie.
pub trait UiSessions {
    /// Store a new session under `id_hash`.
    fn create_session(&self, id_hash: &str, s: &Session, now: u64) -> Result<()>;

    /// The session stored under `id_hash`, if it has not expired at `now`.
    fn session(&self, id_hash: &str, now: u64) -> Result<Option<Session>>;

    /// End the session stored under `id_hash`, and every expired one.
    fn end_session(&self, id_hash: &str, now: u64) -> Result<()>;
}

impl UiSessions for Sqlite {
    fn create_session(&self, id_hash: &str, s: &Session, now: u64) -> Result<()> {
        self.writer().execute(
            "INSERT INTO ui_sessions (id_hash, user, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id_hash, s.user, s.csrf, now as i64, s.expires_at as i64],
        )?;
        Ok(())
    }

    fn session(&self, id_hash: &str, now: u64) -> Result<Option<Session>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT user, csrf, expires_at FROM ui_sessions WHERE id_hash = ?1 AND expires_at > ?2",
                params![id_hash, now as i64],
                |r| {
                    Ok(Session {
                        user: r.get(0)?,
                        csrf: r.get(1)?,
                        expires_at: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()?)
    }

    fn end_session(&self, id_hash: &str, now: u64) -> Result<()> {
        let w = self.writer();
        w.execute(
            "DELETE FROM ui_sessions WHERE id_hash = ?1",
            params![id_hash],
        )?;
        w.execute(
            "DELETE FROM ui_sessions WHERE expires_at <= ?1",
            params![now as i64],
        )?;
        Ok(())
    }
}
