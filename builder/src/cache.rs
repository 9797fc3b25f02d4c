//! The layer cache: what a layer built to, keyed by everything that decides
//! its bytes — the tar format version, the tar options, the compressor id
//! and the layer's contents as Nix names them (each store path with its
//! narHash; for the extra-files layer, the files themselves). A hit whose
//! blob is still in the output layout means the layer's store paths are
//! never read again.
//!
//! Entries are small JSON files written atomically; a corrupt or foreign
//! entry is treated as a miss, never trusted. The cache also keeps each
//! built blob (hard-linked, so no copy) in its own OCI layout, `staging`,
//! from which a hit is linked into whatever layout is being written: a
//! build into a fresh directory still reads no unchanged store path.

use std::path::{Path, PathBuf};

use berth_oci::Digest;
use serde::{Deserialize, Serialize};

/// Bumped whenever the canonical tar changes its bytes for the same input.
pub const TAR_FORMAT: &str = "berth-tar-1";

/// What a cached layer built to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
}

/// A directory of cached layer descriptors.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default location: `$XDG_CACHE_HOME/berth` or `~/.cache/berth`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|d| d.join("berth"))
    }

    /// The key for a layer: a digest over the format, options, compressor
    /// and contents, in a fixed order.
    pub fn key(parts: &[&str]) -> Digest {
        let mut h = berth_oci::Algorithm::Sha256.hasher();
        h.update(TAR_FORMAT.as_bytes());
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        h.finish()
    }

    /// The cache's own layout: built blobs, and the staging area for
    /// pushes without another output.
    pub fn staging(&self) -> PathBuf {
        self.dir.join("staging")
    }

    /// Where the cache keeps the blob `digest` (it may not be there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.staging()
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Keep the blob `digest` of `layout` in the cache (a hard link; best
    /// effort).
    pub fn keep_blob(&self, layout: &berth_oci::ImageLayout, digest: &Digest) {
        let Ok(staging) = berth_oci::ImageLayout::create(self.staging()) else {
            return;
        };
        let (src, dst) = (layout.blob_path(digest), staging.blob_path(digest));
        if src != dst && !dst.exists() {
            let _ = std::fs::hard_link(&src, &dst);
        }
    }

    /// Put the cached blob `digest` into `layout`: a hard link when both are
    /// on one filesystem, else a copy checked against the digest. Returns
    /// whether the layout now has it.
    pub fn provide_blob(&self, layout: &berth_oci::ImageLayout, digest: &Digest) -> bool {
        let src = self.blob_path(digest);
        let dst = layout.blob_path(digest);
        if dst.exists() {
            return true;
        }
        if !src.is_file() {
            return false;
        }
        if std::fs::hard_link(&src, &dst).is_ok() {
            return true;
        }
        match std::fs::File::open(&src) {
            Ok(f) => layout.write_blob_from(f, Some(digest)).is_ok(),
            Err(_) => false,
        }
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join("layers").join(key.hex())
    }

    /// The cached layer for `key`, if any (a damaged entry is a miss).
    pub fn get(&self, key: &Digest) -> Option<CachedLayer> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Record a built layer (best effort: a cache that cannot be written
    /// only costs a rebuild next time).
    pub fn put(&self, key: &Digest, layer: &CachedLayer) {
        let dir = self.dir.join("layers");
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
            std::io::Write::write_all(
                &mut tmp,
                &serde_json::to_vec(layer).map_err(std::io::Error::other)?,
            )?;
            tmp.persist(self.path(key)).map_err(|e| e.error)?;
            Ok(())
        };
        let _ = write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(dir.path());
        let key = LayerCache::key(&["gzip;level=6", "/nix/store/a-x", "sha256:1"]);
        assert_ne!(
            key,
            LayerCache::key(&["gzip;level=6", "/nix/store/a-x", "sha256:2"])
        );
        assert_ne!(
            LayerCache::key(&["ab", "c"]),
            LayerCache::key(&["a", "bc"]),
            "parts are delimited"
        );
        assert!(cache.get(&key).is_none());
        let layer = CachedLayer {
            digest: Digest::sha256(b"blob"),
            size: 4,
            diff_id: Digest::sha256(b"tar"),
        };
        cache.put(&key, &layer);
        assert_eq!(cache.get(&key), Some(layer));
        std::fs::write(dir.path().join("layers").join(key.hex()), b"{garbage").unwrap();
        assert!(cache.get(&key).is_none());
    }

    #[test]
    fn blobs_are_kept_and_provided() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(dir.path().join("cache"));
        let a = berth_oci::ImageLayout::create(dir.path().join("a")).unwrap();
        let b = berth_oci::ImageLayout::create(dir.path().join("b")).unwrap();
        let d = a.write_blob(b"layer bytes").unwrap();
        assert!(!cache.provide_blob(&b, &d), "nothing kept yet");
        cache.keep_blob(&a, &d);
        assert!(cache.provide_blob(&b, &d));
        assert_eq!(b.read_blob(&d).unwrap(), b"layer bytes");
    }
}
