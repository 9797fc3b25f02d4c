//! The pages that change accounts, for signed-in users: robots (list,
//! create with the secret shown once and a ready `auth.json`, disable or
//! enable, rotate) and a project's members (list; add, change or remove
//! for its admins). Each form post carries the session's CSRF token and
//! calls the admin API's own operation ([`crate::api::admin`]) as the
//! signed-in user, so the UI allows exactly what the API allows, audits
//! the same events, and shows the API's reason when it refuses.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use maud::{Markup, html};

use super::browse::when;
use super::session::{Fields, signed_form, viewer};
use crate::Registry;
use crate::api::admin::{self as api, AdminError, Caller};
use crate::auth::directory::role_name;
use crate::auth::model::{Principal, Role};
use crate::metadata::Session;

/// The caller a signed-in viewer stands for; without a session (or
/// without `[auth]`), the sign-in page.
pub(super) fn signed_in(
    r: &Registry,
    uri: &http::Uri,
    headers: &HeaderMap,
    ext: &http::Extensions,
) -> Result<(Caller, Principal, Session), Box<Response>> {
    let (who, session) = viewer(r, headers);
    let Some(session) = session else {
        return Err(Box::new(super::session::to_sign_in(Some(uri))));
    };
    let client = crate::api::client_text(ext);
    match Caller::of_session(r, who.clone(), &session.user, client) {
        Some(c) => Ok((c, who, session)),
        None => Err(Box::new(super::session::to_sign_in(Some(uri)))),
    }
}

/// A form post's caller: the session, origin and CSRF token checked.
pub(super) fn signed_post(
    r: &Registry,
    headers: &HeaderMap,
    ext: &http::Extensions,
    body: &str,
) -> Result<(Caller, Principal, Session, Fields), Box<Response>> {
    let (who, session, f) = signed_form(r, headers, body)?;
    let client = crate::api::client_text(ext);
    match Caller::of_session(r, who.clone(), &session.user, client) {
        Some(c) => Ok((c, who, session, f)),
        None => Err(Box::new(super::not_found())),
    }
}

/// A page saying why the API refused, with its status.
pub(super) fn refusal(
    who: &Principal,
    session: &Session,
    e: &AdminError,
    back: (&str, &str),
) -> Response {
    let body = html! {
        h1 { "Not done" }
        p.error role="alert" { (e.message()) }
        p { a href=(back.0) { "Back to " (back.1) } }
    };
    let mut resp = super::page("Not done", who, Some(session), body);
    *resp.status_mut() = e.status();
    resp
}

/// The hidden CSRF field of every form.
pub(super) fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A robot's permissions as one line: `team/* (pull, push)`.
fn permissions_text(v: &serde_json::Value) -> String {
    v["permissions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let repos: Vec<&str> = p["repositories"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                        .unwrap_or_default();
                    let actions: Vec<&str> = p["actions"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                        .unwrap_or_default();
                    format!("{} ({})", repos.join(", "), actions.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// The projects the caller may make robots for, and whether system robots.
fn robot_scopes(c: &Caller) -> (Vec<String>, bool) {
    let projects = c
        .directory()
        .policy
        .projects
        .keys()
        .filter(|p| c.administers(p))
        .cloned()
        .collect();
    (projects, c.admin())
}

/// `GET /ui/robots`: the robots the viewer manages and a form for a new
/// one.
pub(super) async fn robots(
    State(r): State<Arc<Registry>>,
    uri: http::Uri,
    headers: HeaderMap,
    ext: http::Extensions,
) -> Response {
    let (c, who, session) = match signed_in(&r, &uri, &headers, &ext) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let list = api::robots(&c, None);
    let (projects, system) = robot_scopes(&c);
    let now = crate::unix_now();
    let body = html! {
        h1 { "Robots" }
        p.muted { "Robot accounts push and pull from CI and clusters. Their secrets are shown once, when created or rotated." }
        @if list.is_empty() {
            p.empty { "No robot you manage yet." }
        } @else {
            table #robots {
                thead { tr {
                    th scope="col" { "Robot" } th scope="col" { "Permissions" } th scope="col" { "Expires" }
                    th scope="col" { "Status" } th scope="col" { "Created by" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for robot in &list {
                        @let name = robot["name"].as_str().unwrap_or_default();
                        @let disabled = robot["disabled"].as_bool().unwrap_or(false);
                        @let expires = robot["expires_at"].as_u64();
                        @let declared = robot["declared"].as_bool().unwrap_or(false);
                        tr {
                            td { code { (name) }
                                @let d = robot["description"].as_str().unwrap_or_default();
                                @if !d.is_empty() { br; span.muted { (d) } } }
                            td { code { (permissions_text(robot)) } }
                            td { @match expires { Some(t) => (when(t)), None => "never" } }
                            td { span.badge { @if disabled { "disabled" } @else if expires.is_some_and(|t| t <= now) { "expired" } @else { "active" } } }
                            td { (robot["created_by"].as_str().unwrap_or(if declared { "configuration" } else { "—" })) }
                            td {
                                @if declared {
                                    span.muted { "declared in the configuration" }
                                } @else {
                                    form.inline method="post" action="/ui/robots" {
                                        (csrf(&session))
                                        input type="hidden" name="robot" value=(name);
                                        @if disabled {
                                            button type="submit" name="op" value="enable" aria-label={ "Enable " (name) } { "Enable" }
                                        } @else {
                                            button type="submit" name="op" value="disable" aria-label={ "Disable " (name) } { "Disable" }
                                        }
                                        " "
                                        button type="submit" name="op" value="rotate" aria-label={ "Rotate the secret of " (name) } { "Rotate secret" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !projects.is_empty() || system {
            h2 #new { "New robot" }
            form.stack method="post" action="/ui/robots" {
                (csrf(&session))
                input type="hidden" name="op" value="create";
                label for="scope" { "Project" }
                select #scope name="scope" {
                    @for p in &projects { option value=(p) { (p) } }
                    @if system { option value="" { "(system robot, any project)" } }
                }
                label for="robot-name" { "Name" }
                input #robot-name name="name" required pattern="[a-z0-9._-]+" placeholder="ci" autocomplete="off";
                label for="repositories" { "Repositories (patterns, comma-separated; empty: the whole project)" }
                input #repositories name="repositories" placeholder="team/app, team/*";
                fieldset {
                    legend { "May" }
                    label { input type="checkbox" name="pull" value="on" checked; " pull" }
                    label { input type="checkbox" name="push" value="on"; " push" }
                    label { input type="checkbox" name="delete" value="on"; " delete" }
                }
                label for="days" { "Expires in days (-1: never)" }
                input #days name="days" type="number" value=(api::DEFAULT_ROBOT_DAYS) min="-1" max="3650";
                label for="description" { "Description" }
                input #description name="description" maxlength="1024";
                button type="submit" { "Create robot" }
            }
        }
    };
    super::page("Robots", &who, Some(&session), body)
}

/// The page that shows a secret once, with an `auth.json` for it.
fn secret_page(
    who: &Principal,
    session: &Session,
    host: &str,
    answer: &serde_json::Value,
    what: &str,
) -> Response {
    let name = answer["name"].as_str().unwrap_or_default();
    let secret = answer["secret"].as_str().unwrap_or_default();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{secret}"));
    let auth_json = serde_json::to_string_pretty(&serde_json::json!({
        "auths": { host: { "auth": auth } }
    }))
    .unwrap_or_default();
    let body = html! {
        h1 { "Robot " (what) }
        p.error role="alert" { "This secret is shown once. Copy it now: berth keeps only its hash." }
        dl {
            dt { "Name" } dd { code #robot-name-out { (name) } }
            dt { "Secret" } dd { code.pull #robot-secret { (secret) } }
            dt { "Expires" } dd { @match answer["expires_at"].as_u64() { Some(t) => (when(t)), None => "never" } }
        }
        h2 { "auth.json" }
        p { "For podman, skopeo, buildah and containerd clients (" code { "REGISTRY_AUTH_FILE" } ", " code { "~/.docker/config.json" } "):" }
        pre { code.pull #auth-json { (auth_json) } }
        h2 { "Or log in" }
        p { code.pull { "printf '%s' '" (secret) "' | podman login " (host) " -u '" (name) "' --password-stdin" } }
        p { a href="/ui/robots" { "Back to robots" } }
    };
    super::page(&format!("Robot {what}"), who, Some(session), body)
}

/// `POST /ui/robots`: `op` = `create`, `disable`, `enable` or `rotate`.
pub(super) async fn robots_post(
    State(r): State<Arc<Registry>>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: String,
) -> Response {
    let (c, who, session, f) = match signed_post(&r, &headers, &ext, &body) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("registry")
        .to_owned();
    let field = |k: &str| f.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let back = ("/ui/robots", "robots");
    match field("op").as_str() {
        "create" => {
            let scope = field("scope");
            let short = field("name");
            let name = if scope.is_empty() {
                format!("robot${short}")
            } else {
                format!("robot${scope}+{short}")
            };
            let mut repositories: Vec<String> = field("repositories")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if repositories.is_empty() && !scope.is_empty() {
                repositories.push(format!("{scope}/**"));
            }
            let actions: Vec<String> = ["pull", "push", "delete"]
                .into_iter()
                .filter(|a| f.contains_key(*a))
                .map(str::to_owned)
                .collect();
            let days = match field("days").parse::<i64>() {
                Ok(d) => Some(d),
                Err(_) if field("days").is_empty() => None,
                Err(_) => {
                    return refusal(
                        &who,
                        &session,
                        &AdminError::invalid(
                            "expires in days: give a whole number, or -1 for never",
                        ),
                        back,
                    );
                }
            };
            let new = api::NewRobot {
                name,
                permissions: vec![api::PermissionBody {
                    repositories,
                    actions,
                }],
                expires_in_days: days,
                description: field("description"),
            };
            match api::add_robot(&r, &c, new).await {
                Ok(answer) => secret_page(&who, &session, &host, &answer, "created"),
                Err(e) => refusal(&who, &session, &e, back),
            }
        }
        "rotate" => match api::rotate(&r, &c, field("robot"), None).await {
            Ok(answer) => secret_page(&who, &session, &host, &answer, "secret rotated"),
            Err(e) => refusal(&who, &session, &e, back),
        },
        op @ ("disable" | "enable") => {
            match api::disable_robot(&r, &c, field("robot"), op == "disable").await {
                Ok(_) => Redirect::to("/ui/robots").into_response(),
                Err(e) => refusal(&who, &session, &e, back),
            }
        }
        _ => refusal(&who, &session, &AdminError::invalid("unknown action"), back),
    }
}

/// `GET /ui/projects/<p>/members`: for its members and system admins;
/// its admins also get the forms.
pub(super) async fn members(
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
    let Some(p) = c
        .directory()
        .policy
        .projects
        .get(&project)
        .filter(|_| c.sees(&project))
    else {
        return super::not_found();
    };
    let manages = c.administers(&project) && !c.directory().declared.contains(&project);
    let candidates: Vec<&String> = c
        .directory()
        .user_names
        .iter()
        .filter(|u| !p.members.contains_key(*u))
        .collect();
    let roles = [
        Role::Guest,
        Role::Developer,
        Role::Maintainer,
        Role::ProjectAdmin,
    ];
    let body = html! {
        p.muted { a href={ "/ui/projects/" (project) } { (project) } " / " }
        h1 { "Members of " (project) }
        @if c.directory().declared.contains(&project) {
            p.muted { "This project is declared in the configuration: change its members there." }
        }
        table #members {
            thead { tr { th scope="col" { "User" } th scope="col" { "Role" } @if manages { th scope="col" { "Actions" } } } }
            tbody {
                @for (user, role) in &p.members {
                    tr {
                        td { (user) }
                        td { (role_name(*role)) }
                        @if manages {
                            td {
                                form.inline method="post" action={ "/ui/projects/" (project) "/members" } {
                                    (csrf(&session))
                                    input type="hidden" name="user" value=(user);
                                    label.sr for={ "role-" (user) } { "Role of " (user) }
                                    select id={ "role-" (user) } name="role" {
                                        @for r in roles { option value=(role_name(r)) selected[r == *role] { (role_name(r)) } }
                                    }
                                    " "
                                    button type="submit" name="op" value="put" { "Change" }
                                    " "
                                    button type="submit" name="op" value="remove" aria-label={ "Remove " (user) } { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if manages && !candidates.is_empty() {
            h2 { "Add a member" }
            form.stack method="post" action={ "/ui/projects/" (project) "/members" } {
                (csrf(&session))
                input type="hidden" name="op" value="put";
                label for="new-user" { "User" }
                select #new-user name="user" { @for u in &candidates { option value=(u) { (u) } } }
                label for="new-role" { "Role" }
                select #new-role name="role" { @for r in roles { option value=(role_name(r)) { (role_name(r)) } } }
                button type="submit" { "Add" }
            }
        }
    };
    super::page(&format!("Members of {project}"), &who, Some(&session), body)
}

/// `POST /ui/projects/<p>/members`: `op` = `put` (with `role`) or
/// `remove`, for `user`.
pub(super) async fn members_post(
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
    let user = f.get("user").cloned().unwrap_or_default();
    let here = format!("/ui/projects/{project}/members");
    let result = match f.get("op").map(String::as_str) {
        Some("put") => {
            let role = f.get("role").cloned().unwrap_or_default();
            api::set_member(&r, &c, project.clone(), user, &role)
                .await
                .map(drop)
        }
        Some("remove") => api::remove_member(&r, &c, project.clone(), user).await,
        _ => Err(AdminError::invalid("unknown action")),
    };
    match result {
        Ok(()) => Redirect::to(&here).into_response(),
        Err(e) => refusal(&who, &session, &e, (&here, "members")),
    }
}
