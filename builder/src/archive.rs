//! Image archives: `oci-archive` (a tar of an OCI image layout holding just
//! one image) and `docker-archive` (the `manifest.json` that `docker load`
//! and `podman load` read, naming the config and layers by their
//! `blobs/sha256/…` paths as Docker 25's `docker save` does). Both hold
//! the blob directories, the layers bottom first, the config, the manifest
//! and then the archive's index files, with the canonical tar's fixed
//! metadata, so they are reproducible too; they are written atomically: a
//! failed write leaves no file that looks complete. [`crate::stream`]
//! writes the same bytes for an uncompressed image without a layout.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use berth_oci::{Digest, ImageLayout, Manifest};
use serde_json::json;

use crate::canonical_tar::{BLOCK, TarError, TarOptions, dir_header, file_header, padding};
use crate::image::BuildError;

/// Which archive to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveKind {
    /// An OCI layout, the manifest named `tag` in its index.
    Oci {
        /// `org.opencontainers.image.ref.name`.
        tag: String,
    },
    /// An OCI layout plus Docker's `manifest.json`.
    Docker {
        /// `RepoTags` entry (`name:tag`), if any.
        repo_tag: Option<String>,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Mode of files in an archive.
pub(crate) const FILE_MODE: u32 = 0o444;
/// Mode of directories in an archive.
const DIR_MODE: u32 = 0o555;

/// The archive name of a blob: `blobs/sha256/<hex>`.
pub(crate) fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// What every archive starts with: the `blobs/` and `blobs/sha256/`
/// directories. The layers follow, bottom first, then [`archive_tail`].
pub(crate) fn archive_head() -> Vec<u8> {
    let mut head = Vec::new();
    for d in ["blobs/", "blobs/sha256/"] {
        head.extend_from_slice(&dir_header(d, DIR_MODE, TarOptions::default()));
    }
    head
}

/// What follows the layers: the config and manifest blobs, then Docker's
/// `manifest.json` or the OCI layout's `index.json` and `oci-layout`, then
/// the end of the archive. A Docker archive carries no OCI layout files:
/// with them, loaders take it for an OCI archive and ignore the RepoTags of
/// manifest.json.
pub(crate) fn archive_tail(
    kind: &ArchiveKind,
    config: (&Digest, &[u8]),
    manifest: (&Digest, &[u8]),
    manifest_media_type: &str,
    layers: &[&Digest],
) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (blob_name(config.0), config.1.to_vec()),
        (blob_name(manifest.0), manifest.1.to_vec()),
    ];
    match kind {
        ArchiveKind::Docker { repo_tag } => {
            let docker = json!([{
                "Config": blob_name(config.0),
                "RepoTags": repo_tag.iter().collect::<Vec<_>>(),
                "Layers": layers.iter().map(|d| blob_name(d)).collect::<Vec<_>>(),
            }]);
            files.push((
                "manifest.json".into(),
                serde_json::to_vec(&docker).expect("JSON"),
            ));
        }
        ArchiveKind::Oci { tag } => {
            let index = json!({
                "schemaVersion": 2,
                "mediaType": berth_oci::media_type::OCI_INDEX,
                "manifests": [{
                    "mediaType": manifest_media_type,
                    "digest": manifest.0.to_string(),
                    "size": manifest.1.len(),
                    "annotations": {"org.opencontainers.image.ref.name": tag},
                }],
            });
            files.push((
                "index.json".into(),
                serde_json::to_vec(&index).expect("JSON"),
            ));
            files.push((
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ));
        }
    }
    let mut tail = Vec::new();
    for (name, bytes) in &files {
        let size = bytes.len() as u64;
        tail.extend_from_slice(&file_header(name, FILE_MODE, size, TarOptions::default()));
        tail.extend_from_slice(bytes);
        tail.resize(tail.len() + padding(size), 0);
    }
    tail.resize(tail.len() + 2 * BLOCK, 0);
    tail
}

/// Write the image `manifest` of `layout` as an archive at `dest`: the
/// same bytes [`crate::stream::stream_archive`] writes for the same image.
pub fn write_archive(
    layout: &ImageLayout,
    manifest: &Digest,
    kind: &ArchiveKind,
    dest: &Path,
) -> Result<(), BuildError> {
    let manifest_bytes = layout.read_blob(manifest)?;
    let invalid = |e: &dyn std::fmt::Display| BuildError::Io {
        path: layout.blob_path(manifest),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    };
    let parsed = Manifest::parse(&manifest_bytes, None).map_err(|e| invalid(&e))?;
    let blobs = parsed.blobs().map_err(|e| invalid(&e))?;
    let Some((config, layers)) = blobs.split_first() else {
        return Err(invalid(
            &"an archive holds one image manifest, not an index",
        ));
    };
    let config_bytes = layout.read_blob(&config.digest)?;

    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = berth_oci::layout::output_temp(dir).map_err(io(dir))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        w.write_all(&archive_head()).map_err(io(dest))?;
        for layer in layers {
            let path = layout.blob_path(&layer.digest);
            let src = File::open(&path).map_err(io(&path))?;
            let size = src.metadata().map_err(io(&path))?.len();
            if size != layer.size {
                return Err(TarError::Changed(path).into());
            }
            let name = blob_name(&layer.digest);
            w.write_all(&file_header(&name, FILE_MODE, size, TarOptions::default()))
                .map_err(io(dest))?;
            let copied = std::io::copy(&mut src.take(size), &mut w).map_err(io(&path))?;
            if copied != size {
                return Err(TarError::Changed(path).into());
            }
            w.write_all(&[0u8; BLOCK][..padding(size)])
                .map_err(io(dest))?;
        }
        let layer_digests: Vec<&Digest> = layers.iter().map(|l| &l.digest).collect();
        w.write_all(&archive_tail(
            kind,
            (&config.digest, &config_bytes),
            (manifest, &manifest_bytes),
            parsed.media_type(),
            &layer_digests,
        ))
        .map_err(io(dest))?;
        w.flush().map_err(io(dest))?;
    }
    tmp.persist(dest).map_err(|err| BuildError::Io {
        path: dest.to_owned(),
        source: err.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tests::fixture;
    use crate::{BuildOptions, build_image};

    #[test]
    fn archives_are_reproducible_and_hold_one_image() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let spec = fixture(&root);
        let layout = ImageLayout::create(dir.path().join("out")).unwrap();
        let opts = BuildOptions {
            store_root: root,
            tar: TarOptions::default(),
            ..BuildOptions::default()
        };
        let img = build_image(&spec, &opts, &layout, Some("a")).unwrap();
        // Another blob in the layout must not end up in the archive.
        layout.write_blob(b"unrelated").unwrap();
        let kind = ArchiveKind::Docker {
            repo_tag: Some("fixture:1".into()),
        };
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        write_archive(&layout, &img.manifest_digest, &kind, &a).unwrap();
        write_archive(&layout, &img.manifest_digest, &kind, &b).unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
        let listing = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&a)
            .output()
            .unwrap();
        let names = String::from_utf8(listing.stdout).unwrap();
        assert!(names.lines().any(|l| l == "manifest.json"));
        assert!(
            !names.lines().any(|l| l == "index.json"),
            "no OCI layout in a Docker archive"
        );
        let blobs = names
            .lines()
            .filter(|l| l.starts_with("blobs/sha256/") && !l.ends_with('/'))
            .count();
        assert_eq!(
            blobs,
            1 + 1 + img.layers.len(),
            "manifest, config and layers only"
        );
    }
}
