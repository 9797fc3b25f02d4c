//! Online garbage collection: while the registry serves pushes and pulls,
//! remove untagged manifests past their age (when configured), links no
//! manifest in their repository uses, and blobs nothing references, older
//! than a grace window — from the metadata, then from the blob store
//! (filesystem or S3), then bytes the store holds that the metadata no
//! longer knows (a sweep interrupted between the two).
//!
//! The plan is read from one snapshot of the metadata; each deletion
//! re-checks in its own transaction (see [`crate::metadata::GcPlan`]). The
//! bytes of a forgotten blob are deleted under the write side of its
//! [`Gate`] stripe, whose read side every upload commit and cross-repository
//! mount of the same digest holds from the store's publish to the
//! metadata's link: so a blob is never published again while its bytes are
//! being deleted, and a manifest never points at a blob that is gone.
//! Nothing here lists the store on a request path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_oci::Digest;
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::metadata::{DoomedBlob, GcPlan, LockGuard};
use crate::storage::{BlobStore, Blobs};
use crate::{Registry, unix_now};

/// Stripes of the gate: enough that a sweep rarely waits for an upload of
/// another digest, few enough to be free.
const STRIPES: usize = 64;
/// Blobs forgotten per metadata transaction.
const BATCH: usize = 256;

/// Upload commits and mounts (read side) against deletions of the same
/// digest's bytes (write side), by digest stripe.
#[derive(Debug)]
pub struct Gate {
    stripes: Vec<RwLock<()>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }
}

impl Gate {
    fn stripe(digest: &Digest) -> usize {
        let hex = digest.hex().as_bytes();
        let byte = |i: usize| hex.get(i).copied().unwrap_or(b'0') as usize;
        (byte(0) * 31 + byte(1)) % STRIPES
    }

    /// Held while publishing `digest` and linking it: this process's
    /// stripe, then (on a store several replicas share) the cluster's.
    pub async fn publishing(
        &self,
        meta: &Arc<crate::metadata::Metadata>,
        digest: &Digest,
    ) -> Result<Publishing<'_>, crate::metadata::MetadataError> {
        let stripe = Self::stripe(digest);
        let local = self.stripes[stripe].read().await;
        let m = meta.clone();
        let cluster = tokio::task::spawn_blocking(move || m.gate_stripe(stripe, false))
            .await
            .map_err(|e| crate::metadata::MetadataError::Unavailable(e.to_string()))??;
        Ok(Publishing {
            _local: local,
            _cluster: cluster,
        })
    }

    /// Held while deleting bytes of stripe `stripe`, everywhere.
    async fn deleting(
        &self,
        r: &Arc<Registry>,
        stripe: usize,
    ) -> Result<(tokio::sync::RwLockWriteGuard<'_, ()>, LockGuard), String> {
        let local = self.stripes[stripe].write().await;
        let cluster = crate::on_meta(r, move |m| m.gate_stripe(stripe, true)).await?;
        Ok((local, cluster))
    }
}

/// What an upload commit or a mount holds from publishing a digest to
/// linking it (see [`Gate::publishing`]).
#[derive(Debug)]
pub struct Publishing<'a> {
    _local: RwLockReadGuard<'a, ()>,
    _cluster: LockGuard,
}

/// Why a collection or a retention run did nothing: another replica is
/// running one.
pub const BUSY: &str = "another replica is running this job now; this one did nothing";

/// `[gc]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Blobs (and links) younger than this are kept even when nothing
    /// references them yet: a push uploads its blobs before its manifest.
    /// 0 is allowed (tests, maintenance windows): a push whose blobs are
    /// swept before its manifest arrives fails with
    /// `MANIFEST_BLOB_UNKNOWN` and has to upload them again.
    pub grace_minutes: u64,
    /// Untagged manifests older than this are removed (unless a kept index
    /// or subject keeps them); absent: never.
    pub untagged_after_hours: Option<u64>,
    /// Run every this many hours while serving; absent: only on request
    /// (`berth admin gc`).
    pub every_hours: Option<u64>,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            grace_minutes: 60,
            untagged_after_hours: None,
            every_hours: None,
        }
    }
}

impl GcConfig {
    /// Check the bounds; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.grace_minutes > 7 * 24 * 60 {
            return Err(format!(
                "gc.grace_minutes = {} must be at most 10080 (a week)",
                self.grace_minutes
            ));
        }
        if let Some(h) = self.untagged_after_hours {
            if !(1..=24 * 3650).contains(&h) {
                return Err(format!(
                    "gc.untagged_after_hours = {h} must be between 1 and 87600"
                ));
            }
        }
        if let Some(h) = self.every_hours {
            if !(1..=24 * 365).contains(&h) {
                return Err(format!("gc.every_hours = {h} must be between 1 and 8760"));
            }
        }
        Ok(())
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_minutes * 60)
    }
}

/// What a collection removed (or, for a dry run, would remove).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcReport {
    /// A dry run: nothing was removed.
    pub dry_run: bool,
    /// Untagged manifests removed, as `repository@digest`.
    pub manifests: Vec<String>,
    /// Repository links removed.
    pub links: u64,
    /// Blobs removed, as digests.
    pub blobs: Vec<String>,
    /// Bytes of those blobs.
    pub bytes: u64,
    /// Blobs kept.
    pub blobs_kept: u64,
    /// Store entries the metadata did not know, removed.
    pub orphans: u64,
    /// Wall time, milliseconds.
    pub millis: u64,
}

/// Progress of a running collection, for a terminal.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// Collect once with `config`; with `dry_run`, only report what would go.
pub async fn run(
    r: &Arc<Registry>,
    config: &GcConfig,
    dry_run: bool,
    progress: Progress<'_>,
) -> Result<GcReport, String> {
    run_at(r, config, dry_run, progress, unix_now()).await
}

/// [`run`] as if the clock said `now` (tests age content this way).
pub(crate) async fn run_at(
    r: &Arc<Registry>,
    config: &GcConfig,
    dry_run: bool,
    progress: Progress<'_>,
    now: u64,
) -> Result<GcReport, String> {
    // One collection at a time: a second here waits for the first; one
    // on another replica makes this one stand down.
    let _one = r.gc_running.lock().await;
    let Some(_everywhere) = crate::on_meta(r, |m| m.try_job("gc")).await? else {
        return Err(BUSY.to_owned());
    };
    let started = Instant::now();
    let grace_cutoff = now.saturating_sub(config.grace().as_secs());
    let untagged_cutoff = config
        .untagged_after_hours
        .map(|h| now.saturating_sub(h * 3600));
    let plan: GcPlan = crate::on_meta(r, move |m| m.gc_plan(grace_cutoff, untagged_cutoff)).await?;
    progress(&format!(
        "planned in {} ms: {} untagged manifests, {} links, {} of {} blobs ({} bytes)",
        started.elapsed().as_millis(),
        plan.manifests.len(),
        plan.links,
        plan.blobs.len(),
        plan.blobs_total,
        plan.blobs.iter().map(|b| b.size).sum::<u64>()
    ));
    let mut report = GcReport {
        dry_run,
        ..GcReport::default()
    };
    if dry_run {
        report.manifests = plan
            .manifests
            .iter()
            .map(|m| format!("{}@{}", m.repository, m.digest))
            .collect();
        report.links = plan.links;
        report.bytes = plan.blobs.iter().map(|b| b.size).sum();
        report.blobs = plan.blobs.iter().map(|b| b.digest.to_string()).collect();
        report.blobs_kept = plan.blobs_total - plan.blobs.len() as u64;
        report.millis = started.elapsed().as_millis() as u64;
        return Ok(report);
    }

    // Untagged manifests, one repository per transaction.
    let mut by_repo: std::collections::BTreeMap<String, Vec<Digest>> = Default::default();
    for m in &plan.manifests {
        by_repo
            .entry(m.repository.clone())
            .or_default()
            .push(m.digest.clone());
    }
    for (repo, digests) in by_repo {
        let (rr, dd) = (repo.clone(), digests.clone());
        let n = crate::on_meta(r, move |m| m.gc_remove_manifests(&rr, &dd)).await?;
        if n > 0 {
            report
                .manifests
                .extend(digests.iter().map(|d| format!("{repo}@{d}")));
            r.audit.record_system(
                "gc.manifests",
                &repo,
                &format!("{n} untagged manifests removed"),
            );
        }
    }
    if let (Some(hooks), false) = (&r.webhooks, report.manifests.is_empty()) {
        let events = hooks.removal_events(&report.manifests, "gc", now);
        if !events.is_empty() {
            crate::on_meta(r, move |m| m.outbox_add(&events)).await?;
            hooks.wake.notify_one();
        }
    }
    report.links = crate::on_meta(r, move |m| m.gc_prune_links(grace_cutoff)).await?;

    // Blobs: by stripe, in batches, bytes deleted under the stripe's write
    // lock after the metadata forgot them.
    let mut stripes: Vec<Vec<DoomedBlob>> = vec![Vec::new(); STRIPES];
    for b in plan.blobs {
        stripes[Gate::stripe(&b.digest)].push(b);
    }
    let total: usize = stripes.iter().map(Vec::len).sum();
    let mut done = 0;
    for (i, blobs) in stripes.into_iter().enumerate() {
        for batch in blobs.chunks(BATCH) {
            let _w = r.gc_gate.deleting(r, i).await?;
            done += batch.len();
            let batch = batch.to_vec();
            let gone = crate::on_meta(r, move |m| m.gc_forget_blobs(&batch, grace_cutoff)).await?;
            for b in &gone {
                // A failed delete leaves bytes the metadata does not know:
                // the orphan pass of a later run retries.
                if let Err(e) = r.blobs.delete(&b.digest).await {
                    tracing::warn!(digest = %b.digest, error = %e, "garbage collection could not delete a blob's bytes; a later run retries");
                }
                report.bytes += b.size;
                report.blobs.push(b.digest.to_string());
            }
        }
        if total > 0 && i % 8 == 7 {
            progress(&format!("swept {done} of {total} candidate blobs"));
        }
    }
    let seq = plan.dirty_seq;
    crate::on_meta(r, move |m| m.gc_settle(seq)).await?;
    progress(&format!(
        "swept {} blobs in {} ms; looking for stray bytes",
        report.blobs.len(),
        started.elapsed().as_millis()
    ));
    report.orphans = orphans(r, grace_cutoff).await?;
    report.blobs_kept = plan.blobs_total - report.blobs.len() as u64;
    report.millis = started.elapsed().as_millis() as u64;
    r.metrics.gc_ran(&report, now);
    r.audit.record_system(
        "gc.run",
        "registry",
        &format!(
            "{} manifests, {} links, {} blobs ({} bytes), {} orphans removed",
            report.manifests.len(),
            report.links,
            report.blobs.len(),
            report.bytes,
            report.orphans
        ),
    );
    tracing::info!(
        manifests = report.manifests.len(),
        links = report.links,
        blobs = report.blobs.len(),
        bytes = report.bytes,
        orphans = report.orphans,
        millis = report.millis,
        "garbage collection done"
    );
    Ok(report)
}

/// Bytes in the store the metadata does not know, older than the cutoff:
/// S3 index entries (a sweep whose object delete failed), and on the
/// filesystem blob files (a crash between publish and link, or a failed
/// delete) — the filesystem walk runs here, never on a request path.
async fn orphans(r: &Arc<Registry>, cutoff: u64) -> Result<u64, String> {
    let mut n = 0;
    match &r.blobs {
        Blobs::S3(_) => loop {
            let rows = crate::on_meta(r, |m| m.gc_s3_orphans(BATCH)).await?;
            if rows.is_empty() {
                break;
            }
            let mut progressed = false;
            for (digest, _key) in rows {
                let Ok(d) = digest.parse::<Digest>() else {
                    continue;
                };
                let _w = r.gc_gate.deleting(r, Gate::stripe(&d)).await?;
                let dd = digest.clone();
                if crate::on_meta(r, move |m| m.gc_blob_known(&dd)).await? {
                    continue;
                }
                r.blobs.delete(&d).await.map_err(|e| e.to_string())?;
                n += 1;
                progressed = true;
            }
            if !progressed {
                break;
            }
        },
        Blobs::Fs(fs) => {
            // One read of what the metadata knows; each file it does not
            // is checked again under its gate before it goes.
            let known = crate::on_meta(r, |m| m.gc_known_digests()).await?;
            for (digest, modified) in fs.unknown_blobs(known).await.map_err(|e| e.to_string())? {
                if modified > cutoff {
                    continue;
                }
                let _w = r.gc_gate.deleting(r, Gate::stripe(&digest)).await?;
                let dd = digest.to_string();
                if crate::on_meta(r, move |m| m.gc_blob_known(&dd)).await? {
                    continue;
                }
                r.blobs.delete(&digest).await.map_err(|e| e.to_string())?;
                n += 1;
            }
        }
        Blobs::Memory(_) => {}
    }
    Ok(n)
}

/// Apply retention and collect every `config.every_hours` while the
/// server runs.
pub fn spawn(r: Arc<Registry>, config: GcConfig) -> Option<tokio::task::JoinHandle<()>> {
    let every = Duration::from_secs(config.every_hours? * 3600);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Retention first: the tags it removes free their bytes now.
            let retention = crate::retention::run(&r, None, false, unix_now()).await;
            match &retention {
                Err(e) if e == BUSY => tracing::info!("scheduled retention: {e}"),
                Err(e) => tracing::error!(error = %e, "scheduled retention failed"),
                Ok(_) => {}
            }
            crate::record_run(&r, "retention", "*", false, "schedule", &retention).await;
            let collected = run(&r, &config, false, &|_| {}).await;
            match &collected {
                Err(e) if e == BUSY => tracing::info!("scheduled garbage collection: {e}"),
                Err(e) => tracing::error!(error = %e, "scheduled garbage collection failed"),
                Ok(_) => {}
            }
            crate::record_run(&r, "gc", "registry", false, "schedule", &collected).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use crate::metadata::{ManifestKey, ManifestRefs, NewManifest};
    use crate::storage::{UploadId, UploadWriter};

    const HOUR: u64 = 3600;

    fn registry() -> Arc<Registry> {
        Arc::new(Registry::in_memory(Limits::default()).unwrap())
    }

    /// Upload `data` into `repo` as a push does.
    async fn blob(r: &Registry, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256(data);
        let id = UploadId::new();
        r.blobs.create_upload(id).await.unwrap();
        let mut w = r.blobs.append_upload(id, 0).await.unwrap();
        w.write(bytes::Bytes::copy_from_slice(data)).await.unwrap();
        w.finish().await.unwrap();
        let _g = r.gc_gate.publishing(&r.meta, &d).await.unwrap();
        r.blobs
            .commit_upload(id, data.len() as u64, &d)
            .await
            .unwrap();
        r.meta.link_blob(repo, &d, data.len() as u64, None).unwrap();
        d
    }

    /// Store a manifest referencing `blobs` and `children` (with `subject`),
    /// tagged `tag` if given.
    fn manifest(
        r: &Registry,
        repo: &str,
        blobs: &[(&Digest, u64)],
        children: &[&Digest],
        subject: Option<&Digest>,
        tag: Option<&str>,
    ) -> Result<Digest, crate::metadata::MetadataError> {
        let content = format!("{blobs:?}{children:?}{subject:?}{}", rand_suffix());
        let d = Digest::sha256(content.as_bytes());
        let refs = ManifestRefs {
            blobs: blobs.to_vec(),
            children: children.to_vec(),
        };
        let tags: Vec<String> = tag.into_iter().map(str::to_owned).collect();
        r.meta.put_manifest_with_events(
            repo,
            &NewManifest {
                digest: &d,
                media_type: "application/vnd.oci.image.manifest.v1+json",
                artifact_type: None,
                subject,
                annotations: None,
                content: content.as_bytes(),
            },
            &refs,
            &tags,
            &[],
            &|_| None,
        )?;
        Ok(d)
    }

    fn rand_suffix() -> String {
        UploadId::new().to_string()
    }

    async fn present(r: &Registry, d: &Digest) -> bool {
        r.blobs.stat(d).await.unwrap().is_some() && r.meta.blob_size(d).unwrap().is_some()
    }

    fn quiet(_: &str) {}

    #[tokio::test]
    async fn referenced_and_young_blobs_stay_and_the_dry_run_lists_what_the_run_removes() {
        let r = registry();
        let (a, b, garbage) = (
            blob(&r, "team/app", b"layer a").await,
            blob(&r, "team/app", b"config b").await,
            blob(&r, "team/app", b"orphan layer").await,
        );
        manifest(&r, "team/app", &[(&a, 7), (&b, 8)], &[], None, Some("v1")).unwrap();
        let config = GcConfig::default();
        let now = unix_now();

        // Within the grace window nothing goes (a push uploads blobs first).
        let young = run_at(&r, &config, false, &quiet, now).await.unwrap();
        assert!(young.blobs.is_empty(), "{young:?}");
        assert!(present(&r, &garbage).await);

        let later = now + 2 * HOUR;
        let preview = run_at(&r, &config, true, &quiet, later).await.unwrap();
        assert_eq!(preview.blobs, vec![garbage.to_string()]);
        assert_eq!(preview.bytes, 12);
        assert!(present(&r, &garbage).await, "a dry run removes nothing");
        let done = run_at(&r, &config, false, &quiet, later).await.unwrap();
        assert_eq!(done.blobs, preview.blobs);
        assert_eq!(done.bytes, preview.bytes);
        assert_eq!(done.blobs_kept, 2);
        assert!(!present(&r, &garbage).await);
        assert!(present(&r, &a).await && present(&r, &b).await);
        // And again: nothing left to do.
        let again = run_at(&r, &config, true, &quiet, later).await.unwrap();
        assert!(again.blobs.is_empty() && again.links == 0, "{again:?}");
    }

    #[tokio::test]
    async fn a_manifest_racing_the_sweep_of_its_blob_never_dangles() {
        let r = registry();
        let config = GcConfig::default();
        let later = unix_now() + 2 * HOUR;
        // Planned as garbage, then referenced before the sweep re-checks:
        // kept.
        let x = blob(&r, "team/app", b"raced").await;
        let plan = r.meta.gc_plan(later - HOUR, None).unwrap();
        assert_eq!(plan.blobs.len(), 1);
        manifest(&r, "team/app", &[(&x, 5)], &[], None, Some("late")).unwrap();
        let gone = r.meta.gc_forget_blobs(&plan.blobs, later - HOUR).unwrap();
        assert!(gone.is_empty(), "re-checked and kept");
        assert!(
            run_at(&r, &config, false, &quiet, later)
                .await
                .unwrap()
                .blobs
                .is_empty()
        );
        assert!(present(&r, &x).await);

        // Swept first: the manifest PUT that comes after fails cleanly.
        let y = blob(&r, "team/app", b"swept").await;
        let done = run_at(&r, &config, false, &quiet, later).await.unwrap();
        assert_eq!(done.blobs, vec![y.to_string()]);
        let err = manifest(&r, "team/app", &[(&y, 5)], &[], None, Some("dangling")).unwrap_err();
        assert!(
            matches!(&err, crate::metadata::MetadataError::Missing { digest } if *digest == y.to_string()),
            "{err}"
        );
        assert!(
            r.meta
                .manifest("team/app", ManifestKey::Tag("dangling"), false)
                .unwrap()
                .is_none()
        );

        // Re-uploaded after the plan: the fresh link keeps it.
        let z = blob(&r, "team/app", b"re-pushed").await;
        let plan = r.meta.gc_plan(later - HOUR, None).unwrap();
        assert_eq!(plan.blobs.len(), 1);
        blob(&r, "team/other", b"re-pushed").await;
        let gone = r
            .meta
            .gc_forget_blobs(&plan.blobs, unix_now() - 60)
            .unwrap();
        assert!(gone.is_empty());
        assert!(present(&r, &z).await);
    }

    #[tokio::test]
    async fn a_sweep_waits_for_an_upload_of_the_same_digest() {
        let r = registry();
        let d = Digest::sha256(b"contended");
        let publishing = r.gc_gate.publishing(&r.meta, &d).await.unwrap();
        let r2 = r.clone();
        let sweep = tokio::spawn(async move {
            let config = GcConfig::default();
            run_at(&r2, &config, false, &quiet, unix_now() + 2 * HOUR).await
        });
        // Planned before the upload's link: the bytes are not deleted while
        // the upload holds the gate; its fresh link then keeps them.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(publishing);
        let report = sweep.await.unwrap().unwrap();
        assert!(report.blobs.is_empty());
    }

    #[tokio::test]
    async fn untagged_manifests_go_after_their_age_unless_something_kept_holds_them() {
        let r = registry();
        let repo = "team/app";
        let layer = blob(&r, repo, b"shared layer").await;
        let only_old = blob(&r, repo, b"old layer").await;
        // A tagged index keeps its untagged children.
        let child = manifest(&r, repo, &[(&layer, 12)], &[], None, None).unwrap();
        let index = manifest(&r, repo, &[], &[&child], None, Some("multi")).unwrap();
        // A tagged image keeps its untagged referrer (an SBOM).
        let image = manifest(&r, repo, &[(&layer, 12)], &[], None, Some("v1")).unwrap();
        let sbom = manifest(&r, repo, &[], &[], Some(&image), None).unwrap();
        // An untagged image, and its signature: both go, and the layer only
        // they used.
        let old = manifest(&r, repo, &[(&only_old, 9)], &[], None, None).unwrap();
        let sig = manifest(&r, repo, &[], &[], Some(&old), None).unwrap();

        let config = GcConfig {
            untagged_after_hours: Some(24),
            ..GcConfig::default()
        };
        let young = run_at(&r, &config, true, &quiet, unix_now() + HOUR * 2)
            .await
            .unwrap();
        assert!(young.manifests.is_empty(), "younger than a day: {young:?}");

        let later = unix_now() + 48 * HOUR;
        let preview = run_at(&r, &config, true, &quiet, later).await.unwrap();
        let mut want = vec![format!("{repo}@{old}"), format!("{repo}@{sig}")];
        want.sort();
        let mut got = preview.manifests.clone();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(preview.blobs, vec![only_old.to_string()]);
        let done = run_at(&r, &config, false, &quiet, later).await.unwrap();
        let mut got = done.manifests.clone();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(done.blobs, preview.blobs);
        for kept in [&child, &index, &image, &sbom] {
            assert!(
                r.meta
                    .manifest(repo, ManifestKey::Digest(kept), false)
                    .unwrap()
                    .is_some(),
                "{kept} was kept"
            );
        }
        for gone in [&old, &sig] {
            assert!(
                r.meta
                    .manifest(repo, ManifestKey::Digest(gone), false)
                    .unwrap()
                    .is_none()
            );
        }
        assert!(present(&r, &layer).await);
        assert!(!present(&r, &only_old).await);
    }

    #[tokio::test]
    async fn a_manifest_deleted_by_the_api_frees_its_blobs() {
        let r = registry();
        let l = blob(&r, "team/app", b"soon unused").await;
        let m = manifest(&r, "team/app", &[(&l, 11)], &[], None, Some("t")).unwrap();
        assert!(r.meta.delete_manifest("team/app", &m).unwrap());
        let done = run_at(
            &r,
            &GcConfig::default(),
            false,
            &quiet,
            unix_now() + 2 * HOUR,
        )
        .await
        .unwrap();
        assert_eq!(done.blobs, vec![l.to_string()]);
        assert_eq!(done.links, 1, "the repository's link to it");
    }

    #[test]
    fn config_bounds_name_the_key() {
        let bad = GcConfig {
            grace_minutes: 20_000,
            ..GcConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("gc.grace_minutes"));
        GcConfig::default().validate().unwrap();
    }
}
