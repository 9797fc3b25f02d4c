//! Rendering the mirror's answers: OCI error JSON, manifests, blobs from a
//! verified file (with `Range`), downloads in flight (streamed as they
//! arrive, the last byte only once verified) and sizes for `HEAD`, each
//! counted in the metrics under the source it came from. No decisions
//! about where content comes from are made here.

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::distribution::{parse_range, range};
use berth_oci::{Digest, ErrorCode, ErrorResponse};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::Mirror;
use crate::inflight::InFlight;
use crate::sources::SourceKind;
use crate::upstream::UpstreamError;

/// An OCI error answer.
pub(crate) fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let body = serde_json::to_vec(&ErrorResponse::single(code, message.into(), None))
        .unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

/// A manifest answer from `kind`, counted.
pub(crate) fn manifest_response(
    m: &Mirror,
    kind: SourceKind,
    result: &'static str,
    (bytes, media_type, digest): (Vec<u8>, &str, &Digest),
    head: bool,
) -> Response {
    m.metrics.request("manifest", kind.label(), result);
    let len = bytes.len();
    if !head {
        m.metrics.served(kind.label(), len as u64);
    }
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::from(bytes)
    });
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

/// The answer to an upstream failure for a `kind` request: the registry's
/// refusal passed on, anything else a quick 404 (`unknown`) so containerd
/// tries the next host.
pub(crate) fn upstream_error(
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

/// Serve blob `digest` (`len` bytes, verified when it got there) from the
/// file at `path`, counted under `kind`.
pub(crate) async fn from_file(
    m: &Mirror,
    path: &std::path::Path,
    kind: SourceKind,
    digest: &Digest,
    len: u64,
    head: bool,
    range: Option<&str>,
) -> Response {
    let (status, span) = match parse_range(range, len) {
        Ok(None) => (StatusCode::OK, 0..len),
        Ok(Some(r)) => (StatusCode::PARTIAL_CONTENT, r),
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
    let count = span.end - span.start;
    let body = if head || count == 0 {
        Body::empty()
    } else {
        let opened = async {
            let mut file = tokio::fs::File::open(path).await?;
            if span.start > 0 {
                file.seek(io::SeekFrom::Start(span.start)).await?;
            }
            Ok::<_, io::Error>(file)
        };
        let file = match opened.await {
            Ok(f) => f,
            Err(e) => {
                let message = format!("cannot read the stored blob: {e}");
                return error(StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, message);
            }
        };
        m.metrics.served(kind.label(), count);
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
        if let Ok(v) = HeaderValue::from_str(&range::content_range(&span, len)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// Serve a download in flight, counted under `kind`: streamed as it
/// arrives, or (for a range) from the cache once it is done.
pub(crate) async fn serve_flight(
    m: &Arc<Mirror>,
    digest: &Digest,
    flight: Arc<InFlight>,
    kind: SourceKind,
    head: bool,
    range: Option<&str>,
) -> Response {
    m.metrics.request("blob", kind.label(), "ok");
    if head {
        let mut resp = size_response(digest, flight.total);
        resp.headers_mut()
            .insert(IN_FLIGHT, HeaderValue::from_static("1"));
        return resp;
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
                let path = m.cache.path(digest);
                from_file(m, &path, SourceKind::Cache, digest, len, false, range).await
            }
            None => error(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                "the blob could not be cached for a range request",
            ),
        };
    }
    let total = flight.total;
    let stream = m.downloads.read(digest.clone(), flight, kind).boxed();
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

/// The header a peer's HEAD answer carries while the blob is still being
/// downloaded there.
pub(crate) const IN_FLIGHT: &str = "berth-in-flight";

/// A HEAD answer: the blob's size and digest.
pub(crate) fn size_response(digest: &Digest, size: Option<u64>) -> Response {
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
