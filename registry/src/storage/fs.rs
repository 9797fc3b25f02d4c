//! The filesystem blob store: published blobs at
//! `<root>/blobs/<alg>/<first two hex>/<hex>`, upload sessions at
//! `<root>/uploads/<uuid>`. An upload is published by a `rename` on the same
//! filesystem, so every byte is written exactly once and a blob is either
//! absent or complete. Paths are built only from validated digests and UUIDs.
//!
//! File I/O runs on tokio's blocking pool in large chunks; reads stream
//! through a small bounded channel so memory stays flat for any blob size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_oci::{Algorithm, Digest};
use bytes::{Bytes, BytesMut};

use super::{BlobStore, BlobStream, StorageError, UploadId, UploadWriter, check_range};

/// Bytes read from disk per chunk of a blob GET.
const READ_CHUNK: usize = 1 << 20;
/// Bytes buffered by an upload writer before one write to disk.
const WRITE_BUFFER: usize = 1 << 20;

/// Blobs and uploads under one directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: Arc<PathBuf>,
    fsync: bool,
}

impl FsBlobStore {
    /// A store rooted at `root` (created if missing). With `fsync`, a blob's
    /// data and directory entry reach the disk before it is published, so it
    /// survives power loss, not just a process crash.
    pub fn open(root: impl Into<PathBuf>, fsync: bool) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("uploads"))?;
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            fs::create_dir_all(root.join("blobs").join(alg.as_str()))?;
        }
        Ok(Self {
            root: Arc::new(root),
            fsync,
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: UploadId) -> PathBuf {
        self.root.join("uploads").join(id.to_string())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Io(io::Error::other(e)))?
}

fn not_found_as<T>(e: io::Error, err: impl FnOnce() -> StorageError) -> Result<T, StorageError> {
    if e.kind() == io::ErrorKind::NotFound {
        Err(err())
    } else {
        Err(StorageError::Io(e))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Appends to an upload file, buffering up to [`WRITE_BUFFER`] bytes.
#[derive(Debug)]
pub struct FsWriter {
    file: Arc<File>,
    pending: Vec<Bytes>,
    pending_len: usize,
    len: u64,
}

impl FsWriter {
    async fn flush_pending(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let file = self.file.clone();
        blocking(move || {
            let mut f = &*file;
            for c in &chunks {
                f.write_all(c)?;
            }
            Ok(())
        })
        .await
    }
}

impl UploadWriter for FsWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.len += chunk.len() as u64;
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= WRITE_BUFFER {
            self.flush_pending().await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, StorageError> {
        self.flush_pending().await?;
        Ok(self.len)
    }
}

impl BlobStore for FsBlobStore {
    type Writer = FsWriter;

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream, StorageError> {
        let path = self.blob_path(digest);
        let d = digest.clone();
        let (file, range) = blocking(move || {
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) => return not_found_as(e, || StorageError::BlobNotFound(d)),
            };
            let size = file.metadata()?.len();
            let range = range.unwrap_or(0..size);
            if size > 0 || range != (0..0) {
                check_range(&range, size)?;
            }
            file.seek(SeekFrom::Start(range.start))?;
            Ok((file, range))
        })
        .await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        tokio::task::spawn_blocking(move || {
            let mut file = file;
            let mut left = range.end - range.start;
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(want);
                let res = file.read_exact(&mut buf).map(|()| buf.freeze());
                let failed = res.is_err();
                if tx.blocking_send(res).is_err() || failed {
                    return;
                }
                left -= want as u64;
            }
        });
        Ok(Box::pin(futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }

    async fn create_upload(&self, id: UploadId) -> Result<(), StorageError> {
        let path = self.upload_path(id);
        blocking(move || {
            OpenOptions::new().write(true).create_new(true).open(path)?;
            Ok(())
        })
        .await
    }

    async fn append_upload(&self, id: UploadId, offset: u64) -> Result<FsWriter, StorageError> {
        let path = self.upload_path(id);
        let file = blocking(move || {
            let mut file = match OpenOptions::new().write(true).open(&path) {
                Ok(f) => f,
                Err(e) => return not_found_as(e, || StorageError::UploadNotFound(id)),
            };
            let have = file.metadata()?.len();
            if offset > have {
                return Err(StorageError::Gap { id, have, offset });
            }
            if offset < have {
                file.set_len(offset)?;
            }
            file.seek(SeekFrom::Start(offset))?;
            Ok(file)
        })
        .await?;
        Ok(FsWriter {
            file: Arc::new(file),
            pending: Vec::new(),
            pending_len: 0,
            len: offset,
        })
    }

    async fn hash_upload(
        &self,
        id: UploadId,
        len: u64,
        algorithm: Algorithm,
    ) -> Result<Digest, StorageError> {
        let path = self.upload_path(id);
        blocking(move || {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) => return not_found_as(e, || StorageError::UploadNotFound(id)),
            };
            let mut reader = file.take(len);
            let mut hasher = algorithm.hasher();
            let mut buf = vec![0u8; READ_CHUNK];
            let mut seen = 0u64;
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                seen += n as u64;
                hasher.update(&buf[..n]);
            }
            if seen != len {
                return Err(StorageError::Gap {
                    id,
                    have: seen,
                    offset: len,
                });
            }
            Ok(hasher.finish())
        })
        .await
    }

    async fn commit_upload(
        &self,
        id: UploadId,
        len: u64,
        digest: &Digest,
    ) -> Result<(), StorageError> {
        let src = self.upload_path(id);
        let dst = self.blob_path(digest);
        let fsync = self.fsync;
        blocking(move || {
            let file = match OpenOptions::new().write(true).open(&src) {
                Ok(f) => f,
                Err(e) => return not_found_as(e, || StorageError::UploadNotFound(id)),
            };
            if file.metadata()?.len() != len {
                file.set_len(len)?;
            }
            if fsync {
                file.sync_data()?;
            }
            drop(file);
            let dir = dst.parent().expect("blob paths have a parent");
            fs::create_dir_all(dir)?;
            fs::rename(&src, &dst)?;
            if fsync {
                sync_dir(dir)?;
            }
            Ok(())
        })
        .await
    }

    async fn abort_upload(&self, id: UploadId) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.upload_path(id)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::FsBlobStore::open(dir.path(), true).unwrap();
        super::super::conformance::run(&store).await;
        // Nothing is left behind in the uploads directory.
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads"))
                .unwrap()
                .count(),
            0
        );
    }
}
