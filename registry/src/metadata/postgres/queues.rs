//! The webhook outbox ([`Outbox`]) and stored project policies with the
//! rows retention and quotas read ([`Policies`]) on PostgreSQL. Replicas
//! claim due deliveries with `FOR UPDATE SKIP LOCKED`, so each event goes
//! out from one of them.

use tokio_postgres::Row;

use super::client::{Statements, Transaction};

use super::{Postgres, bump};
use crate::metadata::Versioned;
use crate::metadata::policy::{parse_policy, policy_body, project_range};
use crate::metadata::{Delivery, Outbox, OutboxEvent, Policies, Result, TagRow, now};
use crate::policy::PolicyConfig;

const COLUMNS: &str =
    "id, delivery, target, event, payload, created_at, attempts, last_status, delivered_at, failed";

fn delivery(r: &Row) -> Delivery {
    Delivery {
        id: r.get(0),
        delivery: r.get(1),
        target: r.get(2),
        event: r.get(3),
        payload: r.get(4),
        created_at: r.get::<_, i64>(5) as u64,
        attempts: r.get::<_, i64>(6) as u32,
        last_status: r.get(7),
        delivered_at: r.get::<_, Option<i64>>(8).map(|t| t as u64),
        failed: r.get(9),
    }
}

/// Queue `e` in `tx` (the transaction of the change it reports).
pub(super) fn queue(tx: &mut Transaction<'_>, e: &OutboxEvent, at: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO webhook_outbox (delivery, target, event, payload, created_at, next_at)
         VALUES ($1, $2, $3, $4, $5, $5)",
        &[
            &uuid::Uuid::new_v4().to_string(),
            &e.target,
            &e.event,
            &e.payload,
            &at,
        ],
    )?;
    Ok(())
}

impl Outbox for Postgres {
    fn outbox_add(&self, events: &[OutboxEvent]) -> Result<()> {
        self.write(|tx| {
            let t = now();
            for e in events {
                queue(tx, e, t)?;
            }
            Ok(())
        })
    }

    fn outbox_claim(&self, limit: usize, lease: u64) -> Result<Vec<Delivery>> {
        self.write(|tx| {
            let t = now();
            let mut rows: Vec<Delivery> = tx
                .query(
                    &format!(
                        "UPDATE webhook_outbox SET next_at = $3 WHERE id IN (
                           SELECT id FROM webhook_outbox
                           WHERE delivered_at IS NULL AND NOT failed AND next_at <= $1
                           ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
                         RETURNING {COLUMNS}"
                    ),
                    &[&t, &(limit as i64), &(t + lease as i64)],
                )?
                .iter()
                .map(delivery)
                .collect();
            rows.sort_by_key(|d| d.id);
            Ok(rows)
        })
    }

    fn outbox_attempted(
        &self,
        id: i64,
        status: &str,
        delivered: bool,
        next_at: u64,
        give_up: bool,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = $2,
                    delivered_at = CASE WHEN $3 THEN $4::BIGINT ELSE NULL END,
                    next_at = $5, failed = $6
                 WHERE id = $1",
                &[
                    &id,
                    &status,
                    &delivered,
                    &now(),
                    &(next_at as i64),
                    &give_up,
                ],
            )?;
            Ok(())
        })
    }

    fn outbox_recent(&self, target: Option<&str>, limit: usize) -> Result<Vec<Delivery>> {
        self.read(|c| {
            Ok(c.query(
                &format!(
                    "SELECT {COLUMNS} FROM webhook_outbox
                     WHERE $1::TEXT IS NULL OR target = $1 ORDER BY id DESC LIMIT $2"
                ),
                &[&target, &(limit as i64)],
            )?
            .iter()
            .map(delivery)
            .collect())
        })
    }

    fn outbox_backlog(&self) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL AND NOT failed",
                    &[],
                )?
                .get(0);
            Ok(n as u64)
        })
    }
}

impl Policies for Postgres {
    fn stored_policies(&self) -> Result<Vec<PolicyConfig>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT project, body FROM project_policies ORDER BY project",
                &[],
            )?
            .iter()
            .filter_map(|r| parse_policy(r.get(0), r.get::<_, &str>(1)))
            .collect())
        })
    }

    fn put_policy(&self, policy: &PolicyConfig, by: &str) -> Result<()> {
        let body = policy_body(policy);
        self.write(|tx| {
            bump(tx, Versioned::Policies)?;
            tx.execute(
                "INSERT INTO project_policies (project, body, updated_by, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (project) DO UPDATE SET body = EXCLUDED.body,
                   updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at",
                &[&policy.project, &body, &by, &now()],
            )?;
            Ok(())
        })
    }

    fn delete_policy(&self, project: &str) -> Result<bool> {
        self.write(|tx| {
            bump(tx, Versioned::Policies)?;
            Ok(tx.execute(
                "DELETE FROM project_policies WHERE project = $1",
                &[&project],
            )? > 0)
        })
    }

    fn project_tags(&self, project: &str) -> Result<Vec<TagRow>> {
        let (lo, hi) = project_range(project);
        self.read(|c| {
            Ok(c.query(
                "SELECT r.name, t.name, t.digest, t.updated_at FROM tags t
                 JOIN repositories r ON r.id = t.repo_id
                 WHERE r.name = $3 OR (r.name >= $1 AND r.name < $2)
                 ORDER BY r.name, t.name",
                &[&lo, &hi, &project],
            )?
            .iter()
            .map(|r| TagRow {
                repository: r.get(0),
                tag: r.get(1),
                digest: r.get(2),
                pushed_at: r.get::<_, i64>(3) as u64,
            })
            .collect())
        })
    }

    fn retention_delete_tag(&self, row: &TagRow) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM tags WHERE name = $2 AND digest = $3 AND updated_at = $4
                 AND repo_id = (SELECT id FROM repositories WHERE name = $1)",
                &[
                    &row.repository,
                    &row.tag,
                    &row.digest,
                    &(row.pushed_at as i64),
                ],
            )? > 0)
        })
    }

    fn project_usage(&self, project: &str) -> Result<u64> {
        let (lo, hi) = project_range(project);
        self.read(|c| {
            let n: i64 = c
                .query_one(
                    "SELECT coalesce(sum(b.size), 0)::BIGINT FROM blobs b WHERE b.digest IN (
                        SELECT rb.digest FROM repository_blobs rb JOIN repositories r ON r.id = rb.repo_id
                        WHERE r.name = $3 OR (r.name >= $1 AND r.name < $2))",
                    &[&lo, &hi, &project],
                )?
                .get(0);
            Ok(n as u64)
        })
    }

    fn blob_in_project(&self, project: &str, digest: &str) -> Result<bool> {
        let (lo, hi) = project_range(project);
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repo_id
                 WHERE rb.digest = $4 AND (r.name = $3 OR (r.name >= $1 AND r.name < $2)) LIMIT 1",
                &[&lo, &hi, &project, &digest],
            )?
            .is_some())
        })
    }
}
