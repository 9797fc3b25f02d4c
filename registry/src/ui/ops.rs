//! The pages that show how the registry looks after itself: a project's
//! policy (immutable tags, retention rules, quota and usage) with the
//! last retention preview and run, and buttons for both (project
//! admins); garbage collection's schedule and last runs, with dry-run and
//! collect buttons; webhook targets and their recent deliveries (system
//! admins); and the audit log, filtered by actor, action, project and
//! outcome, paged backwards. Every figure comes from the admin API's own
//! operations ([`crate::api::admin`]), with its permission checks.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use berth_oci::units::human_bytes;
use maud::{Markup, html};

use super::browse::when;
use super::manage::{csrf, refusal, signed_in, signed_post};
use crate::Registry;
use crate::api::admin as api;
use crate::metadata::{AuditQuery, JobRun};
use crate::policy::PolicyConfig;
use crate::retention::RetentionReport;

/// A list of names, the first `n` shown and the rest counted.
fn some_of(items: &[String], n: usize) -> Markup {
    html! {
        @if items.is_empty() { span.muted { "none" } }
        @else {
            ul.paths {
                @for i in items.iter().take(n) { li { code { (i) } } }
                @if items.len() > n { li.muted { "and " (items.len() - n) " more" } }
            }
        }
    }
}

/// A retention run's figures, restricted to `project` when the run
/// covered every project.
fn retention_run(run: &JobRun, project: &str) -> Markup {
    let title = if run.dry_run {
        "Last preview"
    } else {
        "Last run"
    };
    let inside = |items: &[String]| -> Vec<String> {
        items
            .iter()
            .filter(|i| i.starts_with(&format!("{project}/")))
            .cloned()
            .collect()
    };
    html! {
        h3 { (title) }
        p.muted { (when(run.finished_at)) " · by " (run.by)
            @if run.scope == "*" { " · over every project" } }
        @if !run.ok {
            p.error role="alert" { "Failed: " (run.report) }
        } @else if let Ok(report) = serde_json::from_str::<RetentionReport>(&run.report) {
            @let tags = inside(&report.tags);
            @let manifests = inside(&report.manifests);
            @let immutable = inside(&report.immutable);
            dl {
                dt { @if run.dry_run { "Tags that would go" } @else { "Tags removed" } " (" (tags.len()) ")" }
                dd { (some_of(&tags, 50)) }
                dt { "Kept because immutable (" (immutable.len()) ")" } dd { (some_of(&immutable, 20)) }
                dt { @if run.dry_run { "Untagged manifests that would go" } @else { "Untagged manifests removed" } " (" (manifests.len()) ")" }
                dd { (some_of(&manifests, 20)) }
            }
        }
    }
}

/// `GET /ui/projects/<p>/policy`.
pub(super) async fn policy(
    State(r): State<Arc<Registry>>,
    Path(project): Path<String>,
    uri: http::Uri,
    headers: HeaderMap,
    ext: http::Extensions,
) -> Response {
    let (c, who, session) = match signed_in(&r, &uri, &headers, &ext) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let v = match api::policy_of(&r, &c, project.clone()).await {
        Ok(v) => v,
        Err(e) if e.status() == StatusCode::NOT_FOUND => return super::not_found(),
        Err(e) => return refusal(&who, &session, &e, ("/ui/", "projects")),
    };
    let source: Option<PolicyConfig> = serde_json::from_value(v["policy"].clone()).ok();
    let usage = v["usage_bytes"].as_u64().unwrap_or(0);
    let quota = v["quota_bytes"].as_u64();
    let p = project.clone();
    let runs = super::meta(&r, move |m| {
        let mut runs = Vec::new();
        for scope in [p.as_str(), "*"] {
            for dry in [true, false] {
                runs.extend(m.last_run("retention", scope, dry)?);
            }
        }
        Ok(runs)
    })
    .await;
    let runs = match runs {
        Ok(runs) => runs,
        Err(resp) => return resp,
    };
    // The newest preview and the newest run, whichever scope.
    let newest = |dry: bool| {
        runs.iter()
            .filter(|r| r.dry_run == dry)
            .max_by_key(|r| r.finished_at)
    };
    let admin = c.administers(&project);
    let body = html! {
        p.muted { a href={ "/ui/projects/" (project) } { (project) } " / " }
        h1 { "Policy of " (project) }
        p { "Usage " strong { (human_bytes(usage)) }
            @if let Some(q) = quota { " of a " (human_bytes(q)) " quota" } @else { " (no quota)" } }
        @if v["declared"].as_bool() == Some(true) { p.muted { "Declared in the configuration's [[policies]]." } }
        @match &source {
            None => { p.empty { "No policy: every tag is kept and any tag may move." } }
            Some(s) => {
                h2 { "Immutable tags" }
                @if s.immutable_tags.is_empty() { p.empty { "None." } }
                @else { ul { @for t in &s.immutable_tags { li { code { (t) } } } } }
                h2 { "Retention rules" }
                @if s.retention.is_empty() { p.empty { "None: retention keeps everything." } }
                @else {
                    table #rules {
                        thead { tr { th scope="col" { "Repositories" } th scope="col" { "Tags" } th scope="col" { "Keeps" } } }
                        tbody {
                            @for rule in &s.retention {
                                tr {
                                    td { code { (rule.repositories) } }
                                    td { code { (rule.tags) } }
                                    td {
                                        @if let Some(n) = rule.latest { "the latest " (n) }
                                        @else if let Some(d) = rule.days { "pushed within " (d) " days" }
                                        @else { "all" }
                                    }
                                }
                            }
                        }
                    }
                    @if s.remove_untagged { p { "Untagged manifests are removed too." } }
                }
            }
        }
        h2 { "Retention runs" }
        @if let Some(run) = newest(true) { (retention_run(run, &project)) }
        @if let Some(run) = newest(false) { (retention_run(run, &project)) }
        @if newest(true).is_none() && newest(false).is_none() { p.empty { "No retention has run yet." } }
        @if admin {
            form.inline method="post" action={ "/ui/projects/" (project) "/policy" } {
                (csrf(&session))
                button type="submit" name="op" value="preview" { "Preview retention" }
                " "
                button type="submit" name="op" value="apply" { "Apply retention now" }
            }
        }
    };
    super::page(&format!("Policy of {project}"), &who, Some(&session), body)
}

/// `POST /ui/projects/<p>/policy`: `op` = `preview` or `apply`.
pub(super) async fn policy_post(
    State(r): State<Arc<Registry>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: String,
) -> Response {
    let (c, who, session, f) = match signed_post(&r, &headers, &ext, &body) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let here = format!("/ui/projects/{project}/policy");
    let dry_run = f.get("op").map(String::as_str) != Some("apply");
    match api::apply_retention(&r, &c, Some(project), dry_run).await {
        Ok(_) => Redirect::to(&here).into_response(),
        Err(e) => refusal(&who, &session, &e, (&here, "the policy")),
    }
}

/// One GC run.
fn gc_run(run: &JobRun) -> Markup {
    let report: Option<crate::gc::GcReport> = serde_json::from_str(&run.report).ok();
    html! {
        h2 { @if run.dry_run { "Last dry run" } @else { "Last collection" } }
        p.muted { (when(run.finished_at)) " · by " (run.by) }
        @if !run.ok { p.error role="alert" { "Failed: " (run.report) } }
        @else if let Some(g) = report {
            dl {
                dt { "Blobs " @if g.dry_run { "that would go" } @else { "removed" } } dd { (g.blobs.len()) " (" (human_bytes(g.bytes)) ")" }
                dt { "Blobs kept" } dd { (g.blobs_kept) }
                dt { "Untagged manifests" } dd { (g.manifests.len()) }
                dt { "Stray files removed" } dd { (g.orphans) }
                dt { "Took" } dd { (g.millis) " ms" }
            }
        }
    }
}

/// `GET /ui/gc`: system admins.
pub(super) async fn gc(
    State(r): State<Arc<Registry>>,
    uri: http::Uri,
    headers: HeaderMap,
    ext: http::Extensions,
) -> Response {
    let (c, who, session) = match signed_in(&r, &uri, &headers, &ext) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    if !c.admin() {
        return super::not_found();
    }
    let runs = match super::meta(&r, |m| {
        Ok([
            m.last_run("gc", "registry", false)?,
            m.last_run("gc", "registry", true)?,
        ])
    })
    .await
    {
        Ok(runs) => runs,
        Err(resp) => return resp,
    };
    let g = &r.gc;
    let body = html! {
        h1 { "Garbage collection" }
        dl {
            dt { "Schedule" } dd { @match g.every_hours { Some(h) => { "retention, then a collection, every " (h) " h" } None => "none ([gc] every_hours is unset)" } }
            dt { "Grace window" } dd { (g.grace_minutes) " minutes (younger blobs and uploads are kept)" }
            dt { "Untagged manifests" } dd { @match g.untagged_after_hours { Some(h) => { "removed after " (h) " h" } None => "kept" } }
        }
        @for run in runs.iter().flatten() { (gc_run(run)) }
        @if runs.iter().all(Option::is_none) { p.empty { "No collection has run yet." } }
        form.inline method="post" action="/ui/gc" {
            (csrf(&session))
            button type="submit" name="op" value="dry-run" { "Dry run" }
            " "
            button type="submit" name="op" value="collect" { "Collect now" }
        }
    };
    super::page("Garbage collection", &who, Some(&session), body)
}

/// `POST /ui/gc`: `op` = `dry-run` or `collect`; waits for the end.
pub(super) async fn gc_post(
    State(r): State<Arc<Registry>>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: String,
) -> Response {
    let (c, _, _, f) = match signed_post(&r, &headers, &ext, &body) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    if !c.admin() {
        return super::not_found();
    }
    let dry_run = f.get("op").map(String::as_str) != Some("collect");
    let client = crate::api::client_text(&ext);
    let config = r.gc.clone();
    // A failure is recorded as the last run and shown on the page.
    let _ = api::collect_now(&r, &config, dry_run, &|_| {}, c.name(), &client).await;
    Redirect::to("/ui/gc").into_response()
}

/// The webhook page's query.
#[derive(Debug, serde::Deserialize)]
pub(super) struct WebhookQuery {
    target: Option<String>,
}

/// `GET /ui/webhooks`: system admins.
pub(super) async fn webhooks(
    State(r): State<Arc<Registry>>,
    Query(q): Query<WebhookQuery>,
    uri: http::Uri,
    headers: HeaderMap,
    ext: http::Extensions,
) -> Response {
    let (c, who, session) = match signed_in(&r, &uri, &headers, &ext) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    if !c.admin() {
        return super::not_found();
    }
    let target = q.target.filter(|t| !t.is_empty());
    let v = match api::webhook_status(&r, &c, target.clone(), Some(100)).await {
        Ok(v) => v,
        Err(e) => return refusal(&who, &session, &e, ("/ui/", "projects")),
    };
    let empty = Vec::new();
    let targets = v["targets"].as_array().unwrap_or(&empty);
    let deliveries = v["deliveries"].as_array().unwrap_or(&empty);
    let body = html! {
        h1 { "Webhooks" }
        p.muted { (v["backlog"].as_u64().unwrap_or(0)) " waiting to be delivered" }
        h2 { "Targets" }
        @if targets.is_empty() { p.empty { "None: add [[webhooks]] to the configuration." } }
        @else {
            table #targets {
                thead { tr { th scope="col" { "Name" } th scope="col" { "URL" } th scope="col" { "Projects" } } }
                tbody { @for t in targets {
                    @let name = t["name"].as_str().unwrap_or_default();
                    tr {
                        td { a href={ "/ui/webhooks?target=" (name) } { (name) } }
                        td { code { (t["url"].as_str().unwrap_or_default()) } }
                        td { @let ps: Vec<&str> = t["projects"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
                             @if ps.is_empty() { "all" } @else { (ps.join(", ")) } }
                    }
                } }
            }
        }
        h2 { "Recent deliveries" @if let Some(t) = &target { " to " (t) " · " a href="/ui/webhooks" { "all targets" } } }
        @if deliveries.is_empty() { p.empty { "None yet." } }
        @else {
            table #deliveries {
                thead { tr { th scope="col" { "Queued" } th scope="col" { "Target" } th scope="col" { "Event" }
                    th.num scope="col" { "Attempts" } th scope="col" { "Last status" } th scope="col" { "State" } } }
                tbody { @for d in deliveries {
                    tr {
                        td { (d["queued_at"].as_u64().map(when).unwrap_or_default()) }
                        td { (d["target"].as_str().unwrap_or_default()) }
                        td { code { (d["event"].as_str().unwrap_or_default()) } }
                        td.num { (d["attempts"].as_u64().unwrap_or(0)) }
                        td { (d["last_status"].as_str().unwrap_or_default()) }
                        td { span.badge {
                            @if d["delivered_at"].is_u64() { "delivered" }
                            @else if d["failed"].as_bool() == Some(true) { "failed" }
                            @else { "retrying" }
                        } }
                    }
                } }
            }
        }
    };
    super::page("Webhooks", &who, Some(&session), body)
}

/// The audit page's filters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct AuditFilter {
    actor: String,
    action: String,
    project: String,
    outcome: String,
    before: Option<i64>,
}

/// `GET /ui/audit`: system admins see it all; project admins choose one
/// of their projects.
pub(super) async fn audit(
    State(r): State<Arc<Registry>>,
    Query(q): Query<AuditFilter>,
    uri: http::Uri,
    headers: HeaderMap,
    ext: http::Extensions,
) -> Response {
    let (c, who, session) = match signed_in(&r, &uri, &headers, &ext) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    const PAGE: usize = 100;
    let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let query = AuditQuery {
        actor: some(&q.actor),
        action: some(&q.action),
        project: some(&q.project),
        outcome: some(&q.outcome),
        since: None,
        before_id: q.before,
        limit: Some(PAGE),
    };
    let events = api::audit_events(&r, &c, query).await;
    let projects: Vec<&String> = c
        .directory()
        .policy
        .projects
        .keys()
        .filter(|p| c.administers(p))
        .collect();
    let older = |id: i64| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("actor", &q.actor),
            ("action", &q.action),
            ("project", &q.project),
            ("outcome", &q.outcome),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        s.append_pair("before", &id.to_string());
        format!("/ui/audit?{}", s.finish())
    };
    let body = html! {
        h1 { "Audit log" }
        form.filter method="get" role="search" {
            label for="actor" { "Actor " } input #actor name="actor" value=(q.actor); " "
            label for="action" { "Action " } input #action name="action" value=(q.action) placeholder="robot."; " "
            label for="project" { "Project " }
            select #project name="project" {
                @if c.admin() { option value="" { "(all)" } }
                @for p in &projects { option value=(p) selected[**p == q.project] { (p) } }
            }
            " "
            label for="outcome" { "Outcome " }
            select #outcome name="outcome" {
                @for (v, l) in [("", "(any)"), ("ok", "ok"), ("denied", "denied"), ("error", "error")] {
                    option value=(v) selected[v == q.outcome] { (l) }
                }
            }
            " "
            button type="submit" { "Filter" }
        }
        @match &events {
            Err(e) => { p.error role="alert" { (e.message()) } }
            Ok(events) if events.is_empty() => { p.empty { "No events." } }
            Ok(events) => {
                table #audit {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Actor" } th.wide scope="col" { "Client" }
                        th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Outcome" } th scope="col" { "Detail" } } }
                    tbody { @for e in events {
                        tr {
                            td { (when(e.at)) }
                            td { (e.actor) }
                            td.wide { code { (e.client) } }
                            td { code { (e.action) } }
                            td { code { (e.target) } }
                            td { span.badge { (e.outcome) } }
                            td { (e.detail) }
                        }
                    } }
                }
                @if events.len() == PAGE {
                    @if let Some(last) = events.last() { p { a href=(older(last.id)) { "Older events" } } }
                }
            }
        }
    };
    super::page("Audit log", &who, Some(&session), body)
}
