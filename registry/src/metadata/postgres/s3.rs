//! The S3 blob store's index and multipart upload sessions ([`S3Index`])
//! on PostgreSQL, so any replica continues an upload another started: the
//! session row (parts, unsent tail, next part number) is the whole state.

use std::collections::HashSet;

use super::Postgres;
use super::client::Statements;
use crate::metadata::s3::corrupt;
use crate::metadata::{Result, S3Index, S3Part, S3Upload, now};
use crate::storage::UploadId;

impl S3Index for Postgres {
    fn s3_blob(&self, digest: &str) -> Result<Option<(String, u64)>> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT key, size FROM s3_blobs WHERE digest = $1",
                &[&digest],
            )?
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64)))
        })
    }

    fn s3_put_blob(&self, digest: &str, key: &str, size: u64) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "INSERT INTO s3_blobs (digest, key, size, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (digest) DO NOTHING",
                &[&digest, &key, &(size as i64), &now()],
            )? == 1)
        })
    }

    fn s3_delete_blob(&self, digest: &str) -> Result<Option<String>> {
        self.write(|tx| {
            Ok(tx
                .query_opt(
                    "DELETE FROM s3_blobs WHERE digest = $1 RETURNING key",
                    &[&digest],
                )?
                .map(|r| r.get(0)))
        })
    }

    fn s3_upload(&self, id: UploadId) -> Result<Option<S3Upload>> {
        let row = self.read(|c| {
            Ok(c.query_opt(
                "SELECT key, mpu, parts, tail, completed FROM s3_uploads WHERE id = $1",
                &[&id.to_string()],
            )?)
        })?;
        let Some(r) = row else {
            return Ok(None);
        };
        let parts: String = r.get(2);
        let parts: Vec<S3Part> =
            serde_json::from_str(&parts).map_err(|_| corrupt("S3 part list", parts))?;
        Ok(Some(S3Upload {
            id,
            key: r.get(0),
            mpu: r.get(1),
            parts,
            tail: r.get(3),
            completed: r.get(4),
        }))
    }

    fn s3_put_upload(&self, u: &S3Upload) -> Result<()> {
        let parts = serde_json::to_string(&u.parts).unwrap_or_else(|_| "[]".into());
        self.write(|tx| {
            tx.execute(
                "INSERT INTO s3_uploads (id, key, mpu, parts, next_part, tail, completed, created_at)
                 VALUES ($1, $2, $3, $4, 1, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET key = EXCLUDED.key, mpu = EXCLUDED.mpu,
                    parts = EXCLUDED.parts, tail = EXCLUDED.tail, completed = EXCLUDED.completed",
                &[&u.id.to_string(), &u.key, &u.mpu, &parts, &u.tail, &u.completed, &now()],
            )?;
            Ok(())
        })
    }

    fn s3_set_mpu(&self, id: UploadId, mpu: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE s3_uploads SET mpu = $2 WHERE id = $1",
                &[&id.to_string(), &mpu],
            )?;
            Ok(())
        })
    }

    fn s3_next_part(&self, id: UploadId) -> Result<i32> {
        let n: Option<i64> = self.write(|tx| {
            Ok(tx
                .query_opt(
                    "UPDATE s3_uploads SET next_part = next_part + 1 WHERE id = $1
                     RETURNING next_part - 1",
                    &[&id.to_string()],
                )?
                .map(|r| r.get(0)))
        })?;
        n.map(|n| n as i32)
            .ok_or_else(|| corrupt("S3 upload", id.to_string()))
    }

    fn s3_multipart_ids(&self) -> Result<HashSet<String>> {
        self.read(|c| {
            Ok(
                c.query("SELECT mpu FROM s3_uploads WHERE mpu IS NOT NULL", &[])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
            )
        })
    }

    fn s3_orphan_uploads(&self, before: u64) -> Result<Vec<UploadId>> {
        let ids: Vec<String> = self.read(|c| {
            Ok(c.query(
                "SELECT id FROM s3_uploads WHERE created_at <= $1
                 AND id NOT IN (SELECT id FROM uploads)",
                &[&(before as i64)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })?;
        Ok(ids.iter().filter_map(|s| UploadId::parse(s)).collect())
    }

    fn s3_open_multipart_count(&self) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM s3_uploads WHERE mpu IS NOT NULL AND NOT completed",
                    &[],
                )?
                .get(0);
            Ok(n as u64)
        })
    }

    fn s3_delete_upload(&self, id: UploadId) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM s3_uploads WHERE id = $1", &[&id.to_string()])?;
            Ok(())
        })
    }
}
