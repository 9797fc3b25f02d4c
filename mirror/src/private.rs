//! Private repositories (config `private`): their content never goes to
//! peers (a `?local=1` request for a digest marked private is a miss), and
//! to any other caller only when the registry, asked with the caller's own
//! credentials, lets it read that very object. A "yes" is trusted for
//! [`crate::AUTH_TTL`]; a "no" passes the registry's status and challenge
//! on. Fails closed: a registry that cannot be asked means no.

use axum::http::{StatusCode, header};
use axum::response::Response;
use berth_oci::{Digest, ErrorCode};

use crate::Mirror;
use crate::render::error;
use crate::sources::Want;

/// Private content: never to peers; to anyone else only if the registry
/// says this caller may read it (answers trusted for [`crate::AUTH_TTL`]).
/// Whether the caller of `want` may have `what` (`manifests/<ref>` or
/// `blobs/<digest>`, naming `digest` when it is by digest): `Err` is the
/// refusal to send.
pub(crate) async fn authorize(
    m: &Mirror,
    want: &Want<'_>,
    what: &str,
    digest: Option<&Digest>,
) -> Result<(), Response> {
    if want.local {
        if digest.is_some_and(|d| m.cache.is_private(d)) {
            return Err(error(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                "not on this node",
            ));
        }
        return Ok(());
    }
    if !m.config.is_private(want.ns, want.name) {
        return Ok(());
    }
    if let Some(d) = digest {
        m.cache.mark_private(d);
    }
    let who = want.auth.map_or_else(String::new, |a| {
        Digest::sha256(a.as_bytes()).hex().to_owned()
    });
    // Per object, not per repository: a caller allowed to read one
    // repository must not get another's cached blob by asking for its
    // digest there; the registry answers that per object.
    let key = (want.ns.to_owned(), format!("{}/{what}", want.name), who);
    let fresh = m
        .allowed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .is_some_and(|t| t.elapsed() < crate::AUTH_TTL);
    if fresh {
        return Ok(());
    }
    let url = format!("{}/v2/{}/{what}", want.base, want.name);
    match m.upstream.authorize(&url, want.auth).await {
        Ok(()) => {
            let mut allowed = m.allowed.lock().unwrap_or_else(|e| e.into_inner());
            allowed.retain(|_, t| t.elapsed() < crate::AUTH_TTL);
            allowed.insert(key, std::time::Instant::now());
            Ok(())
        }
        Err((status, challenge)) => {
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
            Err(resp)
        }
    }
}
