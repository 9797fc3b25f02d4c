//! The admin API under `/api/v1/`: projects, members, users, robots and
//! the audit log, as JSON, for `berth admin` and scripts. Callers prove
//! who they are with Basic credentials (the same login, cache and
//! throttle as `/token`); every endpoint checks [`Policy::administers`] or
//! system admin, and anything the caller may not see is a 404 exactly like
//! something that does not exist — a robot or member of project B asked
//! for with project A's admin credentials included. Bodies are parsed
//! with unknown fields refused, so `"admin": true` cannot ride along on a
//! robot. Declared accounts (from `[auth]`) are read-only here: their
//! source is the configuration. Every change is audited, and the
//! accounts are rebuilt and swapped whole after it.
//!
//! [`Policy::administers`]: crate::auth::model::Policy::administers

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::token::now;
use crate::Registry;
use crate::auth::credentials::{self, Secret};
use crate::auth::directory::{Directory, parse_role, permissions_json, role_name};
use crate::auth::gate::Gate;
use crate::auth::model::{Action, Principal, Role};
use crate::metadata::{AuditQuery, StoredProject, StoredRobot, StoredUser};

/// Default robot lifetime, days.
pub(crate) const DEFAULT_ROBOT_DAYS: i64 = 30;

/// Largest admin request body.
const MAX_BODY: usize = 64 << 10;

/// An admin API error: `{"errors": [{"code", "message"}]}`, as the
/// registry's errors look.
#[derive(Debug)]
pub(crate) struct AdminError(StatusCode, &'static str, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"errors": [{"code": self.1, "message": self.2}]}).to_string(),
        )
            .into_response()
    }
}

impl AdminError {
    /// The HTTP status it answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.0
    }

    /// What went wrong, for a person.
    pub(crate) fn message(&self) -> &str {
        &self.2
    }
}

type Result<T> = std::result::Result<T, AdminError>;

fn not_found(what: &str) -> AdminError {
    AdminError(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("{what} does not exist"),
    )
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError(StatusCode::BAD_REQUEST, "INVALID", message.into())
}

impl AdminError {
    /// A 400 for a request that cannot be right.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        invalid(message)
    }
}

fn denied(message: impl Into<String>) -> AdminError {
    AdminError(StatusCode::FORBIDDEN, "DENIED", message.into())
}

fn declared(what: &str) -> AdminError {
    AdminError(
        StatusCode::CONFLICT,
        "DECLARED",
        format!("{what} is declared in the configuration's [auth]; change it there"),
    )
}

fn conflict(what: &str) -> AdminError {
    AdminError(
        StatusCode::CONFLICT,
        "CONFLICT",
        format!("{what} already exists"),
    )
}

fn internal(e: impl std::fmt::Display) -> AdminError {
    tracing::error!(error = %e, "admin API");
    AdminError(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        "internal error (see the server log)".into(),
    )
}

/// The admin API's routes.
pub(crate) fn router() -> Router<Arc<Registry>> {
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/projects", get(list_projects).post(create_project))
        .route(
            "/api/v1/projects/{project}",
            get(show_project)
                .patch(update_project)
                .delete(delete_project),
        )
        .route(
            "/api/v1/projects/{project}/members/{user}",
            axum::routing::put(put_member).delete(delete_member),
        )
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{user}", axum::routing::delete(delete_user))
        .route(
            "/api/v1/users/{user}/password",
            axum::routing::put(set_password),
        )
        .route("/api/v1/robots", get(list_robots).post(create_robot))
        .route(
            "/api/v1/robots/{robot}",
            get(show_robot).patch(update_robot).delete(delete_robot),
        )
        .route("/api/v1/robots/{robot}/rotate", post(rotate_robot))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/webhooks", get(webhooks))
        .route("/api/v1/gc", post(collect))
        .route(
            "/api/v1/projects/{project}/policy",
            get(show_policy).put(put_policy).delete(delete_policy),
        )
        .route("/api/v1/retention", post(retention))
        .fallback(|| async { not_found("this admin endpoint") })
}

/// Who is asking, with the gate and the directory as they are now: an
/// extractor, so every handler starts authenticated. The web UI makes one
/// from a signed-in session ([`Caller::of_session`]) and calls the same
/// operations, so a page allows exactly what the API allows.
pub(crate) struct Caller {
    who: Principal,
    name: String,
    client: String,
    dir: Arc<Directory>,
}

impl axum::extract::FromRequestParts<Arc<Registry>> for Caller {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        r: &Arc<Registry>,
    ) -> Result<Self> {
        caller(r, &parts.headers, &parts.extensions).await
    }
}

impl Caller {
    /// The caller a web UI session of user `name` (`who`) stands for,
    /// calling from `client`; `None` without `[auth]`.
    pub(crate) fn of_session(
        r: &Registry,
        who: Principal,
        name: &str,
        client: String,
    ) -> Option<Self> {
        Some(Self {
            who,
            name: name.to_owned(),
            client,
            dir: r.gate.as_ref()?.directory(),
        })
    }

    /// The caller's user (or robot) name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The directory as it was when the caller was made.
    pub(crate) fn directory(&self) -> &Directory {
        &self.dir
    }

    /// Fail with 409 DECLARED when `name` comes from the configuration.
    fn writable(&self, name: &str, what: &str) -> Result<()> {
        if self.dir.declared.contains(name) {
            Err(declared(what))
        } else {
            Ok(())
        }
    }

    pub(crate) fn admin(&self) -> bool {
        matches!(self.who, Principal::User { admin: true, .. })
    }

    pub(crate) fn administers(&self, project: &str) -> bool {
        self.dir.policy.administers(&self.who, project)
    }

    /// Whether the caller may see `project` at all (a member, or admin).
    pub(crate) fn sees(&self, project: &str) -> bool {
        match &self.who {
            Principal::User { admin: true, .. } => true,
            Principal::User { name, .. } => self
                .dir
                .policy
                .projects
                .get(project)
                .is_some_and(|p| p.members.contains_key(name)),
            _ => false,
        }
    }

    /// Fail unless a system admin.
    fn require_admin(&self) -> Result<()> {
        if self.admin() {
            Ok(())
        } else {
            Err(denied("only a system admin may do this"))
        }
    }

    /// The project, if the caller administers it; else 404 (as if it did
    /// not exist, for whoever may not see it) or 403 (a member who is not
    /// its admin).
    fn administered(&self, project: &str) -> Result<()> {
        if !self.dir.policy.projects.contains_key(project) || !self.sees(project) {
            return Err(not_found(&format!("project {project:?}")));
        }
        if !self.administers(project) {
            return Err(denied(format!("you do not administer project {project:?}")));
        }
        Ok(())
    }
}

fn gate(r: &Registry) -> Result<&Gate> {
    r.gate.as_ref().ok_or_else(|| {
        AdminError(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "the admin API needs an [auth] section in the configuration".into(),
        )
    })
}

async fn caller(r: &Arc<Registry>, headers: &HeaderMap, ext: &http::Extensions) -> Result<Caller> {
    let gate = gate(r)?;
    let unauthorized = || {
        AdminError(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "send Basic credentials of a user (or robot)".into(),
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let (user, pass) = Gate::basic(value).map_err(|_| unauthorized())?;
    let who = super::token::login(r, gate, user.clone(), pass, ext)
        .await
        .map_err(|_| {
            AdminError(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "wrong user name or password".into(),
            )
        })?;
    Ok(Caller {
        who,
        name: user,
        client: super::client_text(ext),
        dir: gate.directory(),
    })
}

/// A JSON body of `T`, unknown fields refused, size bounded.
async fn body<T: serde::de::DeserializeOwned>(b: Body) -> Result<T> {
    let bytes = axum::body::to_bytes(b, MAX_BODY)
        .await
        .map_err(|_| invalid(format!("the body is larger than {MAX_BODY} bytes")))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("the JSON body: {e}")))
}

/// Run a metadata call on the blocking pool.
async fn db<T: Send + 'static>(
    r: &Arc<Registry>,
    f: impl FnOnce(&crate::metadata::Metadata) -> std::result::Result<T, crate::metadata::MetadataError>
    + Send
    + 'static,
) -> Result<T> {
    let meta = r.meta.clone();
    tokio::task::spawn_blocking(move || f(meta.as_ref()))
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// After a change: rebuild the accounts and audit it.
async fn changed(
    r: &Arc<Registry>,
    c: &Caller,
    action: &str,
    target: &str,
    detail: String,
) -> Result<()> {
    let registry = r.clone();
    tokio::task::spawn_blocking(move || registry.reload_accounts())
        .await
        .map_err(internal)?
        .map_err(internal)?;
    r.audit
        .record(&c.name, &c.client, action, target, "ok", detail);
    Ok(())
}

fn project_name_ok(name: &str) -> Result<()> {
    berth_oci::validate_name(name)
        .ok()
        .filter(|()| !name.contains('/'))
        .ok_or_else(|| {
            invalid(format!(
                "{name:?} is not a project name (lowercase letters, digits, . _ -; no /)"
            ))
        })
}

fn user_name_ok(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with("robot$")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name:?} is not a user name (letters, digits, . _ - @; at most 64; not robot$…)"
        )))
    }
}

// ---- whoami ----

async fn whoami(c: Caller) -> Result<Json<Value>> {
    let projects: Vec<Value> = c
        .dir
        .policy
        .projects
        .iter()
        .filter_map(|(name, p)| {
            let role = match &c.who {
                Principal::User { name: u, .. } => p.members.get(u).map(|r| role_name(*r)),
                _ => None,
            };
            (c.admin() || role.is_some()).then(|| json!({"name": name, "role": role}))
        })
        .collect();
    Ok(Json(json!({
        "name": c.name,
        "kind": match c.who { Principal::Robot(_) => "robot", _ => "user" },
        "admin": c.admin(),
        "projects": projects,
    })))
}

// ---- projects ----

fn project_json(c: &Caller, name: &str) -> Value {
    let p = &c.dir.policy.projects[name];
    let members: serde_json::Map<String, Value> = p
        .members
        .iter()
        .map(|(u, r)| (u.clone(), Value::from(role_name(*r))))
        .collect();
    json!({
        "name": name,
        "public": p.public,
        "declared": c.dir.declared.contains(name),
        "members": members,
    })
}

async fn list_projects(c: Caller) -> Result<Json<Value>> {
    let list: Vec<Value> = c
        .dir
        .policy
        .projects
        .keys()
        .filter(|p| c.sees(p))
        .map(|p| project_json(&c, p))
        .collect();
    Ok(Json(json!({ "projects": list })))
}

async fn show_project(Path(project): Path<String>, c: Caller) -> Result<Json<Value>> {
    if !c.dir.policy.projects.contains_key(&project) || !c.sees(&project) {
        return Err(not_found(&format!("project {project:?}")));
    }
    Ok(Json(project_json(&c, &project)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    name: String,
    #[serde(default)]
    public: bool,
}

async fn create_project(State(r): State<Arc<Registry>>, c: Caller, b: Body) -> Result<Response> {
    c.require_admin()?;
    let p: NewProject = body(b).await?;
    project_name_ok(&p.name)?;
    c.writable(&p.name, &format!("project {:?}", p.name))?;
    let row = StoredProject {
        name: p.name.clone(),
        public: p.public,
        created_by: c.name.clone(),
    };
    if !db(&r, move |m| m.create_project(&row)).await? {
        return Err(conflict(&format!("project {:?}", p.name)));
    }
    changed(
        &r,
        &c,
        "project.create",
        &p.name,
        format!("public={}", p.public),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": p.name, "public": p.public})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectUpdate {
    public: bool,
}

async fn update_project(
    State(r): State<Arc<Registry>>,
    Path(project): Path<String>,
    c: Caller,
    b: Body,
) -> Result<Json<Value>> {
    c.administered(&project)?;
    let u: ProjectUpdate = body(b).await?;
    c.writable(&project, &format!("project {project:?}"))?;
    let name = project.clone();
    db(&r, move |m| m.set_project_public(&name, u.public)).await?;
    changed(
        &r,
        &c,
        "project.update",
        &project,
        format!("public={}", u.public),
    )
    .await?;
    Ok(Json(json!({"name": project, "public": u.public})))
}

async fn delete_project(
    State(r): State<Arc<Registry>>,
    Path(project): Path<String>,
    c: Caller,
) -> Result<StatusCode> {
    if !c.dir.policy.projects.contains_key(&project) || !c.sees(&project) {
        return Err(not_found(&format!("project {project:?}")));
    }
    c.require_admin()?;
    c.writable(&project, &format!("project {project:?}"))?;
    let name = project.clone();
    db(&r, move |m| m.delete_project(&name)).await?;
    changed(&r, &c, "project.delete", &project, String::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- members ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Membership {
    role: String,
}

async fn put_member(
    State(r): State<Arc<Registry>>,
    Path((project, user)): Path<(String, String)>,
    c: Caller,
    b: Body,
) -> Result<Json<Value>> {
    c.administered(&project)?;
    let m: Membership = body(b).await?;
    Ok(Json(set_member(&r, &c, project, user, &m.role).await?))
}

/// Give `user` `role` in `project` (a project admin's, at most their own
/// role).
pub(crate) async fn set_member(
    r: &Arc<Registry>,
    c: &Caller,
    project: String,
    user: String,
    role: &str,
) -> Result<Value> {
    c.administered(&project)?;
    let role = parse_role(role).map_err(invalid)?;
    // Nobody grants a role above their own (a project admin's is the
    // highest in a project; a system admin's is above all).
    let own = match &c.who {
        Principal::User { admin: true, .. } => Role::ProjectAdmin,
        Principal::User { name, .. } => c.dir.policy.projects[&project]
            .members
            .get(name)
            .copied()
            .unwrap_or(Role::Guest),
        _ => Role::Guest,
    };
    if role > own {
        return Err(denied("you cannot grant a role above your own"));
    }
    c.writable(&project, &format!("the members of project {project:?}"))?;
    if !c.dir.user_names.contains(&user) {
        return Err(not_found(&format!("user {user:?}")));
    }
    let (p, u, name) = (project.clone(), user.clone(), role_name(role));
    let before = db(r, move |m| m.put_member(&p, &u, name)).await?;
    changed(
        r,
        c,
        "member.put",
        &format!("{project}/{user}"),
        format!("{} -> {name}", before.as_deref().unwrap_or("none")),
    )
    .await?;
    Ok(json!({"project": project, "user": user, "role": name}))
}

async fn delete_member(
    State(r): State<Arc<Registry>>,
    Path((project, user)): Path<(String, String)>,
    c: Caller,
) -> Result<StatusCode> {
    remove_member(&r, &c, project, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Take `user` out of `project` (its admins).
pub(crate) async fn remove_member(
    r: &Arc<Registry>,
    c: &Caller,
    project: String,
    user: String,
) -> Result<()> {
    c.administered(&project)?;
    c.writable(&project, &format!("the members of project {project:?}"))?;
    let (p, u) = (project.clone(), user.clone());
    if !db(r, move |m| m.delete_member(&p, &u)).await? {
        return Err(not_found(&format!("member {user:?} of {project:?}")));
    }
    changed(
        r,
        c,
        "member.delete",
        &format!("{project}/{user}"),
        String::new(),
    )
    .await
}

// ---- users ----

async fn list_users(c: Caller) -> Result<Json<Value>> {
    c.require_admin()?;
    let list: Vec<Value> = c
        .dir
        .user_names
        .iter()
        .map(|u| json!({"name": u, "admin": c.dir.admins.contains(u), "declared": c.dir.declared.contains(u)}))
        .collect();
    Ok(Json(json!({ "users": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

fn password_ok(p: &str) -> Result<()> {
    if p.len() < 12 || p.len() > 1024 {
        return Err(invalid("a password has 12 to 1024 characters"));
    }
    Ok(())
}

async fn hash(r: &Arc<Registry>, password: String) -> Result<String> {
    let gate = gate(r)?;
    let _permit = gate.hashing.acquire().await.map_err(internal)?;
    tokio::task::spawn_blocking(move || credentials::hash_secret(&password))
        .await
        .map_err(internal)
}

async fn create_user(State(r): State<Arc<Registry>>, c: Caller, b: Body) -> Result<Response> {
    c.require_admin()?;
    let u: NewUser = body(b).await?;
    user_name_ok(&u.name)?;
    password_ok(&u.password)?;
    c.writable(&u.name, &format!("user {:?}", u.name))?;
    let row = StoredUser {
        name: u.name.clone(),
        secret: hash(&r, u.password).await?,
        admin: u.admin,
    };
    let by = c.name.clone();
    if !db(&r, move |m| m.create_user(&row, &by)).await? {
        return Err(conflict(&format!("user {:?}", u.name)));
    }
    changed(&r, &c, "user.create", &u.name, format!("admin={}", u.admin)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": u.name, "admin": u.admin})),
    )
        .into_response())
}

async fn delete_user(
    State(r): State<Arc<Registry>>,
    Path(user): Path<String>,
    c: Caller,
) -> Result<StatusCode> {
    c.require_admin()?;
    c.writable(&user, &format!("user {user:?}"))?;
    let u = user.clone();
    if !db(&r, move |m| m.delete_user(&u)).await? {
        return Err(not_found(&format!("user {user:?}")));
    }
    changed(&r, &c, "user.delete", &user, String::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

async fn set_password(
    State(r): State<Arc<Registry>>,
    Path(user): Path<String>,
    c: Caller,
    b: Body,
) -> Result<StatusCode> {
    let own = matches!(&c.who, Principal::User { name, .. } if *name == user);
    if !own {
        c.require_admin()?;
    }
    let p: NewPassword = body(b).await?;
    password_ok(&p.password)?;
    c.writable(&user, &format!("user {user:?}"))?;
    let secret = hash(&r, p.password).await?;
    let u = user.clone();
    if !db(&r, move |m| m.set_user_secret(&u, &secret)).await? {
        return Err(not_found(&format!("user {user:?}")));
    }
    changed(&r, &c, "user.password", &user, String::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- robots ----

/// Whether the caller may manage robot `name`: a system robot needs a
/// system admin, a project robot its project's admin.
pub(crate) fn manages_robot(c: &Caller, name: &str) -> bool {
    match robot_project(name) {
        Some(p) => c.administers(p),
        None => c.admin(),
    }
}

pub(crate) fn robot_project(name: &str) -> Option<&str> {
    name.strip_prefix("robot$")?.split_once('+').map(|(p, _)| p)
}

fn robot_json(c: &Caller, name: &str) -> Value {
    let r = &c.dir.robots[name];
    let info = c.dir.robot_info.get(name);
    let permissions: Vec<Value> = r
        .permissions
        .iter()
        .map(|(pat, a)| {
            json!({"repositories": [pat], "actions": a.iter().map(|a| a.as_str()).collect::<Vec<_>>()})
        })
        .collect();
    json!({
        "name": name,
        "permissions": permissions,
        "expires_at": r.expires_at,
        "disabled": r.disabled,
        "declared": c.dir.declared.contains(name),
        "description": info.map(|i| i.0.as_str()).unwrap_or(""),
        "created_by": info.map(|i| i.1.as_str()),
        "created_at": info.map(|i| i.2),
    })
}

/// The robot, if the caller manages it; 404 otherwise (whether or not it
/// exists).
fn managed_robot(c: &Caller, name: &str) -> Result<()> {
    if c.dir.robots.contains_key(name) && manages_robot(c, name) {
        Ok(())
    } else {
        Err(not_found(&format!("robot {name:?}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RobotsQuery {
    project: Option<String>,
}

async fn list_robots(
    axum::extract::Query(q): axum::extract::Query<RobotsQuery>,
    c: Caller,
) -> Result<Json<Value>> {
    Ok(Json(json!({ "robots": robots(&c, q.project.as_deref()) })))
}

/// The robots the caller manages (of `project` only, if given), as the
/// API shows them.
pub(crate) fn robots(c: &Caller, project: Option<&str>) -> Vec<Value> {
    c.dir
        .robots
        .keys()
        .filter(|n| manages_robot(c, n))
        .filter(|n| project.is_none_or(|p| robot_project(n) == Some(p)))
        .map(|n| robot_json(c, n))
        .collect()
}

async fn show_robot(Path(robot): Path<String>, c: Caller) -> Result<Json<Value>> {
    managed_robot(&c, &robot)?;
    Ok(Json(robot_json(&c, &robot)))
}

/// Repositories (patterns) and what a robot may do in them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PermissionBody {
    pub(crate) repositories: Vec<String>,
    pub(crate) actions: Vec<String>,
}

/// A robot to create.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRobot {
    pub(crate) name: String,
    pub(crate) permissions: Vec<PermissionBody>,
    /// Days until it expires; -1: never. Default 30.
    pub(crate) expires_in_days: Option<i64>,
    #[serde(default)]
    pub(crate) description: String,
}

fn expiry(days: Option<i64>) -> Result<Option<u64>> {
    match days.unwrap_or(DEFAULT_ROBOT_DAYS) {
        -1 => Ok(None),
        d if (1..=3650).contains(&d) => Ok(Some(now() + d as u64 * 86_400)),
        d => Err(invalid(format!(
            "expires_in_days = {d}: give 1 to 3650, or -1 for never"
        ))),
    }
}

async fn create_robot(State(r): State<Arc<Registry>>, c: Caller, b: Body) -> Result<Response> {
    let n: NewRobot = body(b).await?;
    Ok((StatusCode::CREATED, Json(add_robot(&r, &c, n).await?)).into_response())
}

/// Create robot `n`; the answer carries its secret, which is never shown
/// again.
pub(crate) async fn add_robot(r: &Arc<Registry>, c: &Caller, n: NewRobot) -> Result<Value> {
    let valid_name = n
        .name
        .strip_prefix("robot$")
        .filter(|rest| {
            !rest.is_empty()
                && rest.len() <= 128
                && rest
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-+".contains(ch))
                && rest.matches('+').count() <= 1
        })
        .is_some();
    if !valid_name {
        return Err(invalid(format!(
            "{:?} is not a robot name: robot$<project>+<name> or robot$<name> (lowercase, digits, . _ -)",
            n.name
        )));
    }
    let project = robot_project(&n.name).map(str::to_owned);
    match &project {
        Some(p) => c.administered(p)?,
        None => c.require_admin()?,
    }
    c.writable(&n.name, &format!("robot {:?}", n.name))?;
    if n.permissions.is_empty() {
        return Err(invalid("a robot needs at least one permission"));
    }
    let mut permissions = Vec::new();
    for p in &n.permissions {
        let actions = Action::parse_list(&p.actions.join(","));
        if actions.is_empty() || p.actions.iter().any(|a| Action::parse_list(a).is_empty()) {
            return Err(invalid(format!(
                "actions {:?}: each is pull, push or delete",
                p.actions
            )));
        }
        for pat in &p.repositories {
            // A project robot's patterns stay inside its project: it never
            // gets permissions beyond its creator's.
            let inside = match &project {
                Some(proj) => pat
                    .split('/')
                    .next()
                    .is_some_and(|first| first == proj && pat.len() > proj.len() + 1),
                None => !pat.is_empty(),
            };
            if !inside || pat.contains("//") {
                return Err(invalid(format!(
                    "repository pattern {pat:?} must name repositories inside {}",
                    project
                        .as_deref()
                        .map_or("a project".to_owned(), |p| format!("project {p:?} ({p}/…)"))
                )));
            }
            permissions.push((pat.clone(), actions.clone()));
        }
    }
    if permissions.is_empty() {
        return Err(invalid("a robot needs at least one repository pattern"));
    }
    if permissions.iter().any(|(p, _)| p.ends_with('/')) {
        return Err(invalid("a repository pattern may not end in /"));
    }
    let expires_at = expiry(n.expires_in_days)?;
    let secret = credentials::new_secret();
    let t = now();
    let row = StoredRobot {
        name: n.name.clone(),
        secret: Secret::of_random(&secret).stored(),
        permissions: permissions_json(&permissions),
        expires_at,
        disabled: false,
        description: n.description.chars().take(1024).collect(),
        secret_set_at: t,
        created_by: c.name.clone(),
        created_at: t,
    };
    if !db(r, move |m| m.create_robot(&row)).await? {
        return Err(conflict(&format!("robot {:?}", n.name)));
    }
    changed(
        r,
        c,
        "robot.create",
        &n.name,
        format!("permissions {}", permissions_json(&permissions)),
    )
    .await?;
    Ok(json!({
        "name": n.name,
        "secret": secret,
        "expires_at": expires_at,
        "note": "the secret is shown once; store it now",
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RobotUpdate {
    disabled: bool,
}

async fn update_robot(
    State(r): State<Arc<Registry>>,
    Path(robot): Path<String>,
    c: Caller,
    b: Body,
) -> Result<Json<Value>> {
    managed_robot(&c, &robot)?;
    let u: RobotUpdate = body(b).await?;
    Ok(Json(disable_robot(&r, &c, robot, u.disabled).await?))
}

/// Disable (or enable again) `robot`.
pub(crate) async fn disable_robot(
    r: &Arc<Registry>,
    c: &Caller,
    robot: String,
    disabled: bool,
) -> Result<Value> {
    managed_robot(c, &robot)?;
    c.writable(&robot, &format!("robot {robot:?}"))?;
    let name = robot.clone();
    db(r, move |m| m.set_robot_disabled(&name, disabled)).await?;
    let action = if disabled {
        "robot.disable"
    } else {
        "robot.enable"
    };
    changed(r, c, action, &robot, String::new()).await?;
    Ok(json!({"name": robot, "disabled": disabled}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotation {
    expires_in_days: Option<i64>,
}

async fn rotate_robot(
    State(r): State<Arc<Registry>>,
    Path(robot): Path<String>,
    c: Caller,
    b: Body,
) -> Result<Json<Value>> {
    managed_robot(&c, &robot)?;
    let bytes = axum::body::to_bytes(b, MAX_BODY)
        .await
        .map_err(|_| invalid("the body is too large"))?;
    let rot: Rotation = if bytes.iter().all(u8::is_ascii_whitespace) {
        Rotation::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("the JSON body: {e}")))?
    };
    Ok(Json(rotate(&r, &c, robot, rot.expires_in_days).await?))
}

/// Give `robot` a new secret (and, with `days`, a new expiry); the answer
/// carries the secret, which is never shown again.
pub(crate) async fn rotate(
    r: &Arc<Registry>,
    c: &Caller,
    robot: String,
    days: Option<i64>,
) -> Result<Value> {
    managed_robot(c, &robot)?;
    c.writable(&robot, &format!("robot {robot:?}"))?;
    let expires_at = match days {
        Some(_) => expiry(days)?,
        None => None,
    };
    let secret = credentials::new_secret();
    let (name, stored) = (robot.clone(), Secret::of_random(&secret).stored());
    db(r, move |m| m.rotate_robot(&name, &stored, expires_at)).await?;
    changed(r, c, "robot.rotate", &robot, String::new()).await?;
    let expires_at = gate(r)?
        .directory()
        .robots
        .get(&robot)
        .and_then(|x| x.expires_at);
    Ok(json!({
        "name": robot,
        "secret": secret,
        "expires_at": expires_at,
        "note": "the secret is shown once; store it now. Tokens issued before this moment are refused.",
    }))
}

async fn delete_robot(
    State(r): State<Arc<Registry>>,
    Path(robot): Path<String>,
    c: Caller,
) -> Result<StatusCode> {
    managed_robot(&c, &robot)?;
    c.writable(&robot, &format!("robot {robot:?}"))?;
    let name = robot.clone();
    db(&r, move |m| m.delete_robot(&name)).await?;
    changed(&r, &c, "robot.delete", &robot, String::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- webhooks ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    target: Option<String>,
    limit: Option<usize>,
}

/// The webhook targets and their recent deliveries with each one's last
/// status (system admins: targets carry their URLs).
async fn webhooks(
    State(r): State<Arc<Registry>>,
    axum::extract::Query(q): axum::extract::Query<DeliveriesQuery>,
    c: Caller,
) -> Result<Json<Value>> {
    Ok(Json(webhook_status(&r, &c, q.target, q.limit).await?))
}

/// The webhook targets, the `limit` latest deliveries (to `target` only,
/// if given) and the backlog: a system admin's.
pub(crate) async fn webhook_status(
    r: &Arc<Registry>,
    c: &Caller,
    target: Option<String>,
    limit: Option<usize>,
) -> Result<Value> {
    c.require_admin()?;
    let targets: Vec<Value> = r
        .webhooks
        .as_ref()
        .map(|w| w.targets())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, url, projects)| json!({"name": name, "url": url, "projects": projects}))
        .collect();
    let limit = limit.unwrap_or(50).clamp(1, 1000);
    let deliveries = db(r, move |m| m.outbox_recent(target.as_deref(), limit)).await?;
    let deliveries: Vec<Value> = deliveries
        .into_iter()
        .map(|d| {
            json!({
                "delivery": d.delivery,
                "target": d.target,
                "event": d.event,
                "queued_at": d.created_at,
                "attempts": d.attempts,
                "last_status": d.last_status,
                "delivered_at": d.delivered_at,
                "failed": d.failed,
            })
        })
        .collect();
    let backlog = db(r, |m| m.outbox_backlog()).await?;
    Ok(json!({"targets": targets, "deliveries": deliveries, "backlog": backlog}))
}

// ---- policies ----

/// The policy as the API shows it.
fn policy_json(r: &Registry, project: &str, usage: u64) -> Value {
    let policies = r.policies();
    let p = policies.project(project);
    json!({
        "project": project,
        "declared": p.is_some_and(|p| p.declared),
        "policy": p.map(|p| serde_json::to_value(&p.source).unwrap_or_default()),
        "quota_bytes": p.and_then(|p| p.quota),
        "usage_bytes": usage,
    })
}

/// `GET /api/v1/projects/<p>/policy`: the policy, its quota and the
/// project's usage, for its members and system admins.
async fn show_policy(
    State(r): State<Arc<Registry>>,
    Path(project): Path<String>,
    c: Caller,
) -> Result<Json<Value>> {
    Ok(Json(policy_of(&r, &c, project).await?))
}

/// The policy of `project`, its quota and usage: its members' and system
/// admins'.
pub(crate) async fn policy_of(r: &Arc<Registry>, c: &Caller, project: String) -> Result<Value> {
    if !c.sees(&project) {
        return Err(not_found(&format!("project {project:?}")));
    }
    let p = project.clone();
    let usage = db(r, move |m| m.project_usage(&p)).await?;
    Ok(policy_json(r, &project, usage))
}

/// `PUT /api/v1/projects/<p>/policy`: replace the stored policy (project
/// admins); one declared in the configuration is read-only here.
async fn put_policy(
    State(r): State<Arc<Registry>>,
    Path(project): Path<String>,
    c: Caller,
    b: Body,
) -> Result<Json<Value>> {
    project_name_ok(&project)?;
    if !c.admin() {
        c.administered(&project)?;
    }
    let mut policy: crate::policy::PolicyConfig = body(b).await?;
    if !policy.project.is_empty() && policy.project != project {
        return Err(invalid(format!(
            "the body names project {:?}, the path {project:?}",
            policy.project
        )));
    }
    policy.project = project.clone();
    if r.policies().project(&project).is_some_and(|p| p.declared) {
        return Err(declared(&format!("the policy of project {project:?}")));
    }
    policy.load(false).map_err(invalid)?;
    let (stored, by) = (policy.clone(), c.name.clone());
    db(&r, move |m| m.put_policy(&stored, &by)).await?;
    r.reload_policies().map_err(internal)?;
    r.audit.record(
        &c.name,
        &c.client,
        "policy.update",
        &project,
        "ok",
        serde_json::to_string(&policy).unwrap_or_default(),
    );
    let p = project.clone();
    let usage = db(&r, move |m| m.project_usage(&p)).await?;
    Ok(Json(policy_json(&r, &project, usage)))
}

/// `DELETE /api/v1/projects/<p>/policy`: forget the stored policy.
async fn delete_policy(
    State(r): State<Arc<Registry>>,
    Path(project): Path<String>,
    c: Caller,
) -> Result<Response> {
    if !c.admin() {
        c.administered(&project)?;
    }
    if r.policies().project(&project).is_some_and(|p| p.declared) {
        return Err(declared(&format!("the policy of project {project:?}")));
    }
    let p = project.clone();
    if !db(&r, move |m| m.delete_policy(&p)).await? {
        return Err(not_found(&format!(
            "a stored policy of project {project:?}"
        )));
    }
    r.reload_policies().map_err(internal)?;
    r.audit.record(
        &c.name,
        &c.client,
        "policy.delete",
        &project,
        "ok",
        String::new(),
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionQuery {
    #[serde(default)]
    dry_run: bool,
    project: Option<String>,
}

/// `POST /api/v1/retention[?project=<p>][&dry_run=true]`: apply the
/// retention rules now (a system admin for every project, a project admin
/// for theirs); the answer lists what went (or would go).
async fn retention(
    State(r): State<Arc<Registry>>,
    axum::extract::Query(q): axum::extract::Query<RetentionQuery>,
    c: Caller,
) -> Result<Json<Value>> {
    let report = apply_retention(&r, &c, q.project, q.dry_run).await?;
    Ok(Json(serde_json::to_value(&report).map_err(internal)?))
}

/// Apply the retention rules of `project` (or, for a system admin, every
/// project) now, or with `dry_run` only report what would go; the run is
/// recorded as the project's last.
pub(crate) async fn apply_retention(
    r: &Arc<Registry>,
    c: &Caller,
    project: Option<String>,
    dry_run: bool,
) -> Result<crate::retention::RetentionReport> {
    match &project {
        Some(p) if !c.admin() => c.administered(p)?,
        None if !c.admin() => {
            return Err(denied(
                "only a system admin applies retention to every project; project admins add ?project=<name>",
            ));
        }
        _ => {}
    }
    let scope = project.as_deref().unwrap_or("*");
    let result = crate::retention::run(r, project.as_deref(), dry_run, now()).await;
    crate::record_run(r, "retention", scope, dry_run, &c.name, &result).await;
    let report = result.map_err(internal)?;
    r.audit.record(
        &c.name,
        &c.client,
        if dry_run {
            "retention.dry_run"
        } else {
            "retention.request"
        },
        scope,
        "ok",
        format!(
            "{} tags, {} manifests",
            report.tags.len(),
            report.manifests.len()
        ),
    );
    Ok(report)
}

// ---- garbage collection ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/gc[?dry_run=true]`: collect now. A system admin's (or
/// anyone's on a registry without `[auth]`, where anyone may delete
/// anyway). The answer streams as JSON lines — `{"progress": …}` while it
/// runs, then `{"report": …}` or `{"error": …}` — and the collection
/// finishes even if the caller goes away.
async fn collect(
    State(r): State<Arc<Registry>>,
    axum::extract::Query(q): axum::extract::Query<GcQuery>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response> {
    let who = if r.gate.is_some() {
        let c = caller(&r, &headers, req.extensions()).await?;
        c.require_admin()?;
        c.name
    } else {
        "anonymous".to_owned()
    };
    let client = super::client_text(req.extensions());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let config = r.gc.clone();
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        let progress = move |line: &str| {
            let _ = progress_tx.send(json!({ "progress": line }).to_string());
        };
        let result = collect_now(&r, &config, q.dry_run, &progress, &who, &client).await;
        let line = match &result {
            Ok(report) => json!({ "report": report }),
            Err(e) => json!({ "error": e }),
        };
        let _ = tx.send(line.to_string());
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|l| (Ok::<_, std::convert::Infallible>(format!("{l}\n")), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .expect("valid headers"))
}

/// Collect now as `who` asked from `client` (already allowed to): run,
/// record the run as the last, audit it.
pub(crate) async fn collect_now(
    r: &Arc<Registry>,
    config: &crate::gc::GcConfig,
    dry_run: bool,
    progress: crate::gc::Progress<'_>,
    who: &str,
    client: &str,
) -> std::result::Result<crate::gc::GcReport, String> {
    let result = crate::gc::run(r, config, dry_run, progress).await;
    crate::record_run(r, "gc", "registry", dry_run, who, &result).await;
    r.audit.record(
        who,
        client,
        if dry_run { "gc.dry_run" } else { "gc.request" },
        "registry",
        if result.is_ok() { "ok" } else { "error" },
        result.as_ref().err().cloned().unwrap_or_default(),
    );
    result
}

// ---- audit ----

async fn audit(
    State(r): State<Arc<Registry>>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
    c: Caller,
) -> Result<Json<Value>> {
    let events = audit_events(&r, &c, q).await?;
    Ok(Json(json!({ "events": events })))
}

/// The audit events `q` selects: a system admin's, or a project admin's
/// for their project.
pub(crate) async fn audit_events(
    r: &Arc<Registry>,
    c: &Caller,
    q: AuditQuery,
) -> Result<Vec<crate::metadata::AuditEvent>> {
    // A system admin sees everything; a project admin what concerns their
    // project (and must say which).
    if !c.admin() {
        match &q.project {
            Some(p) => c.administered(p)?,
            None => {
                return Err(denied(
                    "only a system admin lists the whole audit log; project admins add ?project=<name>",
                ));
            }
        }
    }
    db(r, move |m| m.audit_list(&q)).await
}
