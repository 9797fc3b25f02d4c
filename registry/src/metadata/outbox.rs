//! The webhook outbox: events written in the transaction of the change
//! they report (a manifest PUT), so an acknowledged push always produces
//! its webhook even across a crash; the sender takes due rows, records
//! each attempt's status, and schedules the next with backoff. A row is
//! one delivery to one target, with the stable delivery id receivers use
//! to refuse replays.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{Result, Sqlite, now};

/// An event to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The target's name (`[[webhooks]] name`).
    pub target: String,
    /// The event type (`PUSH_ARTIFACT`).
    pub event: String,
    /// The JSON body.
    pub payload: String,
}

/// A queued delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// Its row.
    pub id: i64,
    /// The delivery id sent as `X-Berth-Delivery`.
    pub delivery: String,
    /// The target's name.
    pub target: String,
    /// The event type.
    pub event: String,
    /// The JSON body.
    pub payload: String,
    /// When it was queued, unix seconds.
    pub created_at: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// The last attempt's outcome (`200`, `connection refused`, …).
    pub last_status: String,
    /// When it was delivered, if it was.
    pub delivered_at: Option<u64>,
    /// Given up on.
    pub failed: bool,
}

pub(super) fn insert(tx: &Transaction<'_>, e: &OutboxEvent, at: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO webhook_outbox (delivery, target, event, payload, created_at, next_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?
    .execute(params![
        uuid::Uuid::new_v4().to_string(),
        e.target,
        e.event,
        e.payload,
        at
    ])?;
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        delivery: r.get(1)?,
        target: r.get(2)?,
        event: r.get(3)?,
        payload: r.get(4)?,
        created_at: r.get::<_, i64>(5)? as u64,
        attempts: r.get::<_, i64>(6)? as u32,
        last_status: r.get(7)?,
        delivered_at: r.get::<_, Option<i64>>(8)?.map(|t| t as u64),
        failed: r.get(9)?,
    })
}

const COLUMNS: &str =
    "id, delivery, target, event, payload, created_at, attempts, last_status, delivered_at, failed";

/// The webhook outbox: events queued in the transaction that caused them,
/// delivered with retries.
pub trait Outbox {
    /// Queue events outside a manifest PUT (deletes and the like).
    fn outbox_add(&self, events: &[OutboxEvent]) -> Result<()>;

    /// Claim the deliveries due now, oldest first, at most `limit`: in the
    /// same transaction their next attempt moves `lease` seconds ahead, so
    /// no other replica (nor this one's next round) takes them while this
    /// one delivers. [`Outbox::outbox_attempted`] then records the
    /// outcome; if this replica dies first, the lease runs out and another
    /// delivers them.
    fn outbox_claim(&self, limit: usize, lease: u64) -> Result<Vec<Delivery>>;

    /// Record an attempt: delivered, or retry at `next_at`, or (with
    /// `give_up`) failed for good.
    fn outbox_attempted(
        &self,
        id: i64,
        status: &str,
        delivered: bool,
        next_at: u64,
        give_up: bool,
    ) -> Result<()>;

    /// Recent deliveries, newest first (for the API).
    fn outbox_recent(&self, target: Option<&str>, limit: usize) -> Result<Vec<Delivery>>;

    /// Deliveries not yet made (for the metrics).
    fn outbox_backlog(&self) -> Result<u64>;
}

impl Outbox for Sqlite {
    fn outbox_add(&self, events: &[OutboxEvent]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        for e in events {
            insert(&tx, e, now())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn outbox_claim(&self, limit: usize, lease: u64) -> Result<Vec<Delivery>> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let t = now();
        let rows: Vec<Delivery> = {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM webhook_outbox
                 WHERE delivered_at IS NULL AND failed = 0 AND next_at <= ?1
                 ORDER BY id LIMIT ?2"
            ))?;
            st.query_map(params![t, limit as i64], row)?
                .collect::<rusqlite::Result<_>>()?
        };
        {
            let mut st =
                tx.prepare_cached("UPDATE webhook_outbox SET next_at = ?2 WHERE id = ?1")?;
            for d in &rows {
                st.execute(params![d.id, t + lease as i64])?;
            }
        }
        tx.commit()?;
        Ok(rows)
    }

    fn outbox_attempted(
        &self,
        id: i64,
        status: &str,
        delivered: bool,
        next_at: u64,
        give_up: bool,
    ) -> Result<()> {
        let t = now();
        self.writer()
            .prepare_cached(
                "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = ?2,
                    delivered_at = CASE WHEN ?3 THEN ?4 ELSE NULL END,
                    next_at = ?5, failed = ?6
                 WHERE id = ?1",
            )?
            .execute(params![id, status, delivered, t, next_at as i64, give_up])?;
        Ok(())
    }

    fn outbox_recent(&self, target: Option<&str>, limit: usize) -> Result<Vec<Delivery>> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM webhook_outbox
             WHERE ?1 IS NULL OR target = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = st
            .query_map(params![target, limit as i64], row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn outbox_backlog(&self) -> Result<u64> {
        let n: Option<i64> = self
            .reader()
            .prepare_cached(
                "SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed = 0",
            )?
            .query_row([], |r| r.get(0))
            .optional()?;
        Ok(n.unwrap_or(0) as u64)
    }
}
