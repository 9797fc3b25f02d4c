//! Login failures per client (schema version 8), the login throttle's
//! memory: how many logins from one address failed since its last
//! success, and when the last one did. Kept in the metadata database so
//! replicas behind a balancer count one client's failures together
//! (guesses spread over N replicas are not N times as many) and a restart
//! forgets nothing. Records older than the window are removed as new
//! failures come in, so the table holds at most one window's clients.

use rusqlite::{OptionalExtension, params};

use super::{Result, Sqlite};

/// Version 8: failed logins per client.
pub(super) const SCHEMA_V8: &str = r#"
CREATE TABLE login_failures (
    client TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX login_failures_by_age ON login_failures (last_at);
"#;

/// Failed logins per client address.
pub trait LoginFailures {
    /// A login from `client` failed at `now` (unix seconds): its failures
    /// within `window` seconds of each other, this one included (a gap
    /// longer than the window starts the count again). Records of every
    /// client idle longer than the window go.
    fn login_failed(&self, client: &str, now: u64, window: u64) -> Result<u32>;

    /// `client`'s failures counted so far, or 0 when its last one is older
    /// than `window` seconds.
    fn login_failures(&self, client: &str, now: u64, window: u64) -> Result<u32>;

    /// A login from `client` succeeded: its count starts again.
    fn login_succeeded(&self, client: &str) -> Result<()>;
}

impl LoginFailures for Sqlite {
    fn login_failed(&self, client: &str, now: u64, window: u64) -> Result<u32> {
        let stale = now.saturating_sub(window) as i64;
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let n: i64 = tx.query_row(
            "INSERT INTO login_failures (client, failures, last_at) VALUES (?1, 1, ?2)
             ON CONFLICT (client) DO UPDATE SET
               failures = CASE WHEN last_at < ?3 THEN 1 ELSE failures + 1 END,
               last_at = ?2
             RETURNING failures",
            params![client, now as i64, stale],
            |r| r.get(0),
        )?;
        tx.execute(
            "DELETE FROM login_failures WHERE last_at < ?1",
            params![stale],
        )?;
        tx.commit()?;
        Ok(n.clamp(0, i64::from(u32::MAX)) as u32)
    }

    fn login_failures(&self, client: &str, now: u64, window: u64) -> Result<u32> {
        let stale = now.saturating_sub(window) as i64;
        let n: Option<i64> = self
            .reader()
            .query_row(
                "SELECT failures FROM login_failures WHERE client = ?1 AND last_at >= ?2",
                params![client, stale],
                |r| r.get(0),
            )
            .optional()?;
        Ok(n.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }

    fn login_succeeded(&self, client: &str) -> Result<()> {
        self.writer().execute(
            "DELETE FROM login_failures WHERE client = ?1",
            params![client],
        )?;
        Ok(())
    }
}
