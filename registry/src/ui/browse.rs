//! The browsing pages: a project's repositories, and a repository's tags
//! (100 a page, filtered by a substring, each with its digest, kind,
//! platforms, size and push time) with the pull commands. A project or
//! repository the viewer may not pull is a 404, as if it did not exist.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use maud::html;

use super::session::viewer;
use berth_oci::units::human_bytes;

use crate::Registry;
use crate::auth::model::{Action, Principal};

/// Tags on one page.
const PAGE: usize = 100;

/// Whether `who` may pull `repo` (any repository of a project: `p/x`).
pub(super) fn may_pull(r: &Registry, who: &Principal, repo: &str) -> bool {
    match &r.gate {
        None => true,
        Some(g) => g
            .directory()
            .policy
            .allows(who, repo, Action::Pull, crate::unix_now()),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub(super) fn when(secs: u64) -> String {
    let t = crate::auth::gate::rfc3339(secs);
    format!("{} {} UTC", &t[..10], &t[11..16])
}

/// `GET /ui/projects/<project>`.
pub(super) async fn project(
    State(r): State<Arc<Registry>>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (who, session) = viewer(&r, &headers);
    if !may_pull(&r, &who, &format!("{project}/x")) {
        return super::not_found();
    }
    let name = project.clone();
    let repos = match super::meta(&r, move |m| m.repositories_in(&name)).await {
        Ok(repos) => repos,
        Err(resp) => return resp,
    };
    let repos: Vec<_> = repos
        .into_iter()
        .filter(|repo| may_pull(&r, &who, &repo.name))
        .collect();
    // Members and system admins get the project's members and policy pages.
    let in_project = match (&who, &r.gate) {
        (Principal::User { admin: true, .. }, Some(g)) => {
            g.directory().policy.projects.contains_key(&project)
        }
        (Principal::User { name, .. }, Some(g)) => g
            .directory()
            .policy
            .projects
            .get(&project)
            .is_some_and(|p| p.members.contains_key(name)),
        _ => false,
    };
    let body = html! {
        p.muted { a href="/ui/" { "Projects" } " / " }
        h1 { (project) }
        @if in_project {
            nav.sub aria-label="project" {
                a href={ "/ui/projects/" (project) "/members" } { "Members" } " · "
                a href={ "/ui/projects/" (project) "/policy" } { "Policy and retention" }
            }
        }
        @if repos.is_empty() {
            p.empty { "No repository yet." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Repository" }
                    th.num scope="col" { "Tags" }
                    th.num scope="col" { "Size" }
                    th.wide scope="col" { "Last push" }
                } }
                tbody {
                    @for repo in &repos {
                        tr {
                            td { a href={ "/ui/repo/" (repo.name) } { code { (repo.name) } } }
                            td.num { (repo.tags) }
                            td.num { (human_bytes(repo.bytes)) }
                            td.wide { (repo.last_push.map(when).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    };
    super::page(&project, &who, session.as_ref(), body)
}

/// A repository page's query.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct TagQuery {
    /// Only tags containing this.
    #[serde(default)]
    q: String,
    /// The page after this tag.
    after: Option<String>,
}

/// What a manifest says about itself for a tag row: its kind, platforms
/// (an index) and size (an image: config and layers).
fn describe(media_type: &str, content: &[u8]) -> (String, Vec<String>, Option<u64>) {
    let v: serde_json::Value = serde_json::from_slice(content).unwrap_or_default();
    use berth_oci::media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
    let kind = match media_type {
        OCI_INDEX | DOCKER_MANIFEST_LIST => "index",
        OCI_MANIFEST | DOCKER_MANIFEST => {
            if v["artifactType"].is_string() {
                "artifact"
            } else {
                "image"
            }
        }
        _ => "other",
    };
    let platforms = v["manifests"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    let p = &m["platform"];
                    let (os, arch) = (p["os"].as_str()?, p["architecture"].as_str()?);
                    Some(match p["variant"].as_str() {
                        Some(var) => format!("{os}/{arch}/{var}"),
                        None => format!("{os}/{arch}"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let size = (kind == "image" || kind == "artifact").then(|| {
        let layers: u64 = v["layers"]
            .as_array()
            .map(|ls| ls.iter().filter_map(|l| l["size"].as_u64()).sum())
            .unwrap_or(0);
        layers + v["config"]["size"].as_u64().unwrap_or(0) + content.len() as u64
    });
    (kind.to_owned(), platforms, size)
}

/// `GET /ui/repo/<name>?q=<filter>&after=<tag>`.
pub(super) async fn repository(
    State(r): State<Arc<Registry>>,
    Path(name): Path<String>,
    Query(query): Query<TagQuery>,
    headers: HeaderMap,
) -> Response {
    let (who, session) = viewer(&r, &headers);
    if berth_oci::reference::validate_name(&name).is_err() || !may_pull(&r, &who, &name) {
        return super::not_found();
    }
    let (repo, filter, after) = (name.clone(), query.q.clone(), query.after.clone());
    let page = super::meta(&r, move |m| {
        let Some((tags, total)) = m.tag_page(&repo, &filter, after.as_deref(), PAGE)? else {
            return Ok(None);
        };
        let digests: Vec<String> = tags.iter().map(|t| t.digest.clone()).collect();
        let pushers = m.pushers(&repo, &digests)?;
        Ok(Some((tags, total, pushers)))
    })
    .await;
    let (tags, total, pushers) = match page {
        Ok(Some(page)) => page,
        Ok(None) => return super::not_found(),
        Err(resp) => return resp,
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("registry");
    let project = crate::auth::model::project_of(&name);
    let deletes = session.is_some() && super::delete::may_delete(&r, &who, &name);
    let policies = r.policies();
    let example = tags.first();
    let body = html! {
        p.muted { a href="/ui/" { "Projects" } " / " a href={ "/ui/projects/" (project) } { (project) } " / " }
        h1 { (name) }
        @if let Some(t) = example {
            h2 { "Pull" }
            p { code.pull { "docker pull " (host) "/" (name) ":" (t.name) } }
            p { code.pull { "docker pull " (host) "/" (name) "@" (t.digest) } }
        }
        h2 { "Tags" }
        form method="get" action={ "/ui/repo/" (name) } role="search" {
            label for="q" { "Find a tag " }
            input #q name="q" type="search" value=(query.q);
            " "
            button type="submit" { "Find" }
        }
        p.muted { (total) " tag" @if total != 1 { "s" } @if !query.q.is_empty() { " containing “" (query.q) "”" } }
        @if !tags.is_empty() {
            table {
                thead { tr {
                    th scope="col" { "Tag" }
                    th scope="col" { "Digest" }
                    th.wide scope="col" { "Kind" }
                    th.num scope="col" { "Size" }
                    th.wide scope="col" { "Pushed" }
                    th.wide scope="col" { "By" }
                    @if deletes { th scope="col" { span.muted { "Actions" } } }
                } }
                tbody {
                    @for t in &tags {
                        @let (kind, platforms, size) = describe(&t.media_type, &t.content);
                        tr {
                            td {
                                code { (t.name) }
                                @if let Some(rule) = policies.immutable(&name, &t.name) {
                                    " " span.badge title={ "immutable: matches " (rule) } { "immutable" }
                                }
                            }
                            td { a href={ "/ui/image/" (name) "?digest=" (t.digest) } { code title=(t.digest) { (t.digest.get(..19).unwrap_or(&t.digest)) "…" } } }
                            td.wide {
                                (kind)
                                @for p in &platforms { " " span.badge { (p) } }
                            }
                            td.num { (size.map(human_bytes).unwrap_or_default()) }
                            td.wide { (when(t.updated_at)) }
                            td.wide { (pushers.get(&t.digest).map(String::as_str).unwrap_or("—")) }
                            @if deletes {
                                td { a href={ "/ui/delete-tag/" (name) "?tag=" (urlencode(&t.name)) } aria-label={ "Delete tag " (t.name) } { "Delete" } }
                            }
                        }
                    }
                }
            }
            @if tags.len() == PAGE {
                @if let Some(last) = tags.last() {
                    p { a href={ "/ui/repo/" (name) "?q=" (urlencode(&query.q)) "&after=" (urlencode(&last.name)) } { "Next page" } }
                }
            }
        }
    };
    super::page(&name, &who, session.as_ref(), body)
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
