//! Blob endpoints: GET/HEAD (with single byte ranges) and DELETE of
//! `/v2/<name>/blobs/<digest>`, and the upload protocol — POST to start (or
//! mount, or upload monolithically), PATCH chunks in order, GET status, PUT
//! to finish, DELETE to cancel.
//!
//! Upload bytes are hashed while they stream to the store; a blob is
//! published only after its digest checks out, and the acknowledged length
//! of a session lives in the metadata, so a session survives a restart (the
//! hash is then recomputed from the stored bytes). One request at a time may
//! work on a session.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use berth_oci::distribution::{parse_range, range};
use berth_oci::{Algorithm, Digest, ErrorCode, Hasher, validate_name};
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode, header};

use serde_json::json;

use super::{ApiError, Params, db_write, empty, next_chunk};
use crate::Registry;
use crate::storage::{BlobStore, StorageError, UploadId, UploadWriter};

fn blob_unknown(name: &str, digest: &Digest) -> ApiError {
    ApiError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not in repository {name}"),
    )
}

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id} is not known"),
    )
}

/// GET or HEAD a blob.
pub(super) async fn get(
    r: &Arc<Registry>,
    name: &str,
    digest: &Digest,
    headers: &HeaderMap,
    params: &Params,
    head: bool,
) -> Result<Response, ApiError> {
    let size = r
        .meta
        .repo_blob(name, digest)?
        .ok_or_else(|| blob_unknown(name, digest))?;
    // The piece digests instead of the bytes (for node mirrors).
    if params.get("pieces").is_some_and(|v| v == "v1") && !head {
        let pieces = crate::pieces::of(r, digest, size).await?;
        let body = serde_json::to_vec(&pieces).unwrap_or_default();
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, crate::pieces::MEDIA_TYPE)
            .header(header::CONTENT_LENGTH, body.len())
            .header("Docker-Content-Digest", digest.to_string())
            .body(Body::from(body))
            .expect("valid headers"));
    }
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
        .header("Docker-Content-Digest", digest.to_string());
    if head {
        return Ok(builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size)
            .body(Body::empty())
            .expect("valid headers"));
    }
    // Blobs in S3 with `redirect`: the client fetches the bytes from the
    // store itself, with a short-lived presigned URL (its Range header
    // goes along).
    if let crate::storage::Blobs::S3(s3) = &r.blobs {
        if let Some(url) = s3.presigned_get(digest).await? {
            r.metrics.blob_redirect();
            return Ok(Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(header::LOCATION, url)
                .header("Docker-Content-Digest", digest.to_string())
                .header(header::CONTENT_LENGTH, 0)
                .body(Body::empty())
                .expect("valid headers"));
        }
    }
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match parse_range(range_header, size) {
        Err(e) => {
            let e = ApiError::new(ErrorCode::SizeInvalid, format!("{e} ({range_header:?})"))
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                .with_detail(serde_json::json!({ "size": size }));
            let mut resp = axum::response::IntoResponse::into_response(e);
            if let Ok(v) = format!("bytes */{size}").parse() {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
        Ok(range) => range,
    };
    let stream = r.blobs.read(digest, range.clone()).await?;
    let metrics = r.clone();
    let stream = stream.inspect(move |chunk| {
        if let Ok(c) = chunk {
            metrics.metrics.bytes_out(c.len() as u64, true);
        }
    });
    let builder = match range {
        Some(rg) => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, rg.end - rg.start)
            .header(header::CONTENT_RANGE, range::content_range(&rg, size)),
        None => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size),
    };
    Ok(builder
        .body(Body::from_stream(stream))
        .expect("valid headers"))
}

/// DELETE a blob from a repository. Its bytes stay until garbage collection
/// finds that nothing refers to them.
pub(super) async fn delete(
    r: &Arc<Registry>,
    name: &str,
    digest: &Digest,
) -> Result<Response, ApiError> {
    let (n, d) = (name.to_owned(), digest.clone());
    if db_write(r, move |m| m.unlink_blob(&n, &d)).await? {
        tracing::info!(repository = name, %digest, "blob unlinked");
        let mut resp = empty(StatusCode::ACCEPTED, &[]);
        resp.extensions_mut().insert(vec![super::AuditNote {
            action: "blob.delete",
            target: format!("{name}@{digest}"),
            detail: String::new(),
        }]);
        Ok(resp)
    } else {
        Err(blob_unknown(name, digest))
    }
}

/// Exclusive use of an upload session for one request, carrying the
/// streaming hash between requests.
struct Claim<'a> {
    r: &'a Registry,
    id: UploadId,
    /// A hash of the session's first `.0` bytes.
    hasher: Option<(u64, Hasher)>,
    /// The session ended (finished or cancelled): forget its state.
    ended: bool,
    /// The claim on the session on every replica (after the local one).
    _cluster: Option<crate::metadata::LockGuard>,
}

impl<'a> Claim<'a> {
    fn take(r: &'a Registry, id: UploadId) -> Result<Self, ApiError> {
        let mut sessions = r.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let state = sessions.entry(id).or_default();
        if state.busy {
            return Err(in_use(id));
        }
        state.busy = true;
        let hasher = state.hasher.take();
        Ok(Self {
            r,
            id,
            hasher,
            ended: false,
            _cluster: None,
        })
    }

    /// Also hold the session on every replica (a remote metadata store):
    /// a request for it running on another replica refuses this one.
    async fn across_replicas(mut self, r: &Arc<Registry>) -> Result<Self, ApiError> {
        if r.meta.remote() {
            let id = self.id;
            match db_write(r, move |m| m.claim_upload(id)).await? {
                Some(guard) => self._cluster = Some(guard),
                None => return Err(in_use(id)),
            }
        }
        Ok(self)
    }
}

/// Upload `id` is being written by another request.
fn in_use(id: UploadId) -> ApiError {
    ApiError::new(
        ErrorCode::BlobUploadInvalid,
        format!("upload {id} is in use by another request; retry when it completes"),
    )
    .with_status(StatusCode::CONFLICT)
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut sessions = self.r.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if self.ended {
            sessions.remove(&self.id);
        } else if let Some(state) = sessions.get_mut(&self.id) {
            state.busy = false;
            state.hasher = self.hasher.take();
        }
    }
}

/// Stream a request body into the upload at `offset`, hashing as it goes.
/// Returns the upload's new length; nothing is acknowledged here.
async fn append_body(
    r: &Registry,
    claim: &mut Claim<'_>,
    offset: u64,
    body: Body,
) -> Result<u64, ApiError> {
    if let Err(e) = above_floor(r) {
        return Err(drained(r, body, e).await);
    }
    let mut writer = r.blobs.append_upload(claim.id, offset).await?;
    let mut hasher = match claim.hasher.take() {
        Some((covered, h)) if covered == offset => Some(h),
        _ if offset == 0 => Some(Algorithm::Sha256.hasher()),
        _ => None,
    };
    let mut stream = body.into_data_stream();
    while let Some(chunk) =
        next_chunk(r, &mut stream, ErrorCode::BlobUploadInvalid, "upload").await?
    {
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        if let Err(e) = writer.write(chunk).await {
            // Read (and drop) the rest of the body first, so that a client
            // still sending gets this answer rather than a broken pipe.
            drop(writer);
            super::drain(r, &mut stream, super::DRAIN_LIMIT).await;
            return Err(e.into());
        }
    }
    let len = writer.finish().await?;
    r.metrics.bytes_in(len - offset);
    claim.hasher = hasher.map(|h| (len, h));
    Ok(len)
}

/// Publish the first `len` bytes of an upload as `digest` after checking
/// them, and link it into `name`. On a mismatch the session is discarded.
async fn publish(
    r: &Arc<Registry>,
    name: &str,
    claim: &mut Claim<'_>,
    len: u64,
    digest: &Digest,
    actor: Option<&str>,
) -> Result<(), ApiError> {
    let actual = match claim.hasher.take() {
        Some((covered, h)) if covered == len && h.algorithm() == digest.algorithm() => h.finish(),
        _ => {
            r.blobs
                .hash_upload(claim.id, len, digest.algorithm())
                .await?
        }
    };
    if &actual != digest {
        discard(r, claim).await?;
        return Err(ApiError::new(
            ErrorCode::DigestInvalid,
            format!("uploaded content hashes to {actual}, not {digest}; the upload was discarded"),
        ));
    }
    if let Err(e) = within_quota(r, name, len, Some(digest), actor).await {
        discard(r, claim).await?;
        return Err(e);
    }
    {
        // Published and linked under the digest's gate: a collection
        // deleting the same digest's bytes waits, or has finished.
        let _publishing = r.gc_gate.publishing(&r.meta, digest).await?;
        r.blobs.commit_upload(claim.id, len, digest).await?;
        let (n, d, id) = (name.to_owned(), digest.clone(), claim.id);
        db_write(r, move |m| m.link_blob(&n, &d, len, Some(id))).await?;
    }
    claim.ended = true;
    r.metrics.upload_completed();
    crate::pieces::prepare(r, digest, len);
    Ok(())
}

/// After a failed request, give back the bytes it wrote past `have`, the
/// length acknowledged before it: a full disk gets its space back at once,
/// and the session resumes at `have`. (A store that cannot take bytes back,
/// as S3 inside uploaded parts, keeps them; the next append says so.)
async fn release(r: &Arc<Registry>, claim: &mut Claim<'_>, have: u64) {
    claim.hasher = None;
    let freed = async {
        let w = r.blobs.append_upload(claim.id, have).await?;
        w.finish().await
    }
    .await;
    if let Err(e) = freed {
        tracing::debug!(upload = %claim.id, error = %e, "unacknowledged bytes not released");
    }
}

/// Refuse what would take `name`'s project past its quota: `extra` more
/// bytes (0: the project must still be under it), unless blob `digest` is
/// already in the project (a push of it adds nothing). A refusal queues a
/// `QUOTA_EXCEED` webhook event.
async fn within_quota(
    r: &Arc<Registry>,
    name: &str,
    extra: u64,
    digest: Option<&Digest>,
    actor: Option<&str>,
) -> Result<(), ApiError> {
    let Some(limit) = r.policies().quota(name) else {
        return Ok(());
    };
    let project = crate::auth::model::project_of(name).to_owned();
    if let Some(d) = digest {
        let (p, d) = (project.clone(), d.to_string());
        if super::db_read(r, move |m| m.blob_in_project(&p, &d)).await? {
            return Ok(());
        }
    }
    let p = project.clone();
    let usage = super::db_read(r, move |m| m.project_usage(&p)).await?;
    let over = if extra == 0 {
        usage >= limit
    } else {
        usage + extra > limit
    };
    if !over {
        return Ok(());
    }
    if let Some(hooks) = &r.webhooks {
        let d = digest.cloned().unwrap_or_else(|| Digest::sha256(b""));
        let events = hooks.quota_events(
            name,
            &d,
            (limit, usage, extra),
            actor.filter(|a| !a.is_empty()),
            super::token::now(),
        );
        if !events.is_empty() && db_write(r, move |m| m.outbox_add(&events)).await.is_ok() {
            hooks.wake.notify_one();
        }
    }
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / f64::from(1 << 20));
    Err(ApiError::new(
        ErrorCode::Denied,
        format!(
            "project {project}'s quota of {} is exceeded: it holds {} and this push needs {} more; delete images (or let retention) and collect garbage, or raise quota_mib",
            mib(limit),
            mib(usage),
            mib(extra)
        ),
    )
    .with_detail(json!({ "quota_bytes": limit, "usage_bytes": usage, "requested_bytes": extra }))
    .with_status(StatusCode::FORBIDDEN))
}

/// `e`, after reading (and dropping) the request body, so that a client
/// still sending gets it rather than a broken pipe.
async fn drained(r: &Registry, body: Body, e: ApiError) -> ApiError {
    super::drain(r, &mut body.into_data_stream(), super::DRAIN_LIMIT).await;
    e
}

/// Refuse to take more bytes while the data directory's file system has
/// less free space than the configured floor.
fn above_floor(r: &Registry) -> Result<(), ApiError> {
    let Some((dir, floor)) = &r.space_floor else {
        return Ok(());
    };
    match crate::storage::free_bytes(dir) {
        Ok(free) if free < *floor => Err(ApiError::new(
            ErrorCode::InsufficientStorage,
            format!(
                "the registry's disk has {} MiB free, below its floor of {} MiB ([storage] min_free_mib): uploads resume once space is freed (berth admin gc, retention)",
                free >> 20,
                floor >> 20
            ),
        )
        .with_status(StatusCode::INSUFFICIENT_STORAGE)),
        _ => Ok(()),
    }
}

async fn discard(r: &Arc<Registry>, claim: &mut Claim<'_>) -> Result<(), ApiError> {
    claim.ended = true;
    r.blobs.abort_upload(claim.id).await?;
    let id = claim.id;
    db_write(r, move |m| m.delete_upload(id)).await
}

fn created_blob(name: &str, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{name}/blobs/{digest}")),
            ("Docker-Content-Digest", digest.to_string()),
        ],
    )
}

fn range_value(len: u64) -> String {
    format!("0-{}", len.saturating_sub(1))
}

fn session_headers(name: &str, id: UploadId, len: u64) -> Vec<(&'static str, String)> {
    vec![
        ("Location", format!("/v2/{name}/blobs/uploads/{id}")),
        ("Range", range_value(len)),
        ("Docker-Upload-UUID", id.to_string()),
    ]
}

fn parse_digest_param(params: &Params) -> Result<Option<Digest>, ApiError> {
    params
        .get("digest")
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| ApiError::new(ErrorCode::DigestInvalid, e.to_string()))
        })
        .transpose()
}

async fn new_session(r: &Arc<Registry>, name: &str) -> Result<UploadId, ApiError> {
    above_floor(r)?;
    let id = UploadId::new();
    r.blobs.create_upload(id).await?;
    let n = name.to_owned();
    db_write(r, move |m| m.create_upload(id, &n)).await?;
    r.metrics.upload_started();
    Ok(id)
}

/// POST `/v2/<name>/blobs/uploads/`: mount, monolithic upload, or a new
/// session.
pub(super) async fn start(
    r: &Arc<Registry>,
    name: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
    actor: Option<&str>,
) -> Result<Response, ApiError> {
    if let Some(mount) = params.get("mount") {
        let digest = mount
            .parse::<Digest>()
            .map_err(|e| ApiError::new(ErrorCode::DigestInvalid, e.to_string()))?;
        // From the named repository, or without `from` from any repository
        // that holds it; otherwise fall back to a new session, as the spec
        // asks. (Access control will limit both to what the caller may pull.)
        let (d, from) = (digest.clone(), params.get("from").cloned());
        let source = match from {
            Some(from) if validate_name(&from).is_ok() => {
                super::db_read(r, move |m| m.repo_blob(&from, &d)).await?
            }
            Some(_) => None,
            None => super::db_read(r, move |m| m.linked_blob_size(&d)).await?,
        };
        if let Some(size) = source {
            within_quota(r, name, size, Some(&digest), actor).await?;
            // Linked only if a collection has not forgotten it since.
            let _publishing = r.gc_gate.publishing(&r.meta, &digest).await?;
            let (n, d) = (name.to_owned(), digest.clone());
            if db_write(r, move |m| m.mount_blob(&n, &d)).await?.is_some() {
                return Ok(created_blob(name, &digest));
            }
        }
    } else if let Some(digest) = parse_digest_param(params)? {
        // Refused before a byte is stored when the size is announced.
        if let Err(e) = within_quota(
            r,
            name,
            declared_length(headers).unwrap_or(0),
            Some(&digest),
            actor,
        )
        .await
        {
            return Err(drained(r, body, e).await);
        }
        let id = new_session(r, name).await?;
        let mut claim = Claim::take(r, id)?;
        let result = async {
            let len = append_body(r, &mut claim, 0, body).await?;
            check_length(headers, 0, len)?;
            publish(r, name, &mut claim, len, &digest, actor).await
        }
        .await;
        if let Err(e) = result {
            if !claim.ended {
                discard(r, &mut claim).await?;
            }
            return Err(e);
        }
        return Ok(created_blob(name, &digest));
    }
    within_quota(r, name, 0, None, actor).await?;
    let id = new_session(r, name).await?;
    let mut h = session_headers(name, id, 0);
    h.push(("OCI-Chunk-Min-Length", "0".to_owned()));
    Ok(empty(StatusCode::ACCEPTED, &h))
}

/// The session `id` in repository `name`, claimed for this request here
/// and on every replica, and its size. The size is read after the claim
/// is held: the request before may have just grown it on another replica.
async fn session<'a>(
    r: &'a Arc<Registry>,
    name: &str,
    id: &str,
) -> Result<(Claim<'a>, u64), ApiError> {
    let uid = UploadId::parse(id).ok_or_else(|| upload_unknown(id))?;
    let mut claim = Claim::take(r, uid)?.across_replicas(r).await?;
    let Some(rec) = super::db_read(r, move |m| m.upload(uid)).await? else {
        // Keep no state for an id that names no session.
        claim.ended = true;
        return Err(upload_unknown(id));
    };
    if rec.repository != name {
        return Err(upload_unknown(id));
    }
    Ok((claim, rec.size))
}

/// Parse `Content-Range` of an upload chunk: `<start>-<end>` (the spec's
/// form) or `bytes <start>-<end>/<total>`.
fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            ErrorCode::BlobUploadInvalid,
            "Content-Range must be <start>-<end> with start <= end",
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => Ok(Some((a, b))),
        _ => Err(bad()),
    }
}

fn out_of_order(name: &str, id: UploadId, have: u64, start: u64) -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::BlobUploadInvalid,
        format!("chunk starts at byte {start}, but the upload has {have} bytes; resume at {have}"),
    )
    .with_status(StatusCode::RANGE_NOT_SATISFIABLE);
    e = e.with_detail(
        serde_json::json!({ "location": format!("/v2/{name}/blobs/uploads/{id}"), "size": have }),
    );
    e
}

/// Check a declared `Content-Length` against what arrived.
/// The request's Content-Length, if it gives one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

fn check_length(headers: &HeaderMap, offset: u64, len: u64) -> Result<(), ApiError> {
    match declared_length(headers) {
        Some(n) if n != len - offset => Err(ApiError::new(
            ErrorCode::SizeInvalid,
            format!("Content-Length says {n} bytes but {} arrived", len - offset),
        )),
        _ => Ok(()),
    }
}

/// PATCH a chunk onto a session.
pub(super) async fn patch(
    r: &Arc<Registry>,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
    actor: Option<&str>,
) -> Result<Response, ApiError> {
    let (mut claim, have) = session(r, name, id).await?;
    let range = content_range(headers)?;
    // Past the quota: refused before the chunk is stored, and the session
    // goes (nothing partial remains).
    let coming = range
        .map(|(s, e)| e + 1 - s)
        .or_else(|| declared_length(headers))
        .unwrap_or(0);
    if let Err(e) = within_quota(r, name, have + coming, None, actor).await {
        discard(r, &mut claim).await?;
        return Err(drained(r, body, e).await);
    }
    if let Some((start, _)) = range {
        if start != have {
            let mut resp = axum::response::IntoResponse::into_response(out_of_order(
                name, claim.id, have, start,
            ));
            for (k, v) in session_headers(name, claim.id, have) {
                if let Ok(v) = v.parse() {
                    resp.headers_mut().insert(k, v);
                }
            }
            return Ok(resp);
        }
    }
    let uid = claim.id;
    let appended = async {
        let len = append_body(r, &mut claim, have, body).await?;
        if let Some((start, end)) = range {
            if len != end + 1 {
                return Err(ApiError::new(
                    ErrorCode::SizeInvalid,
                    format!(
                        "Content-Range {start}-{end} announced {} bytes but {} arrived; chunk discarded",
                        end - start + 1,
                        len - have
                    ),
                )
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE));
            }
        }
        check_length(headers, have, len)?;
        db_write(r, move |m| m.set_upload_size(uid, len)).await?;
        Ok(len)
    }
    .await;
    let len = match appended {
        Ok(len) => len,
        Err(e) => {
            release(r, &mut claim, have).await;
            return Err(e);
        }
    };
    Ok(empty(
        StatusCode::ACCEPTED,
        &session_headers(name, uid, len),
    ))
}

/// GET the status of a session.
pub(super) async fn status(r: &Arc<Registry>, name: &str, id: &str) -> Result<Response, ApiError> {
    let uid = UploadId::parse(id).ok_or_else(|| upload_unknown(id))?;
    let rec = super::db_read(r, move |m| m.upload(uid))
        .await?
        .ok_or_else(|| upload_unknown(id))?;
    if rec.repository != name {
        return Err(upload_unknown(id));
    }
    Ok(empty(
        StatusCode::NO_CONTENT,
        &session_headers(name, uid, rec.size),
    ))
}

/// PUT to finish a session, with an optional last chunk.
pub(super) async fn finish(
    r: &Arc<Registry>,
    name: &str,
    id: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
    actor: Option<&str>,
) -> Result<Response, ApiError> {
    let digest = parse_digest_param(params)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::DigestInvalid,
            "finishing an upload needs ?digest=<digest>",
        )
    })?;
    let (mut claim, have) = session(r, name, id).await?;
    if let Some((start, _)) = content_range(headers)? {
        if start != have {
            return Err(out_of_order(name, claim.id, have, start));
        }
    }
    let no_body = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    let result = async {
        let len = if no_body {
            have
        } else {
            let len = append_body(r, &mut claim, have, body).await?;
            check_length(headers, have, len)?;
            len
        };
        publish(r, name, &mut claim, len, &digest, actor).await
    }
    .await;
    match result {
        Ok(()) => Ok(created_blob(name, &digest)),
        Err(ApiError::Storage(StorageError::UploadNotFound(_))) => Err(upload_unknown(id)),
        Err(e) => {
            if !claim.ended {
                release(r, &mut claim, have).await;
            }
            Err(e)
        }
    }
}

/// DELETE a session.
pub(super) async fn cancel(r: &Arc<Registry>, name: &str, id: &str) -> Result<Response, ApiError> {
    let (mut claim, _) = session(r, name, id).await?;
    discard(r, &mut claim).await?;
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}
