//! The layer cache: what a layer built to, keyed by everything that decides
//! its bytes — the tar format version, the tar options, the compressor id
//! and the layer's contents as Nix names them (each store path with its
//! narHash; for the extra-files layer, the files themselves). A hit whose
//! blob is still in the output layout means the layer's store paths are
//! never read again.
//!
//! Entries are small JSON files written atomically; a corrupt or foreign
//! entry is treated as a miss, never trusted.

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
}
