//! Streamed archives: an uncompressed image written straight into a
//! `docker-archive` or `oci-archive` file, every layer byte written once.
//! An uncompressed layer's length is known before it is written (the
//! canonical tar's length follows from the sizes recorded when its files
//! were listed), so each layer gets its place in the archive up front and
//! the layers are written in parallel, each at its own offset, hashed on
//! the way; a layer's tar header, which names it by its digest, is written
//! once the layer is done. The config, the manifest and the archive's own
//! index files follow the layers. Same spec → same archive bytes, on any
//! thread count.
//!
//! A cached layer (its blob kept by the layer cache) is copied in by the
//! kernel instead of being read from the store and hashed again. The file
//! appears under its name only when complete.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use berth_oci::Digest;

use crate::archive::{ArchiveKind, FILE_MODE, archive_head, archive_tail, blob_name};
use crate::canonical_tar::{BLOCK, TarError, TarOptions, file_header, padding};
use crate::compress::{Compression, HashingWriter};
use crate::image::{BuildError, BuildOptions, BuiltImage, BuiltLayer};
use crate::jobs::{LayerJob, cache_key, check_present, job_entries, layer_jobs, run_parallel};
use crate::manifest::{config_json, manifest_json};
use crate::plan::plan_layers;
use crate::spec::ImageSpec;

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A writer that writes at increasing offsets of a shared file.
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl Write for At<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Build the image of `spec` uncompressed, straight into an archive at
/// `dest`. `opts.compression` must be [`Compression::None`].
pub fn stream_archive(
    spec: &ImageSpec,
    opts: &BuildOptions,
    kind: &ArchiveKind,
    dest: &Path,
) -> Result<BuiltImage, BuildError> {
    assert_eq!(
        opts.compression,
        Compression::None,
        "only uncompressed layers have a length known in advance"
    );
    check_present(spec, opts)?;
    let plan = plan_layers(spec);
    let jobs = layer_jobs(spec, &plan);
    if let Some(p) = &opts.progress {
        p.planned(jobs.len(), spec.closure.iter().map(|c| c.nar_size).sum());
    }
    let tar = TarOptions::default();

    // List every layer's files (or find it in the cache) to learn its
    // length.
    let listed = run_parallel(opts.threads, &jobs, |i| list(spec, opts, &jobs[i]));
    let listed = listed.into_iter().collect::<Result<Vec<_>, _>>()?;

    // Place them: the two directories, then each layer's header and data.
    // Blob names have a fixed length, so a header's length is known before
    // its digest is.
    let placeholder = "blobs/sha256/".to_owned() + &"0".repeat(64);
    let mut offset = 2 * BLOCK as u64;
    let mut places = Vec::with_capacity(listed.len());
    for l in &listed {
        let header = file_header(&placeholder, FILE_MODE, l.len, tar).len() as u64;
        places.push((offset, offset + header));
        offset += header + l.len + padding(l.len) as u64;
    }

    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = berth_oci::layout::output_temp(dir).map_err(io_at(dir))?;
    let file = tmp.as_file();
    let tmp_path = tmp.path().to_owned();
    let head = archive_head();
    debug_assert_eq!(head.len(), 2 * BLOCK);
    file.write_all_at(&head, 0).map_err(io_at(&tmp_path))?;

    let written = run_parallel(opts.threads, &jobs, |i| {
        let r = write_layer_at(opts, &listed[i], file, places[i].1, &tmp_path);
        if let Some(p) = &opts.progress {
            p.layer_done();
        }
        let digest = r?;
        // The padding after the data is left as the zeros of the sparse
        // file (or of the next header), so only the header is left.
        let header = file_header(&blob_name(&digest), FILE_MODE, listed[i].len, tar);
        file.write_all_at(&header, places[i].0)
            .map_err(io_at(&tmp_path))?;
        Ok::<_, BuildError>(BuiltLayer {
            digest: digest.clone(),
            size: listed[i].len,
            diff_id: digest,
            store_paths: jobs[i].paths.clone(),
        })
    });
    let layers = written.into_iter().collect::<Result<Vec<_>, _>>()?;

    let config = config_json(spec, &layers, None);
    let config_digest = Digest::sha256(&config);
    let manifest = manifest_json(spec, opts, &config_digest, config.len(), &layers, None);
    let manifest_digest = Digest::sha256(&manifest);
    let layer_digests: Vec<&Digest> = layers.iter().map(|l| &l.digest).collect();
    let end = archive_tail(
        kind,
        (&config_digest, &config),
        (&manifest_digest, &manifest),
        berth_oci::media_type::OCI_MANIFEST,
        &layer_digests,
    );
    file.write_all_at(&end, offset).map_err(io_at(&tmp_path))?;
    file.set_len(offset + end.len() as u64)
        .map_err(io_at(&tmp_path))?;
    tmp.persist(dest).map_err(|err| BuildError::Io {
        path: dest.to_owned(),
        source: err.error,
    })?;
    Ok(BuiltImage {
        manifest_digest,
        manifest,
        config_digest,
        layers,
        plan,
    })
}

/// A layer ready to be written: its files, or its cached blob.
struct Listed {
    len: u64,
    source: Source,
}

enum Source {
    Entries(crate::canonical_tar::LayerEntries),
    /// A blob the layer cache kept, and its digest.
    Cached(std::path::PathBuf, Digest),
}

fn list(spec: &ImageSpec, opts: &BuildOptions, job: &LayerJob<'_>) -> Result<Listed, BuildError> {
    if let Some(cache) = &opts.cache {
        if let Some(hit) = cache.get(&cache_key(spec, opts, job)) {
            let path = cache.blob_path(&hit.digest);
            let on_disk = std::fs::metadata(&path).map(|m| m.len()).ok();
            if on_disk == Some(hit.size) && hit.digest == hit.diff_id {
                return Ok(Listed {
                    len: hit.size,
                    source: Source::Cached(path, hit.digest),
                });
            }
        }
    }
    let entries = job_entries(spec, opts, job)?;
    Ok(Listed {
        len: entries.tar_len(),
        source: Source::Entries(entries),
    })
}

/// Write one layer's tar at `pos` of `file`; its digest.
fn write_layer_at(
    opts: &BuildOptions,
    listed: &Listed,
    file: &File,
    pos: u64,
    tmp_path: &Path,
) -> Result<Digest, BuildError> {
    match &listed.source {
        Source::Cached(path, digest) => {
            // Kernel to kernel (copy_file_range): the blob was hashed when
            // the cache kept it and is named by its digest.
            let mut src = File::open(path).map_err(io_at(path))?;
            let mut dst = File::options()
                .write(true)
                .open(tmp_path)
                .map_err(io_at(tmp_path))?;
            dst.seek(SeekFrom::Start(pos)).map_err(io_at(tmp_path))?;
            let copied =
                std::io::copy(&mut (&mut src).take(listed.len), &mut dst).map_err(io_at(path))?;
            if copied != listed.len {
                return Err(TarError::Changed(path.clone()).into());
            }
            if let Some(p) = &opts.progress {
                p.tarred(copied);
            }
            Ok(digest.clone())
        }
        Source::Entries(entries) => {
            let mut w = crate::image::Reporting::new(
                HashingWriter::new(BufWriter::with_capacity(256 << 10, At { file, pos })),
                opts.progress.clone(),
            );
            let n = entries.write_to(&mut w, opts.tar)?;
            let (mut buf, digest, _) = w.finish().finish();
            buf.flush().map_err(io_at(tmp_path))?;
            if n != listed.len {
                return Err(BuildError::Io {
                    path: tmp_path.to_owned(),
                    source: std::io::Error::other(format!(
                        "a layer's tar came to {n} bytes, {} were planned",
                        listed.len
                    )),
                });
            }
            Ok(digest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::write_archive;
    use crate::cache::LayerCache;
    use crate::image::tests::fixture;
    use crate::{BuildOptions, build_image};
    use berth_oci::ImageLayout;

    fn opts(root: &Path, threads: usize, cache: Option<LayerCache>) -> BuildOptions {
        BuildOptions {
            store_root: root.to_owned(),
            tar: TarOptions::default(),
            compression: Compression::None,
            threads,
            cache,
            ..BuildOptions::default()
        }
    }

    #[test]
    fn streamed_archive_is_the_archive_of_the_built_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let spec = fixture(&root);
        let layout = ImageLayout::create(dir.path().join("out")).unwrap();
        let built = build_image(&spec, &opts(&root, 2, None), &layout, None).unwrap();
        let kinds = [
            ArchiveKind::Docker {
                repo_tag: Some("fixture:1".into()),
            },
            ArchiveKind::Oci { tag: "1".into() },
        ];
        for kind in &kinds {
            let from_layout = dir.path().join("layout.tar");
            write_archive(&layout, &built.manifest_digest, kind, &from_layout).unwrap();
            let expected = std::fs::read(&from_layout).unwrap();
            for threads in [1, 2] {
                let streamed = dir.path().join(format!("streamed-{threads}.tar"));
                let image =
                    stream_archive(&spec, &opts(&root, threads, None), kind, &streamed).unwrap();
                assert_eq!(image.manifest_digest, built.manifest_digest);
                assert!(
                    std::fs::read(&streamed).unwrap() == expected,
                    "{kind:?} with {threads} threads differs from the layout's archive"
                );
            }
            // GNU tar reads it and finds each layer under its digest.
            let listing = std::process::Command::new("tar")
                .arg("-tvf")
                .arg(&from_layout)
                .output()
                .unwrap();
            assert!(listing.status.success());
            let text = String::from_utf8(listing.stdout).unwrap();
            for l in &built.layers {
                assert!(text.contains(&blob_name(&l.digest)), "{text}");
            }
        }
    }

    #[test]
    fn cached_layers_are_copied_in_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let spec = fixture(&root);
        let cache = LayerCache::new(dir.path().join("cache"));
        let layout = ImageLayout::create(dir.path().join("out")).unwrap();
        let with_cache = opts(&root, 2, Some(cache.clone()));
        let built = build_image(&spec, &with_cache, &layout, None).unwrap();
        let kind = ArchiveKind::Docker { repo_tag: None };
        let (cold, warm) = (dir.path().join("cold.tar"), dir.path().join("warm.tar"));
        stream_archive(&spec, &opts(&root, 1, None), &kind, &cold).unwrap();
        // Every layer is a cache hit now: break the store to prove it is
        // not read.
        std::fs::rename(&root, dir.path().join("moved")).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        for p in &spec.closure {
            std::fs::create_dir_all(root.join(p.path.trim_start_matches('/'))).unwrap();
        }
        let image = stream_archive(&spec, &with_cache, &kind, &warm).unwrap();
        assert_eq!(image.manifest_digest, built.manifest_digest);
        assert!(std::fs::read(&cold).unwrap() == std::fs::read(&warm).unwrap());
    }

    #[test]
    fn a_missing_store_path_leaves_no_archive() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let spec = fixture(&root);
        std::fs::remove_dir_all(root.join(spec.closure[0].path.trim_start_matches('/'))).unwrap();
        let dest = dir.path().join("out.tar");
        let err = stream_archive(
            &spec,
            &opts(&root, 2, None),
            &ArchiveKind::Docker { repo_tag: None },
            &dest,
        )
        .unwrap_err();
        assert!(matches!(err, BuildError::MissingStorePath(..)), "{err}");
        assert!(!dest.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the store is left: {leftovers:?}");
    }
}
