//! An SBOM's page (`/ui/sbom/<name>?digest=<referrer>`): the CycloneDX
//! document a referrer attaches to an image, rendered as a component
//! list — name, version, Nix store path, licence where the document names
//! one — searchable on the server (`?q=`, so it works without JavaScript)
//! and filtered as one types with it. The document is pushed content: it
//! is read up to [`MAX_SBOM`] bytes, its digest verified, and every field
//! escaped.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use berth_oci::Digest;
use berth_oci::media_type::CYCLONEDX_JSON;
use maud::html;
use serde::Deserialize;

use super::session::viewer;
use crate::Registry;

/// Largest SBOM document shown.
const MAX_SBOM: usize = 32 << 20;

/// The page's query: the referrer's digest, and a filter.
#[derive(Debug, Deserialize)]
pub(super) struct SbomQuery {
    digest: String,
    #[serde(default)]
    q: String,
}

/// The parts of a CycloneDX document the page shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Bom {
    #[serde(rename = "specVersion")]
    spec_version: String,
    metadata: BomMetadata,
    components: Vec<Component>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BomMetadata {
    component: Option<Component>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Component {
    name: String,
    version: String,
    purl: String,
    licenses: Vec<LicenseChoice>,
    properties: Vec<Property>,
    /// CycloneDX nests components; the page lists them flat.
    components: Vec<Component>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LicenseChoice {
    license: Option<License>,
    expression: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct License {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Property {
    name: String,
    value: String,
}

/// One row of the list.
struct Row {
    name: String,
    version: String,
    store_path: String,
    licence: String,
}

impl Row {
    fn of(c: &Component) -> Self {
        let licence = c
            .licenses
            .iter()
            .filter_map(|l| {
                l.expression.clone().or_else(|| {
                    l.license
                        .as_ref()
                        .and_then(|x| x.id.clone().or_else(|| x.name.clone()))
                })
            })
            .collect::<Vec<_>>()
            .join(", ");
        let store_path = c
            .properties
            .iter()
            .find(|p| p.name == "nix:store_path")
            .map(|p| p.value.clone())
            .unwrap_or_default();
        Self {
            name: c.name.clone(),
            version: c.version.clone(),
            store_path,
            licence,
        }
    }

    /// Whether the row contains `needle` (lowercase) in any column.
    fn matches(&self, needle: &str) -> bool {
        needle.is_empty()
            || [&self.name, &self.version, &self.store_path, &self.licence]
                .iter()
                .any(|f| f.to_lowercase().contains(needle))
    }
}

/// Every component, nested ones included, in document order.
fn flatten<'a>(cs: &'a [Component], out: &mut Vec<&'a Component>) {
    for c in cs {
        out.push(c);
        flatten(&c.components, out);
    }
}

/// `GET /ui/sbom/<name>?digest=<referrer digest>&q=<filter>`.
pub(super) async fn sbom(
    State(r): State<Arc<Registry>>,
    Path(name): Path<String>,
    Query(q): Query<SbomQuery>,
    headers: HeaderMap,
) -> Response {
    let (who, session) = viewer(&r, &headers);
    let (digest, manifest, ()) =
        match super::image::viewable(&r, &who, &name, &q.digest, |_, _, _| Ok(())).await {
            Ok(found) => found,
            Err(resp) => return *resp,
        };
    let v: serde_json::Value = serde_json::from_slice(&manifest.content).unwrap_or_default();
    let subject = v["subject"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let layer = v["layers"].as_array().and_then(|ls| {
        ls.iter()
            .find(|l| l["mediaType"] == CYCLONEDX_JSON)
            .and_then(|l| l["digest"].as_str()?.parse::<Digest>().ok())
    });
    let Some(layer) = layer else {
        return super::problem(
            StatusCode::NOT_FOUND,
            "This artifact holds no CycloneDX JSON document.",
        );
    };
    let Some(bytes) = super::image::bounded_blob(&r, &layer, MAX_SBOM).await else {
        return super::problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The SBOM cannot be read: it is missing, larger than 32 MiB, or its bytes do not match its digest.",
        );
    };
    let bom: Bom = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return super::problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("The SBOM is not a CycloneDX JSON document: {e}."),
            );
        }
    };
    let mut all = Vec::new();
    flatten(&bom.components, &mut all);
    let needle = q.q.trim().to_lowercase();
    let rows: Vec<Row> = all
        .iter()
        .map(|c| Row::of(c))
        .filter(|row| row.matches(&needle))
        .collect();
    let title = bom
        .metadata
        .component
        .as_ref()
        .map(|c| c.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| name.clone());
    let body = html! {
        p.muted {
            a href={ "/ui/repo/" (name) } { (name) } " / "
            @if !subject.is_empty() {
                a href={ "/ui/image/" (name) "?digest=" (subject) } { code { (subject.get(..19).unwrap_or(&subject)) "…" } } " / "
            }
        }
        h1 { "SBOM of " (title) }
        p.muted { "CycloneDX " (bom.spec_version) " · " (all.len()) " component" @if all.len() != 1 { "s" } }
        form.filter method="get" role="search" {
            input type="hidden" name="digest" value=(digest);
            label for="q" { "Find a component " }
            input #q name="q" type="search" value=(q.q) data-filter="components";
            " "
            button type="submit" { "Find" }
        }
        @if !needle.is_empty() {
            p.muted { (rows.len()) " containing “" (q.q.trim()) "”" }
        }
        @if rows.is_empty() {
            p.empty { "No components." }
        } @else {
            table #components {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Version" }
                    th scope="col" { "Store path" } th scope="col" { "Licence" }
                } }
                tbody {
                    @for row in &rows {
                        tr {
                            td { (row.name) }
                            td { (row.version) }
                            td { @if row.store_path.is_empty() { span.muted { "—" } } @else { code { (row.store_path) } } }
                            td { @if row.licence.is_empty() { span.muted { "unknown" } } @else { (row.licence) } }
                        }
                    }
                }
            }
        }
    };
    super::page(&format!("SBOM of {title}"), &who, session.as_ref(), body)
}
