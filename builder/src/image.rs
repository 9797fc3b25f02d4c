//! Image assembly: from a validated spec and its layer plan to blobs in an
//! OCI image layout — each layer in one pass (canonical tar → diff_id →
//! block-parallel compression → digest, straight into a temporary file that
//! is renamed to its digest), layers in parallel ([`crate::jobs`]), or
//! linked from the layer cache; then the config and the manifest
//! ([`crate::manifest`]), tagged in the layout's index.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use berth_oci::{Digest, ImageLayout};

use crate::base::Base;
use crate::cache::{CachedLayer, LayerCache};
use crate::canonical_tar::{LayerEntries, TarError, TarOptions};
use crate::compress::{BlockCompressor, Compression, HashingWriter};
use crate::jobs::{LayerJob, cache_key, check_present, job_entries, layer_jobs, run_parallel};
pub use crate::manifest::{COMPRESSOR_ANNOTATION, STORE_PATHS_ANNOTATION};
use crate::manifest::{config_json, manifest_json, oci_descriptor};
use crate::plan::{LayerPlan, plan_layers};
use crate::spec::{ImageSpec, RUNTIME_LAYER_LIMIT};

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Writing a layer's tar failed (a store path missing, unreadable, …).
    #[error(transparent)]
    Tar(#[from] TarError),
    /// The output layout failed.
    #[error(transparent)]
    Layout(#[from] berth_oci::layout::LayoutError),
    /// The base image (`fromImage`) cannot be used.
    #[error("{0}")]
    Base(String),
    /// An I/O error while writing a blob.
    #[error("writing {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A store path in the closure is not on this machine.
    #[error(
        "store path {0} is not present under {1}; build or fetch it first (nix-store --realise)"
    )]
    MissingStorePath(String, PathBuf),
}

/// Receives progress while an image builds (for progress bars). Calls come
/// from several threads.
pub trait BuildProgress: Send + Sync {
    /// The plan is made: `layers` layers over `bytes` NAR bytes.
    fn planned(&self, layers: usize, bytes: u64);
    /// `bytes` more bytes of layer tar were written (hashed and compressed).
    fn tarred(&self, bytes: u64);
    /// A layer is done (built, or found in the cache).
    fn layer_done(&self);
}

/// A shared progress receiver.
pub type Progress = std::sync::Arc<dyn BuildProgress>;

/// How to build.
#[derive(Clone)]
pub struct BuildOptions {
    /// Layer compression.
    pub compression: Compression,
    /// Threads for compression.
    pub threads: usize,
    /// Tar ownership and time.
    pub tar: TarOptions,
    /// Where store paths are read from: `/` for the real store, or the root
    /// of a chroot store (`<root>/nix/store/…`).
    pub store_root: PathBuf,
    /// The layer cache, if any.
    pub cache: Option<LayerCache>,
    /// Progress receiver, if any.
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("compression", &self.compression)
            .field("threads", &self.threads)
            .field("tar", &self.tar)
            .field("store_root", &self.store_root)
            .field("cache", &self.cache)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Reports bytes written through it to a progress receiver, in 1 MiB steps.
pub(crate) struct Reporting<W> {
    inner: W,
    progress: Option<Progress>,
    pending: u64,
}

impl<W: Write> Write for Reporting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(p) = &self.progress {
            self.pending += n as u64;
            if self.pending >= 1 << 20 {
                p.tarred(std::mem::take(&mut self.pending));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Reporting<W> {
    /// Report bytes written through `inner` to `progress`.
    pub(crate) fn new(inner: W, progress: Option<Progress>) -> Self {
        Self {
            inner,
            progress,
            pending: 0,
        }
    }

    /// Report what is left and return the inner writer.
    pub(crate) fn finish(self) -> W {
        if let Some(p) = &self.progress {
            if self.pending > 0 {
                p.tarred(self.pending);
            }
        }
        self.inner
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            compression: Compression::default(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tar: TarOptions::from_env(),
            store_root: PathBuf::from("/"),
            cache: None,
            progress: None,
        }
    }
}

/// One built layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltLayer {
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The store paths in it (empty for the extra-files layer).
    pub store_paths: Vec<String>,
}

/// A built image, its blobs in the layout.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// The config digest.
    pub config_digest: Digest,
    /// Layers, bottom first.
    pub layers: Vec<BuiltLayer>,
    /// The plan they came from.
    pub plan: LayerPlan,
}

/// Write one layer's blob into the layout.
fn write_layer(
    entries: &LayerEntries,
    layout: &ImageLayout,
    opts: &BuildOptions,
) -> Result<(Digest, u64, Digest), BuildError> {
    let dir = layout.root().join("blobs").join("sha256");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Io { path, source }
    };
    let tmp = berth_oci::layout::output_temp(&dir).map_err(io(&dir))?;
    let file = tmp.as_file().try_clone().map_err(io(tmp.path()))?;
    let (digest, size, diff_id) = if opts.compression == Compression::None {
        // The blob is the tar: hash it once, no compressor in between.
        let mut tar = Reporting {
            inner: HashingWriter::new(BufWriter::with_capacity(256 << 10, file)),
            progress: opts.progress.clone(),
            pending: 0,
        };
        entries.write_to(&mut tar, opts.tar)?;
        let (mut buf, digest, size) = tar.finish().finish();
        buf.flush().map_err(io(tmp.path()))?;
        (digest.clone(), size, digest)
    } else {
        compress_layer(entries, file, opts).map_err(|e| match e {
            LayerWriteError::Tar(t) => BuildError::Tar(t),
            LayerWriteError::Io(source) => BuildError::Io {
                path: tmp.path().to_owned(),
                source,
            },
        })?
    };
    let dest = layout.blob_path(&digest);
    tmp.persist(&dest).map_err(|e| BuildError::Io {
        path: dest.clone(),
        source: e.error,
    })?;
    Ok((digest, size, diff_id))
}

enum LayerWriteError {
    Tar(TarError),
    Io(std::io::Error),
}

/// Tar, hash, compress and hash again into `file`: (digest, size, diff_id).
fn compress_layer(
    entries: &LayerEntries,
    file: std::fs::File,
    opts: &BuildOptions,
) -> Result<(Digest, u64, Digest), LayerWriteError> {
    let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let compressor = BlockCompressor::new(sink, opts.compression, opts.threads);
    let mut tar = Reporting {
        inner: HashingWriter::new(compressor),
        progress: opts.progress.clone(),
        pending: 0,
    };
    entries
        .write_to(&mut tar, opts.tar)
        .map_err(LayerWriteError::Tar)?;
    let (compressor, diff_id, _) = tar.finish().finish();
    let (sink, _) = compressor.finish().map_err(LayerWriteError::Io)?;
    let (mut buf, digest, size) = sink.finish();
    buf.flush().map_err(LayerWriteError::Io)?;
    Ok((digest, size, diff_id))
}

/// Build the image of `spec` into `layout` and tag it `tag` there.
pub fn build_image(
    spec: &ImageSpec,
    opts: &BuildOptions,
    layout: &ImageLayout,
    tag: Option<&str>,
) -> Result<BuiltImage, BuildError> {
    check_present(spec, opts)?;
    let base = spec
        .from_image
        .as_ref()
        .map(|f| Base::load(spec, f))
        .transpose()?;
    // The base's layers count against the runtimes' limit too.
    let budget_spec;
    let spec_for_plan = match &base {
        Some(b) if b.layers.len() + spec.layering.max_layers > RUNTIME_LAYER_LIMIT => {
            let room = RUNTIME_LAYER_LIMIT.saturating_sub(b.layers.len());
            if room < 2 {
                return Err(BuildError::Base(format!(
                    "fromImage {}: it has {} layers, which leaves no room under the runtimes' limit of {RUNTIME_LAYER_LIMIT}",
                    b.name,
                    b.layers.len()
                )));
            }
            let mut s = spec.clone();
            s.layering.max_layers = room;
            budget_spec = s;
            &budget_spec
        }
        _ => spec,
    };
    let plan = plan_layers(spec_for_plan);
    let jobs = layer_jobs(spec, &plan);
    if let Some(p) = &opts.progress {
        p.planned(jobs.len(), spec.closure.iter().map(|c| c.nar_size).sum());
    }
    let results = run_parallel(opts.threads, &jobs, |i| {
        let built = build_one(spec, opts, layout, &jobs[i]);
        if let Some(p) = &opts.progress {
            p.layer_done();
        }
        built
    });
    let layers = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    if let Some(b) = &base {
        b.copy_blobs(layout)?;
    }

    let config = config_json(spec, &layers, base.as_ref());
    let config_digest = layout.write_blob(&config)?;
    let manifest = manifest_json(
        spec,
        opts,
        &config_digest,
        config.len(),
        &layers,
        base.as_ref(),
    );
    let manifest_digest = layout.write_blob(&manifest)?;
    let descriptor = oci_descriptor(&manifest_digest, manifest.len(), spec);
    layout.add_manifest(descriptor, tag)?;
    Ok(BuiltImage {
        manifest_digest,
        manifest,
        config_digest,
        layers,
        plan,
    })
}

/// Build (or find in the cache) one layer.
fn build_one(
    spec: &ImageSpec,
    opts: &BuildOptions,
    layout: &ImageLayout,
    job: &LayerJob<'_>,
) -> Result<BuiltLayer, BuildError> {
    let key = cache_key(spec, opts, job);
    if let Some((cache, hit)) = opts.cache.as_ref().and_then(|c| Some((c, c.get(&key)?))) {
        if cache.provide_blob(layout, &hit.digest) {
            return Ok(BuiltLayer {
                digest: hit.digest,
                size: hit.size,
                diff_id: hit.diff_id,
                store_paths: job.paths.clone(),
            });
        }
    }
    let entries = job_entries(spec, opts, job)?;
    let (digest, size, diff_id) = write_layer(&entries, layout, opts)?;
    if let Some(cache) = &opts.cache {
        cache.keep_blob(layout, &digest);
        cache.put(
            &key,
            &CachedLayer {
                digest: digest.clone(),
                size,
                diff_id: diff_id.clone(),
            },
        );
    }
    Ok(BuiltLayer {
        digest,
        size,
        diff_id,
        store_paths: job.paths.clone(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use berth_oci::media_type;
    use serde_json::Value;

    use crate::spec::ExtraFile;
    use crate::spec::tests::sp;

    /// A chroot store under `root` with app → lib, app → data, lib → lib
    /// (self-reference), and its spec.
    pub(crate) fn fixture(root: &Path) -> ImageSpec {
        let mk = |name: &str, files: &[(&str, &[u8], u32)]| {
            let dir = root.join(sp(name).trim_start_matches('/'));
            for (rel, contents, mode) in files {
                let p = dir.join(rel);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, contents).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
            }
        };
        mk(
            "app-1.0",
            &[("bin/app", b"#!/bin/sh\necho hello from app\n", 0o755)],
        );
        mk(
            "lib-2.0",
            &[("lib/libx.so", &[0x7f, b'E', b'L', b'F', 1, 2, 3][..], 0o644)],
        );
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        mk("data-3.0", &[("share/data.bin", &big, 0o644)]);
        let json = serde_json::json!({
            "version": 1,
            "name": "fixture",
            "closure": [
                {"path": sp("app-1.0"), "narHash": "sha256:a", "narSize": 100, "references": [sp("lib-2.0"), sp("data-3.0")]},
                {"path": sp("lib-2.0"), "narHash": "sha256:b", "narSize": 200, "references": [sp("lib-2.0")]},
                {"path": sp("data-3.0"), "narHash": "sha256:c", "narSize": 3_000_000, "references": []},
            ],
            "roots": [sp("app-1.0")],
            "config": {"Entrypoint": [format!("{}/bin/app", sp("app-1.0"))], "Env": ["PATH=/bin"]},
            "extraFiles": [
                {"type": "directory", "path": "/tmp", "mode": "1777"},
                {"type": "symlink", "path": "/bin", "target": format!("{}/bin", sp("app-1.0"))},
                {"type": "file", "path": "/etc/passwd", "contents": "root:x:0:0::/:/bin/sh\n"},
            ],
            "annotations": {"org.opencontainers.image.revision": "abc123"},
        });
        ImageSpec::parse(json.to_string().as_bytes()).unwrap()
    }

    fn build(root: &Path, out: &Path, threads: usize, compression: Compression) -> BuiltImage {
        let opts = BuildOptions {
            compression,
            threads,
            tar: TarOptions::default(),
            store_root: root.to_owned(),
            cache: None,
            progress: None,
        };
        let layout = ImageLayout::create(out).unwrap();
        build_image(&fixture(root), &opts, &layout, Some("latest")).unwrap()
    }

    #[test]
    fn builds_are_reproducible_across_directories_and_threads() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let one = build(
            &a.path().join("store"),
            &a.path().join("out"),
            1,
            Compression::default(),
        );
        let two = build(
            &b.path().join("store"),
            &b.path().join("out"),
            2,
            Compression::default(),
        );
        assert_eq!(one.manifest_digest, two.manifest_digest);
        assert_eq!(one.layers.len(), 4, "three store paths and the extra files");
        // The format is pinned: this digest changes only when the output
        // bytes do (tar, compression, config or manifest layout).
        assert_eq!(
            one.manifest_digest.to_string(),
            "sha256:88e4e8d882ad9c01c21f278b4d86055c22330103852dda1ac0ce6f6c8b754d25",
            "the image format changed; if on purpose, update the golden digest"
        );
    }

    #[test]
    fn a_warm_cache_gives_the_same_image_without_reading_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let spec = fixture(&root);
        let layout = ImageLayout::create(dir.path().join("out")).unwrap();
        let opts = BuildOptions {
            store_root: root.clone(),
            cache: Some(LayerCache::new(dir.path().join("cache"))),
            threads: 2,
            tar: TarOptions::default(),
            ..BuildOptions::default()
        };
        let cold = build_image(&spec, &opts, &layout, Some("latest")).unwrap();
        // Make the store unreadable in a way a rebuild would notice: the
        // warm build must not look at it.
        let data = root
            .join(sp("data-3.0").trim_start_matches('/'))
            .join("share/data.bin");
        fs::write(&data, b"changed behind Nix's back").unwrap();
        let warm = build_image(&spec, &opts, &layout, Some("latest")).unwrap();
        assert_eq!(warm.manifest_digest, cold.manifest_digest);
        // Also into a fresh layout: the cache links its kept blobs in.
        let other = ImageLayout::create(dir.path().join("other")).unwrap();
        let linked = build_image(&spec, &opts, &other, Some("latest")).unwrap();
        assert_eq!(linked.manifest_digest, cold.manifest_digest);
        for l in &linked.layers {
            other.read_blob(&l.digest).unwrap();
        }
        // Without the cache the change shows (so the warm build really did
        // not read it).
        let uncached = BuildOptions {
            cache: None,
            ..opts
        };
        let fresh = build_image(&spec, &uncached, &layout, Some("latest")).unwrap();
        assert_ne!(fresh.manifest_digest, cold.manifest_digest);
    }

    #[test]
    fn progress_is_reported_for_every_layer_and_byte() {
        use std::sync::atomic::{AtomicU64, Ordering};
        #[derive(Default)]
        struct Count {
            layers: AtomicU64,
            planned: AtomicU64,
            bytes: AtomicU64,
            done: AtomicU64,
        }
        impl BuildProgress for Count {
            fn planned(&self, layers: usize, bytes: u64) {
                self.layers.store(layers as u64, Ordering::SeqCst);
                self.planned.store(bytes, Ordering::SeqCst);
            }
            fn tarred(&self, bytes: u64) {
                self.bytes.fetch_add(bytes, Ordering::SeqCst);
            }
            fn layer_done(&self) {
                self.done.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let spec = fixture(&root);
        let count = std::sync::Arc::new(Count::default());
        let opts = BuildOptions {
            store_root: root,
            tar: TarOptions::default(),
            progress: Some(count.clone()),
            ..BuildOptions::default()
        };
        let layout = ImageLayout::create(dir.path().join("out")).unwrap();
        let img = build_image(&spec, &opts, &layout, None).unwrap();
        assert_eq!(count.layers.load(Ordering::SeqCst), 4);
        assert_eq!(count.done.load(Ordering::SeqCst), 4);
        assert_eq!(count.planned.load(Ordering::SeqCst), 3_000_300);
        // Every byte of every layer tar was reported.
        let config: Value =
            serde_json::from_slice(&layout.read_blob(&img.config_digest).unwrap()).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
        let tar_bytes = count.bytes.load(Ordering::SeqCst);
        assert!(tar_bytes > 3_000_000 && tar_bytes % 512 == 0, "{tar_bytes}");
    }

    #[test]
    fn manifest_and_config_carry_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let img = build(
            &dir.path().join("store"),
            &dir.path().join("out"),
            2,
            Compression::Zstd { level: 3 },
        );
        let m: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(
            m["annotations"]["org.opencontainers.image.revision"],
            "abc123"
        );
        assert_eq!(
            m["annotations"]["org.opencontainers.image.title"],
            "fixture"
        );
        let layers = m["layers"].as_array().unwrap();
        assert!(
            layers
                .iter()
                .all(|l| l["mediaType"] == media_type::OCI_LAYER_ZSTD)
        );
        assert!(layers.iter().all(|l| {
            l["annotations"][COMPRESSOR_ANNOTATION]
                .as_str()
                .unwrap()
                .starts_with("zstd;")
        }));
        assert_eq!(
            layers[0]["annotations"][STORE_PATHS_ANNOTATION],
            sp("data-3.0")
        );
        let layout = ImageLayout::open(dir.path().join("out")).unwrap();
        let config: Value =
            serde_json::from_slice(&layout.read_blob(&img.config_digest).unwrap()).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
        assert_eq!(config["history"][3]["created_by"], "berth: extra files");
        assert_eq!(config["config"]["Env"][0], "PATH=/bin");
        assert_eq!(config["created"], "1970-01-01T00:00:01Z");
        let found = layout.find_manifest(Some("latest")).unwrap().unwrap();
        assert_eq!(found.digest().to_string(), img.manifest_digest.to_string());
        // Every blob verifies.
        for l in &img.layers {
            layout.read_blob(&l.digest).unwrap();
        }
    }

    #[test]
    fn a_missing_store_path_is_a_clear_error_and_tags_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let spec = fixture(&root);
        fs::remove_dir_all(root.join(sp("lib-2.0").trim_start_matches('/'))).unwrap();
        let layout = ImageLayout::create(dir.path().join("out")).unwrap();
        let opts = BuildOptions {
            store_root: root,
            ..BuildOptions::default()
        };
        let err = build_image(&spec, &opts, &layout, Some("latest")).unwrap_err();
        assert!(err.to_string().contains("lib-2.0 is not present"), "{err}");
        assert!(layout.find_manifest(Some("latest")).unwrap().is_none());
    }

    #[test]
    fn contents_are_linked_into_the_root_and_owners_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let mut spec = fixture(&root);
        let app = spec.roots[0].clone();
        spec.contents = vec![app.clone()];
        // Without the fixture's own /bin link, which would win.
        spec.extra_files.retain(|f| f.path() != "/bin");
        spec.extra_files.push(ExtraFile::Directory {
            path: "/data".into(),
            mode: Some("0750".into()),
            uid: Some(1000),
            gid: Some(100),
        });
        spec.validate().unwrap();
        let layout = ImageLayout::create(dir.path().join("out")).unwrap();
        let opts = BuildOptions {
            store_root: root,
            tar: TarOptions::default(),
            ..BuildOptions::default()
        };
        let img = build_image(&spec, &opts, &layout, None).unwrap();
        let top = img.layers.last().unwrap();
        assert!(top.store_paths.is_empty(), "the extra layer is on top");
        let blob = layout.blob_path(&top.digest);
        let listing = std::process::Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(&blob)
            .output()
            .unwrap();
        assert!(listing.status.success());
        let text = String::from_utf8(listing.stdout).unwrap();
        assert!(
            text.lines()
                .any(|l| l.contains("bin/app -> ") && l.contains(&format!("{app}/bin/app"))),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("drwxr-x---")
                && l.contains("1000/100")
                && l.ends_with(" data/")),
            "{text}"
        );
    }
}
