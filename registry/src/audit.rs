//! The audit log's front door: handlers [`Audit::record`] events (pushes,
//! tag moves, deletes, denied requests, failed logins, admin changes) and
//! return at once; one background task writes them to the metadata
//! database in batches, logs each on the `berth::audit` tracing target,
//! and prunes events older than the retention. The queue is bounded: a
//! flood of denied requests cannot grow memory or stall requests — events
//! beyond it are counted as dropped (and the count logged), never waited
//! for. Events never carry a secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metadata::{AuditEvent, Metadata};
use crate::unix_now as now;

/// Events waiting to be written, at most.
const QUEUE: usize = 10_000;

/// Events written per transaction, at most.
const BATCH: usize = 512;

/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The audit log.
#[derive(Debug)]
pub struct Audit {
    tx: mpsc::Sender<AuditEvent>,
    /// The writer's inputs until it starts (on the first event, inside the
    /// runtime).
    pending: Mutex<Option<(mpsc::Receiver<AuditEvent>, Arc<Metadata>)>>,
    retention: Duration,
    dropped: AtomicU64,
}

impl Audit {
    /// An audit log written to `meta`, keeping events for `retention`.
    pub fn new(meta: Arc<Metadata>, retention: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            pending: Mutex::new(Some((rx, meta))),
            retention,
            dropped: AtomicU64::new(0),
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Record an event (`at` and `id` are filled in here).
    pub fn record(
        &self,
        actor: &str,
        client: &str,
        action: &str,
        target: &str,
        outcome: &str,
        detail: String,
    ) {
        self.start();
        let event = AuditEvent {
            id: 0,
            at: now(),
            actor: actor.to_owned(),
            client: client.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
            detail,
        };
        tracing::info!(
            target: "berth::audit",
            actor = %event.actor,
            client = %event.client,
            action = %event.action,
            target_ = %event.target,
            outcome = %event.outcome,
            detail = %event.detail,
            "audit"
        );
        if self.tx.try_send(event).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "the audit queue is full; events are being dropped"
                );
            }
        }
    }

    /// Record what the registry did by itself (garbage collection,
    /// retention): actor `system`, outcome `ok`.
    pub fn record_system(&self, action: &str, target: &str, detail: &str) {
        self.record("system", "", action, target, "ok", detail.to_owned());
    }

    fn start(&self) {
        let Some((mut rx, meta)) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let retention = self.retention;
        tokio::spawn(async move {
            let mut prune = tokio::time::interval(PRUNE_EVERY);
            loop {
                let first = tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => e,
                        None => return,
                    },
                    _ = prune.tick() => {
                        let meta = meta.clone();
                        let before = now().saturating_sub(retention.as_secs());
                        match tokio::task::spawn_blocking(move || meta.audit_prune(before)).await {
                            Ok(Ok(n)) if n > 0 => tracing::info!(pruned = n, "old audit events pruned"),
                            Ok(Err(e)) => tracing::error!(error = %e, "pruning the audit log failed"),
                            _ => {}
                        }
                        continue;
                    }
                };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                // A busy or briefly failing database gets a few more tries
                // before the batch is given up (and said so).
                let batch = Arc::new(batch);
                for attempt in 1..=5u32 {
                    let (meta, b) = (meta.clone(), batch.clone());
                    match tokio::task::spawn_blocking(move || meta.audit_append(&b)).await {
                        Ok(Ok(())) => break,
                        Ok(Err(e)) if attempt < 5 => {
                            tracing::warn!(error = %e, attempt, "writing the audit log failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt)))
                                .await;
                        }
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, events = batch.len(), "writing the audit log failed; these events are lost");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the audit writer panicked");
                            break;
                        }
                    }
                }
            }
        });
    }
}
