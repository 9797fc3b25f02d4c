//! Layer jobs: what each layer of a plan holds (store paths, or the
//! extra files), the cache key that decides its bytes, the entries its tar
//! is made of, and running jobs in parallel, largest first, with results in
//! plan order. Shared by the layout build (`image`) and the streamed
//! archive (`stream`); no I/O beyond reading the store.

use std::path::PathBuf;

use berth_oci::Digest;

use crate::cache::LayerCache;
use crate::canonical_tar::LayerEntries;
use crate::image::{BuildError, BuildOptions};
use crate::plan::LayerPlan;
use crate::spec::{ExtraFile, ImageSpec};

pub(crate) fn source_of(opts: &BuildOptions, store_path: &str) -> PathBuf {
    opts.store_root.join(store_path.trim_start_matches('/'))
}

pub(crate) fn extra_files_entries(
    spec: &ImageSpec,
    opts: &BuildOptions,
) -> Result<LayerEntries, BuildError> {
    let mut e = LayerEntries::new();
    // Directories first, so an explicit mode is not overridden by an
    // implied parent of a later file.
    for f in &spec.extra_files {
        if let ExtraFile::Directory { path, .. } = f {
            e.add_dir(path, f.mode_bits().unwrap_or(0o555))?;
        }
    }
    for f in &spec.extra_files {
        match f {
            ExtraFile::File { path, contents, .. } => {
                e.add_file(path, contents.as_bytes(), f.mode_bits().unwrap_or(0o444))?;
            }
            ExtraFile::Symlink { path, target } => e.add_symlink(path, target)?,
            ExtraFile::Directory { .. } => {}
        }
    }
    for f in &spec.extra_files {
        if let Some((uid, gid)) = f.owner() {
            e.set_owner(f.path(), uid, gid);
        }
    }
    for c in &spec.contents {
        e.add_links_to(c, &source_of(opts, c))?;
    }
    Ok(e)
}

/// Fail unless every store path of the closure is on this machine.
pub(crate) fn check_present(spec: &ImageSpec, opts: &BuildOptions) -> Result<(), BuildError> {
    for p in &spec.closure {
        let src = source_of(opts, &p.path);
        if std::fs::symlink_metadata(&src).is_err() {
            return Err(BuildError::MissingStorePath(
                p.path.clone(),
                opts.store_root.clone(),
            ));
        }
    }
    Ok(())
}

/// One layer to build: store paths, or (with no paths) the extra files.
pub(crate) struct LayerJob<'a> {
    pub(crate) paths: Vec<String>,
    pub(crate) extra: Option<&'a [ExtraFile]>,
    /// NAR bytes, for scheduling.
    pub(crate) nar_size: u64,
}

/// The layers of `plan`, bottom first: each planned layer, then the extra
/// files.
pub(crate) fn layer_jobs<'a>(spec: &'a ImageSpec, plan: &LayerPlan) -> Vec<LayerJob<'a>> {
    let mut jobs: Vec<LayerJob<'a>> = plan
        .layers
        .iter()
        .map(|l| LayerJob {
            nar_size: l
                .paths
                .iter()
                .filter_map(|p| spec.path_info(p))
                .map(|p| p.nar_size)
                .sum(),
            paths: l.paths.clone(),
            extra: None,
        })
        .collect();
    if plan.extra_files_layer {
        jobs.push(LayerJob {
            paths: Vec::new(),
            extra: Some(&spec.extra_files),
            nar_size: 0,
        });
    }
    jobs
}

/// Run `f` over `0..jobs.len()` on up to `threads` threads, largest job
/// first (so the long ones start early); results keep the jobs' order, so
/// nothing depends on who finished first.
pub(crate) fn run_parallel<T: Send>(
    threads: usize,
    jobs: &[LayerJob<'_>],
    f: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let results: Vec<std::sync::Mutex<Option<T>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].nar_size));
    let next = std::sync::Mutex::new(order.into_iter());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(jobs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let Some(i) = next.lock().unwrap_or_else(|e| e.into_inner()).next() else {
                        return;
                    };
                    let r = f(i);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every job ran")
        })
        .collect()
}

/// The cache key of a layer: everything that decides its bytes.
pub(crate) fn cache_key(spec: &ImageSpec, opts: &BuildOptions, job: &LayerJob<'_>) -> Digest {
    let compressor = opts.compression.id();
    let tar = format!(
        "mtime={};uid={};gid={}",
        opts.tar.mtime, opts.tar.uid, opts.tar.gid
    );
    let mut parts: Vec<String> = vec![compressor, tar];
    match job.extra {
        Some(files) => {
            parts.push(serde_json::to_string(files).expect("extra files serialise"));
            // Links to contents follow the contents' trees.
            for c in &spec.contents {
                let hash = spec.path_info(c).map_or("", |i| i.nar_hash.as_str());
                parts.push(format!("contents:{c}\n{hash}"));
            }
        }
        None => {
            for p in &job.paths {
                let hash = spec.path_info(p).map_or("", |i| i.nar_hash.as_str());
                parts.push(format!("{p}\n{hash}"));
            }
        }
    }
    LayerCache::key(&parts.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The entries of a layer (walking its store paths).
pub(crate) fn job_entries(
    spec: &ImageSpec,
    opts: &BuildOptions,
    job: &LayerJob<'_>,
) -> Result<LayerEntries, BuildError> {
    match job.extra {
        Some(_) => extra_files_entries(spec, opts),
        None => {
            let mut entries = LayerEntries::new();
            for p in &job.paths {
                entries.add_store_path(p, &source_of(opts, p))?;
            }
            Ok(entries)
        }
    }
}
