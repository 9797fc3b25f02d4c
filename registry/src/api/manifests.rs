//! Manifest endpoints — GET/HEAD/PUT/DELETE `/v2/<name>/manifests/<ref>` —
//! and the discovery endpoints built on manifest metadata: tag lists, the
//! catalog and the referrers API. A manifest is accepted only after its
//! digest is checked and every blob and child manifest it references is
//! known to the repository.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use berth_oci::{Digest, ErrorCode, Manifest, media_type};
use http::{HeaderMap, StatusCode, header};
use serde_json::json;

use super::{ApiError, DRAIN_LIMIT, Params, db_write, empty, next_chunk};
use crate::Registry;
use crate::metadata::{ManifestKey, ManifestRefs, NewManifest};
use berth_oci::distribution::ManifestRef;

fn key(reference: &ManifestRef) -> ManifestKey<'_> {
    match reference {
        ManifestRef::Tag(t) => ManifestKey::Tag(t),
        ManifestRef::Digest(d) => ManifestKey::Digest(d),
    }
}

fn manifest_unknown(name: &str, reference: &ManifestRef) -> ApiError {
    let r = match reference {
        ManifestRef::Tag(t) => t.clone(),
        ManifestRef::Digest(d) => d.to_string(),
    };
    ApiError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {r} is not in repository {name}"),
    )
}

/// GET or HEAD a manifest.
pub(super) async fn get(
    r: &Arc<Registry>,
    name: &str,
    reference: &ManifestRef,
    head: bool,
) -> Result<Response, ApiError> {
    let (repo, owned) = (name.to_owned(), reference.clone());
    let m = super::db_read(r, move |meta| meta.manifest(&repo, key(&owned), !head))
        .await?
        .ok_or_else(|| manifest_unknown(name, reference))?;
    let digest = m.digest.to_string();
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, m.size)
        .header(header::ETAG, format!("\"{digest}\""))
        .header("Docker-Content-Digest", digest);
    let body = if head {
        Body::empty()
    } else {
        r.metrics.bytes_out(m.size, false);
        Body::from(m.content)
    };
    Ok(builder.body(body).expect("valid headers"))
}

/// Read a body of at most `limit` bytes; a larger one is refused with 413
/// (after draining up to [`DRAIN_LIMIT`] bytes of it).
async fn read_limited(r: &Registry, body: Body, limit: u64) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::SizeInvalid,
            format!("manifest is larger than the registry's limit of {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    let mut seen = 0u64;
    while let Some(chunk) =
        next_chunk(r, &mut stream, ErrorCode::ManifestInvalid, "manifest body").await?
    {
        seen += chunk.len() as u64;
        if seen > limit {
            out = Vec::new();
            if seen > DRAIN_LIMIT {
                return Err(too_large());
            }
        } else {
            out.extend_from_slice(&chunk);
        }
    }
    r.metrics.bytes_in(seen);
    if seen > limit {
        return Err(too_large());
    }
    Ok(out)
}

/// PUT a manifest by tag or digest.
pub(super) async fn put(
    r: &Arc<Registry>,
    name: &str,
    reference: &ManifestRef,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
    actor: Option<&str>,
) -> Result<Response, ApiError> {
    let tags = tags_to_set(reference, params)?;
    let limit = r.limits.max_manifest_bytes;
    let content = read_limited(r, body, limit).await?;
    let digest = match reference {
        ManifestRef::Digest(want) => {
            let actual = want.algorithm().digest(&content);
            if &actual != want {
                return Err(ApiError::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest content hashes to {actual}, not {want}"),
                ));
            }
            actual
        }
        ManifestRef::Tag(_) => Digest::sha256(&content),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let manifest = Manifest::parse(&content, content_type)
        .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
    let invalid =
        |e: berth_oci::ManifestError| ApiError::new(ErrorCode::ManifestInvalid, e.to_string());

    // Every referenced blob (except foreign layers) and child manifest must
    // already be in this repository: checked in the transaction that
    // stores the manifest, so a concurrent collection cannot slip between.
    let blobs: Vec<(Digest, u64)> = manifest
        .blobs()
        .map_err(invalid)?
        .into_iter()
        .filter(|b| b.urls.is_empty())
        .map(|b| (b.digest, b.size))
        .collect();
    let children: Vec<Digest> = manifest
        .children()
        .map_err(invalid)?
        .into_iter()
        .map(|c| c.digest)
        .collect();

    let subject = manifest.subject().map_err(invalid)?.map(|s| s.digest);
    let artifact_type = manifest.artifact_type();
    let annotations = manifest
        .annotations()
        .filter(|a| !a.is_empty())
        .map(|a| serde_json::to_string(a).unwrap_or_default());
    let media_type = manifest.media_type().to_owned();
    // Webhook events go into the same transaction as the manifest.
    let events = match &r.webhooks {
        Some(hooks) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("registry");
            let operator = actor.filter(|a| !a.is_empty());
            let now = super::token::now();
            hooks.artifact_events(
                berth_oci::distribution::webhook::PUSH_ARTIFACT,
                host,
                name,
                &tags,
                &digest,
                operator,
                now,
            )
        }
        None => Vec::new(),
    };
    let queued = !events.is_empty();
    let moved = {
        let (name, digest, subject, tags) = (
            name.to_owned(),
            digest.clone(),
            subject.clone(),
            tags.clone(),
        );
        let policies = r.policies();
        db_write(r, move |meta| {
            let repo = name.clone();
            let refs = ManifestRefs {
                blobs: blobs.iter().map(|(d, s)| (d, *s)).collect(),
                children: children.iter().collect(),
            };
            meta.put_manifest_with_events(
                &name,
                &NewManifest {
                    digest: &digest,
                    media_type: &media_type,
                    artifact_type: artifact_type.as_deref(),
                    subject: subject.as_ref(),
                    annotations,
                    content: &content,
                },
                &refs,
                &tags,
                &events,
                &|tag| policies.immutable(&repo, tag),
            )
        })
        .await?
    };
    if queued {
        if let Some(hooks) = &r.webhooks {
            hooks.wake.notify_one();
        }
    }
    tracing::info!(repository = name, %digest, ?tags, "manifest pushed");
    let mut headers = vec![
        ("Location", format!("/v2/{name}/manifests/{digest}")),
        ("Docker-Content-Digest", digest.to_string()),
    ];
    if let Some(s) = subject {
        headers.push(("OCI-Subject", s.to_string()));
    }
    if matches!(reference, ManifestRef::Digest(_)) && !tags.is_empty() {
        headers.push(("OCI-Tag", tags.join(", ")));
    }
    let mut resp = empty(StatusCode::CREATED, &headers);
    let mut notes = vec![super::AuditNote {
        action: "manifest.push",
        target: format!("{name}@{digest}"),
        detail: if tags.is_empty() {
            String::new()
        } else {
            format!("tags {}", tags.join(", "))
        },
    }];
    notes.extend(moved.into_iter().map(|(tag, from)| super::AuditNote {
        action: "tag.move",
        target: format!("{name}:{tag}"),
        detail: format!("{from} -> {digest}"),
    }));
    resp.extensions_mut().insert(notes);
    Ok(resp)
}

/// Most `?tag=` parameters accepted on one manifest PUT.
const MAX_TAG_PARAMS: usize = 100;

/// The tags a PUT sets: the path's tag, or the `tag` query parameters of a
/// PUT by digest (distribution-spec 1.1.1).
fn tags_to_set(reference: &ManifestRef, params: &Params) -> Result<Vec<String>, ApiError> {
    match reference {
        ManifestRef::Tag(t) => Ok(vec![t.clone()]),
        ManifestRef::Digest(_) => {
            let tags: Vec<String> = params.all("tag").cloned().collect();
            if tags.len() > MAX_TAG_PARAMS {
                return Err(ApiError::new(
                    ErrorCode::TagInvalid,
                    format!(
                        "at most {MAX_TAG_PARAMS} tag parameters per request, not {}",
                        tags.len()
                    ),
                )
                .with_status(StatusCode::URI_TOO_LONG));
            }
            for t in &tags {
                berth_oci::validate_tag(t)
                    .map_err(|e| ApiError::new(ErrorCode::TagInvalid, e.to_string()))?;
            }
            Ok(tags)
        }
    }
}

/// DELETE a manifest (by digest: the manifest and its tags) or a tag (by
/// tag: only the tag).
pub(crate) async fn delete(
    r: &Arc<Registry>,
    name: &str,
    reference: &ManifestRef,
    headers: &HeaderMap,
    actor: Option<&str>,
) -> Result<Response, ApiError> {
    let (n, reference2) = (name.to_owned(), reference.clone());
    let policies = r.policies();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("registry")
        .to_owned();
    let operator = actor.filter(|a| !a.is_empty()).map(str::to_owned);
    let r2 = r.clone();
    let existed = db_write(r, move |meta| {
        let immutable = |tag: &str| policies.immutable(&n, tag);
        // DELETE_ARTIFACT events, queued in the delete's transaction.
        let events = |digest: &str, tags: &[String]| match (&r2.webhooks, digest.parse()) {
            (Some(hooks), Ok(d)) => hooks.artifact_events(
                berth_oci::distribution::webhook::DELETE_ARTIFACT,
                &host,
                &n,
                tags,
                &d,
                operator.as_deref(),
                super::token::now(),
            ),
            _ => Vec::new(),
        };
        match &reference2 {
            ManifestRef::Digest(d) => meta.delete_manifest_checked(&n, d, &immutable, &events),
            ManifestRef::Tag(t) => meta.delete_tag_checked(&n, t, &immutable, &events),
        }
    })
    .await?;
    if existed {
        if let Some(hooks) = &r.webhooks {
            hooks.wake.notify_one();
        }
        tracing::info!(repository = name, ?reference, "manifest or tag deleted");
        let mut resp = empty(StatusCode::ACCEPTED, &[]);
        resp.extensions_mut().insert(vec![match reference {
            ManifestRef::Digest(d) => super::AuditNote {
                action: "manifest.delete",
                target: format!("{name}@{d}"),
                detail: String::new(),
            },
            ManifestRef::Tag(t) => super::AuditNote {
                action: "tag.delete",
                target: format!("{name}:{t}"),
                detail: String::new(),
            },
        }]);
        Ok(resp)
    } else {
        Err(manifest_unknown(name, reference))
    }
}

/// Parse `n` and `last` for a paged list.
fn page(r: &Registry, params: &Params) -> Result<(usize, Option<String>), ApiError> {
    let max = r.limits.max_page_size;
    let n = match params.get("n") {
        None => max,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(ApiError::new(
                    ErrorCode::PaginationNumberInvalid,
                    format!("n must be a number from 0 to {max}, not {v:?}"),
                )
                .with_detail(json!({ "n": v, "max": max })));
            }
        },
    };
    Ok((n, params.get("last").cloned()))
}

fn json_response(value: &serde_json::Value, content_type: &str, link: Option<String>) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(l) = link {
        b = b.header(header::LINK, l);
    }
    b.body(Body::from(body)).expect("valid headers")
}

/// Cut a page fetched with one extra row, returning the `Link` to the next.
fn next_link(items: &mut Vec<String>, n: usize, base: &str) -> Option<String> {
    if items.len() > n {
        items.truncate(n);
        let last = items.last()?;
        Some(format!("<{base}?n={n}&last={last}>; rel=\"next\""))
    } else {
        None
    }
}

/// GET `/v2/<name>/tags/list`.
pub(super) async fn tags(
    r: &Arc<Registry>,
    name: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    let (n, last) = page(r, params)?;
    let repo = name.to_owned();
    let found = super::db_read(r, move |m| m.tags(&repo, last.as_deref(), n + 1)).await?;
    let mut tags = found.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NameUnknown,
            format!("repository {name} is not known"),
        )
    })?;
    let link = next_link(&mut tags, n, &format!("/v2/{name}/tags/list"));
    Ok(json_response(
        &json!({ "name": name, "tags": tags }),
        "application/json",
        link,
    ))
}

/// GET `/v2/_catalog`.
pub(super) async fn catalog(r: &Arc<Registry>, params: &Params) -> Result<Response, ApiError> {
    let (n, last) = page(r, params)?;
    let mut repos = super::db_read(r, move |m| m.catalog(last.as_deref(), n + 1)).await?;
    let link = next_link(&mut repos, n, "/v2/_catalog");
    Ok(json_response(
        &json!({ "repositories": repos }),
        "application/json",
        link,
    ))
}

/// GET `/v2/<name>/referrers/<digest>`.
pub(super) fn referrers(
    r: &Arc<Registry>,
    name: &str,
    subject: &Digest,
    params: &Params,
) -> Result<Response, ApiError> {
    let filter = params.get("artifactType").filter(|t| !t.is_empty());
    let list = r
        .meta
        .referrers(name, subject, filter.map(String::as_str))?;
    let manifests: Vec<serde_json::Value> = list
        .into_iter()
        .map(|m| {
            let mut d = json!({
                "mediaType": m.media_type,
                "digest": m.digest.to_string(),
                "size": m.size,
            });
            if let Some(t) = m.artifact_type {
                d["artifactType"] = json!(t);
            }
            if let Some(a) = m
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    });
    let mut resp = json_response(&index, media_type::OCI_INDEX, None);
    if filter.is_some() {
        resp.headers_mut().insert(
            "OCI-Filters-Applied",
            http::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
