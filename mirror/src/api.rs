//! The containerd-facing routes: `GET`/`HEAD` of `/v2/<name>/manifests/<ref>`
//! and `/v2/<name>/blobs/<digest>` with containerd's `?ns=<registry>`, plus
//! `/v2/`, `/metrics`, `/healthz` and `/readyz`. Every path parameter is
//! validated before it is used; a registry that is not mirrored, or content
//! the mirror cannot get, is a quick 404 so containerd falls back to the
//! registry at once. Blobs from the registry stream to the caller while
//! they are hashed and written to a temporary file; the file is published
//! into the cache only if the digest matches, and a mismatch ends the
//! response early (containerd sees a short body and retries elsewhere).

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use berth_oci::distribution::{ManifestRef, Route, content_range, parse_range, route};
use berth_oci::{Digest, ErrorCode, ErrorResponse};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::Mirror;
use crate::cache::TagRecord;
use crate::inflight::{self, Fallback, InFlight};
use crate::routing::{self, Kind};
use crate::upstream::UpstreamError;

/// The routes.
pub fn router(mirror: Arc<Mirror>) -> Router {
    Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/{*rest}", any(dispatch))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .with_state(mirror)
}

async fn base() -> Response {
    (
        [("Docker-Distribution-API-Version", "registry/2.0")],
        Body::from("{}"),
    )
        .into_response()
}

async fn metrics(State(m): State<Arc<Mirror>>) -> Response {
    let members = m.routing.members();
    let state = crate::metrics::State {
        peers: members.len() as u64,
        peers_penalised: members.iter().filter(|p| m.is_penalised(p)).count() as u64,
        downloads_in_flight: m.downloads.len() as u64,
    };
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        m.metrics.render(state),
    )
        .into_response()
}

fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let body = serde_json::to_vec(&ErrorResponse::single(code, message.into(), None))
        .unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Manifest { name: String, reference: String },
    Blob { name: String, digest: Digest },
}

/// One request's context.
struct Req<'a> {
    /// The registry's API base URL.
    base: &'a str,
    /// The registry as containerd names it.
    ns: &'a str,
    /// The repository.
    name: &'a str,
    /// The caller's credentials, forwarded to the registry only.
    auth: Option<&'a HeaderValue>,
    head: bool,
    /// From a peer: this node's own content only.
    local: bool,
    /// From a peer: fetch it from the registry if need be, not from peers.
    fetch: bool,
}

/// Why a path was refused: status, code, message.
type Refusal = (StatusCode, ErrorCode, String);

/// Parse `<name>/manifests/<ref>` or `<name>/blobs/<digest>` with the
/// one `/v2` parser; every other endpoint is not the mirror's.
fn parse(rest: &str) -> Result<Target, Refusal> {
    match route::parse(rest) {
        Ok(Route::Manifest { name, reference }) => Ok(Target::Manifest {
            name,
            reference: match reference {
                ManifestRef::Tag(t) => t,
                ManifestRef::Digest(d) => d.to_string(),
            },
        }),
        Ok(Route::Blob { name, digest }) => Ok(Target::Blob { name, digest }),
        Ok(_) => Err((
            StatusCode::NOT_FOUND,
            ErrorCode::Unsupported,
            format!("the mirror serves manifests and blobs, not /v2/{rest}"),
        )),
        Err(e) => Err((
            StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.code,
            e.message,
        )),
    }
}

#[derive(Debug, serde::Deserialize)]
struct Params {
    ns: Option<String>,
    /// Set by peer mirrors: answer from this node only (cache, containerd),
    /// never from peers or the registry, so requests never loop.
    local: Option<String>,
    /// Set by a peer asking this node, the owner of a cold blob, to fetch it
    /// from the registry (and not from peers).
    fetch: Option<String>,
}

async fn dispatch(
    State(m): State<Arc<Mirror>>,
    method: Method,
    Path(rest): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            "the mirror is read-only: GET and HEAD only",
        );
    }
    let target = match parse(&rest) {
        Ok(t) => t,
        Err((status, code, message)) => return error(status, code, message),
    };
    // The registry: containerd names it in ?ns=; with one mirrored
    // registry, a request without ns means that one. A peer asking for
    // this node's own content (?local=1) needs none: content is by digest.
    let local = params.local.is_some();
    let (ns, base) = if local {
        (params.ns.unwrap_or_default(), String::new())
    } else {
        let ns = match params.ns {
            Some(ns) => ns,
            None if m.config.registries.len() == 1 => m.config.registries[0].clone(),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NameUnknown,
                    "no ?ns=<registry> and more than one registry is mirrored",
                );
            }
        };
        let Some(base) = m.config.upstream_url(&ns) else {
            m.metrics.request("any", "none", "not_mirrored");
            return error(
                StatusCode::NOT_FOUND,
                ErrorCode::NameUnknown,
                format!("registry {ns:?} is not mirrored here"),
            );
        };
        (ns, base)
    };
    let auth = headers.get(header::AUTHORIZATION).cloned();
    let fetch = params.fetch.is_some();
    // Private content: never to peers; to anyone else only if the registry
    // says this caller may read it.
    let (name, what, digest_of) = match &target {
        Target::Manifest { name, reference } => (
            name,
            format!("manifests/{reference}"),
            reference.parse::<Digest>().ok(),
        ),
        Target::Blob { name, digest } => (name, format!("blobs/{digest}"), Some(digest.clone())),
    };
    if local {
        if digest_of.as_ref().is_some_and(|d| m.cache.is_private(d)) {
            return error(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                "not on this node",
            );
        }
    } else if m.config.is_private(&ns, name) {
        if let Some(d) = &digest_of {
            m.cache.mark_private(d);
        }
        let url = format!("{base}/v2/{name}/{what}");
        let who = auth.as_ref().map_or_else(String::new, |a| {
            Digest::sha256(a.as_bytes()).hex().to_owned()
        });
        // Per object, not per repository: a caller allowed to read one
        // repository must not get another's cached blob by asking for its
        // digest there; the registry answers that per object.
        let key = (ns.clone(), format!("{name}/{what}"), who);
        let fresh = m
            .allowed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|t| t.elapsed() < crate::AUTH_TTL);
        let verdict = if fresh {
            Ok(())
        } else {
            m.upstream.authorize(&url, auth.as_ref()).await
        };
        if verdict.is_ok() && !fresh {
            let mut allowed = m.allowed.lock().unwrap_or_else(|e| e.into_inner());
            allowed.retain(|_, t| t.elapsed() < crate::AUTH_TTL);
            allowed.insert(key, std::time::Instant::now());
        }
        if let Err((status, challenge)) = verdict {
            m.metrics.request("any", "private", "denied");
            let (status, code) = match status {
                401 => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
                403 => (StatusCode::FORBIDDEN, ErrorCode::Denied),
                404 => (StatusCode::NOT_FOUND, ErrorCode::NameUnknown),
                _ => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Denied),
            };
            let mut resp = error(
                status,
                code,
                "a private repository: the registry must let these credentials read it",
            );
            if let Some(c) = challenge {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
            }
            return resp;
        }
    }
    let req = Req {
        base: &base,
        ns: &ns,
        name,
        auth: auth.as_ref(),
        head,
        local,
        fetch,
    };
    match &target {
        Target::Manifest { reference, .. } => manifest(&m, &req, reference, &headers).await,
        Target::Blob { digest, .. } => {
            let range = headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            blob(&m, &req, digest, range.as_deref()).await
        }
    }
}

fn manifest_response(bytes: Vec<u8>, media_type: &str, digest: &Digest, head: bool) -> Response {
    let len = bytes.len();
    let mut resp = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(bytes))
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("Docker-Content-Digest", v);
    }
    resp
}

async fn manifest(m: &Mirror, req: &Req<'_>, reference: &str, headers: &HeaderMap) -> Response {
    let (ns, name, head) = (req.ns, req.name, req.head);
    let by_digest = reference.parse::<Digest>().ok();
    if let Some(d) = &by_digest {
        if let Some((bytes, media_type)) = m.cache.manifest(d) {
            m.metrics.request("manifest", "cache", "hit");
            if !head {
                m.metrics.served("cache", bytes.len() as u64);
            }
            return manifest_response(bytes, &media_type, d, head);
        }
        if let Some((bytes, media_type)) = content_store_manifest(m, d) {
            m.metrics.request("manifest", "containerd", "hit");
            if !head {
                m.metrics.served("containerd", bytes.len() as u64);
            }
            return manifest_response(bytes, &media_type, d, head);
        }
        if !req.local {
            if let Some((bytes, media_type)) = peer_manifest(m, d).await {
                match m.cache.put_manifest(d, &bytes, &media_type) {
                    Ok(()) => m.provide(std::slice::from_ref(d)),
                    Err(e) => tracing::warn!(error = %e, "cannot cache a manifest"),
                }
                m.metrics.request("manifest", "peer", "ok");
                if !head {
                    m.metrics.served("peer", bytes.len() as u64);
                }
                return manifest_response(bytes, &media_type, d, head);
            }
        }
    }
    if req.local {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::ManifestUnknown,
            "not on this node",
        );
    }
    let tag_key = format!("{ns}/{name}:{reference}");
    let accept = headers.get(header::ACCEPT);
    let began = std::time::Instant::now();
    let fetched = m
        .upstream
        .manifest(req.base, name, reference, accept, req.auth)
        .await;
    if by_digest.is_none() && fetched.is_ok() {
        m.metrics.resolved(began.elapsed());
    }
    match fetched {
        Ok(f) => {
            match m.cache.put_manifest(&f.digest, &f.bytes, &f.media_type) {
                Ok(()) => m.provide(std::slice::from_ref(&f.digest)),
                Err(e) => tracing::warn!(error = %e, "cannot cache a manifest"),
            }
            if by_digest.is_none() {
                m.cache.remember_tag(
                    &tag_key,
                    TagRecord {
                        digest: f.digest.clone(),
                        media_type: f.media_type.clone(),
                    },
                );
            }
            m.metrics.request("manifest", "upstream", "ok");
            if !head {
                m.metrics.served("upstream", f.bytes.len() as u64);
            }
            manifest_response(f.bytes, &f.media_type, &f.digest, head)
        }
        Err(UpstreamError::Unreachable(why)) if by_digest.is_none() => {
            // The registry is down: the last verified answer, marked stale.
            let stale = m
                .cache
                .recall_tag(&tag_key)
                .and_then(|r| Some((m.cache.manifest(&r.digest)?, r)));
            match stale {
                Some(((bytes, media_type), r)) => {
                    tracing::warn!(tag = %tag_key, digest = %r.digest, %why, "registry unreachable; serving the last verified tag (stale)");
                    m.metrics.request("manifest", "stale", "ok");
                    if !head {
                        m.metrics.served("stale", bytes.len() as u64);
                    }
                    manifest_response(bytes, &media_type, &r.digest, head)
                }
                None => {
                    m.metrics.request("manifest", "upstream", "unreachable");
                    error(
                        StatusCode::NOT_FOUND,
                        ErrorCode::ManifestUnknown,
                        format!(
                            "registry unreachable ({why}) and no verified answer for {tag_key}"
                        ),
                    )
                }
            }
        }
        Err(e) => upstream_error(m, "manifest", ErrorCode::ManifestUnknown, e),
    }
}

/// Serve blob `digest` (`len` bytes, verified when it got there) from the
/// file at `path`, counted under `source`.
async fn from_file(
    m: &Mirror,
    path: &std::path::Path,
    source: &'static str,
    digest: &Digest,
    len: u64,
    head: bool,
    range: Option<&str>,
) -> Response {
    let (status, start, end) = match parse_range(range, len) {
        Ok(None) => (StatusCode::OK, 0, len),
        Ok(Some(r)) => (StatusCode::PARTIAL_CONTENT, r.start, r.end),
        Err(e) => {
            let mut resp = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUnknown,
                format!("range {range:?}: {e}"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let count = end - start;
    let body = if head || count == 0 {
        Body::empty()
    } else {
        let mut file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) => {
                return error(
                    StatusCode::NOT_FOUND,
                    ErrorCode::BlobUnknown,
                    format!("cached blob vanished: {e}"),
                );
            }
        };
        if start > 0 && file.seek(io::SeekFrom::Start(start)).await.is_err() {
            return error(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                "cannot read the cached blob",
            );
        }
        m.metrics.served(source, count);
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file.take(count),
            256 << 10,
        ))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("Docker-Content-Digest", v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&content_range(&(start..end), len)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// The answer to an upstream failure for a `kind` request: the registry's
/// refusal passed on, anything else a quick 404 (`unknown`) so containerd
/// tries the next host.
fn upstream_error(
    m: &Mirror,
    kind: &'static str,
    unknown: ErrorCode,
    e: UpstreamError,
) -> Response {
    let result = match &e {
        UpstreamError::NotFound => "not_found",
        UpstreamError::Denied(_) => "denied",
        UpstreamError::Bad(_) => {
            m.metrics.verify_failure();
            "bad"
        }
        UpstreamError::Unreachable(_) => "unreachable",
    };
    m.metrics.request(kind, "upstream", result);
    match e {
        UpstreamError::Denied(status) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED),
            ErrorCode::Denied,
            "the registry refused these credentials",
        ),
        other => error(StatusCode::NOT_FOUND, unknown, other.to_string()),
    }
}

/// The path of `digest` in the node's containerd content store, if it is
/// there.
fn content_store_path(m: &Mirror, digest: &Digest) -> Option<(std::path::PathBuf, u64)> {
    let root = m.config.containerd_content.as_ref()?;
    let path = root
        .join("blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex());
    let len = std::fs::metadata(&path).ok()?.len();
    Some((path, len))
}

/// A manifest from the containerd content store, checked against its
/// digest; its media type is its own `mediaType` field.
fn content_store_manifest(m: &Mirror, digest: &Digest) -> Option<(Vec<u8>, String)> {
    let (path, len) = content_store_path(m, digest)?;
    if len > m.config.cache.max_manifest_bytes {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    digest.verify(&bytes).ok()?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("mediaType")?
        .as_str()?
        .to_owned();
    Some((bytes, media_type))
}

/// The first node (not under penalty) that routing says can serve
/// `digest`, and the size it gave.
async fn find_provider(m: &Mirror, digest: &Digest, kind: Kind) -> Option<(String, Option<u64>)> {
    find_providers(m, digest, kind)
        .await
        .into_iter()
        .next()
        .map(|p| (p.url, p.size))
}

/// The nodes (not under penalty) that routing says can serve `digest`, in
/// the order found.
async fn find_providers(m: &Mirror, digest: &Digest, kind: Kind) -> Vec<routing::Provider> {
    let deadline = std::time::Duration::from_millis(m.config.upstream.peer_probe_ms);
    m.routing
        .providers(digest, kind, deadline)
        .await
        .into_iter()
        .filter(|p| !m.is_penalised(&p.url))
        .collect()
}

/// A manifest by digest from a peer, verified.
async fn peer_manifest(m: &Mirror, digest: &Digest) -> Option<(Vec<u8>, String)> {
    let (peer, len) = find_provider(m, digest, Kind::Manifest).await?;
    if len.is_some_and(|n| n > m.config.cache.max_manifest_bytes) {
        return None;
    }
    let resp = m
        .upstream
        .peer_get(&routing::local_url(&peer, digest, Kind::Manifest), None)
        .await
        .ok()?;
    let media_type = resp
        .headers()
        .get(header::CONTENT_TYPE)?
        .to_str()
        .ok()?
        .to_owned();
    let bytes = resp.bytes().await.ok()?;
    if digest.verify(&bytes).is_err() {
        m.metrics.verify_failure();
        m.penalise(&peer);
        tracing::warn!(%peer, %digest, "a peer sent a manifest that does not match its digest");
        return None;
    }
    Some((bytes.to_vec(), media_type))
}

/// Serve a download in flight, counted under `source`: streamed as it
/// arrives, or (for a range) from the cache once it is done.
async fn serve_flight(
    m: &Arc<Mirror>,
    digest: &Digest,
    flight: Arc<InFlight>,
    source: &'static str,
    head: bool,
    range: Option<&str>,
) -> Response {
    m.metrics.request("blob", source, "ok");
    if head {
        return size_response(digest, flight.total);
    }
    if range.is_some() {
        // A part cannot be verified on its own: wait for the whole blob.
        if !flight.finished().await {
            return error(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                "the download failed",
            );
        }
        return match m.cache.stat(digest) {
            Some(len) => {
                from_file(m, &m.cache.path(digest), "cache", digest, len, false, range).await
            }
            None => error(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                "the blob could not be cached for a range request",
            ),
        };
    }
    let total = flight.total;
    let stream = inflight::read(m.clone(), digest.clone(), flight, source).boxed();
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    if let Some(n) = total {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("Docker-Content-Digest", v);
    }
    resp
}

async fn blob(m: &Arc<Mirror>, req: &Req<'_>, digest: &Digest, range: Option<&str>) -> Response {
    let head = req.head;
    if digest.algorithm() != berth_oci::Algorithm::Sha256 {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::BlobUnknown,
            "only sha256 blobs are mirrored",
        );
    }
    if let Some(len) = m.cache.stat(digest) {
        m.metrics.request("blob", "cache", "hit");
        return from_file(m, &m.cache.path(digest), "cache", digest, len, head, range).await;
    }
    if let Some((path, len)) = content_store_path(m, digest) {
        m.metrics.request("blob", "containerd", "hit");
        return from_file(m, &path, "containerd", digest, len, head, range).await;
    }
    if let Some(flight) = m.downloads.get(digest) {
        return serve_flight(m, digest, flight, "inflight", head, range).await;
    }
    if req.local {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::BlobUnknown,
            "not on this node",
        );
    }
    if head {
        // A size: from a peer that has it, else the registry.
        if let Some((_, Some(len))) = find_provider(m, digest, Kind::Blob).await {
            m.metrics.request("blob", "peer", "ok");
            return size_response(digest, Some(len));
        }
        return match m
            .upstream
            .blob_size(req.base, req.name, digest, req.auth)
            .await
        {
            Ok(size) => {
                m.metrics.request("blob", "upstream", "ok");
                size_response(digest, size)
            }
            Err(e) => upstream_error(m, "blob", ErrorCode::BlobUnknown, e),
        };
    }
    // One fetch per blob on this node: join it, or start it.
    let starter = match inflight::Downloads::claim(m, digest).await {
        inflight::Claim::Joined(flight) => {
            return serve_flight(m, digest, flight, "inflight", false, range).await;
        }
        inflight::Claim::Failed => {
            return error(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                "the download failed; try again",
            );
        }
        inflight::Claim::Mine(s) => s,
    };
    let registry = Fallback {
        url: format!("{}/v2/{}/blobs/{digest}", req.base, req.name),
        auth: req.auth.cloned(),
        label: "upstream",
        peer: None,
    };
    let owner = if req.fetch {
        None
    } else {
        m.owner_peer(digest)
    };
    let owner_fallback = owner.as_ref().map(|o| Fallback {
        url: format!(
            "{}/v2/{}/blobs/{digest}?ns={}&fetch=1",
            o.trim_end_matches('/'),
            req.name,
            req.ns
        ),
        auth: req.auth.cloned(),
        label: "peer",
        peer: Some(o.clone()),
    });
    if !req.fetch {
        // A peer that has it (cached or in flight); if it breaks or
        // stalls, the rest comes from the other providers, then the owner,
        // then the registry.
        let providers = find_providers(m, digest, Kind::Blob).await;
        if let Some((first, others)) = providers.split_first() {
            let peer = first.url.clone();
            match m
                .upstream
                .peer_get(&routing::local_url(&peer, digest, Kind::Blob), None)
                .await
            {
                Ok(resp) => {
                    let mut fallbacks: Vec<Fallback> = others
                        .iter()
                        .map(|p| Fallback {
                            url: routing::local_url(&p.url, digest, Kind::Blob),
                            auth: None,
                            label: "peer",
                            peer: Some(p.url.clone()),
                        })
                        .collect();
                    fallbacks.extend(
                        owner_fallback
                            .iter()
                            .filter(|f| f.peer.as_ref() != Some(&peer))
                            .cloned(),
                    );
                    fallbacks.push(registry.clone());
                    return match starter.start(resp, "peer", Some(peer), fallbacks) {
                        Ok(flight) => serve_flight(m, digest, flight, "peer", false, range).await,
                        Err(e) => {
                            error(StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, e.to_string())
                        }
                    };
                }
                Err(e) => tracing::warn!(%peer, error = %e, "peer failed; trying elsewhere"),
            }
        }
        // Cold: the node that owns it fetches it from the registry, once
        // for the cluster; this node reads through it.
        if let (Some(owner), Some(via)) = (owner, &owner_fallback) {
            match m.upstream.peer_get(&via.url, req.auth).await {
                Ok(resp) => {
                    return match starter.start(resp, "peer", Some(owner), vec![registry.clone()]) {
                        Ok(flight) => serve_flight(m, digest, flight, "peer", false, range).await,
                        Err(e) => {
                            error(StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, e.to_string())
                        }
                    };
                }
                Err(e) => tracing::warn!(%owner, error = %e, "owner failed; going to the registry"),
            }
        }
    }
    match m.upstream.blob(req.base, req.name, digest, req.auth).await {
        Ok(resp) => match starter.start(resp, "upstream", None, Vec::new()) {
            Ok(flight) => serve_flight(m, digest, flight, "upstream", false, range).await,
            Err(e) => error(StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, e.to_string()),
        },
        Err(e) => upstream_error(m, "blob", ErrorCode::BlobUnknown, e),
    }
}

/// A HEAD answer: the blob's size and digest.
fn size_response(digest: &Digest, size: Option<u64>) -> Response {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    if let Some(n) = size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("Docker-Content-Digest", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_validated() {
        let d = Digest::sha256(b"x");
        assert_eq!(
            parse(&format!("team/app/blobs/{d}")).unwrap(),
            Target::Blob {
                name: "team/app".into(),
                digest: d.clone()
            }
        );
        assert_eq!(
            parse("library/busybox/manifests/1.36").unwrap(),
            Target::Manifest {
                name: "library/busybox".into(),
                reference: "1.36".into()
            }
        );
        for bad in [
            "x",
            "UPPER/manifests/1",
            "../etc/blobs/sha256:00",
            "a/blobs/sha256:xyz",
            "a/manifests/bad!tag",
            "a/tags/list",
            "a/blobs/uploads/",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
