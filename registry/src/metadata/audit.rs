//! The audit log as rows: append in batches, list newest first with
//! filters, prune by age. What goes in is decided by [`crate::audit`].

use rusqlite::params_from_iter;

use super::{Result, Sqlite};

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    /// Its row id (0 before it is stored).
    pub id: i64,
    /// Unix seconds.
    pub at: u64,
    /// Who: a user or robot name, `anonymous`, or the name a failed login
    /// tried.
    pub actor: String,
    /// The client's address.
    pub client: String,
    /// `manifest.push`, `tag.move`, `login.failure`, `robot.create`, …
    pub action: String,
    /// What it was done to: `team/app:v1`, `team/app@sha256:…`, a robot's
    /// or project's name.
    pub target: String,
    /// `ok` or `denied`.
    pub outcome: String,
    /// More, free-form (never a secret).
    pub detail: String,
}

/// Which events to list.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action, or actions starting with it when it ends in `.`
    /// (`robot.`).
    pub action: Option<String>,
    /// Only targets in this project (`team`: `team`, `team/…`,
    /// `robot$team+…`).
    pub project: Option<String>,
    /// Only `ok` or `denied`.
    pub outcome: Option<String>,
    /// Only at or after, unix seconds.
    pub since: Option<u64>,
    /// Only events with a smaller id (paging backwards).
    pub before_id: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

pub(super) fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A value a query binds.
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// The statement listing the events `q` selects, newest first (argument
/// `n`, from 1, written as `placeholder(n)`), and its arguments: one
/// query for every database.
pub(super) fn audit_query(q: &AuditQuery, placeholder: fn(usize) -> String) -> (String, Vec<Arg>) {
    let mut sql = String::from(
        "SELECT id, at, actor, client, action, target, outcome, detail FROM audit WHERE 1=1",
    );
    let mut args: Vec<Arg> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: Arg| {
        args.push(v);
        sql.push_str(&clause.replace('?', &placeholder(args.len())));
    };
    if let Some(a) = &q.actor {
        arg(&mut sql, " AND actor = ?", Arg::Text(a.clone()));
    }
    match q.action.as_deref() {
        Some(a) if a.ends_with('.') => arg(
            &mut sql,
            " AND action LIKE ? ESCAPE '\\'",
            Arg::Text(format!("{}%", like_escape(a))),
        ),
        Some(a) => arg(&mut sql, " AND action = ?", Arg::Text(a.to_owned())),
        None => {}
    }
    if let Some(p) = &q.project {
        let e = like_escape(p);
        arg(&mut sql, " AND (target = ?", Arg::Text(p.clone()));
        arg(
            &mut sql,
            " OR target LIKE ? ESCAPE '\\'",
            Arg::Text(format!("{e}/%")),
        );
        arg(
            &mut sql,
            " OR target LIKE ? ESCAPE '\\')",
            Arg::Text(format!("robot${e}+%")),
        );
    }
    if let Some(o) = &q.outcome {
        arg(&mut sql, " AND outcome = ?", Arg::Text(o.clone()));
    }
    if let Some(t) = q.since {
        arg(&mut sql, " AND at >= ?", Arg::Int(t as i64));
    }
    if let Some(id) = q.before_id {
        arg(&mut sql, " AND id < ?", Arg::Int(id));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
    (sql, args)
}

/// The audit log: who did what to which target, kept for the retention
/// window and listed with filters.
pub trait AuditLog {
    /// Append events in one transaction.
    fn audit_append(&self, events: &[AuditEvent]) -> Result<()>;

    /// Events matching `q`, newest first.
    fn audit_list(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>>;

    /// Delete events older than `before` (unix seconds): how many.
    fn audit_prune(&self, before: u64) -> Result<usize>;
}

impl AuditLog for Sqlite {
    fn audit_append(&self, events: &[AuditEvent]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO audit (at, actor, client, action, target, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for e in events {
                st.execute(rusqlite::params![
                    e.at as i64,
                    e.actor,
                    e.client,
                    e.action,
                    e.target,
                    e.outcome,
                    e.detail
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn audit_list(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let (sql, args) = audit_query(q, |n| format!("?{n}"));
        let args = args.into_iter().map(|a| match a {
            Arg::Text(t) => rusqlite::types::Value::Text(t),
            Arg::Int(i) => rusqlite::types::Value::Integer(i),
        });
        let conn = self.reader();
        let mut st = conn.prepare(&sql)?;
        let rows = st
            .query_map(params_from_iter(args), |r| {
                Ok(AuditEvent {
                    id: r.get(0)?,
                    at: r.get::<_, i64>(1)? as u64,
                    actor: r.get(2)?,
                    client: r.get(3)?,
                    action: r.get(4)?,
                    target: r.get(5)?,
                    outcome: r.get(6)?,
                    detail: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn audit_prune(&self, before: u64) -> Result<usize> {
        Ok(self
            .writer()
            .execute("DELETE FROM audit WHERE at < ?1", [before as i64])?)
    }
}
