//! The mirror's own cache: verified blobs and manifests on disk, named by
//! digest (`blobs/sha256/<hex>`, a manifest's media type beside it in
//! `<hex>.type`), bounded by size with the least recently used going first,
//! and the last verified tag → digest answers (`tags.json`) for when the
//! registry cannot be reached. Nothing is published here before its digest
//! is checked; temporary files live in `tmp/` and are renamed into place.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_oci::Digest;
use serde::{Deserialize, Serialize};

/// A tag's last verified answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The manifest digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
}

/// The on-disk cache.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes published since the last prune (prune runs every 64 MiB).
    since_prune: AtomicU64,
    tags: Mutex<BTreeMap<String, TagRecord>>,
    /// Digests pruned since the routing was last told (`take_pruned`).
    pruned: Mutex<Vec<Digest>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// Open (creating) the cache in `dir`. Leftover temporary files of a
    /// previous run are deleted.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir.join("blobs").join("sha256"))?;
        let tmp = dir.join("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let tags = match std::fs::read(dir.join("tags.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            since_prune: AtomicU64::new(0),
            pruned: Mutex::new(Vec::new()),
            tags: Mutex::new(tags),
        })
    }

    /// Where blob `d` is (or would be).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    fn type_path(&self, d: &Digest) -> PathBuf {
        let mut p = self.path(d).into_os_string();
        p.push(".type");
        PathBuf::from(p)
    }

    /// The size of cached blob `d`, marking it used; `None` if absent.
    pub fn stat(&self, d: &Digest) -> Option<u64> {
        let path = self.path(d);
        let f = std::fs::File::open(&path).ok()?;
        let len = f.metadata().ok()?.len();
        let _ = f.set_modified(std::time::SystemTime::now());
        Some(len)
    }

    /// Mark `d` as content of a private repository: never served to peers.
    pub fn mark_private(&self, d: &Digest) {
        let mut p = self.path(d).into_os_string();
        p.push(".private");
        let _ = std::fs::write(p, b"");
    }

    /// Whether `d` is content of a private repository.
    pub fn is_private(&self, d: &Digest) -> bool {
        let mut p = self.path(d).into_os_string();
        p.push(".private");
        std::path::Path::new(&p).exists()
    }

    /// A cached manifest: its bytes and media type.
    pub fn manifest(&self, d: &Digest) -> Option<(Vec<u8>, String)> {
        let media_type = std::fs::read_to_string(self.type_path(d)).ok()?;
        let bytes = std::fs::read(self.path(d)).ok()?;
        // Never serve what does not match its name.
        d.verify(&bytes).ok()?;
        Some((bytes, media_type))
    }

    /// A temporary file to download into.
    pub fn temp(&self) -> io::Result<tempfile::NamedTempFile> {
        tempfile::NamedTempFile::new_in(self.dir.join("tmp"))
    }

    /// Publish a downloaded, verified blob.
    pub fn publish(&self, tmp: tempfile::NamedTempFile, d: &Digest, len: u64) -> io::Result<()> {
        tmp.persist(self.path(d)).map_err(|e| e.error)?;
        self.published(len);
        Ok(())
    }

    /// Store a verified manifest and its media type.
    pub fn put_manifest(&self, d: &Digest, bytes: &[u8], media_type: &str) -> io::Result<()> {
        d.verify(bytes).map_err(io::Error::other)?;
        let mut tmp = self.temp()?;
        io::Write::write_all(&mut tmp, media_type.as_bytes())?;
        tmp.persist(self.type_path(d)).map_err(|e| e.error)?;
        let mut tmp = self.temp()?;
        io::Write::write_all(&mut tmp, bytes)?;
        self.publish(tmp, d, bytes.len() as u64)
    }

    /// Remember the verified answer for tag key `key` (`ns/name:tag`).
    pub fn remember_tag(&self, key: &str, record: TagRecord) {
        let mut tags = lock(&self.tags);
        if tags.get(key) == Some(&record) {
            return;
        }
        tags.insert(key.to_owned(), record);
        let bytes = serde_json::to_vec(&*tags).unwrap_or_default();
        drop(tags);
        // Best effort: losing it only loses the stale fallback.
        if let Ok(mut tmp) = self.temp() {
            if io::Write::write_all(&mut tmp, &bytes).is_ok() {
                let _ = tmp.persist(self.dir.join("tags.json"));
            }
        }
    }

    /// The last verified answer for `key`.
    pub fn recall_tag(&self, key: &str) -> Option<TagRecord> {
        lock(&self.tags).get(key).cloned()
    }

    fn published(&self, len: u64) {
        if self.since_prune.fetch_add(len, Ordering::Relaxed) + len >= 64 << 20 {
            self.since_prune.store(0, Ordering::Relaxed);
            let _ = self.prune();
        }
    }

    /// The digests pruned since the last call: this node no longer has them.
    pub fn take_pruned(&self) -> Vec<Digest> {
        std::mem::take(&mut *lock(&self.pruned))
    }

    /// Every cached digest (blobs and manifests).
    pub fn digests(&self) -> Vec<Digest> {
        let Ok(dir) = std::fs::read_dir(self.dir.join("blobs").join("sha256")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                format!("sha256:{name}").parse().ok()
            })
            .collect()
    }

    /// Delete the least recently used blobs until the rest fit.
    pub fn prune(&self) -> io::Result<u64> {
        let mut blobs = Vec::new();
        for e in std::fs::read_dir(self.dir.join("blobs").join("sha256"))? {
            let e = e?;
            let meta = e.metadata()?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if meta.is_file() && !name.ends_with(".type") && !name.ends_with(".private") {
                blobs.push((meta.modified()?, meta.len(), e.path()));
            }
        }
        blobs.sort();
        let mut total: u64 = blobs.iter().map(|b| b.1).sum();
        let mut freed = 0;
        for (_, len, path) in blobs {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                if let Some(d) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
                {
                    lock(&self.pruned).push(d);
                }
                for side in [".type", ".private"] {
                    let mut t = path.clone().into_os_string();
                    t.push(side);
                    let _ = std::fs::remove_file(t);
                }
                freed += len;
            }
            total -= len;
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_tags_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1500).unwrap();
        let m = br#"{"schemaVersion":2}"#;
        let d = Digest::sha256(m);
        cache
            .put_manifest(&d, m, "application/vnd.oci.image.manifest.v1+json")
            .unwrap();
        assert_eq!(cache.manifest(&d).unwrap().0, m);
        assert!(
            cache.put_manifest(&Digest::sha256(b"x"), m, "t").is_err(),
            "a manifest is stored only under its own digest"
        );
        // A damaged file is never served.
        std::fs::write(cache.path(&d), b"tampered").unwrap();
        assert!(cache.manifest(&d).is_none());

        let rec = TagRecord {
            digest: d.clone(),
            media_type: "t".into(),
        };
        cache.remember_tag("r:5000/a:1", rec.clone());
        let reopened = Cache::open(dir.path(), 1500).unwrap();
        assert_eq!(reopened.recall_tag("r:5000/a:1"), Some(rec));

        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let mut ds = Vec::new();
        for i in 0..3u8 {
            let body = vec![i; 1000];
            let d = Digest::sha256(&body);
            let mut tmp = cache.temp().unwrap();
            io::Write::write_all(&mut tmp, &body).unwrap();
            cache.publish(tmp, &d, 1000).unwrap();
            std::fs::File::open(cache.path(&d))
                .unwrap()
                .set_modified(old + std::time::Duration::from_secs(u64::from(i)))
                .unwrap();
            ds.push(d);
        }
        cache.stat(&ds[0]).unwrap();
        cache.prune().unwrap();
        // What was pruned is reported once, for the routing to forget.
        let pruned = cache.take_pruned();
        assert!(!pruned.is_empty());
        assert!(pruned.iter().all(|d| !cache.digests().contains(d)));
        assert!(cache.take_pruned().is_empty());
        assert!(cache.stat(&ds[0]).is_some(), "used last");
        assert!(cache.stat(&ds[1]).is_none(), "least recently used");
    }
}
