//! Background upkeep while `berth serve` runs: upload sessions nobody has
//! touched for `[storage] upload_expiry_hours` (24 by default) are
//! abandoned — their bytes on disk, their staged tails and their S3
//! multipart uploads are freed and the session is forgotten (a client
//! coming back gets `BLOB_UPLOAD_UNKNOWN` and starts over). With S3, a
//! multipart upload under the prefix that no session knows (a crash
//! between starting it and recording it) is aborted too once it is older
//! than the expiry, so none is left to accumulate. A session a request is
//! working on is never expired.

use std::sync::Arc;
use std::time::Duration;

use crate::storage::{BlobStore, Blobs, UploadId};
use crate::{Registry, unix_now as now};

/// What one pass freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Upload sessions expired.
    pub sessions: usize,
    /// S3 multipart uploads no session knew, aborted.
    pub orphans: usize,
}

/// One pass: expire sessions idle for longer than `max_age`.
pub async fn sweep(r: &Registry, max_age: Duration) -> Result<Swept, String> {
    let cutoff = now().saturating_sub(max_age.as_secs());
    let meta = r.meta.clone();
    let stale: Vec<UploadId> = tokio::task::spawn_blocking(move || meta.stale_uploads(cutoff))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut swept = Swept::default();
    for id in stale {
        // Claim it as a request would, so one in progress is left alone.
        {
            let mut sessions = r.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let state = sessions.entry(id).or_default();
            if state.busy {
                continue;
            }
            state.busy = true;
        }
        let result = r.blobs.abort_upload(id).await;
        r.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Err(e) = result {
            tracing::warn!(upload = %id, error = %e, "cannot free an expired upload; will retry");
            continue;
        }
        let meta = r.meta.clone();
        tokio::task::spawn_blocking(move || meta.delete_upload(id))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        swept.sessions += 1;
    }
    if let Blobs::S3(s3) = &r.blobs {
        swept.orphans = s3.abort_orphans(cutoff).await.map_err(|e| e.to_string())?;
    }
    if swept.sessions + swept.orphans > 0 {
        r.metrics.uploads_expired(swept.sessions as u64);
        tracing::info!(
            sessions = swept.sessions,
            orphan_multipart_uploads = swept.orphans,
            "abandoned uploads freed"
        );
    }
    Ok(swept)
}

/// Sweep every `max_age / 4` (at most hourly, at least every minute) for
/// as long as the server runs.
pub fn spawn(r: Arc<Registry>, max_age: Duration) -> tokio::task::JoinHandle<()> {
    let every = (max_age / 4).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sweep(&r, max_age).await {
                tracing::error!(error = %e, "expiring abandoned uploads failed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use crate::storage::UploadWriter;

    #[tokio::test]
    async fn idle_sessions_expire_and_busy_ones_do_not() {
        let r = Registry::in_memory(Limits::default()).unwrap();
        let (idle, busy) = (UploadId::new(), UploadId::new());
        for id in [idle, busy] {
            r.blobs.create_upload(id).await.unwrap();
            r.meta.create_upload(id, "team/app").unwrap();
            let mut w = r.blobs.append_upload(id, 0).await.unwrap();
            w.write(bytes::Bytes::from_static(b"abandoned"))
                .await
                .unwrap();
            w.finish().await.unwrap();
            r.meta.set_upload_size(id, 9).unwrap();
        }
        r.sessions.lock().unwrap().entry(busy).or_default().busy = true;
        // Not old enough yet.
        assert_eq!(
            sweep(&r, Duration::from_secs(3600)).await.unwrap(),
            Swept::default()
        );
        let swept = sweep(&r, Duration::ZERO).await.unwrap();
        assert_eq!(swept.sessions, 1);
        assert!(r.meta.upload(idle).unwrap().is_none());
        assert!(matches!(
            r.blobs.append_upload(idle, 0).await,
            Err(crate::storage::StorageError::UploadNotFound(_))
        ));
        assert!(r.meta.upload(busy).unwrap().is_some(), "in use: kept");
    }
}
