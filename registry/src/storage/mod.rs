//! Blob storage: the small [`BlobStore`] trait every backend implements
//! (filesystem, S3, in-memory for tests), and [`Blobs`], the enum that
//! dispatches to the configured one.
//!
//! A store holds bytes only: published blobs keyed by digest, and upload
//! sessions keyed by an [`UploadId`]. It never decides whether content is
//! trusted — the API layer verifies a digest before it calls
//! [`BlobStore::commit_upload`] — and it never lists itself on a request path.
//! Publishing is atomic: a blob is either absent or complete.

use std::io;
use std::ops::Range;
use std::pin::Pin;

use berth_oci::{Algorithm, Digest};
use bytes::Bytes;
use futures_util::Stream;

pub mod fs;
pub mod memory;
pub mod s3;

#[cfg(test)]
mod conformance;
#[cfg(test)]
pub(crate) mod s3_tests;

pub use fs::FsBlobStore;
pub use memory::MemoryBlobStore;
pub use s3::S3BlobStore;

/// A stream of blob bytes.
pub type BlobStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The identifier of an upload session: a UUID, so it is always safe as a
/// file name or object key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The id's 16 bytes.
    pub fn bytes(&self) -> [u8; 16] {
        *self.0.as_bytes()
    }

    /// Parse the id from a URL segment; only the hyphenated UUID form is
    /// accepted, so nothing else ever reaches a path.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 36 {
            return None;
        }
        uuid::Uuid::try_parse(s).ok().map(Self)
    }
}

impl Default for UploadId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The blob is not published.
    #[error("blob {0} not found in storage")]
    BlobNotFound(Digest),
    /// The upload session has no data in the store.
    #[error("upload {0} not found in storage")]
    UploadNotFound(UploadId),
    /// A write at an offset beyond the end of the upload.
    #[error("upload {id} has {have} bytes; cannot write at offset {offset}")]
    Gap {
        /// The upload.
        id: UploadId,
        /// Its current length.
        have: u64,
        /// The requested offset.
        offset: u64,
    },
    /// A range outside the blob.
    #[error("range {start}-{end} is outside the blob of {size} bytes")]
    Range {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The blob's size.
        size: u64,
    },
    /// The backend failed.
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
    /// An append at an offset the store can no longer rewind to (S3: inside
    /// parts already uploaded, after an acknowledgement was lost): the
    /// client must start the upload again.
    #[error(
        "upload {id} cannot be resumed at offset {offset} (the store holds {held} bytes it cannot take back); start the upload again"
    )]
    Unresumable {
        /// The upload.
        id: UploadId,
        /// The requested offset.
        offset: u64,
        /// What the store holds that cannot be taken back.
        held: u64,
    },
    /// The backend cannot be reached or is overloaded (after retries):
    /// clients get 503 and may try again; nothing was changed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Whether `e` says the disk (or the quota of its file system) is full:
/// ENOSPC or EDQUOT.
pub fn disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28 | 122))
}

/// Free bytes for unprivileged writers on the file system holding `dir`.
pub fn free_bytes(dir: &std::path::Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Appends bytes to an upload session. Dropping a writer without
/// [`UploadWriter::finish`] leaves the upload as it was at some byte boundary;
/// the metadata's recorded offset says which bytes were acknowledged.
pub trait UploadWriter: Send {
    /// Append a chunk.
    fn write(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), StorageError>> + Send;
    /// Make the appended bytes durable and return the upload's new length.
    fn finish(self) -> impl Future<Output = Result<u64, StorageError>> + Send;
}

/// Where blob bytes live.
pub trait BlobStore: Send + Sync {
    /// The writer type for upload sessions.
    type Writer: UploadWriter;

    /// The size of a published blob, or `None` if it is absent.
    fn stat(
        &self,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<u64>, StorageError>> + Send;

    /// Stream a published blob, or the byte range of it.
    fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> impl Future<Output = Result<BlobStream, StorageError>> + Send;

    /// Start an empty upload session.
    fn create_upload(&self, id: UploadId) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Open a writer that appends at `offset`. Bytes past `offset` (left by
    /// an unacknowledged, interrupted write) are discarded first; an offset
    /// past the end is an error.
    fn append_upload(
        &self,
        id: UploadId,
        offset: u64,
    ) -> impl Future<Output = Result<Self::Writer, StorageError>> + Send;

    /// Hash the first `len` bytes of an upload (used when the streaming hash
    /// was lost, as after a restart, or for another algorithm).
    fn hash_upload(
        &self,
        id: UploadId,
        len: u64,
        algorithm: Algorithm,
    ) -> impl Future<Output = Result<Digest, StorageError>> + Send;

    /// Publish the first `len` bytes of an upload as blob `digest`, which the
    /// caller has verified, and remove the session. Atomic: readers see the
    /// whole blob or none of it.
    fn commit_upload(
        &self,
        id: UploadId,
        len: u64,
        digest: &Digest,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Remove an upload session and its bytes (absent is fine).
    fn abort_upload(&self, id: UploadId) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Remove a published blob (absent is fine).
    fn delete(&self, digest: &Digest) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// The configured blob store.
#[derive(Debug, Clone)]
pub enum Blobs {
    /// Files under a data directory.
    Fs(FsBlobStore),
    /// Process memory (tests).
    Memory(MemoryBlobStore),
    /// An S3 bucket.
    S3(S3BlobStore),
}

/// A writer of whichever store is configured.
#[derive(Debug)]
pub enum AnyWriter {
    /// A filesystem upload writer.
    Fs(fs::FsWriter),
    /// An in-memory upload writer.
    Memory(memory::MemoryWriter),
    /// An S3 upload writer.
    S3(s3::S3Writer),
}

impl UploadWriter for AnyWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        match self {
            Self::Fs(w) => w.write(chunk).await,
            Self::Memory(w) => w.write(chunk).await,
            Self::S3(w) => w.write(chunk).await,
        }
    }

    async fn finish(self) -> Result<u64, StorageError> {
        match self {
            Self::Fs(w) => w.finish().await,
            Self::Memory(w) => w.finish().await,
            Self::S3(w) => w.finish().await,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Blobs::Fs($s) => $e,
            Blobs::Memory($s) => $e,
            Blobs::S3($s) => $e,
        }
    };
}

impl BlobStore for Blobs {
    type Writer = AnyWriter;

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        dispatch!(self, s => s.stat(digest).await)
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream, StorageError> {
        dispatch!(self, s => s.read(digest, range).await)
    }

    async fn create_upload(&self, id: UploadId) -> Result<(), StorageError> {
        dispatch!(self, s => s.create_upload(id).await)
    }

    async fn append_upload(&self, id: UploadId, offset: u64) -> Result<AnyWriter, StorageError> {
        match self {
            Self::Fs(s) => s.append_upload(id, offset).await.map(AnyWriter::Fs),
            Self::Memory(s) => s.append_upload(id, offset).await.map(AnyWriter::Memory),
            Self::S3(s) => s.append_upload(id, offset).await.map(AnyWriter::S3),
        }
    }

    async fn hash_upload(
        &self,
        id: UploadId,
        len: u64,
        algorithm: Algorithm,
    ) -> Result<Digest, StorageError> {
        dispatch!(self, s => s.hash_upload(id, len, algorithm).await)
    }

    async fn commit_upload(
        &self,
        id: UploadId,
        len: u64,
        digest: &Digest,
    ) -> Result<(), StorageError> {
        dispatch!(self, s => s.commit_upload(id, len, digest).await)
    }

    async fn abort_upload(&self, id: UploadId) -> Result<(), StorageError> {
        dispatch!(self, s => s.abort_upload(id).await)
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        dispatch!(self, s => s.delete(digest).await)
    }
}

/// Check a requested range against a blob's size.
pub(crate) fn check_range(range: &Range<u64>, size: u64) -> Result<(), StorageError> {
    if range.start >= range.end || range.end > size {
        return Err(StorageError::Range {
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok(())
}
