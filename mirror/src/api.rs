//! The containerd-facing routes: `GET`/`HEAD` of `/v2/<name>/manifests/<ref>`
//! and `/v2/<name>/blobs/<digest>` with containerd's `?ns=<registry>`, plus
//! `/v2/`, `/metrics`, `/healthz` and `/readyz`. A request is parsed (the
//! one `/v2` parser; every parameter validated before use), authorized
//! (private repositories: never to peers, to others only as the registry
//! says), answered by the sources ([`crate::sources`]) and rendered. A
//! registry that is not mirrored, or content the mirror cannot get, is a
//! quick 404 so containerd falls back to the registry at once.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use berth_oci::distribution::{ManifestRef, Route, route};
use berth_oci::{Digest, ErrorCode};

use crate::Mirror;
use crate::cache::TagRecord;
use crate::render::{
    error, from_file, manifest_response, serve_flight, size_response, upstream_error,
};
use crate::sources::{Answer, SourceKind, Want};
use crate::upstream::UpstreamError;

/// The routes.
pub fn router(mirror: Arc<Mirror>) -> Router {
    Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/{*rest}", any(dispatch))
        .route(
            "/berth/v1/claims/{digest}",
            axum::routing::post(crate::claims::handle),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(mirror)
}

async fn base() -> Response {
    (
        [("Docker-Distribution-API-Version", "registry/2.0")],
        Body::from("{}"),
    )
        .into_response()
}

/// Ready when every mirrored registry answers; otherwise 503 naming the
/// ones that do not (the mirror still serves what it has).
async fn readyz(State(m): State<Arc<Mirror>>) -> Response {
    for ns in &m.config.registries {
        if let Some(base) = m.config.upstream_url(ns) {
            match m.upstream.ping(&base).await {
                Ok(()) => m.health.up(ns),
                Err(why) => m.health.unreachable(ns, &why),
            }
        }
    }
    let down = m.health.unreachable_now();
    if down.is_empty() {
        return "ready\n".into_response();
    }
    let mut text = String::from("not ready: ");
    for (ns, why) in &down {
        text.push_str(&format!("registry {ns} unreachable ({why}); "));
    }
    text.push_str("cached content and the last verified tags are still served\n");
    (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
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

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Manifest { name: String, reference: String },
    Blob { name: String, digest: Digest },
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
    /// Set by peer mirrors: answer from this node only (cache, containerd,
    /// its downloads), never from peers or the registry, so requests never
    /// loop.
    local: Option<String>,
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
    let want = Want {
        base: &base,
        ns: &ns,
        name: match &target {
            Target::Manifest { name, .. } | Target::Blob { name, .. } => name,
        },
        auth: auth.as_ref(),
        local,
    };
    let (what, digest) = match &target {
        Target::Manifest { reference, .. } => {
            (format!("manifests/{reference}"), reference.parse().ok())
        }
        Target::Blob { digest, .. } => (format!("blobs/{digest}"), Some(digest.clone())),
    };
    if let Err(refused) = crate::private::authorize(&m, &want, &what, digest.as_ref()).await {
        return refused;
    }
    match &target {
        Target::Manifest { reference, .. } => manifest(&m, &want, reference, &headers, head).await,
        Target::Blob { digest, .. } => {
            let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
            blob(&m, &want, digest, range, head).await
        }
    }
}

async fn manifest(
    m: &Mirror,
    want: &Want<'_>,
    reference: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response {
    let by_digest = reference.parse::<Digest>().ok();
    if let Some(d) = &by_digest {
        if let Some((bytes, media_type, kind)) = m.local_manifest(d) {
            return manifest_response(m, kind, "hit", (bytes, &media_type, d), head);
        }
        if !want.local {
            if let Some((bytes, media_type)) = m.peer_manifest(d).await {
                let answer = (bytes, media_type.as_str(), d);
                return manifest_response(m, SourceKind::Peer, "ok", answer, head);
            }
        }
    }
    if want.local {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::ManifestUnknown,
            "not on this node",
        );
    }
    let tag_key = format!("{}/{}:{reference}", want.ns, want.name);
    let accept = headers.get(header::ACCEPT);
    let began = std::time::Instant::now();
    let fetched = m
        .upstream
        .manifest(want.base, want.name, reference, accept, want.auth)
        .await;
    match &fetched {
        Err(UpstreamError::Unreachable(why)) => m.health.unreachable(want.ns, why),
        _ => m.health.up(want.ns),
    }
    match fetched {
        Ok(f) => {
            m.cache_manifest(&f.digest, &f.bytes, &f.media_type);
            if by_digest.is_none() {
                m.metrics.resolved(began.elapsed());
                let record = TagRecord {
                    digest: f.digest.clone(),
                    media_type: f.media_type.clone(),
                };
                m.cache.remember_tag(&tag_key, record);
            }
            let answer = (f.bytes, f.media_type.as_str(), &f.digest);
            manifest_response(m, SourceKind::Registry, "ok", answer, head)
        }
        Err(UpstreamError::Unreachable(why)) if by_digest.is_none() => {
            // The registry is down: the last verified answer, marked stale.
            let stale = m.cache.recall_tag(&tag_key).and_then(|r| {
                let (bytes, media_type) = m.cache.manifest(&r.digest)?;
                Some((bytes, media_type, r.digest))
            });
            match stale {
                Some((bytes, media_type, digest)) => {
                    tracing::warn!(tag = %tag_key, %digest, %why, "registry unreachable; serving the last verified tag (stale)");
                    let answer = (bytes, media_type.as_str(), &digest);
                    manifest_response(m, SourceKind::Stale, "ok", answer, head)
                }
                None => {
                    m.metrics.request("manifest", "upstream", "unreachable");
                    let message = format!(
                        "registry unreachable ({why}) and no verified answer for {tag_key}"
                    );
                    error(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, message)
                }
            }
        }
        Err(e) => upstream_error(m, "manifest", ErrorCode::ManifestUnknown, e),
    }
}

async fn blob(
    m: &Arc<Mirror>,
    want: &Want<'_>,
    digest: &Digest,
    range: Option<&str>,
    head: bool,
) -> Response {
    if digest.algorithm() != berth_oci::Algorithm::Sha256 {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::BlobUnknown,
            "only sha256 blobs are mirrored",
        );
    }
    let chain = m.local_sources();
    if let Some((path, len, kind)) = chain.local_file(digest) {
        m.metrics.request("blob", kind.label(), "hit");
        return from_file(m, &path, kind, digest, len, head, range).await;
    }
    if let Some(flight) = m.downloads.get(digest) {
        return serve_flight(m, digest, flight, SourceKind::InFlight, head, range).await;
    }
    if want.local {
        // A node told (by a coordinator) that this one fetches the blob
        // may ask before the registry answered this node: wait for that.
        if !head {
            let wait = m.downloads.timeouts().stall;
            if let Some(flight) = m.downloads.running_or_starting(digest, wait).await {
                return serve_flight(m, digest, flight, SourceKind::InFlight, head, range).await;
            }
        }
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::BlobUnknown,
            "not on this node",
        );
    }
    if head {
        return blob_size(m, want, digest).await;
    }
    // The right to fetch is taken before other nodes are asked, so a node
    // the coordinator sends here finds this download.
    match crate::sources::fetch(&m.downloads, digest, m.remote_sources(want, digest)).await {
        Answer::File { path, len, kind } => {
            m.metrics.request("blob", kind.label(), "hit");
            from_file(m, &path, kind, digest, len, false, range).await
        }
        Answer::Flight { flight, kind } => {
            serve_flight(m, digest, flight, kind, false, range).await
        }
        Answer::Miss(Some(e)) => upstream_error(m, "blob", ErrorCode::BlobUnknown, e),
        Answer::Miss(None) => error(StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, "no source"),
    }
}

/// A HEAD for a blob not on this node: its size from a node that has it,
/// else from the registry.
async fn blob_size(m: &Mirror, want: &Want<'_>, digest: &Digest) -> Response {
    let providers = m.providers(digest, crate::routing::Kind::Blob).await;
    if let Some(len) = providers.first().and_then(|p| p.size) {
        m.metrics.request("blob", "peer", "ok");
        return size_response(digest, Some(len));
    }
    match m
        .upstream
        .blob_size(want.base, want.name, digest, want.auth)
        .await
    {
        Ok(size) => {
            m.metrics.request("blob", "upstream", "ok");
            size_response(digest, size)
        }
        Err(e) => upstream_error(m, "blob", ErrorCode::BlobUnknown, e),
    }
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
