//! The in-memory blob store: the same contract as the filesystem store, held
//! in process memory, for API tests that should not touch a disk. It passes
//! the same conformance suite, so tests against it say something about the
//! real stores.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use berth_oci::{Algorithm, Digest};
use bytes::{Bytes, BytesMut};

use super::{BlobStore, BlobStream, StorageError, UploadId, UploadWriter, check_range};

#[derive(Debug, Default)]
struct Inner {
    blobs: HashMap<Digest, Bytes>,
    uploads: HashMap<UploadId, BytesMut>,
}

/// Blobs and uploads in a shared map.
#[derive(Debug, Clone, Default)]
pub struct MemoryBlobStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryBlobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Appends to an in-memory upload; bytes land when finished.
#[derive(Debug)]
pub struct MemoryWriter {
    store: MemoryBlobStore,
    id: UploadId,
    buf: BytesMut,
    offset: u64,
}

impl UploadWriter for MemoryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self) -> Result<u64, StorageError> {
        let mut inner = self.store.lock();
        let upload = inner
            .uploads
            .get_mut(&self.id)
            .ok_or(StorageError::UploadNotFound(self.id))?;
        upload.truncate(self.offset as usize);
        upload.extend_from_slice(&self.buf);
        Ok(upload.len() as u64)
    }
}

impl BlobStore for MemoryBlobStore {
    type Writer = MemoryWriter;

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        Ok(self.lock().blobs.get(digest).map(|b| b.len() as u64))
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream, StorageError> {
        let blob = self
            .lock()
            .blobs
            .get(digest)
            .cloned()
            .ok_or_else(|| StorageError::BlobNotFound(digest.clone()))?;
        let data = match range {
            Some(r) => {
                check_range(&r, blob.len() as u64)?;
                blob.slice(r.start as usize..r.end as usize)
            }
            None => blob,
        };
        Ok(Box::pin(futures_util::stream::iter([Ok(data)])))
    }

    async fn create_upload(&self, id: UploadId) -> Result<(), StorageError> {
        self.lock().uploads.insert(id, BytesMut::new());
        Ok(())
    }

    async fn append_upload(&self, id: UploadId, offset: u64) -> Result<MemoryWriter, StorageError> {
        let have = self
            .lock()
            .uploads
            .get(&id)
            .ok_or(StorageError::UploadNotFound(id))?
            .len() as u64;
        if offset > have {
            return Err(StorageError::Gap { id, have, offset });
        }
        Ok(MemoryWriter {
            store: self.clone(),
            id,
            buf: BytesMut::new(),
            offset,
        })
    }

    async fn hash_upload(
        &self,
        id: UploadId,
        len: u64,
        algorithm: Algorithm,
    ) -> Result<Digest, StorageError> {
        let inner = self.lock();
        let upload = inner
            .uploads
            .get(&id)
            .ok_or(StorageError::UploadNotFound(id))?;
        let have = upload.len() as u64;
        if have < len {
            return Err(StorageError::Gap {
                id,
                have,
                offset: len,
            });
        }
        Ok(algorithm.digest(&upload[..len as usize]))
    }

    async fn commit_upload(
        &self,
        id: UploadId,
        len: u64,
        digest: &Digest,
    ) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let mut upload = inner
            .uploads
            .remove(&id)
            .ok_or(StorageError::UploadNotFound(id))?;
        upload.truncate(len as usize);
        inner.blobs.insert(digest.clone(), upload.freeze());
        Ok(())
    }

    async fn abort_upload(&self, id: UploadId) -> Result<(), StorageError> {
        self.lock().uploads.remove(&id);
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        self.lock().blobs.remove(digest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run(&super::MemoryBlobStore::new()).await;
    }
}
