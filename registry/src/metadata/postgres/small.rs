//! The small parts of the contract on PostgreSQL: the audit log
//! ([`AuditLog`]; its listing query is the one SQLite runs, built by
//! [`audit_query`]), web UI sessions ([`UiSessions`]) and the last run of
//! each maintenance job ([`JobRuns`]) and failed logins per client
//! ([`LoginFailures`]).

use tokio_postgres::types::ToSql;

use super::Postgres;
use super::client::Statements;
use crate::metadata::audit::{Arg, audit_query};
use crate::metadata::{
    AuditEvent, AuditLog, AuditQuery, JobRun, JobRuns, LoginFailures, Result, Session, UiSessions,
};

impl AuditLog for Postgres {
    fn audit_append(&self, events: &[AuditEvent]) -> Result<()> {
        self.write(|tx| {
            for e in events {
                tx.execute(
                    "INSERT INTO audit (at, actor, client, action, target, outcome, detail)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &(e.at as i64),
                        &e.actor,
                        &e.client,
                        &e.action,
                        &e.target,
                        &e.outcome,
                        &e.detail,
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn audit_list(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let (sql, args) = audit_query(q, |n| format!("${n}"));
        let args: Vec<Box<dyn ToSql + Sync>> = args
            .into_iter()
            .map(|a| -> Box<dyn ToSql + Sync> {
                match a {
                    Arg::Text(t) => Box::new(t),
                    Arg::Int(i) => Box::new(i),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        self.read(|c| {
            Ok(c.query(sql.as_str(), &refs)?
                .iter()
                .map(|r| AuditEvent {
                    id: r.get(0),
                    at: r.get::<_, i64>(1) as u64,
                    actor: r.get(2),
                    client: r.get(3),
                    action: r.get(4),
                    target: r.get(5),
                    outcome: r.get(6),
                    detail: r.get(7),
                })
                .collect())
        })
    }

    fn audit_prune(&self, before: u64) -> Result<usize> {
        self.write(|tx| {
            Ok(tx.execute("DELETE FROM audit WHERE at < $1", &[&(before as i64)])? as usize)
        })
    }
}

impl UiSessions for Postgres {
    fn create_session(&self, id_hash: &str, s: &Session, now: u64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO ui_sessions (id_hash, username, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                &[&id_hash, &s.user, &s.csrf, &(now as i64), &(s.expires_at as i64)],
            )?;
            Ok(())
        })
    }

    fn session(&self, id_hash: &str, now: u64) -> Result<Option<Session>> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT username, csrf, expires_at FROM ui_sessions WHERE id_hash = $1 AND expires_at > $2",
                &[&id_hash, &(now as i64)],
            )?
            .map(|r| Session {
                user: r.get(0),
                csrf: r.get(1),
                expires_at: r.get::<_, i64>(2) as u64,
            }))
        })
    }

    fn end_session(&self, id_hash: &str, now: u64) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM ui_sessions WHERE id_hash = $1", &[&id_hash])?;
            tx.execute(
                "DELETE FROM ui_sessions WHERE expires_at <= $1",
                &[&(now as i64)],
            )?;
            Ok(())
        })
    }
}

impl JobRuns for Postgres {
    fn record_run(&self, run: &JobRun) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO job_runs (job, scope, dry_run, finished_at, by_whom, ok, report)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (job, scope, dry_run) DO UPDATE SET
                   finished_at = EXCLUDED.finished_at, by_whom = EXCLUDED.by_whom,
                   ok = EXCLUDED.ok, report = EXCLUDED.report",
                &[
                    &run.job,
                    &run.scope,
                    &run.dry_run,
                    &(run.finished_at as i64),
                    &run.by,
                    &run.ok,
                    &run.report,
                ],
            )?;
            Ok(())
        })
    }

    fn last_run(&self, job: &str, scope: &str, dry_run: bool) -> Result<Option<JobRun>> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT finished_at, by_whom, ok, report FROM job_runs WHERE job = $1 AND scope = $2 AND dry_run = $3",
                &[&job, &scope, &dry_run],
            )?
            .map(|r| JobRun {
                job: job.to_owned(),
                scope: scope.to_owned(),
                dry_run,
                finished_at: r.get::<_, i64>(0) as u64,
                by: r.get(1),
                ok: r.get(2),
                report: r.get(3),
            }))
        })
    }
}

impl LoginFailures for Postgres {
    fn login_failed(&self, client: &str, now: u64, window: u64) -> Result<u32> {
        let stale = now.saturating_sub(window) as i64;
        let n: i64 = self.write(|tx| {
            let n = tx
                .query_one(
                    "INSERT INTO login_failures (client, failures, last_at) VALUES ($1, 1, $2)
                     ON CONFLICT (client) DO UPDATE SET
                       failures = CASE WHEN login_failures.last_at < $3
                                  THEN 1 ELSE login_failures.failures + 1 END,
                       last_at = $2
                     RETURNING failures",
                    &[&client, &(now as i64), &stale],
                )?
                .get(0);
            tx.execute("DELETE FROM login_failures WHERE last_at < $1", &[&stale])?;
            Ok(n)
        })?;
        Ok(n.clamp(0, i64::from(u32::MAX)) as u32)
    }

    fn login_failures(&self, client: &str, now: u64, window: u64) -> Result<u32> {
        let stale = now.saturating_sub(window) as i64;
        let n: Option<i64> = self.read(|c| {
            Ok(c.query_opt(
                "SELECT failures FROM login_failures WHERE client = $1 AND last_at >= $2",
                &[&client, &stale],
            )?
            .map(|r| r.get(0)))
        })?;
        Ok(n.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }

    fn login_succeeded(&self, client: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM login_failures WHERE client = $1", &[&client])?;
            Ok(())
        })
    }
}
