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
    /// The cache's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

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
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        let layer: CachedLayer = serde_json::from_slice(&bytes).ok()?;
        // A hit is a use: [`Self::prune`] keeps what was used last.
        touch(&path);
        touch(&self.blob_path(&layer.digest));
        Some(layer)
    }

    /// Record a built layer (best effort: a cache that cannot be written
    /// only costs a rebuild next time).
    pub fn put(&self, key: &Digest, layer: &CachedLayer) {
        let dir = self.dir.join("layers");
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let mut tmp = berth_oci::layout::output_temp(&dir)?;
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

/// Mark `path` as used now (best effort: its mtime orders pruning).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// What [`LayerCache::prune`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Blobs deleted from the staging layout.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Layer entries deleted.
    pub entries: usize,
}

/// Layer entries whose blob is gone are kept this long after their last
/// use (the blob may still be in an output layout a rebuild writes to).
const ENTRY_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

impl LayerCache {
    /// Keep the cache within `max_bytes` of staging blobs: delete the least
    /// recently used (oldest mtime; a hit or a build touches them) until
    /// the rest fit, forget the staging layout's manifest list (it is only
    /// a blob store, and its index.json would otherwise grow by an entry
    /// per image built), and delete layer entries whose blob is gone and
    /// that were not used for 30 days. Other processes may be using the
    /// cache: a blob deleted under a build is a cache miss there, never a
    /// wrong image, because every hit is checked against the layout.
    pub fn prune(&self, max_bytes: u64) -> std::io::Result<Pruned> {
        let mut pruned = Pruned::default();
        let staging = self.staging();
        let blobs_dir = staging.join("blobs").join("sha256");
        let mut blobs = Vec::new();
        match std::fs::read_dir(&blobs_dir) {
            Ok(dir) => {
                for entry in dir {
                    let entry = entry?;
                    let meta = entry.metadata()?;
                    // Temporary files of builds in progress start with '.'.
                    let name = entry.file_name();
                    if !meta.is_file() || name.to_string_lossy().starts_with('.') {
                        continue;
                    }
                    blobs.push((meta.modified()?, meta.len(), entry.path()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Oldest first; ties by path, so the result does not depend on the
        // directory's order.
        blobs.sort();
        let mut total: u64 = blobs.iter().map(|b| b.1).sum();
        for (_, len, path) in &blobs {
            if total <= max_bytes {
                break;
            }
            match std::fs::remove_file(path) {
                Ok(()) => {
                    pruned.blobs += 1;
                    pruned.bytes += len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            total -= len;
        }
        if staging.join("index.json").exists() {
            let layout = berth_oci::ImageLayout::create(&staging).map_err(std::io::Error::other)?;
            layout.clear_manifests().map_err(std::io::Error::other)?;
        }
        let now = std::time::SystemTime::now();
        if let Ok(dir) = std::fs::read_dir(self.dir.join("layers")) {
            for entry in dir.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > ENTRY_TTL);
                if !old || entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let blob_gone = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<CachedLayer>(&b).ok())
                    .is_none_or(|l| !self.blob_path(&l.digest).exists());
                if blob_gone && std::fs::remove_file(&path).is_ok() {
                    pruned.entries += 1;
                }
            }
        }
        Ok(pruned)
    }
}

/// Parse a size such as `10GiB`, `512M`, `1T` or `1048576` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => return Err(format!("{s:?} is not a size like 10GiB, 512MiB or 1048576")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size like 10GiB, 512MiB or 1048576"))
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

    #[test]
    fn prune_drops_least_recently_used_blobs_and_the_manifest_list() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(dir.path().join("cache"));
        let out = berth_oci::ImageLayout::create(dir.path().join("out")).unwrap();
        let old_time = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let mut kept = Vec::new();
        for (i, body) in [&[1u8; 1000][..], &[2u8; 1000], &[3u8; 1000]]
            .iter()
            .enumerate()
        {
            let d = out.write_blob(body).unwrap();
            cache.keep_blob(&out, &d);
            let key = LayerCache::key(&[&i.to_string()]);
            cache.put(
                &key,
                &CachedLayer {
                    digest: d.clone(),
                    size: 1000,
                    diff_id: d.clone(),
                },
            );
            let f = std::fs::File::open(cache.blob_path(&d)).unwrap();
            f.set_modified(old_time + std::time::Duration::from_secs(i as u64))
                .unwrap();
            kept.push((key, d));
        }
        // The oldest is used again: it becomes the newest.
        assert!(cache.get(&kept[0].0).is_some());
        let staging = berth_oci::ImageLayout::create(cache.staging()).unwrap();
        let m = staging.write_blob(b"{}").unwrap();
        staging
            .add_manifest(
                berth_oci::spec::Descriptor::new(
                    berth_oci::spec::MediaType::ImageManifest,
                    2,
                    berth_oci::spec::Digest::from(&m),
                ),
                None,
            )
            .unwrap();

        let pruned = cache.prune(2100).unwrap();
        assert_eq!((pruned.blobs, pruned.bytes), (1, 1000), "{pruned:?}");
        assert!(
            !cache.blob_path(&kept[1].1).exists(),
            "least recently used goes"
        );
        assert!(cache.blob_path(&kept[0].1).exists(), "a hit keeps it");
        assert!(cache.blob_path(&kept[2].1).exists());
        assert!(cache.blob_path(&m).exists(), "the manifest blob was fresh");
        assert!(
            staging.find_manifest(None).unwrap().is_none(),
            "index emptied"
        );
        // Its entry is a miss now (no blob to provide) but young: kept.
        assert_eq!(pruned.entries, 0);
        assert_eq!(cache.prune(0).unwrap().blobs, 3);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("7"), Ok(7));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
