//! The filesystem blob store: published blobs at
//! `<root>/blobs/<alg>/<first two hex>/<hex>`, upload sessions at
//! `<root>/uploads/<uuid>`. An upload is published by a `rename` on the same
//! filesystem, so every byte is written exactly once and a blob is either
//! absent or complete. Paths are built only from validated digests and UUIDs.
//!
//! File I/O runs on tokio's blocking pool in large chunks; reads stream
//! through a small bounded channel so memory stays flat for any blob size.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_oci::{Algorithm, Digest};
use bytes::Bytes;

use super::{BlobStore, BlobStream, StorageError, UploadId, UploadWriter, check_range};

/// Bytes read from disk per chunk of a blob GET. Measured on a 1 GiB GET:
/// 64 KiB 3.2, 256 KiB 3.5, 1 MiB 3.8, 2 MiB 3.6 GB/s (nginx, 1 MiB
/// buffers: 4.0).
const READ_CHUNK: usize = 1 << 20;
/// Chunks read ahead of the socket per blob GET.
const READ_AHEAD: usize = 8;
/// Bytes buffered by an upload writer before one write to disk.
const WRITE_BUFFER: usize = 1 << 20;

/// Exclusive use of one upload file, held by its writer and by every write
/// that writer started, so a write still running after its request was
/// dropped can never interleave with the next request's.
type UploadGuard = Arc<tokio::sync::OwnedMutexGuard<()>>;

/// Blobs and uploads under one directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: Arc<PathBuf>,
    fsync: bool,
    upload_locks: Arc<std::sync::Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<()>>>>>,
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
            upload_locks: Arc::default(),
        })
    }

    /// Wait until no writer or write of upload `id` is running, and hold it.
    async fn lock_upload(&self, id: UploadId) -> UploadGuard {
        let lock = self
            .upload_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone();
        Arc::new(lock.lock_owned().await)
    }

    /// The published blobs `known` does not name, with their modification
    /// times (unix seconds): a walk of the whole store (directory entries
    /// only; just the unknown files are stat'ed), for garbage collection's
    /// stray-bytes pass, never on a request path. Files whose names are not
    /// digests are left out.
    pub async fn unknown_blobs(
        &self,
        known: std::collections::HashSet<String>,
    ) -> Result<Vec<(Digest, u64)>, StorageError> {
        let root = self.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                let dir = root.join(alg.as_str());
                let mut name = format!("{}:", alg.as_str());
                let prefix = name.len();
                for shard in fs::read_dir(&dir)? {
                    let shard = shard?;
                    if !shard.file_type()?.is_dir() {
                        continue;
                    }
                    for f in fs::read_dir(shard.path())? {
                        let f = f?;
                        name.truncate(prefix);
                        name.push_str(&f.file_name().to_string_lossy());
                        if known.contains(&name) {
                            continue;
                        }
                        let Ok(d) = name.parse::<Digest>() else {
                            continue;
                        };
                        let modified = f
                            .metadata()?
                            .modified()?
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |t| t.as_secs());
                        out.push((d, modified));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Forget the lock of an upload that has ended.
    fn forget_upload(&self, id: UploadId) {
        self.upload_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
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

/// Read buffers of one blob GET, recycled once the HTTP layer has sent and
/// dropped them: a recycled buffer is still in the CPU cache, and neither
/// zeroed again nor faulted in, which is most of the cost of a fresh one.
#[derive(Debug, Default, Clone)]
struct ChunkPool(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// One chunk lent out as `Bytes`; dropping it returns the buffer.
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
    pool: ChunkPool,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut free = self.pool.0.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < 2 * READ_AHEAD {
            free.push(buf);
        }
    }
}

impl ChunkPool {
    fn take(&self) -> Vec<u8> {
        let recycled = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        recycled.unwrap_or_else(|| vec![0; READ_CHUNK])
    }

    fn chunk(&self, buf: Vec<u8>, len: usize) -> Bytes {
        Bytes::from_owner(PooledChunk {
            buf,
            len,
            pool: self.clone(),
        })
    }
}

/// A chunk read on the blocking pool: the buffer and how much of it is filled.
type BlockingRead = tokio::task::JoinHandle<io::Result<(Vec<u8>, usize)>>;

/// A blob's bytes as a stream of pooled chunks. Pages already in the page
/// cache are read right on the task that writes them to the socket (with
/// `RWF_NOWAIT`, so the read can never wait for the disk), keeping each
/// chunk in one core's cache from file to socket; a chunk that would need
/// the disk is read on the blocking pool instead.
struct FileChunks {
    file: Arc<File>,
    pos: u64,
    end: u64,
    pool: ChunkPool,
    pending: Option<BlockingRead>,
}

impl futures_util::Stream for FileChunks {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Some(handle) = this.pending.as_mut() {
            let done = std::task::ready!(std::pin::Pin::new(handle).poll(cx));
            this.pending = None;
            let res = done
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map(|(buf, n)| {
                    this.pos += n as u64;
                    this.pool.chunk(buf, n)
                });
            return Poll::Ready(Some(res));
        }
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        let want = (this.end - this.pos).min(READ_CHUNK as u64) as usize;
        let mut buf = this.pool.take();
        let nowait = rustix::io::preadv2(
            &*this.file,
            &mut [io::IoSliceMut::new(&mut buf[..want])],
            this.pos,
            rustix::io::ReadWriteFlags::NOWAIT,
        );
        match nowait {
            Ok(0) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("blob file ended {} bytes early", this.end - this.pos),
            )))),
            Ok(n) => {
                this.pos += n as u64;
                Poll::Ready(Some(Ok(this.pool.chunk(buf, n))))
            }
            Err(e)
                if e != rustix::io::Errno::AGAIN
                    && e != rustix::io::Errno::OPNOTSUPP
                    && e != rustix::io::Errno::NOSYS =>
            {
                Poll::Ready(Some(Err(e.into())))
            }
            Err(_) => {
                // Not cached (or no RWF_NOWAIT): let a blocking thread wait
                // for the disk.
                let (file, pos) = (this.file.clone(), this.pos);
                this.pending = Some(tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    file.read_exact_at(&mut buf[..want], pos)
                        .map(|()| (buf, want))
                }));
                self.poll_next(cx)
            }
        }
    }
}

/// Bytes written between background flushes of an upload to disk.
const SYNC_EVERY: u64 = 64 << 20;

/// Appends to an upload file, buffering up to [`WRITE_BUFFER`] bytes. One
/// buffer at a time is written on the blocking pool while the next one is
/// received, so the copy into the page cache overlaps the network. With
/// fsync on, it starts flushing written data to disk in the background
/// every [`SYNC_EVERY`] bytes, so the fsync that publishing waits for has
/// little left to do.
#[derive(Debug)]
pub struct FsWriter {
    file: Arc<File>,
    pending: Vec<Bytes>,
    pending_len: usize,
    len: u64,
    /// The write of the previous buffer, if still running.
    writing: Option<tokio::task::JoinHandle<io::Result<()>>>,
    guard: UploadGuard,
    fsync: bool,
    synced_at: u64,
    sync: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl FsWriter {
    /// Wait for the buffer being written, if any, and surface its error.
    async fn wait_written(&mut self) -> Result<(), StorageError> {
        if let Some(w) = self.writing.take() {
            w.await.map_err(io::Error::other)??;
        }
        Ok(())
    }

    /// Start writing the buffered chunks (after the previous write is done,
    /// so the file is written in order).
    async fn flush_pending(&mut self) -> Result<(), StorageError> {
        self.wait_written().await?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let (file, guard) = (self.file.clone(), self.guard.clone());
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let _held = guard;
            let mut f = &*file;
            chunks.iter().try_for_each(|c| f.write_all(c))
        }));
        let idle = self.sync.as_ref().is_none_or(|t| t.is_finished());
        if self.fsync && idle && self.len - self.synced_at >= SYNC_EVERY {
            self.synced_at = self.len;
            let file = self.file.clone();
            // Best effort: the fsync before publishing is the one that counts.
            self.sync = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        }
        Ok(())
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
        self.wait_written().await?;
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
        Ok(Box::pin(FileChunks {
            file: Arc::new(file),
            pos: range.start,
            end: range.end,
            pool: ChunkPool::default(),
            pending: None,
        }))
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
        let guard = self.lock_upload(id).await;
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
            writing: None,
            guard,
            fsync: self.fsync,
            synced_at: offset,
            sync: None,
        })
    }

    async fn hash_upload(
        &self,
        id: UploadId,
        len: u64,
        algorithm: Algorithm,
    ) -> Result<Digest, StorageError> {
        let _guard = self.lock_upload(id).await;
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
        let guard = self.lock_upload(id).await;
        let src = self.upload_path(id);
        let dst = self.blob_path(digest);
        let fsync = self.fsync;
        let published = blocking(move || {
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
        .await;
        if published.is_ok() {
            self.forget_upload(id);
        }
        drop(guard);
        published
    }

    async fn abort_upload(&self, id: UploadId) -> Result<(), StorageError> {
        let guard = self.lock_upload(id).await;
        self.forget_upload(id);
        drop(guard);
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
    use futures_util::TryStreamExt;

    use super::*;

    #[tokio::test]
    async fn reads_blobs_that_are_not_in_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path(), true).unwrap();
        let data: Vec<u8> = (0..5 * READ_CHUNK + 123).map(|i| (i % 253) as u8).collect();
        let digest = Digest::sha256(&data);
        let id = UploadId::new();
        store.create_upload(id).await.unwrap();
        let mut w = store.append_upload(id, 0).await.unwrap();
        w.write(Bytes::from(data.clone())).await.unwrap();
        w.finish().await.unwrap();
        store
            .commit_upload(id, data.len() as u64, &digest)
            .await
            .unwrap();
        // Drop the (clean, synced) pages so RWF_NOWAIT reads must fall back
        // to the blocking pool.
        let f = File::open(store.blob_path(&digest)).unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        for range in [
            None,
            Some(READ_CHUNK as u64 - 10..3 * READ_CHUNK as u64 + 7),
        ] {
            let want = range
                .clone()
                .map_or(&data[..], |r| &data[r.start as usize..r.end as usize]);
            let got: Vec<Bytes> = store
                .read(&digest, range)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert_eq!(got.concat(), want);
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        }
    }

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
