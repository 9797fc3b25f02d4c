//! The web UI at `/ui/`: pages rendered on the server from maud templates
//! (checked at compile time; every interpolated value is HTML-escaped),
//! one stylesheet shipped inside the binary, no external fonts or scripts.
//! A page shows only what its viewer may pull, decided by the same
//! [`crate::auth::model::Policy`] as the API; an open registry (no
//! `[auth]`) shows everything, as its API serves everything. Read-only
//! pages need no JavaScript. On by default; `[ui] enabled = false` turns
//! the routes off (404).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use berth_oci::units::human_bytes;
use maud::{DOCTYPE, Markup, html};

use crate::Registry;
use crate::auth::model::{Action, Principal};
use crate::metadata::{Metadata, MetadataError, Session};

mod browse;
mod delete;
mod image;
mod manage;
mod ops;
mod sbom;
mod session;

/// The stylesheet.
const CSS: &str = include_str!("berth.css");
/// The small enhancements (copy buttons); no page needs them.
const JS: &str = include_str!("berth.js");

/// The UI's routes (merged into the API's router when enabled).
pub fn router() -> Router<Arc<Registry>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(projects))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/projects/{project}", get(browse::project))
        .route("/ui/repo/{*name}", get(browse::repository))
        .route("/ui/image/{*name}", get(image::image))
        .route("/ui/sbom/{*name}", get(sbom::sbom))
        .route("/ui/robots", get(manage::robots).post(manage::robots_post))
        .route(
            "/ui/projects/{project}/members",
            get(manage::members).post(manage::members_post),
        )
        .route(
            "/ui/projects/{project}/policy",
            get(ops::policy).post(ops::policy_post),
        )
        .route("/ui/gc", get(ops::gc).post(ops::gc_post))
        .route("/ui/webhooks", get(ops::webhooks))
        .route("/ui/audit", get(ops::audit))
        .route("/ui/logout", axum::routing::post(session::logout))
        .route("/ui/static/berth.css", get(css))
        .route("/ui/static/berth.js", get(js))
        // Any other /ui/ address: the UI's own 404 page.
        .route("/ui/{*rest}", get(|| async { not_found() }))
        .route(
            "/ui/delete-tag/{*name}",
            get(delete::confirm).post(delete::delete),
        )
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// A whole page: `title`, then `body` inside the layout, for `who` (with
/// their `session`, whose CSRF token the sign-out form carries).
fn page(title: &str, who: &Principal, session: Option<&Session>, body: Markup) -> Response {
    layout(title, Some((who, session)), body)
}

/// A page saying why a request was not answered (`status`), in the
/// layout but without the viewer's name: the error pages of every route,
/// so a refusal never strands someone on a bare text page.
pub(super) fn problem(status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Refused",
        StatusCode::BAD_REQUEST => "Not understood",
        StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
        _ => "Not done",
    };
    let body = html! {
        h1 { (title) }
        p.error role="alert" { (message) }
        p { a href="/ui/" { "Back to the projects" } }
    };
    let mut resp = layout(title, None, body);
    *resp.status_mut() = status;
    resp
}

/// The 404 page: the same whether the thing is missing or hidden.
pub(super) fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "There is no such page, or you may not see it.",
    )
}

/// The layout around `body`; `viewer` names who is signed in (none on an
/// error page).
fn layout(title: &str, viewer: Option<(&Principal, Option<&Session>)>, body: Markup) -> Response {
    let (who, session) = viewer.unwrap_or((&Principal::Anonymous, None));
    let name = match who {
        Principal::Anonymous => "anonymous".to_owned(),
        Principal::User { name, .. } => name.clone(),
        Principal::Robot(r) => r.name.clone(),
    };
    let html = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · berth" }
                link rel="stylesheet" href="/ui/static/berth.css";
                script src="/ui/static/berth.js" defer {}
            }
            body {
                header {
                    a.brand href="/ui/" { "berth" }
                    nav aria-label="main" {
                        a href="/ui/" { "Projects" }
                        @if session.is_some() {
                            " " a href="/ui/robots" { "Robots" }
                            " " a href="/ui/audit" { "Audit" }
                        }
                        @if matches!(who, Principal::User { admin: true, .. }) {
                            " " a href="/ui/webhooks" { "Webhooks" }
                            " " a href="/ui/gc" { "GC" }
                        }
                    }
                    @if viewer.is_none() {
                    } @else if let Some(s) = session {
                        form.who method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span { (name) " " }
                            button type="submit" { "Sign out" }
                        }
                    } @else {
                        span.who { (name) " · " a href="/ui/login" { "Sign in" } }
                    }
                }
                main { (body) }
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // No page is cached by a shared cache, nor framed elsewhere.
            (header::CACHE_CONTROL, "private, no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        html,
    )
        .into_response()
}

/// A project as the projects page lists it.
#[derive(Debug, Default)]
struct ProjectRow {
    public: Option<bool>,
    repositories: usize,
}

/// Work with the metadata on the blocking pool; a failure is answered
/// with a 503.
async fn meta<T: Send + 'static>(
    r: &Arc<Registry>,
    f: impl FnOnce(&Metadata) -> Result<T, MetadataError> + Send + 'static,
) -> Result<T, Response> {
    crate::api::db_write(r, f).await.map_err(|e| {
        tracing::warn!(error = %e, "web UI: the metadata failed");
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "The registry's metadata cannot be used now; try again.",
        )
    })
}

/// Every repository name the metadata knows, in order.
fn all_repositories(m: &Metadata) -> Result<Vec<String>, MetadataError> {
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = m.catalog(last.as_deref(), 1000)?;
        let done = page.len() < 1000;
        last = page.last().cloned();
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// The projects `who` may pull from, with their repository counts: the
/// declared projects (and, for an admin, projects created on first push)
/// with `[auth]`; every repository's first path component without.
fn visible_projects(
    r: &Registry,
    who: &Principal,
    repos: &[String],
) -> BTreeMap<String, ProjectRow> {
    let mut out: BTreeMap<String, ProjectRow> = BTreeMap::new();
    let now = crate::unix_now();
    let policy = r.gate.as_ref().map(|g| g.directory());
    if let Some(dir) = &policy {
        for (name, p) in &dir.policy.projects {
            if dir
                .policy
                .allows(who, &format!("{name}/x"), Action::Pull, now)
            {
                out.entry(name.clone()).or_default().public = Some(p.public);
            }
        }
    }
    for repo in repos {
        let project = crate::auth::model::project_of(repo);
        let allowed = match &policy {
            None => true,
            Some(dir) => dir.policy.allows(who, repo, Action::Pull, now),
        };
        if allowed {
            out.entry(project.to_owned()).or_default().repositories += 1;
        }
    }
    out
}

async fn projects(State(r): State<Arc<Registry>>, headers: http::HeaderMap) -> Response {
    let (who, session) = session::viewer(&r, &headers);
    let repos = match meta(&r, all_repositories).await {
        Ok(repos) => repos,
        Err(resp) => return resp,
    };
    let rows = visible_projects(&r, &who, &repos);
    let names: Vec<String> = rows.keys().cloned().collect();
    let usage = match meta(&r, move |m| {
        names
            .iter()
            .map(|n| m.project_usage(n))
            .collect::<Result<Vec<u64>, _>>()
    })
    .await
    {
        Ok(usage) => usage,
        Err(resp) => return resp,
    };
    let policies = r.policies();
    let body = html! {
        h1 { "Projects" }
        @if rows.is_empty() {
            p.empty { "No project you can see yet. Push an image, or sign in." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Project" }
                    th scope="col" { "Visibility" }
                    th.num scope="col" { "Repositories" }
                    th.num scope="col" { "Usage" }
                    th.num.wide scope="col" { "Quota" }
                } }
                tbody {
                    @for ((name, row), used) in rows.iter().zip(&usage) {
                        tr {
                            td { a href={ "/ui/projects/" (name) } { code { (name) } } }
                            td { span.badge { (match row.public {
                                Some(true) => "public",
                                Some(false) => "private",
                                None => "open registry",
                            }) } }
                            td.num { (row.repositories) }
                            td.num { (human_bytes(*used)) }
                            td.num.wide { @match policies.project(name).and_then(|p| p.quota) {
                                Some(q) => (human_bytes(q)),
                                None => span.muted { "none" },
                            } }
                        }
                    }
                }
            }
        }
    };
    page("Projects", &who, session.as_ref(), body)
}

#[cfg(test)]
mod tests;
