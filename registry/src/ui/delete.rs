//! Deleting a tag from the web UI: a confirmation page, then a form post
//! carrying the session's CSRF token, for a signed-in user the API would
//! let delete (`delete` on the repository). The deletion is the API's own
//! (immutability rules, webhooks and the audit log alike); a refusal is
//! shown with its reason.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use berth_oci::distribution::ManifestRef;
use maud::html;

use super::session::viewer;
use crate::Registry;
use crate::auth::model::{Action, Principal};

/// Whether `who` may delete in `repo` (never anonymously: a form needs a
/// session's CSRF token).
pub(super) fn may_delete(r: &Registry, who: &Principal, repo: &str) -> bool {
    match (&r.gate, who) {
        (Some(g), Principal::User { .. }) => {
            g.directory()
                .policy
                .allows(who, repo, Action::Delete, crate::unix_now())
        }
        _ => false,
    }
}

/// The tag asked about.
#[derive(Debug, serde::Deserialize)]
pub(super) struct TagParam {
    tag: String,
}

/// `GET /ui/delete-tag/<name>?tag=<tag>`: the confirmation.
pub(super) async fn confirm(
    State(r): State<Arc<Registry>>,
    Path(name): Path<String>,
    Query(q): Query<TagParam>,
    headers: HeaderMap,
) -> Response {
    let (who, session) = viewer(&r, &headers);
    let Some(session) = session.filter(|_| may_delete(&r, &who, &name)) else {
        return super::problem(StatusCode::FORBIDDEN, "You may not delete tags here.");
    };
    let body = html! {
        h1 { "Delete " (name) ":" (q.tag) "?" }
        p { "The tag goes; the image stays while other tags or digests refer to it, until garbage collection." }
        form method="post" action={ "/ui/delete-tag/" (name) } {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="tag" value=(q.tag);
            button type="submit" { "Delete the tag" }
            " "
            a href={ "/ui/repo/" (name) } { "Cancel" }
        }
    };
    super::page("Delete a tag", &who, Some(&session), body)
}

/// `POST /ui/delete-tag/<name>`.
pub(super) async fn delete(
    State(r): State<Arc<Registry>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: String,
) -> Response {
    let (who, session, f) = match super::session::signed_form(&r, &headers, &body) {
        Ok(signed) => signed,
        Err(refused) => return *refused,
    };
    if !may_delete(&r, &who, &name) {
        return super::problem(
            StatusCode::FORBIDDEN,
            "Refused: you may not delete tags here.",
        );
    }
    let tag = f.get("tag").cloned().unwrap_or_default();
    if berth_oci::validate_tag(&tag).is_err() {
        return super::problem(StatusCode::BAD_REQUEST, "That is not a tag.");
    }
    let reference = ManifestRef::Tag(tag.clone());
    match crate::api::manifests::delete(&r, &name, &reference, &headers, Some(&session.user)).await
    {
        Ok(resp) => {
            if let Some(notes) = resp.extensions().get::<Vec<crate::api::AuditNote>>() {
                let client = crate::api::client_text(&ext);
                for n in notes {
                    r.audit.record(
                        &session.user,
                        &client,
                        n.action,
                        &n.target,
                        "ok",
                        n.detail.clone(),
                    );
                }
            }
            Redirect::to(&format!("/ui/repo/{name}")).into_response()
        }
        Err(e) => {
            let status = e.into_response().status();
            let why = match status {
                StatusCode::FORBIDDEN => {
                    "the tag is immutable: a policy of this project protects it"
                }
                StatusCode::NOT_FOUND => "there is no such tag",
                _ => "the registry could not delete it",
            };
            let body = html! {
                h1 { "Not deleted" }
                p.error role="alert" { (name) ":" (tag) ": " (why) "." }
                p { a href={ "/ui/repo/" (name) } { "Back to " (name) } }
            };
            let mut resp = super::page("Not deleted", &who, Some(&session), body);
            *resp.status_mut() = status;
            resp
        }
    }
}
