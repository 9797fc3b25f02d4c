//! Signing in to the web UI: a form posting a local user's name and
//! password (checked like `/token`'s Basic credentials, throttled and
//! audited alike), a session cookie (`HttpOnly`, `SameSite=Strict`, `Path=/ui`,
//! `Secure` over TLS) whose sha256 keys a row in the metadata database, and
//! a CSRF token on every form: the session's own once signed in, a
//! double-submitted cookie on the sign-in form. A form also needs an
//! `Origin` (when the browser sends one) that is this registry's. Signing
//! out deletes the row, so the old cookie is worth nothing at once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use maud::html;

use crate::Registry;
use crate::auth::model::Principal;
use crate::metadata::Session;

/// The session cookie.
pub(super) const COOKIE: &str = "berth_session";
/// The sign-in form's double-submitted CSRF cookie.
const LOGIN_CSRF: &str = "berth_login_csrf";
/// How long a session lasts.
const TTL_SECS: u64 = 12 * 3600;

/// 32 random bytes, URL-safe base64.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(token: &str) -> String {
    berth_oci::Digest::sha256(token.as_bytes()).hex().to_owned()
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// A `Set-Cookie` value.
fn set_cookie(r: &Registry, name: &str, value: &str, max_age: u64) -> String {
    let secure = if r.https { "; Secure" } else { "" };
    format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// Who is looking, and their session: the signed-in user of a live
/// session cookie, else anonymous.
pub(super) fn viewer(r: &Registry, headers: &HeaderMap) -> (Principal, Option<Session>) {
    let (Some(gate), Some(token)) = (&r.gate, cookie(headers, COOKIE)) else {
        return (Principal::Anonymous, None);
    };
    match r.meta.session(&hash(token), crate::unix_now()) {
        Ok(Some(s)) => {
            let who = gate.principal_of(&s.user);
            // A user deleted since signing in is nobody.
            if matches!(who, Principal::User { .. }) {
                (who, Some(s))
            } else {
                (Principal::Anonymous, None)
            }
        }
        _ => (Principal::Anonymous, None),
    }
}

/// Whether a form post comes from this registry's own pages: no `Origin`
/// (older browsers send none on same-origin posts) or one whose host is
/// the `Host` asked for.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    host.is_some() && origin_host == host
}

/// The form's fields (`application/x-www-form-urlencoded`).
pub(super) fn fields(body: &str) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

/// A form's fields.
pub(super) type Fields = std::collections::HashMap<String, String>;

/// A signed-in user's form post: who, their session and the form's
/// fields, once the session, the `Origin` and the CSRF token check out;
/// a 403 saying which did not otherwise.
pub(super) fn signed_form(
    r: &Registry,
    headers: &HeaderMap,
    body: &str,
) -> Result<(Principal, Session, Fields), Box<Response>> {
    let (who, session) = viewer(r, headers);
    let Some(session) = session else {
        return Err(Box::new(refused("sign in first")));
    };
    let f = fields(body);
    if !same_origin(headers) || f.get("csrf") != Some(&session.csrf) {
        return Err(Box::new(refused(
            "the form's CSRF token is missing or wrong",
        )));
    }
    Ok((who, session, f))
}

fn refused(why: &str) -> Response {
    super::problem(StatusCode::FORBIDDEN, &format!("Refused: {why}."))
}

/// The sign-in page's query: where to go after signing in.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// `next` if it is one of the UI's own pages (never another site: no
/// `//host`, no backslashes, no control characters), else the projects.
fn landing(next: &str) -> &str {
    let own = next.starts_with("/ui/")
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if own { next } else { "/ui/" }
}

/// Where a page that needs a signed-in user sends an anonymous visitor:
/// the sign-in page, coming back to `uri` afterwards.
pub(super) fn to_sign_in(uri: Option<&http::Uri>) -> Response {
    let back = uri
        .and_then(|u| u.path_and_query())
        .map(|pq| pq.as_str())
        .unwrap_or("/ui/");
    let next: String = form_urlencoded::byte_serialize(landing(back).as_bytes()).collect();
    Redirect::to(&format!("/ui/login?next={next}")).into_response()
}

/// `GET /ui/login[?next=<page>]`.
pub(super) async fn login_page(
    State(r): State<Arc<Registry>>,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    login_form(&r, &headers, None, &q.next)
}

fn login_form(r: &Registry, headers: &HeaderMap, error: Option<&str>, next: &str) -> Response {
    let (who, _) = viewer(r, headers);
    if r.gate.is_none() {
        let body = html! {
            h1 { "Sign in" }
            p { "This registry has no " code { "[auth]" } ": there is nobody to sign in as, and every page shows everything." }
        };
        return super::page("Sign in", &who, None, body);
    }
    let csrf = random_token();
    let body = html! {
        h1 { "Sign in" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form method="post" action="/ui/login" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="next" value=(landing(next));
            p { label for="user" { "User" } br; input #user name="user" autocomplete="username" required; }
            p { label for="password" { "Password" } br; input #password name="password" type="password" autocomplete="current-password" required; }
            p { button type="submit" { "Sign in" } }
        }
    };
    let mut resp = super::page("Sign in", &who, None, body);
    if let Ok(v) = set_cookie(r, LOGIN_CSRF, &csrf, 3600).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /ui/login`.
pub(super) async fn login(
    State(r): State<Arc<Registry>>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: String,
) -> Response {
    let Some(gate) = &r.gate else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let f = fields(&body);
    let sent = f.get("csrf").map(String::as_str).unwrap_or("");
    if !same_origin(&headers) {
        return refused("the form was posted from another site");
    }
    if sent.is_empty() || cookie(&headers, LOGIN_CSRF) != Some(sent) {
        return refused("the form's CSRF token is missing or stale: reload the sign-in page");
    }
    let user = f.get("user").cloned().unwrap_or_default();
    let pass = f.get("password").cloned().unwrap_or_default();
    let who = crate::api::token::login(&r, gate, user.clone(), pass, &ext).await;
    if !matches!(who, Ok(Principal::User { .. })) {
        let next = f.get("next").map(String::as_str).unwrap_or("");
        let mut resp = login_form(&r, &headers, Some("Wrong user or password."), next);
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return resp;
    }
    let token = random_token();
    let now = crate::unix_now();
    let session = Session {
        user: user.clone(),
        csrf: random_token(),
        expires_at: now + TTL_SECS,
    };
    let key = hash(&token);
    if let Err(resp) = super::meta(&r, move |m| m.create_session(&key, &session, now)).await {
        return resp;
    }
    let client =
        crate::api::client_ip(&ext).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    r.audit
        .record(&user, &client, "ui.login", &user, "ok", String::new());
    let next = f.get("next").map(String::as_str).unwrap_or("");
    let mut resp = Redirect::to(landing(next)).into_response();
    let h = resp.headers_mut();
    for c in [
        set_cookie(&r, COOKIE, &token, TTL_SECS),
        set_cookie(&r, LOGIN_CSRF, "", 0),
    ] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `POST /ui/logout`.
pub(super) async fn logout(
    State(r): State<Arc<Registry>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (_, session) = viewer(&r, &headers);
    let Some(session) = session else {
        return Redirect::to("/ui/").into_response();
    };
    let f = fields(&body);
    if !same_origin(&headers) || f.get("csrf") != Some(&session.csrf) {
        return refused("the form's CSRF token is missing or wrong");
    }
    if let Some(token) = cookie(&headers, COOKIE) {
        let (key, now) = (hash(token), crate::unix_now());
        // A failure is logged by `meta`; the cookie is cleared either way.
        let _ = super::meta(&r, move |m| m.end_session(&key, now)).await;
    }
    let mut resp = Redirect::to("/ui/").into_response();
    if let Ok(v) = set_cookie(&r, COOKIE, "", 0).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}
