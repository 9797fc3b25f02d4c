//! Image archives: `oci-archive` (a tar of an OCI image layout holding just
//! one image) and `docker-archive` (the `manifest.json` that `docker load`
//! and `podman load` read, naming the config and layers by their
//! `blobs/sha256/…` paths as Docker 25's `docker save` does). Both are
//! written with the canonical tar writer, so they are reproducible too, and
//! atomically: a failed write leaves no file that looks complete.

use std::io::BufWriter;
use std::path::Path;

use berth_oci::{Digest, ImageLayout, Manifest};
use serde_json::json;

use crate::canonical_tar::{LayerEntries, TarOptions};
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

/// Write the image `manifest` of `layout` as an archive at `dest`.
pub fn write_archive(
    layout: &ImageLayout,
    manifest: &Digest,
    kind: &ArchiveKind,
    dest: &Path,
) -> Result<(), BuildError> {
    let manifest_bytes = layout.read_blob(manifest)?;
    let parsed = Manifest::parse(&manifest_bytes, None).map_err(|e| BuildError::Io {
        path: layout.blob_path(manifest),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    let blobs = parsed.blobs().map_err(|e| BuildError::Io {
        path: layout.blob_path(manifest),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;

    let mut e = LayerEntries::new();
    // A Docker archive carries no OCI layout files: with them, loaders take
    // it for an OCI archive and ignore the RepoTags of manifest.json.
    if let ArchiveKind::Oci { tag } = kind {
        e.add_file("/oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o444)?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": berth_oci::media_type::OCI_INDEX,
            "manifests": [{
                "mediaType": parsed.media_type(),
                "digest": manifest.to_string(),
                "size": manifest_bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        e.add_file(
            "/index.json",
            &serde_json::to_vec(&index).expect("JSON"),
            0o444,
        )?;
    }
    let blob_name = |d: &Digest| format!("blobs/{}/{}", d.algorithm(), d.hex());
    e.add_source_file(
        &format!("/{}", blob_name(manifest)),
        &layout.blob_path(manifest),
        0o444,
    )?;
    for b in &blobs {
        e.add_source_file(
            &format!("/{}", blob_name(&b.digest)),
            &layout.blob_path(&b.digest),
            0o444,
        )?;
    }
    if let ArchiveKind::Docker { repo_tag } = kind {
        let docker = json!([{
            "Config": blob_name(&blobs[0].digest),
            "RepoTags": repo_tag.iter().collect::<Vec<_>>(),
            "Layers": blobs[1..].iter().map(|b| blob_name(&b.digest)).collect::<Vec<_>>(),
        }]);
        e.add_file(
            "/manifest.json",
            &serde_json::to_vec(&docker).expect("JSON"),
            0o444,
        )?;
    }

    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        e.write_to(&mut w, TarOptions::default())?;
        std::io::Write::flush(&mut w).map_err(io(dest))?;
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
