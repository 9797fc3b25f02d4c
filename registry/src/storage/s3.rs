//! Blobs in an S3 bucket (AWS, MinIO, Ceph RGW, SeaweedFS), every byte
//! written to the bucket once.
//!
//! Key layout: a blob lives at `<prefix>blobs/<upload-id>`, the key of the
//! upload session that wrote it, and the index from digest to key lives in
//! the metadata database ([`crate::metadata::S3Upload`] and `s3_blobs`).
//! S3 cannot rename an object, and a multipart upload's key is fixed when it
//! starts — before a chunked upload's digest is known — so a
//! content-addressed key would need the copy distribution's driver makes at
//! the end of every push (every byte stored twice, a multi-GiB server-side
//! copy). Here nothing is copied: the multipart upload is completed where
//! it was started and the index says which digest it holds. A digest that
//! is already stored is not stored again: the new session's upload is
//! aborted and the push still succeeds.
//!
//! Bytes arrive in requests of any size; S3 wants parts of at least 5 MiB
//! (but the last). A writer sends whole parts of `part_size` as they fill
//! and, when its request ends, leaves the rest — the tail, below one part —
//! staged in the metadata database with the session's part list. The
//! acknowledged length is what S3 holds in acknowledged parts plus the
//! staged tail, so nothing acknowledged is lost on a restart, and any
//! replica can continue the session. The tail joins the next part, or is the
//! last part (or, for a blob smaller than one part, the whole object, one
//! `PutObject`). Part numbers come from the database, never reused: a part
//! still in flight from an abandoned request cannot replace one written
//! after it, and the parts it did write are not in the acknowledged list,
//! so completing the upload discards them.
//!
//! Reads stream `GetObject` (with `Range`) without buffering the blob;
//! `stat` asks the index only. Retries (throttling, connection errors) are
//! the SDK's standard mode with backoff and jitter, bounded; a store that
//! cannot be reached is [`StorageError::Unavailable`] (503 to clients).

use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use berth_oci::{Algorithm, Digest};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use super::{BlobStore, BlobStream, StorageError, UploadId, UploadWriter, check_range};
use crate::metadata::{Metadata, S3Part, S3Upload};
use crate::metrics::S3Metrics;

/// S3's smallest part (but the last).
pub const MIN_PART: u64 = 5 << 20;

/// `[storage.s3]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The endpoint (`http://127.0.0.1:8333`, `https://minio.lan`); default:
    /// AWS for `region`.
    pub endpoint: Option<String>,
    /// The region (any name for MinIO, Ceph and SeaweedFS).
    #[serde(default = "default_region")]
    pub region: String,
    /// A key prefix (`registry/`), so the bucket can hold other things.
    #[serde(default)]
    pub prefix: String,
    /// `http://endpoint/bucket/key` instead of `http://bucket.endpoint/key`
    /// (MinIO, Ceph RGW, SeaweedFS).
    #[serde(default)]
    pub path_style: bool,
    /// A file holding the access key id; default: the AWS chain
    /// (environment, shared files, web identity, instance metadata).
    pub access_key_id_file: Option<PathBuf>,
    /// A file holding the secret access key (with `access_key_id_file`).
    pub secret_access_key_file: Option<PathBuf>,
    /// Part size of multipart uploads, MiB (5–5120).
    #[serde(default = "default_part_mib")]
    pub part_size_mib: u64,
    /// Seconds to connect.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_s: u64,
    /// Seconds one S3 request may take (a whole part's upload).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: u64,
    /// Attempts per request on throttling and connection errors (1–10).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Answer blob GETs with a 307 to a presigned URL of the object, so
    /// clients that can reach the store fetch from it directly.
    #[serde(default)]
    pub redirect: bool,
    /// Seconds a presigned URL stays valid (10–3600).
    #[serde(default = "default_redirect_expiry")]
    pub redirect_expiry_s: u64,
}

fn default_redirect_expiry() -> u64 {
    300
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_part_mib() -> u64 {
    16
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_request_timeout() -> u64 {
    300
}
fn default_attempts() -> u32 {
    4
}

impl S3Config {
    /// Check what can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        let b = &self.bucket;
        let bucket_ok = (3..=63).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            && !b.starts_with(['-', '.'])
            && !b.ends_with(['-', '.']);
        if !bucket_ok {
            return Err(format!(
                "storage.s3.bucket = {b:?} is not a bucket name (3-63 of a-z 0-9 . -)"
            ));
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "storage.s3.endpoint = {e:?} needs a scheme: https://{e} (or http:// for a local store)"
                ));
            }
        }
        if !self.prefix.is_empty()
            && (!self.prefix.ends_with('/')
                || self.prefix.starts_with('/')
                || self.prefix.contains("//")
                || !self.prefix.bytes().all(|c| c.is_ascii_graphic()))
        {
            return Err(format!(
                "storage.s3.prefix = {:?} must be like \"registry/\": printable, ending in /, not starting with /",
                self.prefix
            ));
        }
        if !(5..=5120).contains(&self.part_size_mib) {
            return Err(format!(
                "storage.s3.part_size_mib = {} must be between 5 and 5120",
                self.part_size_mib
            ));
        }
        if self.access_key_id_file.is_some() != self.secret_access_key_file.is_some() {
            return Err(
                "storage.s3: give both access_key_id_file and secret_access_key_file, or neither (the AWS chain)"
                    .into(),
            );
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(format!(
                "storage.s3.max_attempts = {} must be between 1 and 10",
                self.max_attempts
            ));
        }
        if !(10..=3600).contains(&self.redirect_expiry_s) {
            return Err(format!(
                "storage.s3.redirect_expiry_s = {} must be between 10 and 3600",
                self.redirect_expiry_s
            ));
        }
        if self.connect_timeout_s == 0 || self.request_timeout_s == 0 {
            return Err("storage.s3 timeouts must be at least 1 second".into());
        }
        Ok(())
    }
}

/// The S3 blob store.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    meta: Arc<Metadata>,
    /// Presigned redirects for blob GETs, valid this long.
    redirect: Option<Duration>,
    metrics: S3Metrics,
}

/// Counts the attempts after the first of every S3 request.
#[derive(Debug)]
struct CountRetries(S3Metrics);

impl aws_sdk_s3::config::Intercept for CountRetries {
    fn name(&self) -> &'static str {
        "berth-count-retries"
    }

    fn read_before_attempt(
        &self,
        _ctx: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let attempts = cfg
            .load::<aws_smithy_runtime_api::client::retries::RequestAttempts>()
            .map_or(1, |a| a.attempts());
        if attempts > 1 {
            self.0.retry();
        }
        Ok(())
    }
}

/// Whether an SDK error means the store is unreachable or overloaded.
fn is_unavailable<E, R>(e: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => matches!(
            s.err().code(),
            Some("SlowDown" | "ServiceUnavailable" | "InternalError")
        ),
        _ => false,
    }
}

/// A storage error from an SDK error: the store unreachable or failing
/// (connection, timeout, 5xx, throttling after the retries) is
/// [`StorageError::Unavailable`]; anything else is I/O.
fn sdk_error<E, R>(what: &str, e: SdkError<E, R>) -> StorageError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let unavailable = is_unavailable(&e);
    let text = format!("S3 {what}: {}", DisplayErrorContext(&e));
    if unavailable {
        StorageError::Unavailable(text)
    } else {
        StorageError::Io(io::Error::other(text))
    }
}

/// The index failing is the store failing; an unreachable database is a
/// store that cannot answer now (503), not a broken one.
fn meta_error(e: crate::metadata::MetadataError) -> StorageError {
    match e {
        crate::metadata::MetadataError::Unavailable(why) => {
            StorageError::Unavailable(format!("the metadata database: {why}"))
        }
        other => StorageError::Io(io::Error::other(other)),
    }
}

impl S3BlobStore {
    /// A client for `config`, with its index in `meta`. No request is made
    /// here; [`S3BlobStore::probe`] checks the bucket.
    pub async fn connect(config: &S3Config, meta: Arc<Metadata>) -> Result<Self, String> {
        config.validate()?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new(config.region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(config.connect_timeout_s))
                    .operation_attempt_timeout(Duration::from_secs(config.request_timeout_s))
                    .build(),
            )
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(config.max_attempts)
                    .with_initial_backoff(Duration::from_millis(100)),
            );
        if let (Some(k), Some(s)) = (&config.access_key_id_file, &config.secret_access_key_file) {
            let key = crate::config::read_secret_file("storage.s3.access_key_id_file", k)?;
            let secret = crate::config::read_secret_file("storage.s3.secret_access_key_file", s)?;
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                key,
                secret,
                None,
                None,
                "berth-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            // Checksums only where S3 requires them: object stores that are
            // not AWS (SeaweedFS, older MinIO and Ceph) refuse the trailing
            // checksums of aws-chunked bodies. Digests are checked by berth.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        if let Some(e) = &config.endpoint {
            builder = builder.endpoint_url(e);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
            part_size: (config.part_size_mib << 20) as usize,
            meta,
            redirect: config
                .redirect
                .then(|| Duration::from_secs(config.redirect_expiry_s)),
            metrics: S3Metrics::default(),
        })
    }

    /// Count into `metrics` (registered with the registry's), retries
    /// included.
    pub fn with_metrics(mut self, metrics: S3Metrics) -> Self {
        let config = self
            .client
            .config()
            .to_builder()
            .interceptor(CountRetries(metrics.clone()))
            .build();
        self.client = Client::from_conf(config);
        self.metrics = metrics;
        self
    }

    /// Time and count one S3 request.
    async fn observe<T, E, R>(
        &self,
        operation: &'static str,
        request: impl std::future::Future<Output = Result<T, SdkError<E, R>>>,
    ) -> Result<T, SdkError<E, R>>
    where
        E: ProvideErrorMetadata,
    {
        let start = std::time::Instant::now();
        let result = request.await;
        let label = match &result {
            Ok(_) => "ok",
            Err(e) if is_unavailable(e) => "unavailable",
            Err(_) => "error",
        };
        self.metrics.request(operation, label, start.elapsed());
        result
    }

    /// A store with parts of `part_size` bytes (tests: small parts, so a few
    /// MiB exercise the multipart path).
    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.part_size = part_size.max(MIN_PART as usize);
        self
    }

    /// Check that the bucket exists and this store may write, read, list
    /// multipart uploads and delete in it: one line saying what is wrong.
    pub async fn probe(&self) -> Result<(), String> {
        let cause = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
        // A GET, not HeadBucket: a HEAD's error has no body, so a missing
        // bucket and refused credentials would both be a bare 403.
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| explain(&self.bucket, "ListObjectsV2", &e))?;
        let key = format!("{}berth-probe/{}", self.prefix, uuid::Uuid::new_v4());
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from_static(b"berth"))
            .send()
            .await
            .map_err(|e| explain(&self.bucket, "PutObject", &e))?;
        self.client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .max_uploads(1)
            .send()
            .await
            .map_err(|e| explain(&self.bucket, "ListMultipartUploads", &e))?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| cause("DeleteObject", &DisplayErrorContext(&e)))?;
        Ok(())
    }

    /// With `redirect`: a presigned GET of blob `digest`'s object, valid
    /// for the configured time; `None` without `redirect`, or for a blob
    /// the index does not know (the caller answers as without).
    pub async fn presigned_get(&self, digest: &Digest) -> Result<Option<String>, StorageError> {
        let Some(expiry) = self.redirect else {
            return Ok(None);
        };
        let d = digest.to_string();
        let Some((key, _)) = self.db(move |m| m.s3_blob(&d)).await? else {
            return Ok(None);
        };
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(expiry)
            .map_err(|e| StorageError::Io(io::Error::other(e)))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .presigned(config)
            .await
            .map_err(|e| sdk_error("presign GetObject", e))?;
        Ok(Some(req.uri().to_owned()))
    }

    /// Abort what no live session owns and is older than `before` (unix
    /// seconds): S3 sessions the registry forgot, and multipart uploads
    /// under the prefix that no session records. How many multipart
    /// uploads were aborted.
    pub async fn abort_orphans(&self, before: u64) -> Result<usize, StorageError> {
        for id in self.db(move |m| m.s3_orphan_uploads(before)).await? {
            self.abort_upload(id).await?;
        }
        let known = self.db(|m| m.s3_multipart_ids()).await?;
        let mut aborted = 0;
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let list = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(format!("{}blobs/", self.prefix))
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send();
            let out = self
                .observe("ListMultipartUploads", list)
                .await
                .map_err(|e| sdk_error("ListMultipartUploads", e))?;
            for u in out.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                let started = u.initiated().map_or(0, |t| t.secs().max(0) as u64);
                if known.contains(id) || started > before {
                    continue;
                }
                let abort = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send();
                match self.observe("AbortMultipartUpload", abort).await {
                    Ok(_) => aborted += 1,
                    Err(e) if e.code() == Some("NoSuchUpload") => {}
                    Err(e) => return Err(sdk_error("AbortMultipartUpload", e)),
                }
            }
            if out.is_truncated() != Some(true) {
                return Ok(aborted);
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
        }
    }

    fn key_of(&self, id: UploadId) -> String {
        format!("{}blobs/{id}", self.prefix)
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Metadata) -> Result<T, crate::metadata::MetadataError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let meta = self.meta.clone();
        tokio::task::spawn_blocking(move || f(meta.as_ref()))
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))?
            .map_err(meta_error)
    }

    async fn state(&self, id: UploadId) -> Result<S3Upload, StorageError> {
        self.db(move |m| m.s3_upload(id))
            .await?
            .ok_or(StorageError::UploadNotFound(id))
    }

    /// Upload `bytes` as a new part of `u`'s multipart upload (started
    /// here if need be).
    async fn put_part(&self, u: &mut S3Upload, bytes: Bytes) -> Result<(), StorageError> {
        let mpu = match &u.mpu {
            Some(m) => m.clone(),
            None => {
                let out = self
                    .observe(
                        "CreateMultipartUpload",
                        self.client
                            .create_multipart_upload()
                            .bucket(&self.bucket)
                            .key(&u.key)
                            .content_type("application/octet-stream")
                            .send(),
                    )
                    .await
                    .map_err(|e| sdk_error("CreateMultipartUpload", e))?;
                let mpu = out.upload_id().unwrap_or_default().to_owned();
                let (id, m) = (u.id, mpu.clone());
                self.db(move |meta| meta.s3_set_mpu(id, &m)).await?;
                u.mpu = Some(mpu.clone());
                mpu
            }
        };
        let id = u.id;
        let number = self.db(move |m| m.s3_next_part(id)).await?;
        if number > 10_000 {
            return Err(StorageError::Io(io::Error::other(format!(
                "upload {id} needs more than S3's 10,000 parts: raise storage.s3.part_size_mib"
            ))));
        }
        let size = bytes.len() as u64;
        let out = self
            .observe(
                "UploadPart",
                self.client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&u.key)
                    .upload_id(&mpu)
                    .part_number(number)
                    .content_length(size as i64)
                    .body(ByteStream::from(bytes))
                    .send(),
            )
            .await
            .map_err(|e| sdk_error("UploadPart", e))?;
        self.metrics.written(size);
        u.parts.push(S3Part {
            number,
            etag: out.e_tag().unwrap_or_default().to_owned(),
            size,
        });
        Ok(())
    }

    /// Make the object of `u` exist at its key with its first `len` bytes:
    /// the staged tail as the last part (or, without parts, the whole
    /// object).
    async fn complete(&self, u: &mut S3Upload, len: u64) -> Result<(), StorageError> {
        if u.completed {
            let size = self.object_size(&u.key).await?;
            if size != len {
                return Err(StorageError::Io(io::Error::other(format!(
                    "upload {} was completed with {size} bytes; cannot publish {len}",
                    u.id
                ))));
            }
            return Ok(());
        }
        let parts_len = u.parts_len();
        if len < parts_len {
            return Err(StorageError::Io(io::Error::other(format!(
                "upload {} holds {parts_len} bytes in S3 parts; cannot publish only {len}",
                u.id
            ))));
        }
        let tail = Bytes::copy_from_slice(&u.tail[..(len - parts_len) as usize]);
        if u.parts.is_empty() {
            // Smaller than one part (or the only part a dropped request
            // wrote was never acknowledged): one PutObject; a multipart
            // upload started for nothing is aborted.
            self.discard(u).await?;
            u.mpu = None;
        }
        match &u.mpu {
            None => {
                self.metrics.written(tail.len() as u64);
                let put = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&u.key)
                    .content_type("application/octet-stream")
                    .content_length(tail.len() as i64)
                    .body(ByteStream::from(tail))
                    .send();
                self.observe("PutObject", put)
                    .await
                    .map_err(|e| sdk_error("PutObject", e))?;
            }
            Some(mpu) => {
                let mpu = mpu.clone();
                if !tail.is_empty() {
                    self.put_part(u, tail).await?;
                }
                let parts = u
                    .parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(&p.etag)
                            .build()
                    })
                    .collect();
                let complete = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&u.key)
                    .upload_id(&mpu)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send();
                match self.observe("CompleteMultipartUpload", complete).await {
                    Ok(_) => {}
                    // Completed before a crash that kept the database from
                    // saying so: the object is there, whole.
                    Err(e)
                        if e.code() == Some("NoSuchUpload")
                            && self.object_size(&u.key).await.ok() == Some(len) => {}
                    Err(e) => return Err(sdk_error("CompleteMultipartUpload", e)),
                }
            }
        }
        u.completed = true;
        u.tail.clear();
        let state = u.clone();
        self.db(move |m| m.s3_put_upload(&state)).await
    }

    async fn object_size(&self, key: &str) -> Result<u64, StorageError> {
        let out = self
            .observe(
                "HeadObject",
                self.client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send(),
            )
            .await
            .map_err(|e| sdk_error("HeadObject", e))?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    /// Remove whatever `u` holds in S3: its multipart upload, or its
    /// completed object.
    async fn discard(&self, u: &S3Upload) -> Result<(), StorageError> {
        if u.completed {
            self.delete_key(&u.key).await
        } else if let Some(mpu) = &u.mpu {
            match self
                .observe(
                    "AbortMultipartUpload",
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&u.key)
                        .upload_id(mpu)
                        .send(),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
                Err(e) => Err(sdk_error("AbortMultipartUpload", e)),
            }
        } else {
            Ok(())
        }
    }

    async fn delete_key(&self, key: &str) -> Result<(), StorageError> {
        match self
            .observe(
                "DeleteObject",
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send(),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchKey") => Ok(()),
            Err(e) => Err(sdk_error("DeleteObject", e)),
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobStream, StorageError> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(r) = &range {
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = self
            .observe("GetObject", req.send())
            .await
            .map_err(|e| sdk_error("GetObject", e))?;
        let metrics = self.metrics.clone();
        Ok(Box::pin(futures_util::stream::unfold(
            (out.body, metrics),
            |(mut body, metrics)| async move {
                match body.next().await {
                    None => None,
                    Some(Ok(b)) => {
                        metrics.read(b.len() as u64);
                        Some((Ok(b), (body, metrics)))
                    }
                    Some(Err(e)) => Some((Err(io::Error::other(e)), (body, metrics))),
                }
            },
        )))
    }
}

#[cfg(test)]
impl S3BlobStore {
    /// Start a multipart upload no session records, as a crash between
    /// starting and recording one would leave (tests).
    pub(crate) async fn start_stray_multipart(&self) -> Result<String, String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(format!("{}blobs/{}", self.prefix, uuid::Uuid::new_v4()))
            .send()
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
        Ok(out.upload_id().unwrap_or_default().to_owned())
    }

    /// Every object key under the prefix (tests).
    pub(crate) async fn object_keys(&self) -> Result<Vec<String>, String> {
        let out = self
            .observe(
                "ListObjectsV2",
                self.client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&self.prefix)
                    .send(),
            )
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect())
    }

    /// Multipart uploads not completed or aborted (tests).
    pub(crate) async fn open_multipart_uploads(&self) -> Result<Vec<String>, String> {
        let out = self
            .observe(
                "ListMultipartUploads",
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(&self.prefix)
                    .send(),
            )
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
        Ok(out
            .uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_owned))
            .collect())
    }
}

/// The innermost cause of an error (`Connection refused (os error 111)`),
/// or the error itself when that says nothing.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    match berth_oci::error::root_cause(e).to_string() {
        s if s.is_empty() => e.to_string(),
        s => s,
    }
}

/// One line for a failed probe, saying what to fix.
fn explain<E, R>(bucket: &str, op: &str, e: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = e.code().unwrap_or("");
    let status = match e {
        SdkError::ServiceError(s) => {
            let raw: &dyn std::any::Any = s.raw();
            raw.downcast_ref::<aws_sdk_s3::config::http::HttpResponse>()
                .map(|r| r.status().as_u16())
        }
        _ => None,
    };
    match (e, code, status) {
        (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _, _) => format!(
            "the S3 endpoint cannot be reached ({}): check storage.s3.endpoint and that the store is running",
            root_cause(e)
        ),
        (_, "NoSuchBucket", _) | (_, _, Some(404)) => {
            format!("bucket {bucket:?} does not exist: create it, or fix storage.s3.bucket")
        }
        (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied", _)
        | (_, _, Some(403)) => format!(
            "the S3 store refused the credentials for {op} on {bucket:?} ({code}): check the access key files or the AWS chain, and the bucket policy"
        ),
        (_, "RequestTimeTooSkewed", _) => {
            "the S3 store says this machine's clock is off: fix the time (NTP)".to_owned()
        }
        (
            _,
            "AuthorizationHeaderMalformed"
            | "PermanentRedirect"
            | "IllegalLocationConstraintException",
            _,
        )
        | (_, _, Some(301)) => {
            format!("bucket {bucket:?} is in another region: fix storage.s3.region ({code})")
        }
        (SdkError::ServiceError(s), code, status) => format!(
            "the S3 store answered {op} on {bucket:?} with {}{}{}: check that it is healthy (still starting?)",
            if code.is_empty() { "an error" } else { code },
            s.err()
                .message()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            status.map(|s| format!(", HTTP {s}")).unwrap_or_default(),
        ),
        _ => format!("S3 {op} on {bucket:?} failed: {}", root_cause(e)),
    }
}

/// Appends to an S3 upload session.
#[derive(Debug)]
pub struct S3Writer {
    store: S3BlobStore,
    upload: S3Upload,
    buf: BytesMut,
}

impl UploadWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.buf.extend_from_slice(&chunk);
        while self.buf.len() >= self.store.part_size {
            let part = self.buf.split_to(self.store.part_size).freeze();
            self.store.put_part(&mut self.upload, part).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, StorageError> {
        self.upload.tail = self.buf.to_vec();
        let state = self.upload.clone();
        let len = state.len();
        self.store.db(move |m| m.s3_put_upload(&state)).await?;
        Ok(len)
    }
}

impl BlobStore for S3BlobStore {
    type Writer = S3Writer;

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let d = digest.to_string();
        Ok(self.db(move |m| m.s3_blob(&d)).await?.map(|(_, size)| size))
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream, StorageError> {
        let d = digest.to_string();
        let (key, size) = self
            .db(move |m| m.s3_blob(&d))
            .await?
            .ok_or_else(|| StorageError::BlobNotFound(digest.clone()))?;
        if let Some(r) = &range {
            check_range(r, size)?;
        }
        if size == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        self.get(&key, range).await
    }

    async fn create_upload(&self, id: UploadId) -> Result<(), StorageError> {
        let u = S3Upload {
            id,
            key: self.key_of(id),
            mpu: None,
            parts: Vec::new(),
            tail: Vec::new(),
            completed: false,
        };
        self.db(move |m| m.s3_put_upload(&u)).await
    }

    async fn append_upload(&self, id: UploadId, offset: u64) -> Result<S3Writer, StorageError> {
        let mut upload = self.state(id).await?;
        if upload.completed {
            return Err(StorageError::Io(io::Error::other(format!(
                "upload {id} was already completed in S3"
            ))));
        }
        let have = upload.len();
        if offset > have {
            return Err(StorageError::Gap { id, have, offset });
        }
        let parts_len = upload.parts_len();
        if offset < parts_len {
            return Err(StorageError::Unresumable {
                id,
                offset,
                held: parts_len,
            });
        }
        upload.tail.truncate((offset - parts_len) as usize);
        let mut buf = BytesMut::with_capacity(self.part_size.min(upload.tail.len() + (1 << 20)));
        buf.extend_from_slice(&upload.tail);
        Ok(S3Writer {
            store: self.clone(),
            upload,
            buf,
        })
    }

    async fn hash_upload(
        &self,
        id: UploadId,
        len: u64,
        algorithm: Algorithm,
    ) -> Result<Digest, StorageError> {
        let mut u = self.state(id).await?;
        if u.mpu.is_none() && !u.completed {
            let tail = u.tail.get(..len as usize).ok_or(StorageError::Gap {
                id,
                have: u.len(),
                offset: len,
            })?;
            return Ok(algorithm.digest(tail));
        }
        // Parts of an unfinished multipart upload cannot be read back:
        // complete it (where it will stay) and hash the object.
        self.complete(&mut u, len).await?;
        let mut hasher = algorithm.hasher();
        if len > 0 {
            use futures_util::StreamExt;
            let mut stream = self.get(&u.key, Some(0..len)).await?;
            while let Some(chunk) = stream.next().await {
                hasher.update(&chunk?);
            }
        }
        Ok(hasher.finish())
    }

    async fn commit_upload(
        &self,
        id: UploadId,
        len: u64,
        digest: &Digest,
    ) -> Result<(), StorageError> {
        let mut u = self.state(id).await?;
        let d = digest.to_string();
        if self.db(move |m| m.s3_blob(&d)).await?.is_some() {
            // Already stored: this session's bytes are not kept.
            self.discard(&u).await?;
            return self.db(move |m| m.s3_delete_upload(id)).await;
        }
        self.complete(&mut u, len).await?;
        let (d, key) = (digest.to_string(), u.key.clone());
        let recorded = self.db(move |m| m.s3_put_blob(&d, &key, len)).await?;
        if !recorded {
            // Another session published the same digest meanwhile.
            self.delete_key(&u.key).await?;
        }
        self.db(move |m| m.s3_delete_upload(id)).await
    }

    async fn abort_upload(&self, id: UploadId) -> Result<(), StorageError> {
        let Some(u) = self.db(move |m| m.s3_upload(id)).await? else {
            return Ok(());
        };
        self.discard(&u).await?;
        self.db(move |m| m.s3_delete_upload(id)).await
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        // The object first: if deleting it fails, the index still names
        // it and a later delete retries.
        let d = digest.to_string();
        let Some((key, _)) = self.db(move |m| m.s3_blob(&d)).await? else {
            return Ok(());
        };
        self.delete_key(&key).await?;
        let d = digest.to_string();
        self.db(move |m| m.s3_delete_blob(&d)).await?;
        Ok(())
    }
}
