//! The last run of each maintenance job (schema version 7): for retention
//! (per project, or `*` for every project) and garbage collection
//! (`registry`), the latest real run and the latest dry run (the
//! preview), each with when it ended, who asked (`schedule` for the
//! timer), whether it succeeded and its report as JSON. Kept in the
//! metadata database so every replica's UI and API show the same history.

use rusqlite::{OptionalExtension, params};

use super::{Result, Sqlite};

/// Version 7: the last runs.
pub(super) const SCHEMA_V7: &str = r#"
CREATE TABLE job_runs (
    job TEXT NOT NULL,
    scope TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    by TEXT NOT NULL,
    ok INTEGER NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (job, scope, dry_run)
) WITHOUT ROWID;
"#;

/// One job run as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// `retention` or `gc`.
    pub job: String,
    /// The project, `*` (every project) or `registry`.
    pub scope: String,
    /// A preview: nothing was changed.
    pub dry_run: bool,
    /// Unix seconds.
    pub finished_at: u64,
    /// Who asked: a user name or `schedule`.
    pub by: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// The report (JSON) or the error (text).
    pub report: String,
}

/// The last run of each maintenance job.
pub trait JobRuns {
    /// Record `run`, replacing the previous one of its job, scope and kind.
    fn record_run(&self, run: &JobRun) -> Result<()>;

    /// The last run of `job` over `scope`, real or dry.
    fn last_run(&self, job: &str, scope: &str, dry_run: bool) -> Result<Option<JobRun>>;
}

impl JobRuns for Sqlite {
    fn record_run(&self, run: &JobRun) -> Result<()> {
        self.writer().execute(
            "INSERT OR REPLACE INTO job_runs (job, scope, dry_run, finished_at, by, ok, report) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                run.job,
                run.scope,
                run.dry_run,
                run.finished_at as i64,
                run.by,
                run.ok,
                run.report
            ],
        )?;
        Ok(())
    }

    fn last_run(&self, job: &str, scope: &str, dry_run: bool) -> Result<Option<JobRun>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT finished_at, by, ok, report FROM job_runs WHERE job = ?1 AND scope = ?2 AND dry_run = ?3",
                params![job, scope, dry_run],
                |r| {
                    Ok(JobRun {
                        job: job.to_owned(),
                        scope: scope.to_owned(),
                        dry_run,
                        finished_at: r.get::<_, i64>(0)? as u64,
                        by: r.get(1)?,
                        ok: r.get(2)?,
                        report: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }
}
