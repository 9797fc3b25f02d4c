//! An image's page (`/ui/image/<name>?digest=<digest>`): an index's
//! platforms (each a link to its own page); an image's config (platform,
//! creation time, OCI labels — a value that is an http(s) URL, such as
//! `org.opencontainers.image.source`, as a link, any other as text),
//! its layers with sizes and, for images berth built, the Nix store paths
//! each holds (the `io.berth.store-paths` layer annotation); the manifest's
//! annotations, its referrers (a CycloneDX SBOM linked to its own page,
//! [`super::sbom`]), and the manifest itself. Every value comes
//! from pushed content, so all of it is escaped, and only http(s) URLs
//! ever become links.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use berth_oci::Digest;
use berth_oci::media_type::CYCLONEDX_JSON;
use futures_util::StreamExt as _;
use maud::{Markup, html};

use super::browse::may_pull;
use super::session::viewer;
use crate::Registry;
use crate::auth::model::Principal;
use crate::metadata::{ManifestKey, Metadata, MetadataError, StoredManifest};
use crate::storage::BlobStore as _;
use berth_oci::units::human_bytes;

use berth_oci::manifest::STORE_PATHS_ANNOTATION as STORE_PATHS;
/// Most config bytes read for a page.
const MAX_CONFIG: usize = 1 << 20;

/// The digest asked for.
#[derive(Debug, serde::Deserialize)]
pub(super) struct DigestParam {
    digest: String,
}

/// A value that may be a link: only http(s) URLs become one.
fn maybe_link(value: &str) -> Markup {
    let lower = value.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        html! { a href=(value) rel="noopener noreferrer" { (value) } }
    } else {
        html! { (value) }
    }
}

/// The key/value pairs of a JSON object, as strings.
fn pairs(v: &serde_json::Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The bytes of blob `d`, if it is at most `max` bytes and they match
/// its digest.
pub(super) async fn bounded_blob(r: &Registry, d: &Digest, max: usize) -> Option<Vec<u8>> {
    let mut stream = r.blobs.read(d, None).await.ok()?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.ok()?);
        if out.len() > max {
            return None;
        }
    }
    d.verify(&out).ok()?;
    Some(out)
}

/// Manifest `digest` of repository `name`, for `who` who may pull it,
/// and what `also` reads with it in the same metadata call; the 404 page
/// for a malformed digest, a name `who` may not pull (as if it did not
/// exist) or a manifest that is not there.
pub(super) async fn viewable<T: Send + 'static>(
    r: &Arc<Registry>,
    who: &Principal,
    name: &str,
    digest: &str,
    also: impl FnOnce(&Metadata, &str, &Digest) -> Result<T, MetadataError> + Send + 'static,
) -> Result<(Digest, StoredManifest, T), Box<Response>> {
    let Ok(digest) = digest.parse::<Digest>() else {
        return Err(Box::new(super::not_found()));
    };
    if berth_oci::validate_name(name).is_err() || !may_pull(r, who, name) {
        return Err(Box::new(super::not_found()));
    }
    let (repo, d) = (name.to_owned(), digest.clone());
    let found = super::meta(r, move |m| {
        let manifest = m.manifest(&repo, ManifestKey::Digest(&d), true)?;
        Ok((manifest, also(m, &repo, &d)?))
    })
    .await;
    match found {
        Ok((Some(manifest), extra)) => Ok((digest, manifest, extra)),
        Ok((None, _)) => Err(Box::new(super::not_found())),
        Err(resp) => Err(Box::new(resp)),
    }
}

/// `GET /ui/image/<name>?digest=<digest>`.
pub(super) async fn image(
    State(r): State<Arc<Registry>>,
    Path(name): Path<String>,
    Query(q): Query<DigestParam>,
    headers: HeaderMap,
) -> Response {
    let (who, session) = viewer(&r, &headers);
    let (digest, manifest, referrers) = match viewable(&r, &who, &name, &q.digest, |m, repo, d| {
        m.referrers(repo, d, None)
    })
    .await
    {
        Ok(found) => found,
        Err(resp) => return *resp,
    };
    let v: serde_json::Value = serde_json::from_slice(&manifest.content).unwrap_or_default();
    let config = match v["config"]["digest"]
        .as_str()
        .and_then(|s| s.parse::<Digest>().ok())
    {
        Some(cd) => bounded_blob(&r, &cd, MAX_CONFIG)
            .await
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()),
        None => None,
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("registry");
    let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
    let body = html! {
        p.muted { a href={ "/ui/repo/" (name) } { (name) } " / " }
        h1 { (name) "@" code { (digest.to_string().get(..19).unwrap_or_default()) "…" } }
        p { code.pull { "docker pull " (host) "/" (name) "@" (digest) } }
        p.muted { (manifest.media_type) " · " (human_bytes(manifest.size)) }
        @if let Some(sbom) = referrers.iter().find(|rf| rf.artifact_type.as_deref() == Some(CYCLONEDX_JSON)) {
            p { a href={ "/ui/sbom/" (name) "?digest=" (sbom.digest) } { "Software bill of materials (SBOM)" } }
        }
        @if let Some(ms) = v["manifests"].as_array() {
            h2 { "Platforms" }
            table {
                thead { tr { th scope="col" { "Platform" } th scope="col" { "Digest" } th.num scope="col" { "Size" } } }
                tbody {
                    @for m in ms {
                        @let p = &m["platform"];
                        @let d = m["digest"].as_str().unwrap_or_default();
                        tr {
                            td { (p["os"].as_str().unwrap_or("?")) "/" (p["architecture"].as_str().unwrap_or("?"))
                                 @if let Some(var) = p["variant"].as_str() { "/" (var) } }
                            td { a href={ "/ui/image/" (name) "?digest=" (d) } { code { (d.get(..19).unwrap_or(d)) "…" } } }
                            td.num { (m["size"].as_u64().map(human_bytes).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &config {
            h2 { "Config" }
            p { (c["os"].as_str().unwrap_or("?")) "/" (c["architecture"].as_str().unwrap_or("?"))
                @if let Some(created) = c["created"].as_str() { " · created " (created) } }
            @let labels = pairs(&c["config"]["Labels"]);
            @if !labels.is_empty() {
                h2 { "Labels" }
                table { tbody {
                    @for (k, val) in &labels {
                        tr { th scope="row" { code { (k) } } td { (maybe_link(val)) } }
                    }
                } }
            }
        }
        @if let Some(layers) = v["layers"].as_array() {
            h2 { "Layers" }
            table {
                thead { tr { th scope="col" { "Layer" } th.num scope="col" { "Size" } th scope="col" { "Store paths" } } }
                tbody {
                    @for l in layers {
                        @let d = l["digest"].as_str().unwrap_or_default();
                        @let paths: Vec<&str> = l["annotations"][STORE_PATHS].as_str().map(|s| s.lines().filter(|p| !p.is_empty()).collect()).unwrap_or_default();
                        tr {
                            td { code title=(d) { (d.get(..19).unwrap_or(d)) "…" } }
                            td.num { (l["size"].as_u64().map(human_bytes).unwrap_or_default()) }
                            td {
                                @if paths.is_empty() { span.muted { "—" } }
                                @else {
                                    ul.paths { @for p in &paths { li { code { (p) } } } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @let annotations = pairs(&v["annotations"]);
        @if !annotations.is_empty() {
            h2 { "Annotations" }
            table { tbody {
                @for (k, val) in &annotations {
                    tr { th scope="row" { code { (k) } } td { (maybe_link(val)) } }
                }
            } }
        }
        h2 { "Referrers" }
        @if referrers.is_empty() {
            p.empty { "None." }
        } @else {
            table {
                thead { tr { th scope="col" { "Artifact type" } th scope="col" { "Digest" } th.num scope="col" { "Size" } th scope="col" { "View" } } }
                tbody {
                    @for rf in &referrers {
                        @let kind = rf.artifact_type.as_deref().unwrap_or(&rf.media_type);
                        tr {
                            td { code { (kind) } }
                            td { a href={ "/ui/image/" (name) "?digest=" (rf.digest) } { code { (rf.digest.to_string().get(..19).unwrap_or_default()) "…" } } }
                            td.num { (human_bytes(rf.size)) }
                            td { @if kind == CYCLONEDX_JSON { a href={ "/ui/sbom/" (name) "?digest=" (rf.digest) } { "SBOM" } } }
                        }
                    }
                }
            }
        }
        details {
            summary { "Manifest" }
            pre { code { (pretty) } }
        }
    };
    super::page(&name, &who, session.as_ref(), body)
}
