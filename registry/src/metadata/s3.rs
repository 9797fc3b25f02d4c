//! The S3 blob store's state, kept beside the registry's metadata so every
//! replica sees the same: the index from a blob's digest to the object
//! that holds it (objects are named by the upload that wrote them, so no
//! byte is copied after an upload), and each upload session's multipart
//! upload, its acknowledged parts and its staged tail (the bytes after the
//! last whole part, below S3's 5 MiB part minimum, kept here until they
//! join a part or become the last one). Part numbers are handed out once
//! and never reused, so a part still in flight from an abandoned request
//! can never replace one a later request wrote.

use rusqlite::{OptionalExtension, params};

use super::{MetadataError, Result, Sqlite, now};
use crate::storage::UploadId;

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Part {
    /// Its part number.
    pub number: i32,
    /// The ETag S3 answered.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An S3 upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Upload {
    /// The session.
    pub id: UploadId,
    /// The object key its bytes go to (also the blob's, once published).
    pub key: String,
    /// The multipart upload, once its first whole part was written.
    pub mpu: Option<String>,
    /// Acknowledged parts, in order.
    pub parts: Vec<S3Part>,
    /// The acknowledged bytes after the last part.
    pub tail: Vec<u8>,
    /// The multipart upload was completed (the object exists at `key`).
    pub completed: bool,
}

impl S3Upload {
    /// Bytes held in parts.
    pub fn parts_len(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Acknowledged bytes in all.
    pub fn len(&self) -> u64 {
        self.parts_len() + self.tail.len() as u64
    }

    /// Nothing acknowledged yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(super) fn corrupt(what: &'static str, value: impl Into<String>) -> MetadataError {
    MetadataError::Corrupt {
        what,
        value: value.into(),
    }
}

/// The S3 blob store's index (digest to object key) and its multipart
/// upload sessions.
pub trait S3Index {
    /// The object key and size of blob `digest`.
    fn s3_blob(&self, digest: &str) -> Result<Option<(String, u64)>>;

    /// Record blob `digest` at `key`; `false` (nothing changed) if the
    /// digest is already recorded.
    fn s3_put_blob(&self, digest: &str, key: &str, size: u64) -> Result<bool>;

    /// Forget blob `digest`: the key it was at, if any.
    fn s3_delete_blob(&self, digest: &str) -> Result<Option<String>>;

    /// An upload session's state.
    fn s3_upload(&self, id: UploadId) -> Result<Option<S3Upload>>;

    /// Write an upload session's state (creating it).
    fn s3_put_upload(&self, u: &S3Upload) -> Result<()>;

    /// Record the multipart upload of a session (before any part is
    /// written, so an abort can always find it).
    fn s3_set_mpu(&self, id: UploadId, mpu: &str) -> Result<()>;

    /// A part number never handed out before for this session.
    fn s3_next_part(&self, id: UploadId) -> Result<i32>;

    /// The multipart upload ids of every S3 upload session.
    fn s3_multipart_ids(&self) -> Result<std::collections::HashSet<String>>;

    /// S3 sessions the registry's upload table does not know (a crash
    /// between the two writes), created before `before`.
    fn s3_orphan_uploads(&self, before: u64) -> Result<Vec<UploadId>>;

    /// Multipart uploads open for sessions.
    fn s3_open_multipart_count(&self) -> Result<u64>;

    /// Forget an upload session.
    fn s3_delete_upload(&self, id: UploadId) -> Result<()>;
}

impl S3Index for Sqlite {
    fn s3_blob(&self, digest: &str) -> Result<Option<(String, u64)>> {
        let conn = self.reader();
        let row: Option<(String, i64)> = conn
            .prepare_cached("SELECT key, size FROM s3_blobs WHERE digest = ?1")?
            .query_row([digest], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(k, s)| (k, s as u64)))
    }

    fn s3_put_blob(&self, digest: &str, key: &str, size: u64) -> Result<bool> {
        let n = self
            .writer()
            .prepare_cached(
                "INSERT INTO s3_blobs (digest, key, size, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(digest) DO NOTHING",
            )?
            .execute(params![digest, key, size as i64, now()])?;
        Ok(n == 1)
    }

    fn s3_delete_blob(&self, digest: &str) -> Result<Option<String>> {
        let key: Option<String> = self
            .writer()
            .prepare_cached("DELETE FROM s3_blobs WHERE digest = ?1 RETURNING key")?
            .query_row([digest], |r| r.get(0))
            .optional()?;
        Ok(key)
    }

    fn s3_upload(&self, id: UploadId) -> Result<Option<S3Upload>> {
        let conn = self.reader();
        let row = conn
            .prepare_cached(
                "SELECT key, mpu, parts, tail, completed FROM s3_uploads WHERE id = ?1",
            )?
            .query_row([id.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })
            .optional()?;
        let Some((key, mpu, parts, tail, completed)) = row else {
            return Ok(None);
        };
        let parts: Vec<S3Part> =
            serde_json::from_str(&parts).map_err(|_| corrupt("S3 part list", parts))?;
        Ok(Some(S3Upload {
            id,
            key,
            mpu,
            parts,
            tail,
            completed,
        }))
    }

    fn s3_put_upload(&self, u: &S3Upload) -> Result<()> {
        let parts = serde_json::to_string(&u.parts).unwrap_or_else(|_| "[]".into());
        self.writer()
            .prepare_cached(
                "INSERT INTO s3_uploads (id, key, mpu, parts, next_part, tail, completed, created_at)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET key = excluded.key, mpu = excluded.mpu,
                    parts = excluded.parts, tail = excluded.tail, completed = excluded.completed",
            )?
            .execute(params![
                u.id.to_string(),
                u.key,
                u.mpu,
                parts,
                u.tail,
                u.completed,
                now()
            ])?;
        Ok(())
    }

    fn s3_set_mpu(&self, id: UploadId, mpu: &str) -> Result<()> {
        self.writer()
            .prepare_cached("UPDATE s3_uploads SET mpu = ?2 WHERE id = ?1")?
            .execute(params![id.to_string(), mpu])?;
        Ok(())
    }

    fn s3_next_part(&self, id: UploadId) -> Result<i32> {
        let n: Option<i32> = self
            .writer()
            .prepare_cached(
                "UPDATE s3_uploads SET next_part = next_part + 1 WHERE id = ?1
                 RETURNING next_part - 1",
            )?
            .query_row([id.to_string()], |r| r.get(0))
            .optional()?;
        n.ok_or_else(|| corrupt("S3 upload", id.to_string()))
    }

    fn s3_multipart_ids(&self) -> Result<std::collections::HashSet<String>> {
        let conn = self.reader();
        let ids = conn
            .prepare_cached("SELECT mpu FROM s3_uploads WHERE mpu IS NOT NULL")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    fn s3_orphan_uploads(&self, before: u64) -> Result<Vec<UploadId>> {
        let conn = self.reader();
        let ids: Vec<String> = conn
            .prepare_cached(
                "SELECT id FROM s3_uploads WHERE created_at <= ?1
                 AND id NOT IN (SELECT id FROM uploads)",
            )?
            .query_map([before as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids.iter().filter_map(|s| UploadId::parse(s)).collect())
    }

    fn s3_open_multipart_count(&self) -> Result<u64> {
        let n: i64 = self
            .reader()
            .prepare_cached(
                "SELECT count(*) FROM s3_uploads WHERE mpu IS NOT NULL AND completed = 0",
            )?
            .query_row([], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn s3_delete_upload(&self, id: UploadId) -> Result<()> {
        self.writer()
            .prepare_cached("DELETE FROM s3_uploads WHERE id = ?1")?
            .execute([id.to_string()])?;
        Ok(())
    }
}
